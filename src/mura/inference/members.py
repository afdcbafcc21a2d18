"""One ensemble member: a model behind either runtime (PyTorch or ONNX Runtime) plus what travels with it.

Both runtimes return raw logits for the same inputs, as a `MemberOutput` whose fields are the graph's
`ONNX_OUTPUTS` names (the ONNX session is asked for those names, the PyTorch `ModelOutput` is read by
them), so everything after them (calibration, ensembling, operating points: `mura.decision`) is shared
code in `predictor.py` and the runtimes cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from mura.checkpoint import load_model
from mura.checkpoint_meta import CheckpointMeta
from mura.decision import Decision
from mura.errors import MuraError
from mura.inference.scope_features import member_scores
from mura.outputs import ONNX_OUTPUTS
from mura.prediction import PositiveClass
from mura.preprocessing import Preprocessing
from mura.scope_detector import ScopeDetector

RUNTIMES = ("auto", "torch", "onnx")
ONNX_META_PREFIX = "mura."


def exported_sibling(checkpoint: Path) -> Path | None:
    """`best.onnx` next to `best.pt` when it is at least as new as the checkpoint (not stale)."""
    onnx_path = checkpoint.with_suffix(".onnx")
    if onnx_path.is_file() and onnx_path.stat().st_mtime >= checkpoint.stat().st_mtime:
        return onnx_path
    return None


class MemberOutput(NamedTuple):
    """One member's raw logits for a batch, named as in `ONNX_OUTPUTS` (float32 numpy arrays)."""

    fracture_logits: np.ndarray  # [B, 2]
    body_part_logits: np.ndarray  # [B, 7]
    fracture_map: np.ndarray | None = None  # [B, 1, h, w] map logits; None without a map head
    scope_scores: np.ndarray | None = None  # [B] layer 3's scores (`mura.scope_detector`); None: no detector


@dataclass
class Member:
    """What the predictor needs from one checkpoint; `run` maps model input to its `MemberOutput`."""

    source: Path
    runtime: str  # torch | onnx
    preprocessing: Preprocessing
    decision: Decision
    has_body_part_head: bool
    model_name: str
    positive_class: PositiveClass  # what label 1 meant in its training data (the tiers' words)
    info: dict[str, Any] = field(default_factory=dict)  # val_metrics, test_metrics, epoch, config, ...
    scope_detector: ScopeDetector | None = None  # layer 3, scored from the same forward pass; None: none

    def run(self, image: np.ndarray, body_part: np.ndarray) -> MemberOutput:
        raise NotImplementedError


@dataclass
class TorchMember(Member):
    model: torch.nn.Module | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def run(self, image: np.ndarray, body_part: np.ndarray) -> MemberOutput:
        assert self.model is not None
        x = torch.from_numpy(image).to(self.device, non_blocking=True)
        x = x.contiguous(memory_format=torch.channels_last)
        parts = torch.from_numpy(body_part).to(self.device)
        scores = None
        with torch.inference_mode():
            if self.scope_detector is None:
                output = self.model(x, parts)
            else:
                output, scores = member_scores(self.model, self.scope_detector, lambda: self.model(x, parts))
        arrays = {name: getattr(output, name).float().cpu().numpy() for name in output.exported_names()}
        return MemberOutput(**arrays, scope_scores=scores)


@dataclass
class OnnxMember(Member):
    session: Any = None  # onnxruntime.InferenceSession

    def run(self, image: np.ndarray, body_part: np.ndarray) -> MemberOutput:
        outputs = self.session.run(
            self.output_names,
            {"image": np.ascontiguousarray(image, dtype=np.float32), "body_part": body_part.astype(np.int64)},
        )
        return MemberOutput(**dict(zip(self.output_names, outputs, strict=True)))

    @property
    def output_names(self) -> list[str]:
        """The `ONNX_OUTPUTS` this graph has: an export of a model without a map head lacks
        `fracture_map`."""
        present = {output.name for output in self.session.get_outputs()}
        return [name for name in ONNX_OUTPUTS if name in present]


