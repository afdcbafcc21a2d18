"""Synthetic MURA: a tree with MURA-v1.1's exact layout and CSVs, filled with procedural radiographs.

MURA cannot be shipped, so the demo and the tests run on this. Anatomy differs by body part (bone count,
width, joints, round heads), so body part is learnable; abnormal studies show a fracture line, a
displaced fracture or metal hardware in at least one view, thin relative to the image, so abnormality is
learnable but takes a CNN a few epochs. Real-data nuisances are added on purpose (sizes, RGB and 16-bit
PNGs, L/R markers, collimation, noise, contrast, `._*` junk). Every image has its own random generator
seeded from (seed, patient, study, view), so output is identical whatever the number of processes.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mura.atomic import atomic_path, write_bytes, write_text
from mura.constants import MURA_BODY_PARTS
from mura.data.annotations import SYNTH_BOXES
from mura.data.boxes import BOX_COLUMNS
from mura.data.synth_anatomy import DrawnView, draw_anatomy
from mura.errors import MuraError

# MURA-v1.1 train studies per body part (relative frequency) and abnormal rate per body part.
PART_WEIGHTS = {
    "ELBOW": 1912,
    "FINGER": 2106,
    "FOREARM": 865,
    "HAND": 2185,
    "HUMERUS": 727,
    "SHOULDER": 3015,
    "WRIST": 3697,
}
PART_POSITIVE_RATE = {
    "ELBOW": 0.39,
    "FINGER": 0.40,
    "FOREARM": 0.35,
    "HAND": 0.30,
    "HUMERUS": 0.46,
    "SHOULDER": 0.49,
    "WRIST": 0.38,
}
VIEWS_PER_STUDY_P = (0.12, 0.30, 0.38, 0.20)  # 1..4 images
STUDIES_PER_PATIENT_P = (0.82, 0.15, 0.03)  # 1..3 studies
MARKER_FILE = "synthetic.json"
VIEW_SHOWS_P = 0.9  # chance that one view of an abnormal study shows its finding


@dataclass(frozen=True)
class StudyPlan:
    split: str  # "train" | "valid" (MURA's own names)
    part: str
    patient: int
    study: int
    label: int
    views: int

    @property
    def rel_dir(self) -> str:
        kind = "positive" if self.label else "negative"
        return f"MURA-v1.1/{self.split}/XR_{self.part}/patient{self.patient:05d}/study{self.study}_{kind}/"


@dataclass(frozen=True)
class SynthInfo:
    root: Path  # the directory that contains MURA-v1.1/
    patients: int
    studies: int
    images: int
    junk_files: int


def plan_studies(patients: int, seed: int, valid_fraction: float = 0.1) -> list[StudyPlan]:
    """Decide split, body part, label and view count of every study (cheap; done in one process)."""
    if patients < 2:
        raise MuraError(f"synth: need at least 2 patients (one train, one valid), got {patients}")
    rng = np.random.default_rng([seed, 0xA11])
    n_valid = max(1, round(valid_fraction * patients))
    n_train = patients - n_valid
    weights = np.array([PART_WEIGHTS[p] for p in MURA_BODY_PARTS], dtype=float)
    weights /= weights.sum()

    def parts_for(n: int) -> list[str]:
        # Every body part appears at least once when there are enough patients, then MURA's mix.
        first = list(rng.permutation(MURA_BODY_PARTS))[: min(n, len(MURA_BODY_PARTS))]
        rest = rng.choice(MURA_BODY_PARTS, size=n - len(first), p=weights)
        return [str(p) for p in [*first, *rest]]

    plans: list[StudyPlan] = []
    patient_number = 0
    for split, n in (("train", n_train), ("valid", n_valid)):
        split_plans = []
        for part in parts_for(n):
            patient_number += 1
            n_studies = 1 + int(rng.choice(len(STUDIES_PER_PATIENT_P), p=STUDIES_PER_PATIENT_P))
            for study in range(1, n_studies + 1):
                label = int(rng.random() < PART_POSITIVE_RATE[part])
                views = 1 + int(rng.choice(len(VIEWS_PER_STUDY_P), p=VIEWS_PER_STUDY_P))
                split_plans.append(StudyPlan(split, part, patient_number, study, label, views))
        labels = {p.label for p in split_plans}
        if len(split_plans) >= 2 and len(labels) == 1:  # both classes in every split
            first = split_plans[0]
            split_plans[0] = StudyPlan(
                first.split, first.part, first.patient, first.study, 1 - first.label, first.views
            )
        plans.extend(split_plans)
    return sorted(plans, key=lambda p: (p.split, p.part, p.patient, p.study))


def _marker_font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # PIL without FreeType: the small bitmap font
        return ImageFont.load_default()


def _image_size(rng: np.random.Generator) -> tuple[int, int]:
    long_side = 512 if rng.random() < 0.6 else int(rng.integers(150, 513))
    short_side = max(150, int(long_side * rng.uniform(0.55, 1.0)))
    short_side = min(short_side, long_side)
    return (short_side, long_side) if rng.random() < 0.7 else (long_side, short_side)  # (w, h)


def _finish(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Contrast, noise, collimation and an L/R marker: what makes real films differ from one another."""
    h, w = image.shape
    image = image / 255.0
    image = np.clip(image, 0, 1) ** rng.uniform(0.7, 1.4)
    image = image * rng.uniform(0.75, 1.1) * 255 + rng.uniform(-10, 25)
    image += rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(1.5, 7.0)
    if rng.random() < 0.35:  # collimation: flat bands at some edges
        value = rng.uniform(170, 235) if rng.random() < 0.6 else rng.uniform(0, 12)
        for edge in range(4):
            if rng.random() < 0.5:
                band = int(rng.uniform(0.03, 0.12) * (h if edge < 2 else w))
                region = (
                    slice(0, band),
                    slice(None),
                    slice(h - band, h),
                    slice(None),
                    slice(None),
                    slice(0, band),
                    slice(None),
                    slice(w - band, w),
                )
                image[region[2 * edge], region[2 * edge + 1]] = value
    out = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="L")
    if rng.random() < 0.7:
        draw = ImageDraw.Draw(out)
        font = _marker_font(max(10, int(min(h, w) * rng.uniform(0.05, 0.09))))
        x = int(rng.uniform(0.03, 0.12) * w) if rng.random() < 0.5 else int(rng.uniform(0.8, 0.9) * w)
        y = int(rng.uniform(0.03, 0.1) * h) if rng.random() < 0.5 else int(rng.uniform(0.82, 0.9) * h)
        draw.text((x, y), "L" if rng.random() < 0.5 else "R", fill=int(rng.uniform(220, 255)), font=font)
    return np.asarray(out)


