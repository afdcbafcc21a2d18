"""Fracture boxes in the index: FracAtlas's YOLO and COCO agree, EXIF-rotated films, every inconsistency
counted, and boxes carried into a cache's input frame."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from mura.cli import main
from mura.data.annotations import (
    FRACATLAS_COCO,
    FRACATLAS_YOLO,
    FilmMatcher,
    read_coco_json,
    read_yolo_folder,
)
from mura.data.boxes import box_disagreements, boxes_path, read_boxes, write_index_boxes
from mura.data.cache import open_cache
from mura.data.dataset import CachedImageDataset
from mura.data.folders import build_folder_index
from mura.data.images import read_image
from mura.preprocessing import Preprocessing

ROTATED_FILM = "IMG0000019.jpg"  # 410 x 512, one box, no EXIF orientation of its own


def test_fracatlas_yolo_and_coco_boxes_agree_on_every_development_film(fracatlas_dir: Path) -> None:
    frame, report = build_folder_index(fracatlas_dir)
    films = FilmMatcher(frame["path"].tolist())
    warnings: list[str] = []
    yolo = read_yolo_folder(fracatlas_dir / FRACATLAS_YOLO, films, warnings.append)
    coco = read_coco_json(fracatlas_dir / FRACATLAS_COCO, films, warnings.append)
    assert box_disagreements(coco, yolo) == [] and warnings == []
    assert len(yolo) == len(coco) == len(report.boxes) == 665
    assert yolo["path"].nunique() == coco["path"].nunique() == 510
    # the one film in Fractured/ that dataset.csv calls fractured=0 keeps its box, and is counted
    negative = [w for w in report.warnings if "labelled negative" in w]
    assert len(negative) == 1 and negative[0].startswith("1 boxes lie on 1 films labelled negative, kept")
    assert negative[0].endswith("/images/Fractured/IMG0003298.jpg)")
    # every fractured film has a box; the two annotated EXIF-rotated films are in the upright frame
    assert not [w for w in report.warnings if "no box" in w]
    for name, turned in (("IMG0002628.jpg", True), ("IMG0002588.jpg", False)):  # EXIF orientations 8, 3
        row = report.boxes[report.boxes["path"].str.endswith(name)].iloc[0]
        decoded = read_image(row["path"]).pixels
        assert (row["width"], row["height"]) == (decoded.shape[1], decoded.shape[0])
        stored = Image.open(row["path"]).size
        assert stored == ((row["height"], row["width"]) if turned else (row["width"], row["height"]))
    assert (report.boxes[["x0", "y0"]].to_numpy() >= 0).all()
    assert (report.boxes["x1"] <= report.boxes["width"]).all() and (
        report.boxes["y1"] <= report.boxes["height"]
    ).all()


def _rotated_copy(fracatlas_dir: Path, root: Path) -> tuple[Path, np.ndarray]:
    """A copy of a film stored turned 90 degrees, with EXIF orientation 6 saying how to turn it back."""
    source = fracatlas_dir / "images" / "Fractured" / ROTATED_FILM
    upright = read_image(source).pixels
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # what a camera might store
    exif = Image.Exif()
    exif[0x0112] = 6  # display: rotate 90 degrees clockwise
    target = root / "fractured" / "turned.jpg"
    target.parent.mkdir(parents=True)
    stored.save(target, quality=98, exif=exif)
    return target, upright


def test_a_box_of_an_exif_rotated_film_lands_on_the_fracture_after_decoding(
    fracatlas_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    turned, upright = _rotated_copy(fracatlas_dir, root)
    labels = tmp_path / "yolo"
    labels.mkdir()
    shutil.copy(fracatlas_dir / FRACATLAS_YOLO / ROTATED_FILM.replace(".jpg", ".txt"), labels / "turned.txt")
    frame, report = build_folder_index(root, yolo_dir=labels, val_fraction=0, test_fraction=0)
    assert Image.open(turned).size == (512, 410)  # stored sideways
    box = report.boxes.iloc[0]
    assert (box["width"], box["height"]) == (410, 512)  # but boxed in the upright picture
    decoded = read_image(turned).pixels
    x0, y0, x1, y1 = (int(round(box[c])) for c in ("x0", "y0", "x1", "y1"))
    on_fracture = np.abs(decoded[y0:y1, x0:x1].astype(float) - upright[y0:y1, x0:x1]).mean()
    stored = np.asarray(Image.open(turned).convert("L"), float)  # the box read in the stored frame instead
    elsewhere = np.abs(stored[y0:y1, x0:x1] - upright[y0:y1, x0:x1]).mean()
    assert on_fracture < 3 and elsewhere > 5 * on_fracture


def _png(path: Path, size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], 90, np.uint8)).save(path)


def test_every_inconsistency_is_counted_in_one_line(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for name in ("a", "b", "c"):
        _png(root / "fractured" / f"{name}.png")
    _png(root / "normal" / "n.png")
    labels = tmp_path / "yolo"
    labels.mkdir()
    (labels / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.95 0.5 0.2 0.2\n")  # second one reaches outside
    (labels / "b.txt").write_text("0 1.5 1.5 0.2 0.2\n")  # wholly outside
    (labels / "c.txt").write_text("")  # no box: a fractured film without one
    (labels / "n.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # a box on a film labelled negative
    (labels / "ghost.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # a film not in the index
    frame, report = build_folder_index(root, yolo_dir=labels, val_fraction=0, test_fraction=0)
    lines = sorted(report.warnings)
    assert len(lines) == 4, lines
    assert lines[0].startswith(
        "1 YOLO boxes name films that are not in the index, left out (first: ghost.txt)"
    )
    assert lines[1].startswith("1 boxes lie on 1 films labelled negative, kept")
    assert lines[2].startswith(
        "2 boxes reach outside their film or are empty: clipped, 1 with nothing left dropped"
    )
    assert lines[3].startswith("2 films labelled positive have no box")  # b (its box dropped) and c
    boxes = report.boxes.set_index(report.boxes["path"].map(lambda p: Path(p).stem))
    assert list(boxes.index) == ["a", "a", "n"]
    assert np.allclose(boxes.iloc[1][["x0", "x1"]].astype(float), [34.0, 40.0])  # clipped at the right edge


def test_coco_boxes_of_a_folder_set_and_polygons_scaled_to_the_file(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _png(root / "fractured" / "a.png", (80, 60))
    _png(root / "normal" / "n.png")
    coco = tmp_path / "boxes.json"
    image = {"id": 7, "file_name": "fractured/a.png", "width": 40, "height": 30}
    note = {"id": 1, "image_id": 7, "bbox": [10, 10, 10, 10], "segmentation": [[10, 10, 20, 10, 20, 20]]}
    coco.write_text(json.dumps({"images": [image], "annotations": [note]}))
    frame, report = build_folder_index(root, coco_json=coco, val_fraction=0, test_fraction=0)
    box = report.boxes.iloc[0]
    assert [box[c] for c in ("x0", "y0", "x1", "y1")] == [
        20,
        20,
        40,
        40,
    ]  # the file is twice the entry's size
    assert box["polygon"] == "[[20.0, 20.0, 40.0, 20.0, 40.0, 40.0]]" and box["source"] == "coco"
    assert any("differ in size from their COCO entry" in w for w in report.warnings)


def test_index_cli_writes_boxes_beside_the_index_and_removes_stale_ones(
    synthetic_mura, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "index.csv"
    assert main(["index", str(synthetic_mura.root), "--out", str(out)]) == 0
    boxes = read_boxes(boxes_path(out))
    assert len(boxes) > 0 and set(boxes["source"].str.split("-").str[0]) == {"synth"}
    assert f"boxes on {boxes['path'].nunique()} films to {boxes_path(out)}" in capsys.readouterr().out
    write_index_boxes(None, out)
    assert not boxes_path(out).exists()


def test_the_cache_and_dataset_carry_boxes_in_the_input_frame(synthetic_mura) -> None:
    cache = open_cache(synthetic_mura.cache_dir)  # 64 px stretch of an index with boxes beside it
    originals = read_boxes(boxes_path(synthetic_mura.index_csv))
    pre = Preprocessing(size=64, resize_mode="stretch")
    assert len(originals) > 0 and sum(len(b) for b in cache.boxes.values()) == len(originals)
    for row in originals.itertuples():
        cache_row = int(cache.index.index[cache.index["path"] == row.path][0])
        expected = pre.boxes_to_input(np.array([row.x0, row.y0, row.x1, row.y1]), row.width, row.height)
        assert np.abs(cache.boxes[cache_row] - expected).max() < 0.01
    train = CachedImageDataset(cache, "train")
    batch = train.__getitems__(list(range(len(train))))
    found = train.boxes_for(batch.row)
    assert [len(b) > 0 for b in found] == [int(r) in cache.boxes for r in batch.row]
    assert all(b.shape[1] == 4 for b in found) and any(len(b) for b in found)
    labelled = pd.Series(batch.label.numpy())[[len(b) > 0 for b in found]]
    assert (labelled == 1).all()  # synthetic boxes only on views of abnormal studies
