"""The scope gate's layers on real files: pydicom's CT and MR, matplotlib's photograph, generated blanks
and noise, FracAtlas films as they are and wrapped as DX, CR and CT, and named body parts."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import matplotlib.cbook as cbook
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
)

from mura.constants import MURA_BODY_PARTS
from mura.data.folders import build_folder_index
from mura.data.images import read_image
from mura.data.synth import render_image
from mura.inference.scope import ModelScope, reason_layer, scope_reasons
from mura.inference.scope_parts import PART_WORDS, named_parts
from mura.training.scope import FRACATLAS_REGION_PARTS, trained_parts
from tests.factories.dicom import dicom_bytes, dicom_dataset, twelve_bit

MURA_SCOPE = ModelScope(frozenset(MURA_BODY_PARTS))
FRACATLAS_SCOPE = ModelScope(frozenset(p for parts in FRACATLAS_REGION_PARTS.values() for p in parts))


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(pixels: np.ndarray, quality: int = 75) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def reasons_of(source: Path | bytes, scope: ModelScope = MURA_SCOPE) -> list[str]:
    return scope_reasons(read_image(source), scope)


def layers(reasons: list[str]) -> set[str]:
    return {reason_layer(r) for r in reasons}


@pytest.fixture(scope="module")
def film(fracatlas_dir: Path) -> np.ndarray:
    """A real FracAtlas leg film, decoded."""
    return read_image(next((fracatlas_dir / "images").rglob("IMG0000001.jpg"))).pixels


def wrapped(pixels: np.ndarray, **fields) -> bytes:
    return dicom_bytes(dicom_dataset(twelve_bit(pixels), **fields))


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_pydicoms_ct_and_mr_are_refused_by_their_dicom_header(name: str) -> None:
    modality = name[:2]
    reasons = reasons_of(Path(get_testdata_file(name)))
    assert any(r.startswith(f"dicom: Modality {modality} is not projection radiography") for r in reasons)
    assert any(r.startswith("dicom: SOP class") for r in reasons)


def test_a_colour_photograph_is_refused_by_the_pixel_layer() -> None:
    reasons = reasons_of(Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    assert layers(reasons) == {"pixels"} and "colour picture" in reasons[0]


def test_grey_saved_as_rgb_or_under_a_uniform_cast_is_not_colour_but_photographs_are(
    film: np.ndarray,
) -> None:
    rgb_grey = np.repeat(film[..., None], 3, axis=2)
    cast = np.clip(rgb_grey.astype(int) + np.array([0, 6, 20]), 0, 255).astype(np.uint8)  # a bluish cast
    assert read_image(jpeg(rgb_grey)).colour_fraction < 0.01
    assert reasons_of(jpeg(cast)) == []
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"):
        with Image.open(cbook.get_sample_data(name, asfileobj=False)) as image:
            photo = np.asarray(image.convert("RGB"))
        assert layers(reasons_of(jpeg(photo))) == {"pixels"}, name


GENERATED = {
    "black": lambda rng: np.zeros((300, 400), np.uint8),
    "white": lambda rng: np.full((300, 400), 255, np.uint8),
    "mid grey": lambda rng: np.full((400, 300), 128, np.uint8),
    "black with faint noise": lambda rng: np.clip(rng.normal(5, 3, (300, 400)), 0, 255).astype(np.uint8),
    "uniform noise": lambda rng: rng.integers(0, 256, (512, 512), dtype=np.uint8),
    "gaussian noise": lambda rng: np.clip(rng.normal(128, 40, (400, 300)), 0, 255).astype(np.uint8),
    "salt and pepper": lambda rng: (rng.random((400, 400)) > 0.5).astype(np.uint8) * 255,
    "large noise": lambda rng: rng.integers(0, 256, (2000, 1500), dtype=np.uint8),
    "colour noise": lambda rng: rng.integers(0, 256, (300, 300, 3), dtype=np.uint8),
}


@pytest.mark.parametrize("kind", sorted(GENERATED))
@pytest.mark.parametrize("encode", [png, jpeg], ids=["png", "jpeg"])
def test_generated_blanks_and_noise_are_refused_by_the_pixel_layer(
    kind: str, encode: Callable[[np.ndarray], bytes]
) -> None:
    reasons = reasons_of(encode(GENERATED[kind](np.random.default_rng(0))))
    assert reasons and layers(reasons) == {"pixels"}


def test_a_fracatlas_film_wrapped_as_dx_or_cr_is_in_scope_and_as_ct_is_refused_by_its_modality(
    film: np.ndarray,
) -> None:
    assert reasons_of(wrapped(film, body_part="LEG"), FRACATLAS_SCOPE) == []
    cr = wrapped(film, modality="CR", sop_class=ComputedRadiographyImageStorage, body_part="KNEE")
    assert reasons_of(cr, FRACATLAS_SCOPE) == []
    ct = reasons_of(wrapped(film, modality="CT", sop_class=CTImageStorage), FRACATLAS_SCOPE)
    assert [r.split(" is not")[0] for r in ct] == ["dicom: SOP class CT Image Storage", "dicom: Modality CT"]


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"sop_class": DigitalXRayImageStorageForProcessing}, "raw detector values"),
        ({"modality": "MG", "sop_class": DigitalMammographyXRayImageStorageForPresentation}, "Modality MG"),
        ({"modality": "OT", "sop_class": SecondaryCaptureImageStorage}, "Secondary Capture"),
        ({"modality": "RF"}, "Modality RF"),
    ],
)
def test_x_ray_images_that_are_no_limb_radiograph_as_displayed_are_refused(
    film: np.ndarray, fields: dict, why: str
) -> None:
    reasons = reasons_of(wrapped(film, body_part="WRIST", **fields))
    assert reasons and layers(reasons) == {"dicom"} and any(why in r for r in reasons)


def test_a_named_body_part_outside_the_models_scope_is_refused(film: np.ndarray) -> None:
    (knee,) = reasons_of(wrapped(film, body_part="KNEE"), MURA_SCOPE)
    assert knee.startswith("dicom: BodyPartExamined KNEE is not one of the parts this model was trained on")
    assert "WRIST" in knee  # the reason names what the model does judge
    chest = wrapped(film, body_part=None, StudyDescription="XR CHEST PA AND LAT")
    assert reasons_of(chest, FRACATLAS_SCOPE)[0].startswith("dicom: StudyDescription XR CHEST")
    # BodyPartExamined decides before the description; a field naming no known part decides nothing
    assert reasons_of(wrapped(film, body_part="WRIST", StudyDescription="XR KNEE"), MURA_SCOPE) == []
    assert reasons_of(wrapped(film, body_part="EXTREMITY", StudyDescription="XR 3V"), MURA_SCOPE) == []


def test_header_words_name_parts_as_a_reader_means_them() -> None:
    assert named_parts("XR WRIST AND HAND 3V LT") == {"WRIST", "HAND"}
    assert named_parts("C-SPINE") == {"SPINE"} and named_parts("XR_KNEE") == {"KNEE"}
    assert named_parts("lower leg") == {"LEG"} and named_parts("TIB FIB") == {"LEG"}
    assert named_parts("radial head") == frozenset()  # HEAD is left out: it is part of a limb here
    assert named_parts("") == frozenset() and named_parts(None) == frozenset()


def test_every_part_training_records_is_a_name_the_gate_knows() -> None:
    recorded = {p for parts in FRACATLAS_REGION_PARTS.values() for p in parts} | set(MURA_BODY_PARTS)
    assert recorded <= set(PART_WORDS)


def test_an_ensemble_judges_only_the_parts_every_member_was_trained_on() -> None:
    class Member:
        def __init__(self, parts):
            self.info = {"scope_parts": parts}

    scope = ModelScope.of_members([Member(["WRIST", "HAND"]), Member(["HAND", "KNEE"])])
    assert scope.parts == {"HAND"}
    assert ModelScope.of_members([Member(None)]).parts == set(MURA_BODY_PARTS)  # older checkpoint


def test_real_films_pass_layers_one_and_two(fracatlas_dir: Path, film: np.ndarray) -> None:
    """Every 8th FracAtlas film (353 of 2,826; the benchmark runs all), as a JPEG and wrapped as DX with
    its region, and synthetic films of every MURA part at full size and at cache size."""
    frame, _ = build_folder_index(fracatlas_dir)
    parts, _ = trained_parts(frame, ["train", "val", "test"])
    scope = ModelScope(frozenset(parts))
    refused = []
    for row in frame.iloc[::8].itertuples():
        reasons = reasons_of(Path(row.path), scope)
        if row.Index % 64 == 0:  # the DICOM wrapping costs more: every 64th
            region = row.region.split("+")[0].upper()
            reasons += reasons_of(wrapped(read_image(Path(row.path)).pixels, body_part=region), scope)
        if reasons:
            refused.append((row.path, reasons))
    assert refused == []
    for part in MURA_BODY_PARTS:
        for seed in range(3):
            image = render_image(part, seed % 2 == 0, [seed, 1, 1], seed)
            small = np.asarray(Image.fromarray(image).resize((32, 32), Image.BILINEAR))
            assert reasons_of(png(image)) == [] and reasons_of(png(small)) == [], (part, seed)


def test_training_records_the_parts_its_data_covered(fracatlas_dir: Path) -> None:
    frame, _ = build_folder_index(fracatlas_dir)
    parts, source = trained_parts(frame, ["train", "val"])
    assert {"KNEE", "ANKLE", "HIP", "PELVIS", "WRIST", "ELBOW", "SHOULDER"} <= set(parts)
    assert "CHEST" not in parts and "training index" in source
    mura = pd.DataFrame({"split": ["train", "val", "test"], "body_part": ["WRIST", "ELBOW", "FINGER"]})
    assert trained_parts(mura, ["train", "val"])[0] == ("ELBOW", "WRIST")
    unnamed = mura.assign(body_part="")
    parts, source = trained_parts(unnamed, ["train"])
    assert parts == MURA_BODY_PARTS and "MURA's seven parts assumed" in source
