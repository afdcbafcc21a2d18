"""Indexing MURA-v1.1 as Stanford ships it (checked on the synthetic tree, which has the same layout)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from mura.constants import INDEX_COLUMNS, MURA_BODY_PARTS
from mura.data.index import build_mura_index, read_index, write_index
from mura.errors import MuraError


def _csv_lines(root: Path, name: str) -> list[str]:
    return (root / "MURA-v1.1" / name).read_text().splitlines()


@pytest.fixture()
def tree_copy(synthetic_mura, tmp_path: Path) -> Path:
    shutil.copytree(synthetic_mura.root, tmp_path / "data")
    return tmp_path / "data"


def test_index_matches_the_csvs(synthetic_mura) -> None:
    frame = read_index(synthetic_mura.index_csv)
    train_paths, valid_paths = (
        _csv_lines(synthetic_mura.root, f"{s}_image_paths.csv") for s in ("train", "valid")
    )
    assert len(frame) == len(train_paths) + len(valid_paths)
    assert (frame["split"] == "test").sum() == len(valid_paths)  # MURA valid is our test set
    assert set(frame["split"]) == {"train", "val", "test"}
    assert list(frame.columns[: len(INDEX_COLUMNS)]) == list(INDEX_COLUMNS)
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in frame["path"])
    assert set(frame["body_part"]) == set(MURA_BODY_PARTS)
    assert (frame["source"] == "synthetic").all()
    # labels: from the folder names, equal to the labeled-studies CSV
    studies = dict(
        line.rsplit(",", 1)
        for s in ("train", "valid")
        for line in _csv_lines(synthetic_mura.root, f"{s}_labeled_studies.csv")
    )
    for row in frame.itertuples():
        assert int(studies[row.study_id]) == row.label
        assert row.study_id.startswith(
            f"MURA-v1.1/{'valid' if row.split == 'test' else 'train'}/XR_{row.body_part}/"
        )
        assert row.path.endswith(f"image{row.view + 1}.png")
        assert row.label == (1 if "_positive/" in row.study_id else 0)


def test_patient_split_is_disjoint_and_near_the_fraction(synthetic_mura) -> None:
    frame = read_index(synthetic_mura.index_csv)
    patients = frame.groupby("patient_id")["split"].nunique()
    assert (patients == 1).all()
    train_val = frame[frame["split"] != "test"]
    assert 0.1 < (train_val["split"] == "val").mean() < 0.3


def test_image_split_reproduces_round_fraction(synthetic_mura) -> None:
    frame, _ = build_mura_index(synthetic_mura.root, split_unit="image", val_fraction=0.2, seed=3)
    n_train_folder = (frame["mura_split"] == "train").sum()
    assert (frame["split"] == "val").sum() == round(0.2 * n_train_folder)  # 7,362 of 36,808 on real MURA
    again, _ = build_mura_index(synthetic_mura.root, split_unit="image", val_fraction=0.2, seed=3)
    assert again["split"].tolist() == frame["split"].tolist()


def test_root_may_be_mura_dir_or_its_parent_and_junk_is_counted(synthetic_mura) -> None:
    parent, report = build_mura_index(synthetic_mura.root)
    inner, _ = build_mura_index(synthetic_mura.root / "MURA-v1.1")
    assert parent.equals(inner)
    junk = [p for p in (synthetic_mura.root / "MURA-v1.1").rglob("*") if p.name.startswith(".")]
    assert report.junk_skipped == len(junk) >= 2  # ._image1.png files and .DS_Store
    assert not parent["path"].str.contains("/\\._").any()


def test_tree_is_walked_without_csvs(tree_copy: Path, synthetic_mura) -> None:
    for csv in (tree_copy / "MURA-v1.1").glob("*.csv"):
        csv.unlink()
    walked, report = build_mura_index(tree_copy)
    listed = read_index(synthetic_mura.index_csv)
    assert len(walked) == len(listed) and report.junk_skipped >= 2
    assert sorted(walked["study_id"]) == sorted(listed["study_id"])
    assert walked["label"].sum() == listed["label"].sum()


def test_label_disagreement_is_an_error_naming_the_study(tree_copy: Path) -> None:
    csv = tree_copy / "MURA-v1.1" / "train_labeled_studies.csv"
    lines = csv.read_text().splitlines()
    study, label = lines[0].rsplit(",", 1)
    lines[0] = f"{study},{1 - int(label)}"
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(MuraError, match=study.replace("/", ".")):
        build_mura_index(tree_copy)


def test_missing_listed_images_are_reported(tree_copy: Path) -> None:
    listed = _csv_lines(tree_copy, "train_image_paths.csv")
    for rel in listed[:4]:
        (tree_copy / rel).unlink()
    frame, report = build_mura_index(tree_copy)
    assert len(report.missing) == 4
    assert str(tree_copy / listed[0]) in report.missing
    assert any("4 listed images are missing" in w for w in report.warnings)
    assert len(frame) == len(listed) + len(_csv_lines(tree_copy, "valid_image_paths.csv")) - 4


def test_write_and_read_index_roundtrip_and_validation(synthetic_mura, tmp_path: Path) -> None:
    frame = read_index(synthetic_mura.index_csv)
    out = write_index(frame, tmp_path / "sub" / "index.csv")
    again = read_index(out)
    pd.testing.assert_frame_equal(frame, again)
    assert again["patient_id"].iloc[0].startswith("patient0")  # ids stay strings, zeros kept
    frame.drop(columns="label").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(MuraError, match="missing index columns"):
        read_index(tmp_path / "bad.csv")
    frame.assign(split="valid").to_csv(tmp_path / "bad2.csv", index=False)
    with pytest.raises(MuraError, match="unknown split"):
        read_index(tmp_path / "bad2.csv")
    with pytest.raises(MuraError, match="not found"):
        read_index(tmp_path / "nothing.csv")
