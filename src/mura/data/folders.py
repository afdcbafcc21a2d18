"""Index real external data sets laid out as class folders (Kaggle style) or as FracAtlas ships.

Generic layout: `ROOT/.../[train|val|test/]<class>/*.jpg`, class names mapped to labels through
configurable positive/negative lists (case-insensitive, `_`/`-` read as spaces: `Non_fractured` is
`non fractured`). Split folders that exist are kept; missing val/test splits are carved from train in
blocks of consecutive file names (no patient ids exist, and neighbouring files are often one study).

FracAtlas (`images/{Fractured,Non_fractured}/` + `dataset.csv`): the CSV's `fractured` wins over the
folder, with a warning naming each file where they disagree. Body part: a film's region when it has
exactly one region flag, so the body-part head learns what FracAtlas really labels: `hand` -> HAND
(FracAtlas's hand films also show wrist, forearm or elbow: the region, not MURA's narrower part),
`shoulder` -> SHOULDER, `hip` -> HIP, `leg` -> LEG (the regions MURA lacks, appended to the
vocabulary in `mura.constants`). A film flagged with several regions ("mixed") gets no body part:
no one class is true of it, and a wrong part misleads a body-part-conditioned model more than none.
All other CSV columns stay in the index (hardware, views, multiscan, fracture_count, region flags).
FracAtlas's `Annotations/` (YOLO and COCO, checked against each other) give the films' fracture boxes;
any other folder data set takes boxes from a COCO JSON file or a YOLO folder the caller names.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from mura.constants import BODY_PARTS, body_part_index
from mura.data.annotations import FilmMatcher, fracatlas_boxes, load_boxes
from mura.data.index import IndexReport, is_junk
from mura.data.splits import split_blocks
from mura.errors import MuraError

DEFAULT_POSITIVE = ("fractured", "fracture", "abnormal", "positive")
DEFAULT_NEGATIVE = ("not fractured", "non fractured", "nonfractured", "no fracture", "normal", "negative")
SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
FRACATLAS_FLAGS = ("hand", "leg", "hip", "shoulder")
FRACATLAS_REGION_PART = {"hand": "HAND", "leg": "LEG", "hip": "HIP", "shoulder": "SHOULDER"}
FRACATLAS_EXTRAS = (
    "hand",
    "leg",
    "hip",
    "shoulder",
    "mixed",
    "hardware",
    "multiscan",
    "fracture_count",
    "frontal",
    "lateral",
    "oblique",
)


def normalize_class(name: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[_\-]", " ", name)).strip().lower()


def _class_map(positive: tuple[str, ...] | list[str], negative: tuple[str, ...] | list[str]) -> dict:
    mapping = {normalize_class(n): 0 for n in negative}
    for name in positive:
        key = normalize_class(name)
        if key in mapping:
            raise MuraError(f"class name {name!r} is listed as both positive and negative")
        mapping[key] = 1
    return mapping


def _with_splits(
    frame: pd.DataFrame,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    block_size: int,
    by_number: bool,
) -> pd.DataFrame:
    """Keep given splits; carve any missing val/test split out of train, in blocks of `block_key`."""
    split = frame["split"].copy()
    wanted = {"val": val_fraction, "test": test_fraction}
    carve = {name: f for name, f in wanted.items() if f > 0 and not (split == name).any()}
    train = split == "train"
    if carve and train.any():
        fractions = {"train": 1.0 - sum(carve.values()), **carve}
        names = frame.loc[train, "block_key"].tolist()
        split[train] = split_blocks(names, fractions, seed, block_size, by_number)
    return frame.assign(split=split).drop(columns="block_key")


def _frame(rows: list[dict], report: IndexReport, root: Path) -> pd.DataFrame:
    if not rows:
        example = f"{DEFAULT_POSITIVE[0]!r} / {DEFAULT_NEGATIVE[0]!r}"
        raise MuraError(
            f"{root}: no labelled images found (junk skipped: {report.junk_skipped}; "
            f"class folders must be named like {example})"
        )
    return pd.DataFrame(rows)


def _check_root(root: str | Path) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MuraError(f"{root}: no such directory")
    return root.resolve()


def build_fracatlas_index(
    root: Path,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    block_size: int,
    classes: dict[str, int],
    coco_json: str | Path | None = None,
    yolo_dir: str | Path | None = None,
) -> tuple[pd.DataFrame, IndexReport]:
    report = IndexReport()
    try:
        table = pd.read_csv(root / "dataset.csv")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MuraError(f"{root / 'dataset.csv'}: cannot parse ({exc})") from None
    if not {"image_id", "fractured"}.issubset(table.columns):
        raise MuraError(f"{root / 'dataset.csv'}: needs columns image_id and fractured")
    files: dict[str, tuple[Path, int | None]] = {}
    for dirpath, _, filenames in os.walk(root / "images"):
        folder_label = classes.get(normalize_class(Path(dirpath).name))
        for name in filenames:
            if is_junk(name):
                report.junk_skipped += 1
            else:
                files[name] = (Path(dirpath) / name, folder_label)
    rows, listed = [], set()
    for record in table.to_dict("records"):
        name = str(record["image_id"]).strip()
        listed.add(name)
        if name not in files:
            report.missing.append(str(root / "images" / name))
            continue
        path, folder_label = files[name]
        label = int(record["fractured"])
        if folder_label is not None and folder_label != label:
            report.warn(
                f"{name}: dataset.csv says fractured={label} but it lies in {path.parent.name}/; "
                "using dataset.csv"
            )
        flags = [f for f in FRACATLAS_FLAGS if int(record.get(f, 0) or 0) == 1]
        rows.append(
            {
                "path": str(path),
                "split": "train",
                "body_part": FRACATLAS_REGION_PART[flags[0]] if len(flags) == 1 else "",
                "patient_id": "",
                "study_id": f"fracatlas/{Path(name).stem}",
                "label": label,
                "view": 0,
                "source": "fracatlas",
                "region": "+".join(flags),
                "block_key": name,
                **{c: record[c] for c in FRACATLAS_EXTRAS if c in record},
            }
        )
    unlisted = sorted(set(files) - listed)
    if unlisted:
        report.warn(f"{len(unlisted)} images are not in dataset.csv and were left out (first: {unlisted[0]})")
    if report.missing:
        report.warn(
            f"{len(report.missing)} images listed in dataset.csv are missing "
            f"(first: {', '.join(report.missing[:3])})"
        )
    frame = _with_splits(_frame(rows, report, root), val_fraction, test_fraction, seed, block_size, True)
    films = FilmMatcher(frame["path"].tolist())
    given = coco_json is not None or yolo_dir is not None
    boxes = (
        load_boxes(films, report.warn, coco_json, yolo_dir)
        if given
        else fracatlas_boxes(root, films, report.warn)
    )
    report.keep_boxes(frame, boxes)
    return frame, report


def build_folder_index(
    root: str | Path,
    positive_classes: tuple[str, ...] | list[str] = DEFAULT_POSITIVE,
    negative_classes: tuple[str, ...] | list[str] = DEFAULT_NEGATIVE,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    block_size: int = 20,
    coco_json: str | Path | None = None,
    yolo_dir: str | Path | None = None,
) -> tuple[pd.DataFrame, IndexReport]:
    """Index a class-folder data set (or FracAtlas, detected by its dataset.csv + images/).

    Boxes come from `coco_json` / `yolo_dir` when given (checked against each other when both are),
    else, for FracAtlas, from its own `Annotations/`."""
    root = _check_root(root)
    classes = _class_map(positive_classes, negative_classes)
    if (root / "dataset.csv").is_file() and (root / "images").is_dir():
        splits = (val_fraction, test_fraction, seed, block_size)
        return build_fracatlas_index(root, *splits, classes, coco_json, yolo_dir)
    report = IndexReport()
    rows, unlabelled = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_parts = Path(dirpath).relative_to(root).parts
        normalized = [normalize_class(p) for p in rel_parts]
        label = next((classes[p] for p in reversed(normalized) if p in classes), None)
        split = next((SPLIT_FOLDERS[p] for p in reversed(normalized) if p in SPLIT_FOLDERS), None)
        parts = [BODY_PARTS[body_part_index(p)] for p in rel_parts if body_part_index(p) >= 0]
        part = parts[-1] if parts else ""
        for name in sorted(filenames):
            if is_junk(name):
                report.junk_skipped += 1
                continue
            rel = Path(*rel_parts, name).as_posix()
            if label is None:
                unlabelled.append(rel)
                continue
            rows.append(
                {
                    "path": str(Path(dirpath) / name),
                    "split": split or "train",
                    "body_part": part,
                    "patient_id": "",
                    "study_id": f"folders/{rel}",
                    "label": label,
                    "view": 0,
                    "source": "folders",
                    "block_key": rel,
                }
            )
    if unlabelled:
        report.warn(
            f"{len(unlabelled)} images are in no known class folder and were left out "
            f"(first: {unlabelled[0]}; see --positive-classes / --negative-classes)"
        )
    frame = _with_splits(_frame(rows, report, root), val_fraction, test_fraction, seed, block_size, False)
    films = FilmMatcher(frame["path"].tolist())
    report.keep_boxes(frame, load_boxes(films, report.warn, coco_json, yolo_dir))
    return frame, report
