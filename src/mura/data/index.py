"""The index: one CSV row per image, the single input every later step reads.

`build_mura_index` reads MURA-v1.1 exactly as Stanford ships it (headerless CSVs of `MURA-v1.1/...`
paths), or walks the tree when the CSVs are absent. Labels come from the `study*_positive` folder names
and are cross-checked against the labeled-studies CSV, since a silent disagreement would poison
training. Junk (`._*`, `.DS_Store`, non-images) is skipped and counted; missing listed images are
reported.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mura.atomic import atomic_path
from mura.constants import BODY_PARTS, INDEX_COLUMNS, SPLITS
from mura.data.annotations import SYNTH_BOXES, FilmMatcher, load_boxes, read_boxes_csv
from mura.data.boxes import check_boxes
from mura.data.splits import split_train_val
from mura.errors import MuraError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
MURA_DIR = "MURA-v1.1"
MURA_SPLITS = {"train": "train", "valid": "test"}  # MURA's valid is our held-out test set
_IMAGE_PATH = re.compile(
    r"^(?:.*/)?(?P<split>train|valid)/XR_(?P<part>[A-Z]+)/(?P<patient>patient\d+)/"
    r"(?P<study>study\d+_(?P<kind>positive|negative))/(?P<image>[^/]+)$"
)
STRING_COLUMNS = ("path", "split", "body_part", "patient_id", "study_id", "source")


@dataclass
class IndexReport:
    """What indexing found besides the rows: skipped junk, missing files, warnings for the user, and the
    films' boxes (`mura.data.annotations.BOX_COLUMNS`) when the data set carries localisation."""

    junk_skipped: int = 0
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    boxes: pd.DataFrame | None = None

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning(message)

    def keep_boxes(self, frame: pd.DataFrame, boxes: pd.DataFrame | None) -> None:
        """Check boxes against the rows (each inconsistency one warning) and keep what is consistent."""
        if boxes is not None:
            self.boxes = check_boxes(frame, boxes, self.warn)


def is_junk(name: str) -> bool:
    """macOS litter and anything that is not an image file by its name."""
    return name.startswith("._") or name.startswith(".") or not name.lower().endswith(IMAGE_SUFFIXES)


def locate_mura(root: str | Path) -> Path:
    """The MURA-v1.1 directory, whether `root` is it or its parent."""
    root = Path(root).expanduser()
    if not root.exists():
        raise MuraError(f"{root}: no such directory")
    if not root.is_dir():
        raise MuraError(f"{root}: not a directory")
    if (root / MURA_DIR).is_dir():
        return (root / MURA_DIR).resolve()
    if (root / "train").is_dir() or (root / "valid").is_dir() or (root / "train_image_paths.csv").exists():
        return root.resolve()
    raise MuraError(f"{root}: no {MURA_DIR}/ inside and no train/ or valid/ folders (is this MURA?)")


