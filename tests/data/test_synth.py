"""Synthetic MURA: exact layout, deterministic, with the nuisances of real data, and learnable."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from mura.constants import MURA_BODY_PARTS
from mura.data.cache import open_cache
from mura.data.synth import generate_synthetic_mura, plan_studies


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    generate_synthetic_mura(tmp_path / "a", patients=8, seed=5, workers=1)
    generate_synthetic_mura(tmp_path / "b", patients=8, seed=5, workers=2)
    generate_synthetic_mura(tmp_path / "c", patients=8, seed=6, workers=1)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_layout_and_headerless_csvs(synthetic_mura) -> None:
    mura = synthetic_mura.root / "MURA-v1.1"
    paths = (mura / "train_image_paths.csv").read_text().splitlines()
    assert paths[0].startswith("MURA-v1.1/train/XR_") and paths[0].endswith(".png")
    studies = (mura / "valid_labeled_studies.csv").read_text().splitlines()
    assert studies[0].startswith("MURA-v1.1/valid/XR_") and studies[0][-2:] in (",0", ",1")
    for line in studies:
        study, label = line.rsplit(",", 1)
        assert study.endswith(("_positive/", "_negative/")) and (label == "1") == ("_positive/" in study)
        n_images = len(list((synthetic_mura.root / study).glob("image*.png")))
        assert 1 <= n_images <= 4


def test_plan_is_mura_like() -> None:
    plans = plan_studies(2000, seed=0)
    patients = {(p.split, p.patient) for p in plans}
    valid_share = sum(s == "valid" for s, _ in patients) / len(patients)
    positive_rate = np.mean([p.label for p in plans])
    assert 0.08 < valid_share < 0.12 and 0.33 < positive_rate < 0.47
    assert {p.part for p in plans} == set(MURA_BODY_PARTS)
    assert {p.views for p in plans} == {1, 2, 3, 4}


def test_real_data_nuisances_present(synthetic_mura) -> None:
    files = sorted((synthetic_mura.root / "MURA-v1.1").rglob("image*.png"))
    modes, sizes = set(), []
    for path in files:
        with Image.open(path) as image:
            modes.add(image.mode)
            sizes.append(image.size)
    assert {"L", "RGB"} <= modes and modes & {"I;16", "I"}
    sides = np.array(sizes)
    assert sides.max() == 512 and sides.min() < 300 and len(set(sizes)) > 10
    assert list((synthetic_mura.root / "MURA-v1.1").rglob("._*"))


def test_body_part_carries_signal(synthetic_mura) -> None:
    """A linear model on 16x16 thumbnails finds body part far above chance (anatomy differs)."""
    cache = open_cache(synthetic_mura.cache_dir)
    thumbs = cache.images.reshape(-1, 16, 4, 16, 4).mean(axis=(2, 4)).reshape(len(cache.images), -1) / 255
    parts = cache.index["body_part"].to_numpy()
    accuracy = cross_val_score(LogisticRegression(max_iter=2000), thumbs, parts, cv=3).mean()
    assert accuracy > 0.5  # chance is about 0.2


def _one_bone_view(kind: str, hardware: str = "") -> tuple[np.ndarray, np.ndarray]:
    """A thin hand-sized bone on a 512 px film, drawn normal and with `kind`, both resized to 64 px."""
    from mura.data.synth_canvas import Bone, Canvas, Exposure, paint_bone
    from mura.data.synth_findings import Finding, draw_finding

    bone = Bone((0.5, 0.1), (0.5, 0.9), 0.045)
    finding = Finding(kind, 0, 0.5, 0.3, 0.5, 15.0, hardware, 1.0, False)
    exposure = Exposure(background=15, tissue=50, cortex=130, medulla=85)
    layers = []
    for abnormal in (False, True):
        cv = Canvas(512, 512, np.random.default_rng(3), flip=False)
        (
            draw_finding(cv, bone, finding, exposure, np.random.default_rng(4))
            if abnormal
            else paint_bone(cv, bone, exposure)
        )
        image = np.maximum(np.asarray(cv.bone, np.float32), np.asarray(cv.metal, np.float32))
        small = Image.fromarray(image.astype(np.uint8)).resize((64, 64), Image.BILINEAR)
        layers.append(np.asarray(small, np.float32))
    return layers[0], layers[1]


def test_every_finding_survives_resizing_to_64_px() -> None:
    """Findings have size floors relative to the image, so even a thin bone's shows at the demo's size."""
    for kind, hardware in [
        ("break", ""),
        ("comminuted", ""),
        ("callus", ""),
        *(("hardware", h) for h in ("plate", "nail", "wires")),
    ]:
        normal, abnormal = _one_bone_view(kind, hardware)
        changed = int((np.abs(abnormal - normal) > 40).sum())
        assert changed >= 20, (kind, hardware, changed)  # pixels of 4096 changed by > 40 grey levels


def test_abnormal_studies_mix_findings_and_show_them_in_most_views() -> None:
    from mura.data.synth_anatomy import _part_shapes
    from mura.data.synth_findings import plan_finding

    kinds = set()
    for study in range(200):
        rng = np.random.default_rng([0, study, 1])
        shapes = _part_shapes(MURA_BODY_PARTS[study % len(MURA_BODY_PARTS)], rng)
        finding = plan_finding(shapes, rng)
        kinds.add((finding.kind, finding.hardware))
    assert {k for k, _ in kinds} == {"break", "comminuted", "callus", "hardware"}
    assert {h for _, h in kinds} >= {"plate", "nail", "wires"}


def _marks_and_box(kind: str, hardware: str = "", shift: float = 0.0, angle: float = 0.0):
    """A bone drawn normal and with `kind` on one canvas geometry (512 px), and the finding's box."""
    from mura.data.synth_canvas import Bone, Canvas, Exposure, paint_bone
    from mura.data.synth_findings import Finding, draw_finding

    bone = Bone((0.45, 0.1), (0.55, 0.9), 0.06)
    finding = Finding(kind, 0, 0.5, 0.6, shift, angle, hardware, 1.0, False)
    exposure = Exposure(background=15, tissue=50, cortex=130, medulla=85)
    normal = Canvas(512, 512, np.random.default_rng(3), flip=False)
    paint_bone(normal, bone, exposure)
    broken = Canvas(512, 512, np.random.default_rng(3), flip=False)
    draw_finding(broken, bone, finding, exposure, np.random.default_rng(4))
    layers = [np.asarray(cv.bone, np.float32) for cv in (normal, broken)]
    return layers[0], layers[1], np.asarray(broken.metal, np.float32), broken.finding_box()


