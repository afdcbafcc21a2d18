"""The scope gate, layers 1 (DICOM rules) and 2 (pixel plausibility): what each refuses, and its cost.

In scope: all 2,826 FracAtlas films as shipped (JPEG), every 4th wrapped as a DX naming its region, and
synthetic MURA films of every part at full size and at 32 px (a cache row). Out of scope: every image
in pydicom's test files, matplotlib's photographs (whole, cropped, scaled), generated blanks and noise
(PNG and JPEG), and FracAtlas films wrapped as CT, MR, MG, For Processing DX, Secondary Capture, or as
DX naming a part FracAtlas does not show (chest, skull, spine). The cost of the gate is timed beside a
decode and an efficientnet_b0 prediction (random weights, 224 px, CPU), side by side in one run.

    .venv/bin/python benchmarks/bench_scope.py --markdown docs/benchmarks/scope.md
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib.cbook as cbook
import numpy as np
from PIL import Image
from pydicom.data import get_testdata_files
from pydicom.uid import (
    CTImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    MRImageStorage,
    SecondaryCaptureImageStorage,
)
from sklearn.metrics import roc_auc_score

from mura.constants import BODY_PARTS
from mura.data.folders import build_folder_index
from mura.data.images import read_image
from mura.data.synth import render_image
from mura.errors import ImageDecodeError
from mura.inference.predictor import Predictor
from mura.inference.scope import ModelScope, reason_layer, scope_reasons
from mura.inference.scope_pixels import (
    MAX_COLOUR_FRACTION,
    MIN_NEIGHBOUR_CORRELATION,
    MIN_SPREAD,
    pixel_statistics,
)
from mura.training.scope import trained_parts

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.factories.dicom import dicom_bytes, dicom_dataset, twelve_bit  # noqa: E402

FRACATLAS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fracatlas"
MURA_SCOPE = ModelScope(frozenset(BODY_PARTS))
SECTION = "## Layers 1 and 2: DICOM rules and pixel plausibility"
IN_SCOPE, BY_HEADER, BY_PIXELS = "in scope", "out (a header can tell)", "out (only pixels can tell)"
Item = tuple[str, str, bytes | Path, ModelScope]  # group, kind (above), source, the model's scope


def encoded(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, quality=80)
    return buffer.getvalue()


def wrapped(pixels: np.ndarray, **fields: object) -> bytes:
    return dicom_bytes(dicom_dataset(twelve_bit(pixels), **fields))


def generated(rng: np.random.Generator) -> Iterator[np.ndarray]:
    for shape in ((300, 400), (1024, 768), (64, 64)):
        for level in (0, 30, 128, 255):
            yield np.full(shape, level, np.uint8)
            yield np.clip(rng.normal(level, 3, shape), 0, 255).astype(np.uint8)
        yield rng.integers(0, 256, shape, dtype=np.uint8)
        yield np.clip(rng.normal(128, 40, shape), 0, 255).astype(np.uint8)
        yield (rng.random(shape) > 0.5).astype(np.uint8) * 255
        yield rng.integers(0, 256, (*shape, 3), dtype=np.uint8)


def photographs() -> Iterator[np.ndarray]:
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
        with Image.open(cbook.get_sample_data(name, asfileobj=False)) as image:
            rgb = np.asarray(image.convert("RGB"))
        h, w = rgb.shape[:2]
        yield rgb
        yield rgb[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4]
        yield np.asarray(Image.fromarray(rgb).resize((w * 2, h * 2)))


def items(every: int) -> Iterator[Item]:
    frame, _ = build_folder_index(FRACATLAS)
    fracatlas = ModelScope(frozenset(trained_parts(frame, ["train", "val", "test"])[0]))
    for row in frame.itertuples():
        yield "FracAtlas films (JPEG)", IN_SCOPE, Path(row.path), fracatlas
    for row in frame.iloc[::every].itertuples():
        pixels = read_image(Path(row.path)).pixels
        dx = wrapped(pixels, body_part=row.region.split("+")[0].upper())
        yield "FracAtlas films wrapped as DX naming their region", IN_SCOPE, dx, fracatlas
    for part in BODY_PARTS:
        for seed in range(40):
            image = render_image(part, seed % 2 == 0, [seed, 2, 3], seed % 3)
            yield "synthetic MURA films", IN_SCOPE, encoded(image), MURA_SCOPE
            small = np.asarray(Image.fromarray(image).resize((32, 32), Image.BILINEAR))
            yield "synthetic MURA films at 32 px", IN_SCOPE, encoded(small), MURA_SCOPE
    for path in get_testdata_files("*.dcm"):
        yield "pydicom's test images (CT, MR, US, NM, OT, ...)", BY_HEADER, Path(path), fracatlas
    wrappings = (
        {"modality": "CT", "sop_class": CTImageStorage},
        {"modality": "MR", "sop_class": MRImageStorage},
        {"modality": "MG", "sop_class": DigitalMammographyXRayImageStorageForPresentation},
        {"sop_class": DigitalXRayImageStorageForProcessing},
        {"modality": "OT", "sop_class": SecondaryCaptureImageStorage},
        {"body_part": "CHEST"},
        {"body_part": "SKULL"},
        {"body_part": None, "StudyDescription": "XR L-SPINE 2V"},
    )
    for row in frame.iloc[:: every * 4].itertuples():
        pixels = read_image(Path(row.path)).pixels
        for fields in wrappings:
            group = "FracAtlas films wrapped as CT/MR/MG/SC/For Processing, or as DX of chest/skull/spine"
            yield group, BY_HEADER, wrapped(pixels, **fields), fracatlas
    for pixels in photographs():
        yield (
            "photographs (matplotlib's, whole, cropped, scaled)",
            BY_PIXELS,
            encoded(pixels, "JPEG"),
            fracatlas,
        )
    for i, pixels in enumerate(generated(np.random.default_rng(0))):
        blank = encoded(pixels, "PNG" if i % 2 else "JPEG")
        yield "generated blanks and noise (PNG, JPEG)", BY_PIXELS, blank, fracatlas


def implausibility(pixels: np.ndarray, colour: float) -> float:
    """Layer 2 as a score (above 1 = refused): the largest ratio of a measurement to its threshold."""
    stats = pixel_statistics(pixels)
    return max(
        colour / MAX_COLOUR_FRACTION,
        MIN_SPREAD / max(stats.spread, 1e-3),
        (1 - stats.neighbour_correlation) / (1 - MIN_NEIGHBOUR_CORRELATION),
    )


def survey(every: int) -> tuple[dict[str, dict[str, Any]], dict[str, list[tuple[str, float]]]]:
    """Per group: images, undecodable, refusals per layer and in all; per layer: (kind, score) rows for
    the AUROC (layer 1: refused or not, DICOM inputs only; layer 2: the implausibility score)."""
    groups: dict[str, dict[str, Any]] = {}
    scores: dict[str, list[tuple[str, float]]] = {"dicom": [], "pixels": [], "gate": []}
    for group, kind, source, scope in items(every):
        counts = groups.setdefault(
            group, {"kind": kind, "images": 0, "undecodable": 0, "dicom": 0, "pixels": 0, "any": 0}
        )
        try:
            decoded = read_image(source)
        except ImageDecodeError:
            counts["undecodable"] += 1
            continue
        counts["images"] += 1
        found = {reason_layer(r) for r in scope_reasons(decoded, scope)}
        for layer in found:
            counts[layer] += 1
        counts["any"] += bool(found)
        scores["pixels"].append((kind, implausibility(decoded.pixels, decoded.colour_fraction)))
        scores["gate"].append((kind, float(bool(found))))
        if decoded.dicom is not None:
            scores["dicom"].append((kind, float("dicom" in found)))
    return groups, scores


def timed_costs(sample: int) -> dict[str, float]:
    """Median ms per image: decode, gate (layers 1-2), prediction (efficientnet_b0, 224 px, batch 16)."""
    from mura.checkpoint import save_model
    from mura.config_loading import load_config
    from mura.models.registry import model_from_config
    from mura.preprocessing import Preprocessing

    paths = sorted((FRACATLAS / "images").rglob("*.jpg"))[:sample]
    decoded = [read_image(p) for p in paths]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            overrides={"model.name": "efficientnet_b0", "model.size": 224, "model.freeze": "full"}
        )
        model = model_from_config(cfg.model, load_pretrained=False)
        checkpoint = save_model(
            Path(tmp) / "b0.pt", model, cfg, Preprocessing(224, "stretch", **model.default_preprocessing)
        )
        predictor = Predictor.from_checkpoints([checkpoint], device="cpu", runtime="torch", batch_size=16)
        predictor.predict_images([d.pixels for d in decoded[:16]])  # warm-up
        per_image = {"decode": [], "gate": [], "predict": []}
        for start in range(0, len(paths), 16):
            chunk = paths[start : start + 16]
            t0 = time.perf_counter()
            images = [read_image(p) for p in chunk]
            t1 = time.perf_counter()
            for image in images:
                scope_reasons(image, MURA_SCOPE)
            t2 = time.perf_counter()
            predictor.predict_images([image.pixels for image in images])
            t3 = time.perf_counter()
            for key, seconds in zip(per_image, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                per_image[key].append(1000 * seconds / len(chunk))
    return {key: statistics.median(values) for key, values in per_image.items()}


def auroc(rows: list[tuple[str, float]], out_kinds: tuple[str, ...]) -> str:
    """Out-of-scope AUROC: in-scope rows against the rows of `out_kinds` (others left out)."""
    kept = [(kind != IN_SCOPE, score) for kind, score in rows if kind == IN_SCOPE or kind in out_kinds]
    labels = [label for label, _ in kept]
    if not 0 < sum(labels) < len(labels):
        return "n/a"
    return f"{roc_auc_score(labels, [score for _, score in kept]):.4f}"


def markdown(groups: dict, scores: dict, costs: dict[str, float], every: int) -> str:
    lines = [
        SECTION,
        "",
        "`.venv/bin/python benchmarks/bench_scope.py --markdown docs/benchmarks/scope.md` (rewrites this "
        "section only)",
        "",
        "| images | kind | n | refused by layer 1 (dicom) | by layer 2 (pixels) | refused (any) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for group, c in groups.items():
        undecodable = f" (+{c['undecodable']} undecodable)" if c["undecodable"] else ""
        share = c["any"] / max(1, c["images"])
        lines.append(
            f"| {group} | {c['kind']} | {c['images']}{undecodable} | {c['dicom']} | {c['pixels']} "
            f"| {c['any']} ({share:.1%}) |"
        )
    n_in = sum(c["images"] for c in groups.values() if c["kind"] == IN_SCOPE)
    refused_in = sum(c["any"] for c in groups.values() if c["kind"] == IN_SCOPE)
    n_out = sum(c["images"] for c in groups.values() if c["kind"] != IN_SCOPE)
    refused_out = sum(c["any"] for c in groups.values() if c["kind"] != IN_SCOPE)
    both = (BY_HEADER, BY_PIXELS)
    lines += [
        "",
        f"- In-scope refusal rate, layers 1-2: {refused_in} of {n_in} ({refused_in / n_in:.2%}).",
        f"- Out-of-scope images refused: {refused_out} of {n_out} ({refused_out / n_out:.1%}).",
        f"- Out-of-scope AUROC, layer 1 (refused or not; DICOM inputs): {auroc(scores['dicom'], both)}.",
        f"- Out-of-scope AUROC, layer 2 (implausibility score: the largest measurement/threshold ratio): "
        f"{auroc(scores['pixels'], (BY_PIXELS,))} against photographs, blanks and noise; "
        f"{auroc(scores['pixels'], both)} against every out-of-scope image (a CT slice or a film wrapped "
        "as CT looks like a radiograph to the pixel layer: the header is what tells).",
        f"- Out-of-scope AUROC, the gate (layers 1-2, refused or not): {auroc(scores['gate'], both)}.",
        f"- Wrapped as DX: every {every}th FracAtlas film; as CT, MR, ...: every {every * 4}th, 8 ways each.",
        "",
        "| per image (median, ms) | decode | gate, layers 1-2 | predict (efficientnet_b0, 224 px, CPU) |",
        "|---|---:|---:|---:|",
        f"| FracAtlas JPEGs | {costs['decode']:.2f} | {costs['gate']:.2f} | {costs['predict']:.1f} |",
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    """Replace this benchmark's section of `path` (from SECTION to the next heading), keeping the rest."""
    old = path.read_text() if path.exists() else ""
    start = old.find(SECTION)
    if start < 0:
        path.write_text(old + ("\n" if old else "") + text)
        return
    end = old.find("\n## ", start + len(SECTION))
    path.write_text(old[:start] + text + (old[end:] if end >= 0 else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=4, help="wrap every Nth FracAtlas film as DICOM")
    parser.add_argument("--cost-sample", type=int, default=256, help="FracAtlas films timed")
    parser.add_argument("--markdown", default=None, help="write the results section here")
    args = parser.parse_args()
    groups, scores = survey(args.every)
    costs = timed_costs(args.cost_sample)
    text = markdown(groups, scores, costs, args.every)
    print(text)
    if args.markdown:
        write_section(Path(args.markdown), text)


if __name__ == "__main__":
    main()