def member_info(meta: CheckpointMeta) -> dict[str, Any]:
    """The metadata the model card and reports show (no weights)."""
    return {
        "val_metrics": meta.val_metrics,
        "test_metrics": meta.test_metrics,
        "epoch": meta.epoch,
        "config": meta.config,
        "provenance": meta.provenance,
        "scope_parts": list(meta.scope_parts),  # what the scope gate lets in (mura.inference.scope)
        "body_parts": list(meta.body_parts),  # the body-part head's classes
        "body_part_floor": meta.body_part_floor,  # None: an old model, feeds its argmax however unsure
    }


def load_torch_member(path: Path, device: torch.device) -> TorchMember:
    model, checkpoint = load_model(path, device)
    model = model.to(memory_format=torch.channels_last).eval()
    return TorchMember(
        source=path,
        runtime="torch",
        preprocessing=checkpoint.meta.preprocessing,
        decision=checkpoint.meta.decision,
        has_body_part_head=bool(getattr(model, "has_body_part_head", True)),
        model_name=checkpoint.meta.model_name,
        positive_class=checkpoint.meta.positive_class,
        info=member_info(checkpoint.meta),
        scope_detector=checkpoint.meta.scope_detector,
        model=model,
        device=device,
    )


def _decode_metadata(path: Path, raw: dict[str, str]) -> dict[str, Any]:
    meta = {
        k.removeprefix(ONNX_META_PREFIX): json.loads(v)
        for k, v in raw.items()
        if k.startswith(ONNX_META_PREFIX)
    }
    if "checkpoint_meta" not in meta:
        raise MuraError(f"{path}: ONNX model has no mura metadata (export it with `mura export`)")
    return meta


def _onnx_scope_note(raw: dict[str, Any]) -> dict[str, str]:
    """An exported graph returns no intermediate features, so its checkpoint's detector was left out of
    the export and cannot run (the trace says so)."""
    if not raw.get("scope_detector_left_out"):
        return {}
    return {"scope_features": "not applied: the ONNX runtime gives no depth features; use runtime='torch'"}


def load_onnx_member(path: Path, device: torch.device, threads: int = 0) -> OnnxMember:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:
        raise MuraError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0][:200]})") from None
    raw = _decode_metadata(path, session.get_modelmeta().custom_metadata_map)
    try:
        meta = CheckpointMeta.from_dict(raw["checkpoint_meta"])
    except (KeyError, TypeError, ValueError, MuraError) as exc:
        raise MuraError(
            f"{path}: ONNX metadata incomplete ({exc}); export it again with `mura export`"
        ) from None
    return OnnxMember(
        source=path,
        runtime="onnx",
        preprocessing=meta.preprocessing,
        decision=meta.decision,
        has_body_part_head=bool(raw.get("has_body_part_head", True)),
        model_name=meta.model_name,
        positive_class=meta.positive_class,
        info={**member_info(meta), "checkpoint": raw.get("checkpoint"), **_onnx_scope_note(raw)},
        session=session,
    )


def load_member(path: str | Path, device: torch.device, runtime: str = "auto") -> Member:
    """Pick the runtime for one checkpoint: ONNX for `.onnx` files, an up-to-date sibling on CPU, or torch.

    `auto` takes the sibling only where the graph runs every layer of the scope gate: a checkpoint with a
    feature-space detector needs its depth features, which the exported graph does not return, so it
    runs with torch rather than answer for inputs layer 3 would refuse."""
    if runtime not in RUNTIMES:
        raise MuraError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    path = Path(path)
    if not path.is_file():
        raise MuraError(f"{path}: checkpoint not found")
    if path.suffix.lower() == ".onnx":
        if runtime == "torch":
            raise MuraError(
                f"{path}: an ONNX model cannot run with runtime='torch' (give the .pt checkpoint)"
            )
        return load_onnx_member(path, device)
    if runtime == "onnx":
        onnx_path = path.with_suffix(".onnx")
        if not onnx_path.is_file():
            raise MuraError(f"{path}: no exported {onnx_path.name} beside it (run `mura export {path}`)")
        return load_onnx_member(onnx_path, device)
    sibling = exported_sibling(path) if runtime == "auto" and device.type == "cpu" else None
    if sibling:
        member = load_onnx_member(sibling, device)
        if "scope_features" not in member.info:  # no detector the graph would leave out
            return member
    return load_torch_member(path, device)