def render_view(part: str, abnormal: bool, study_rng_seed: list[int], view: int) -> DrawnView:
    """One view of one study (uint8 [H, W] pixels) with its finding's box; the study's anatomy is
    shared by its views. Contrast, noise and markers change no geometry, so the box stays true."""
    rng = np.random.default_rng([*study_rng_seed, view])
    w, h = _image_size(rng)
    drawn = draw_anatomy(part, abnormal, w, h, np.random.default_rng(study_rng_seed), rng)
    return drawn._replace(pixels=_finish(drawn.pixels, rng))


def render_image(part: str, abnormal: bool, study_rng_seed: list[int], view: int) -> np.ndarray:
    """The pixels of `render_view` alone (radiographs for tests and benchmarks)."""
    return render_view(part, abnormal, study_rng_seed, view).pixels


def _save(image: np.ndarray, path: Path, rng: np.random.Generator) -> None:
    roll = rng.random()
    if roll < 0.05:  # RGB-encoded grey, as many exported films are
        tint = np.stack([image, image, np.clip(image.astype(np.int16) + 3, 0, 255).astype(np.uint8)], -1)
        picture = Image.fromarray(tint, mode="RGB")
    elif roll < 0.07:  # 12-bit detector data in a 16-bit PNG
        deep = image.astype(np.uint16) * 16 + rng.integers(0, 16, image.shape, dtype=np.uint16)
        picture = Image.fromarray(deep)
    else:
        picture = Image.fromarray(image, mode="L")
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG", compress_level=1)


