"""Readers of localisation ground truth: COCO JSON, YOLO label folders, and the CSV `mura synth` writes.

Each returns the boxes table of `mura.data.boxes` (original, EXIF-upright pixels), matched to the index's
films: by relative path where a file name is not unique, else by name. Coordinates are taken in the
upright frame because that is the frame annotators drew in (FracAtlas: 16 films carry an EXIF
orientation and their boxes refer to the upright picture) and the frame every output reports findings in;
YOLO's normalised coordinates are scaled by the upright size, COCO's by the file's size over the size its
entry records (FracAtlas's downscaled films).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import pandas as pd
from PIL import Image

from mura.data.boxes import BOX_COLUMNS, COORDINATES, Warn, box_disagreements, empty_boxes
from mura.data.images import declared_size, is_dicom
from mura.errors import ImageDecodeError, MuraError

EXIF_ORIENTATION = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
SYNTH_BOXES = "boxes.csv"  # beside a synthetic MURA-v1.1 tree's CSVs: the findings `mura synth` planted
FRACATLAS_YOLO = Path("Annotations") / "YOLO"
FRACATLAS_COCO = Path("Annotations") / "COCO JSON" / "COCO_fracture_masks.json"


def upright_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of a film as displayed: EXIF orientations 5-8 swap the stored sides."""
    if is_dicom(path):
        size = declared_size(path)
        return size.width, size.height
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(str(path), f"unreadable image header: {exc}") from None
    return (height, width) if orientation in TRANSPOSING_ORIENTATIONS else (width, height)


class FilmMatcher:
    """Finds the index row an annotation names: by relative path where it is unique, else by file name."""

    def __init__(self, paths: list[str]) -> None:
        self.by_name: dict[str, list[str]] = {}
        self.by_stem: dict[str, list[str]] = {}
        for path in paths:
            pure = PurePosixPath(Path(path).as_posix())
            self.by_name.setdefault(pure.name, []).append(path)
            self.by_stem.setdefault(pure.stem, []).append(path)

    @staticmethod
    def _pick(candidates: list[str], relative: str) -> str | None:
        """The one candidate, or the one whose path ends with `relative` (suffixes compared off)."""
        if len(candidates) == 1:
            return candidates[0]
        tail = "/" + relative.lstrip("/").rsplit(".", 1)[0]
        ends = [c for c in candidates if Path(c).as_posix().rsplit(".", 1)[0].endswith(tail)]
        return ends[0] if len(ends) == 1 else None

    def by_file_name(self, relative: str) -> str | None:
        """An image named `sub/IMG.jpg` or `IMG.jpg` (COCO `file_name`, synthetic paths)."""
        return self._pick(self.by_name.get(PurePosixPath(relative).name, []), relative)

    def by_label_file(self, relative: str) -> str | None:
        """The image a YOLO label file `sub/IMG.txt` belongs to (same stem, any image suffix)."""
        return self._pick(self.by_stem.get(PurePosixPath(relative).stem, []), relative)


Box = tuple[float, float, float, float]


def _rows(
    path: str, boxes: list[Box], size: tuple[int, int], source: str, polygons: list[str] | None = None
) -> list[dict]:
    """Rows of the boxes table for one film."""
    polygons = polygons or [""] * len(boxes)
    return [
        {
            "path": path,
            "x0": b[0],
            "y0": b[1],
            "x1": b[2],
            "y1": b[3],
            "width": size[0],
            "height": size[1],
            "source": source,
            "polygon": polygon,
        }
        for b, polygon in zip(boxes, polygons, strict=True)
    ]


def _warn_unmatched(warn: Warn, what: str, unmatched: list[str]) -> None:
    if unmatched:
        warn(
            f"{len(unmatched)} {what} name films that are not in the index, left out (first: {unmatched[0]})"
        )


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(BOX_COLUMNS)) if rows else empty_boxes()


