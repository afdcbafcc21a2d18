"""Export a checkpoint to ONNX that can serve on its own, and prove it computes what PyTorch computes.

The graph takes `image` (float32 [B, 1, S, S], already normalised) and `body_part` (int64 [B], -1 =
predict it) with a dynamic batch, and returns the outputs named in `mura.outputs.ONNX_OUTPUTS` (raw
`fracture_logits` [B, 2] and `body_part_logits` [B, 7], and `fracture_map` [B, 1, h, w] logits when the
model has a map head): the same fields of the PyTorch model's `ModelOutput`, so the predictor's softmax /
temperature / threshold code and its findings are shared by both runtimes. The checkpoint's metadata
(preprocessing, decision: calibration and operating points, body parts, metrics, provenance) goes into
the model's metadata_props (`mura.*`, JSON values), so `mura predict --checkpoint model.onnx` needs no
`.pt` file and decides exactly as the `.pt` does.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import expit, softmax

from mura.atomic import atomic_path
from mura.checkpoint import Checkpoint, load_model
from mura.errors import MuraError
from mura.inference.members import ONNX_META_PREFIX

PARITY_TOLERANCE = 1e-4  # max abs difference of probabilities (image and map cells), ONNX Runtime vs PyTorch
INPUT_NAMES = ["image", "body_part"]


@dataclass
class ExportReport:
    path: Path
    opset: int
    max_prob_diff: float  # ONNX Runtime vs PyTorch: fracture, body-part and map-cell probabilities
    metadata: dict[str, Any]


class _Exportable(torch.nn.Module):
    """The model as (image, body_part) -> a plain tuple in `ONNX_OUTPUTS` order: exporters name graph
    outputs by position, so the `ModelOutput` is flattened here, at the ONNX boundary only."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, body_part: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model(image, body_part).exported()


def _metadata(checkpoint: Checkpoint, model: torch.nn.Module) -> dict[str, Any]:
    """JSON for the graph's metadata_props. The scope detector (tensors) is left out: the graph returns
    no depth features to apply it to; `scope_detector_left_out` tells the loader so, for the trace."""
    meta = checkpoint.meta.to_dict()
    left_out = meta.get("scope_detector") is not None
    meta["scope_detector"] = None
    return {
        "checkpoint_meta": meta,
        "scope_detector_left_out": left_out,
        "has_body_part_head": bool(getattr(model, "has_body_part_head", True)),
        "checkpoint": checkpoint.path.name,
        "outputs": "raw logits; probability = the decision's calibration of logit[1] - logit[0]; "
        "fracture_map (when present): per-cell logits over the input square",
    }


def _export_graph(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, torch.Tensor],
    path: Path,
    opset: int,
    outputs: tuple[str, ...],
) -> None:
    """TorchScript-based exporter (fast, honours opset 17); the dynamo exporter if that one fails."""
    common = dict(input_names=INPUT_NAMES, output_names=list(outputs), verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            batch_axes = {name: {0: "batch"} for name in [*INPUT_NAMES, *outputs]}
            torch.onnx.export(
                module,
                example,
                str(path),
                dynamic_axes=batch_axes,
                opset_version=opset,
                dynamo=False,
                **common,
            )
        except Exception:
            batch = torch.export.Dim("batch", min=1, max=65536)
            torch.onnx.export(
                module,
                example,
                str(path),
                dynamic_shapes={"image": {0: batch}, "body_part": {0: batch}},
                opset_version=max(opset, 18),
                dynamo=True,
                **common,
            )


def _probabilities(
    fracture_logits: np.ndarray, body_part_logits: np.ndarray, fracture_map: np.ndarray | None = None
) -> np.ndarray:
    """Per image: fracture, body-part and (with a map) every map cell's probability, one row each."""
    fracture = expit(fracture_logits[:, 1] - fracture_logits[:, 0])[:, None]
    cells = [] if fracture_map is None else [expit(fracture_map.reshape(len(fracture_map), -1))]
    return np.concatenate([fracture, softmax(body_part_logits, axis=1), *cells], axis=1)


def parity(model: torch.nn.Module, onnx_path: Path, size: int, batch: int = 4, seed: int = 0) -> float:
    """Max abs probability difference, ONNX Runtime vs PyTorch, on random inputs (given and -1 parts),
    the map's cells included when the model has a map head."""
    import onnxruntime as ort

    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 1, size, size, generator=generator)
    parts = torch.randint(-1, 7, (batch,), generator=generator)
    parts[0] = -1
    with torch.inference_mode():
        output = model.eval()(image, parts)
    names = output.exported_names()
    reference = {name: getattr(output, name).float().numpy() for name in names}
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    if [o.name for o in session.get_outputs()] != list(names):
        return float("inf")  # an output missing (or extra) is as far from PyTorch as it gets
    arrays = session.run(list(names), {"image": image.numpy(), "body_part": parts.numpy()})
    got = dict(zip(names, arrays, strict=True))
    return float(np.abs(_probabilities(**reference) - _probabilities(**got)).max())


def _is_mura_export(path: Path) -> bool:
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False).producer_name == "mura"
    except Exception:  # noqa: BLE001 - anything unreadable is somebody else's file
        return False


def export_onnx(
    checkpoint: str | Path, out: str | Path | None = None, opset: int = 17, overwrite: bool = False
) -> ExportReport:
    """Checkpoint -> checked ONNX file with metadata; refuses to write one that disagrees with PyTorch.

    An existing target is replaced only when it is an earlier mura export (or `overwrite`): a command
    never replaces a file it did not make.
    """
    import onnx

    source = Path(checkpoint)
    out = Path(out) if out else source.with_suffix(".onnx")
    if out.exists() and not overwrite and not _is_mura_export(out):
        raise MuraError(
            f"{out}: exists and is not an ONNX file exported by mura; "
            "choose another out= or pass overwrite=True"
        )
    model, payload = load_model(source, "cpu")
    model = model.float().eval()
    size = payload.meta.preprocessing.size
    module = _Exportable(model).eval()
    example = (torch.zeros(2, 1, size, size), torch.tensor([-1, 0], dtype=torch.int64))
    with torch.inference_mode():
        outputs = model(*example).exported_names()
    with atomic_path(out) as tmp:
        _export_graph(module, example, tmp, opset, outputs)
        proto = onnx.load(str(tmp))
        metadata = _metadata(payload, model)
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = ONNX_META_PREFIX + key, json.dumps(value)
        proto.producer_name = "mura"
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
        diff = parity(model, tmp, size)
        if not diff < PARITY_TOLERANCE:
            raise MuraError(
                f"{source}: ONNX export disagrees with PyTorch (max probability difference {diff:.2e})"
            )
    return ExportReport(
        path=out, opset=int(proto.opset_import[0].version), max_prob_diff=diff, metadata=metadata
    )