def _render_study(out: str, plan: StudyPlan, seed: int) -> tuple[list[str], int, list[str]]:
    """Write one study's views; returns their paths, the junk files planted and the boxes' CSV lines."""
    study_seed = [seed, plan.patient, plan.study]
    rng = np.random.default_rng([*study_seed, 0xFEED])
    # The abnormality shows in most views and at least one; a few stay silent (as on real films).
    abnormal_views = rng.random(plan.views) < VIEW_SHOWS_P if plan.label else np.zeros(plan.views, bool)
    if plan.label and not abnormal_views.any():
        abnormal_views[rng.integers(plan.views)] = True
    study_dir = Path(out) / plan.rel_dir
    study_dir.mkdir(parents=True, exist_ok=True)
    paths, boxes = [], []
    for view in range(plan.views):
        drawn = render_view(plan.part, bool(abnormal_views[view]), study_seed, view)
        name = f"image{view + 1}.png"
        _save(drawn.pixels, study_dir / name, np.random.default_rng([*study_seed, view, 0x5AFE]))
        paths.append(plan.rel_dir + name)
        if drawn.box is not None:
            height, width = drawn.pixels.shape
            corners = ",".join(f"{v:.2f}" for v in drawn.box)
            boxes.append(f"{plan.rel_dir}{name},{corners},{width},{height},synth-{drawn.kind},")
    junk = 0
    if rng.random() < 0.03:  # macOS AppleDouble litter, as found in real zip extractions
        header = b"\x00\x05\x16\x07"  # AppleDouble magic
        write_bytes(study_dir / "._image1.png", header + bytes(rng.integers(0, 256, 60, np.uint8)))
        junk = 1
    return paths, junk, boxes


def _render_chunk(out: str, plans: list[StudyPlan], seed: int) -> list[tuple[list[str], int, list[str]]]:
    return [_render_study(out, plan, seed) for plan in plans]


def _write_csv(path: Path, lines: list[str]) -> None:
    write_text(path, "".join(line + "\n" for line in lines))


def generate_synthetic_mura(
    out: str | Path,
    patients: int = 200,
    seed: int = 0,
    workers: int | None = None,
    valid_fraction: float = 0.1,
) -> SynthInfo:
    """Write OUT/MURA-v1.1/{train,valid}/XR_<PART>/patientNNNNN/studyK_<label>/imageN.png, its 4 CSVs
    and `boxes.csv` (one row per view that shows its finding: the box around it, in film pixels)."""
    out = Path(out)
    plans = plan_studies(patients, seed, valid_fraction)
    (out / "MURA-v1.1").mkdir(parents=True, exist_ok=True)
    workers = max(1, min(workers or os.cpu_count() or 1, len(plans) // 8 or 1))
    chunk = max(1, min(64, len(plans) // (workers * 4) or 1))
    chunks = [plans[i : i + chunk] for i in range(0, len(plans), chunk)]
    if workers == 1:
        results = [r for c in chunks for r in _render_chunk(str(out), c, seed)]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_render_chunk, str(out), c, seed) for c in chunks]
            results = [r for f in futures for r in f.result()]
    for split in ("train", "valid"):
        split_items = [(p, r) for p, r in zip(plans, results, strict=True) if p.split == split]
        _write_csv(out / "MURA-v1.1" / f"{split}_image_paths.csv", [x for _, r in split_items for x in r[0]])
        _write_csv(
            out / "MURA-v1.1" / f"{split}_labeled_studies.csv",
            [f"{p.rel_dir},{p.label}" for p, _ in split_items],
        )
    box_lines = [line for r in results for line in r[2]]
    _write_csv(out / "MURA-v1.1" / SYNTH_BOXES, [",".join(BOX_COLUMNS), *box_lines])
    write_bytes(out / "MURA-v1.1" / "train" / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    n_images = sum(len(r[0]) for r in results)
    n_junk = sum(r[1] for r in results) + 1
    info = {
        "generator": "mura.data.synth",
        "patients": patients,
        "seed": seed,
        "studies": len(plans),
        "images": n_images,
    }
    write_text(out / "MURA-v1.1" / MARKER_FILE, json.dumps(info, indent=1) + "\n")
    return SynthInfo(out, patients, len(plans), n_images, n_junk)