def _box_mask(box: tuple[float, float, float, float], tolerance: float = 1.5) -> np.ndarray:
    """The pixels (by centre) of a 512 px film inside a box widened by `tolerance`."""
    rows, cols = np.mgrid[0:512, 0:512] + 0.5
    x0, y0, x1, y1 = box
    return (
        (cols >= x0 - tolerance)
        & (cols <= x1 + tolerance)
        & (rows >= y0 - tolerance)
        & (rows <= y1 + tolerance)
    )


def _outside(changed: np.ndarray, box: tuple[float, float, float, float]) -> int:
    """Changed pixels outside the box, after an opening removes one-pixel slivers (a slanted edge drawn
    as two segments instead of one rasterises a pixel differently here and there along the bone); and
    the box must not be much larger than what changed."""
    from scipy.ndimage import binary_opening

    changed = binary_opening(changed, np.ones((3, 3), bool))
    rows, cols = np.nonzero(changed)
    x0, y0, x1, y1 = box
    assert (x1 - x0) * (y1 - y0) < 2.5 * (np.ptp(cols) + 1) * (np.ptp(rows) + 1), box
    return int((changed & ~_box_mask(box)).sum())


def test_a_findings_box_covers_what_the_generator_drew() -> None:
    """Every pixel a finding changed lies in its box, and the box is not the whole bone."""
    for kind in ("break", "comminuted"):  # undisplaced, so every change is at the fracture
        normal, broken, _, box = _marks_and_box(kind)
        opened = (normal - broken > 60) | (broken - normal > 20)  # the gap, fragments, fragment ends
        assert opened.sum() > 100 and _outside(opened, box) == 0, kind
        assert (box[3] - box[1]) < 0.3 * 512, (kind, box)  # the bone spans 0.8 of the film
    _, _, _, box = _marks_and_box("break", shift=1.0, angle=20.0)  # displaced: still around the site
    assert box[1] < 256 < box[3] and (box[3] - box[1]) < 0.3 * 512
    normal, healed, _, box = _marks_and_box("callus")
    assert _outside(np.abs(healed - normal) > 0, box) == 0
    for hardware in ("plate", "nail", "wires"):
        normal, fixed, metal, box = _marks_and_box("hardware", hardware)
        assert metal.sum() > 0 and _outside(metal > 0, box) == 0, hardware
        if (normal - fixed > 60).sum() > 20:  # the fracture line under the metal, where drawn
            assert _outside(normal - fixed > 60, box) == 0, hardware


def test_the_synthetic_tree_has_a_box_for_every_view_that_shows_its_finding(synthetic_mura) -> None:
    import pandas as pd

    from mura.data.index import build_mura_index

    boxes = pd.read_csv(synthetic_mura.root / "MURA-v1.1" / "boxes.csv")
    frame, report = build_mura_index(synthetic_mura.root)
    assert len(report.boxes) == len(boxes) > 0
    labels = frame.set_index("path")["label"]
    assert (labels[report.boxes["path"]] == 1).all()  # only abnormal studies have findings
    positives = int(labels.sum())
    assert 0.7 * positives <= report.boxes["path"].nunique() <= positives  # most views show their finding
    for row in report.boxes.itertuples():
        with Image.open(row.path) as image:
            assert image.size == (row.width, row.height)
        assert 0 <= row.x0 < row.x1 <= row.width and 0 <= row.y0 < row.y1 <= row.height