def _read_lines(path: Path, columns: list[str]) -> pd.DataFrame:
    """Read a Stanford CSV: no header. A header row that someone added is recognised and dropped."""
    try:
        frame = pd.read_csv(path, header=None, names=columns, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise MuraError(f"{path}: cannot parse CSV ({exc})") from None
    if len(frame) and "/" not in frame.iloc[0, 0]:
        frame = frame.iloc[1:]
    return frame


def _walk_images(split_dir: Path, report: IndexReport) -> list[str]:
    """All image files below `split_dir` as `MURA-v1.1/<split>/...` strings, junk skipped and counted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(split_dir):
        dirnames.sort()
        rel = Path(dirpath).relative_to(split_dir.parent)
        for name in sorted(filenames):
            if is_junk(name):
                report.junk_skipped += 1
            else:
                found.append(f"{MURA_DIR}/{(rel / name).as_posix()}")
    return found


def _mura_rows(listed: list[str], mura_dir: Path, report: IndexReport, source: str) -> list[dict]:
    rows = []
    for rel in listed:
        name = rel.rsplit("/", 1)[-1]
        if is_junk(name):
            report.junk_skipped += 1
            continue
        match = _IMAGE_PATH.match(rel)
        if not match or match["part"] not in BODY_PARTS:
            report.warn(f"skipped {rel}: not a MURA image path (split/XR_PART/patientN/studyK_label/file)")
            continue
        path = mura_dir / rel.split("/", 1)[1] if rel.startswith(f"{MURA_DIR}/") else mura_dir / rel
        if not path.is_file():
            report.missing.append(str(path))
            continue
        number = re.search(r"(\d+)", name)
        study_id = f"{MURA_DIR}/{match['split']}/XR_{match['part']}/{match['patient']}/{match['study']}/"
        rows.append(
            {
                "path": str(path),
                "split": MURA_SPLITS[match["split"]],
                "body_part": match["part"],
                "patient_id": match["patient"],
                "study_id": study_id,
                "label": int(match["kind"] == "positive"),
                "view": int(number.group(1)) - 1 if number else 0,
                "source": source,
                "mura_split": match["split"],
            }
        )
    return rows


def _cross_check(rows: list[dict], labeled: dict[str, int], csv_path: Path, report: IndexReport) -> None:
    """Folder-name label vs labeled-studies CSV: a disagreement is an error naming the study."""
    unlabeled = set()
    for row in rows:
        expected = labeled.get(row["study_id"])
        if expected is None:
            unlabeled.add(row["study_id"])
        elif expected != row["label"]:
            raise MuraError(
                f"{csv_path.name}: study {row['study_id']} is labelled {expected} but its folder says "
                f"{row['label']} ({'positive' if row['label'] else 'negative'})"
            )
    if unlabeled:
        report.warn(
            f"{len(unlabeled)} studies are not in {csv_path.name}; using their folder names "
            f"(first: {sorted(unlabeled)[0]})"
        )


def build_mura_index(
    root: str | Path,
    split_unit: str = "patient",
    val_fraction: float = 0.2,
    seed: int = 0,
    coco_json: str | Path | None = None,
    yolo_dir: str | Path | None = None,
) -> tuple[pd.DataFrame, IndexReport]:
    """Index a MURA-v1.1 tree (real or synthetic); returns the rows and what was skipped.

    Boxes come from `coco_json` / `yolo_dir` when given, else from the `boxes.csv` that `mura synth`
    writes beside its tree (the findings it planted)."""
    mura_dir = locate_mura(root)
    source = "synthetic" if (mura_dir / "synthetic.json").exists() else "mura"
    report = IndexReport()
    rows: list[dict] = []
    n_listed = 0
    for mura_split in MURA_SPLITS:
        paths_csv = mura_dir / f"{mura_split}_image_paths.csv"
        split_dir = mura_dir / mura_split
        if paths_csv.exists():
            listed = _read_lines(paths_csv, ["path"])["path"].str.strip().tolist()
            if split_dir.is_dir():
                on_disk = set(_walk_images(split_dir, report))
                unlisted = on_disk.difference(listed)
                if unlisted:
                    report.warn(
                        f"{len(unlisted)} images under {split_dir} are not listed in "
                        f"{paths_csv.name} and were ignored (first: {sorted(unlisted)[0]})"
                    )
        elif split_dir.is_dir():
            listed = _walk_images(split_dir, report)
        else:
            continue
        n_listed += len(listed)
        split_rows = _mura_rows(listed, mura_dir, report, source)
        labels_csv = mura_dir / f"{mura_split}_labeled_studies.csv"
        if labels_csv.exists():
            labeled = _read_lines(labels_csv, ["study", "label"])
            mapping = {}
            for study, label in zip(labeled["study"].str.strip(), labeled["label"].str.strip(), strict=True):
                if label not in ("0", "1"):
                    raise MuraError(f"{labels_csv}: study {study} has label {label!r}, expected 0 or 1")
                mapping[study if study.endswith("/") else study + "/"] = int(label)
            _cross_check(split_rows, mapping, labels_csv, report)
        rows.extend(split_rows)
    if report.missing:
        if not rows:
            raise MuraError(
                f"{mura_dir}: all {len(report.missing)} listed images are missing "
                f"(first: {report.missing[0]}); do the CSVs belong to this tree?"
            )
        report.warn(
            f"{len(report.missing)} listed images are missing and were left out "
            f"(first: {', '.join(report.missing[:3])})"
        )
    if not rows:
        raise MuraError(f"{mura_dir}: no images found ({n_listed} listed, {report.junk_skipped} junk files)")
    frame = pd.DataFrame(rows)
    train = frame["split"] == "train"
    frame.loc[train, "split"] = split_train_val(frame[train], split_unit, val_fraction, seed)
    films = FilmMatcher(frame["path"].tolist())
    boxes = load_boxes(films, report.warn, coco_json, yolo_dir)
    if boxes is None and (mura_dir / SYNTH_BOXES).is_file():
        boxes = read_boxes_csv(mura_dir / SYNTH_BOXES, films, report.warn)
    report.keep_boxes(frame, boxes)
    return frame, report


def write_index(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write the index CSV atomically (`mura.atomic`: a crash leaves the old file or the new one)."""
    missing = [c for c in INDEX_COLUMNS if c not in frame.columns]
    if missing:
        raise MuraError(f"index is missing columns {missing}")
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def check_index_target(path: str | Path) -> None:
    """`mura index --out` may replace an index it wrote (same header), never another file."""
    path = Path(path)
    if path.is_dir():
        raise MuraError(f"{path}: is a folder; give a CSV file name")
    if not path.exists():
        return
    try:
        with open(path, encoding="utf-8") as handle:
            header = handle.readline().strip().split(",")
    except (OSError, UnicodeDecodeError):
        header = []
    if not set(INDEX_COLUMNS) <= set(header):
        raise MuraError(f"{path}: exists and is not a mura index; nothing was written, choose another name")


def read_index(path: str | Path) -> pd.DataFrame:
    """Read and validate an index CSV written by `mura index` (or by hand with the same columns)."""
    path = Path(path)
    if not path.is_file():
        raise MuraError(f"{path}: index file not found (create it with `mura index`)")
    try:
        frame = pd.read_csv(path, dtype={c: str for c in STRING_COLUMNS}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MuraError(f"{path}: not a readable index CSV ({exc})") from None
    missing = [c for c in INDEX_COLUMNS if c not in frame.columns]
    if missing:
        raise MuraError(f"{path}: missing index columns {missing} (has {list(frame.columns)})")
    if frame.empty:
        raise MuraError(f"{path}: the index has no rows")
    if "source" not in frame.columns:
        frame["source"] = ""
    bad_split = sorted(set(frame["split"]) - set(SPLITS))
    if bad_split:
        raise MuraError(f"{path}: unknown split values {bad_split} (expected {list(SPLITS)})")
    labels = pd.to_numeric(frame["label"], errors="coerce")
    if labels.isna().any() or not labels.isin([0, 1]).all():
        bad = frame.loc[~labels.isin([0, 1]), "path"].iloc[0]
        raise MuraError(f"{path}: label must be 0 or 1 (row for {bad})")
    frame["label"] = labels.astype(int)
    frame["view"] = pd.to_numeric(frame["view"], errors="coerce").fillna(0).astype(int)
    bad_parts = sorted(set(frame["body_part"]) - set(BODY_PARTS) - {""})
    if bad_parts:
        raise MuraError(f"{path}: unknown body parts {bad_parts} (expected {list(BODY_PARTS)} or empty)")
    return frame


def distribution_table(frame: pd.DataFrame) -> str:
    """The spec's Figure 1 as text: images and studies, normal/abnormal, per body part and split."""
    parts = frame["body_part"].replace("", "UNKNOWN")
    lines = [
        f"{'split':<6} {'body part':<10} {'images':>7} {'normal':>7} {'abnorm':>7} {'studies':>8} "
        f"{'normal':>7} {'abnorm':>7}"
    ]
    for split in [s for s in SPLITS if (frame["split"] == s).any()] + ["all"]:
        chosen = frame if split == "all" else frame[frame["split"] == split]
        chosen_parts = parts[chosen.index]
        for part in [*sorted(chosen_parts.unique()), "ALL"]:
            sub = chosen if part == "ALL" else chosen[chosen_parts == part]
            studies = sub.groupby("study_id")["label"].max()
            abnormal = int(sub["label"].sum())
            lines.append(
                f"{split:<6} {part:<10} {len(sub):>7} {len(sub) - abnormal:>7} {abnormal:>7} "
                f"{len(studies):>8} {(studies == 0).sum():>7} {(studies == 1).sum():>7}"
            )
    return "\n".join(lines)