def read_yolo_folder(folder: str | Path, films: FilmMatcher, warn: Warn) -> pd.DataFrame:
    """YOLO labels (`<image stem>.txt`, lines `class cx cy w h` normalised to the upright picture)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MuraError(f"{folder}: YOLO label folder not found; give the folder of <image>.txt files")
    rows: list[dict] = []
    unmatched: list[str] = []
    for label_file in sorted(folder.rglob("*.txt")):
        relative = label_file.relative_to(folder).as_posix()
        lines = [line.split() for line in label_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines:
            continue
        if any(len(fields) < 5 for fields in lines):
            raise MuraError(f"{label_file}: a YOLO line needs `class cx cy w h`; fix or remove the file")
        film = films.by_label_file(relative)
        if film is None:
            unmatched.extend([relative] * len(lines))
            continue
        width, height = upright_size(film)
        boxes = []
        for fields in lines:
            cx, cy, w, h = (float(v) for v in fields[1:5])
            boxes.append(
                ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
            )
        rows += _rows(film, boxes, (width, height), "yolo")
    _warn_unmatched(warn, "YOLO boxes", unmatched)
    return _frame(rows)


def read_coco_json(path: str | Path, films: FilmMatcher, warn: Warn) -> pd.DataFrame:
    """COCO annotations (`bbox` = x, y, w, h in pixels of the upright picture; polygons kept as JSON)."""
    path = Path(path)
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
        images = {image["id"]: image for image in coco["images"]}
        annotations = coco["annotations"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise MuraError(
            f"{path}: not a readable COCO JSON file ({exc}); give a COCO annotation file"
        ) from None
    rows: list[dict] = []
    unmatched: list[str] = []
    rescaled: list[str] = []
    for note in annotations:
        image = images.get(note.get("image_id"))
        if image is None or "bbox" not in note:
            raise MuraError(f"{path}: annotation {note.get('id')} has no bbox or no image; fix the file")
        film = films.by_file_name(str(image["file_name"]))
        if film is None:
            unmatched.append(str(image["file_name"]))
            continue
        width, height = upright_size(film)
        sx, sy = width / float(image.get("width") or width), height / float(image.get("height") or height)
        if (sx, sy) != (1.0, 1.0):
            rescaled.append(film)
        x, y, w, h = (float(v) for v in note["bbox"])
        polygons = note.get("segmentation")
        polygon = ""
        if isinstance(polygons, list) and polygons:
            polygon = json.dumps([[round(v * (sx, sy)[i % 2], 2) for i, v in enumerate(p)] for p in polygons])
        rows += _rows(
            film, [(x * sx, y * sy, (x + w) * sx, (y + h) * sy)], (width, height), "coco", [polygon]
        )
    _warn_unmatched(warn, "COCO boxes", unmatched)
    if rescaled:
        warn(
            f"{len(set(rescaled))} films differ in size from their COCO entry; their boxes were scaled "
            f"to the file (first: {rescaled[0]})"
        )
    return _frame(rows)


def read_boxes_csv(path: str | Path, films: FilmMatcher, warn: Warn) -> pd.DataFrame:
    """Boxes in our own CSV layout (what `mura synth` writes; `path` relative to the data set root)."""
    table = pd.read_csv(path, dtype={"path": str, "source": str, "polygon": str}, keep_default_na=False)
    missing = [c for c in ("path", *COORDINATES) if c not in table.columns]
    if missing:
        raise MuraError(f"{path}: boxes CSV lacks columns {missing}; expected {list(BOX_COLUMNS)}")
    rows: list[dict] = []
    unmatched: list[str] = []
    for record in table.to_dict("records"):
        film = films.by_file_name(record["path"])
        if film is None:
            unmatched.append(record["path"])
            continue
        size = (int(record["width"]), int(record["height"])) if "width" in record else upright_size(film)
        box = tuple(float(record[c]) for c in COORDINATES)
        rows += _rows(film, [box], size, record.get("source") or "csv", [record.get("polygon", "")])
    _warn_unmatched(warn, "boxes", unmatched)
    return _frame(rows)


def load_boxes(
    films: FilmMatcher, warn: Warn, coco_json: str | Path | None = None, yolo_dir: str | Path | None = None
) -> pd.DataFrame | None:
    """Boxes from a COCO file and / or a YOLO folder; given both, they are checked against each other
    (a film's boxes agree when counts match and every edge is within `AGREEMENT_PX`) and COCO's are kept,
    since only COCO carries polygons. None when neither is given."""
    coco = read_coco_json(coco_json, films, warn) if coco_json else None
    yolo = read_yolo_folder(yolo_dir, films, warn) if yolo_dir else None
    if coco is not None and yolo is not None:
        problems = box_disagreements(coco, yolo)
        if problems:
            warn(f"{len(problems)} films' YOLO and COCO boxes disagree, COCO kept (first: {problems[0]})")
    return coco if coco is not None else yolo


def fracatlas_boxes(root: Path, films: FilmMatcher, warn: Warn) -> pd.DataFrame | None:
    """FracAtlas's own annotations (`Annotations/YOLO`, `Annotations/COCO JSON`), where present."""
    yolo_dir, coco_file = root / FRACATLAS_YOLO, root / FRACATLAS_COCO
    return load_boxes(
        films, warn, coco_file if coco_file.is_file() else None, yolo_dir if yolo_dir.is_dir() else None
    )
