"""Findings in the DICOM results: the SR holds one planar ROI group per finding (its box as SCOORD on the
source instance, its score and operating point), read back with highdicom where it was predicted and
valid for dciodvfy; each Secondary Capture shows the boxes (solid = definite, dotted = suspicious).
Today's checkpoints have no map head, so the model answers with a fixed map: two regions of an 8 x 8
map over its 32 px input, one strong (definite), one weak (suspicious)."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
import torch

from mura.constants import BODY_PARTS
from mura.inference.predictor import Predictor
from mura.outputs import ModelOutput
from mura.pacs.capture import legible
from mura.pacs.sr import sr_summary
from mura.pacs.study import study_results

GOOD = ("1.dcm", "2.dcm", "3.dcm")
DEFINITE_CELLS = (slice(2, 4), slice(2, 6))  # rows, cols of the map
SUSPICIOUS_CELLS = (slice(6, 8), slice(1, 3))


class FixedMap(torch.nn.Module):
    """Fracture margin 4 (p = 0.98) and a map with a strong and a weak region."""

    def forward(self, image: torch.Tensor, body_part: torch.Tensor) -> ModelOutput:
        batch = len(image)
        fracture_map = torch.full((batch, 1, 8, 8), -5.0)
        fracture_map[:, :, DEFINITE_CELLS[0], DEFINITE_CELLS[1]] = 5.0
        fracture_map[:, :, SUSPICIOUS_CELLS[0], SUSPICIOUS_CELLS[1]] = 0.5
        logits = torch.tensor([[0.0, 4.0]]).repeat(batch, 1)
        return ModelOutput(logits, torch.zeros(batch, len(BODY_PARTS)), fracture_map=fracture_map)


@pytest.fixture(scope="module")
def made(make_checkpoint, study_dir: Path):
    points = {"default": 0.5, "suspicious": 0.3, "definite": 0.8}
    checkpoint = make_checkpoint("dicom_findings.pt", "custom_cnn", 32, seed=3, threshold=points)
    predictor = Predictor.from_checkpoints([checkpoint], device="cpu", runtime="torch")
    predictor.members[0].model = FixedMap()
    return study_results(predictor, [study_dir / name for name in GOOD])


def expected_box(cells: tuple[slice, slice], width: int, height: int) -> tuple[float, ...]:
    rows, cols = cells
    return (cols.start * width / 8, rows.start * height / 8, cols.stop * width / 8, rows.stop * height / 8)


def test_every_view_has_a_definite_and_a_suspicious_finding_in_its_pixels(made) -> None:
    for view in made.views:
        height, width = view.pixels.shape
        found = {f.operating_point: f.box for f in view.prediction.findings}
        assert found["definite"] == pytest.approx(expected_box(DEFINITE_CELLS, width, height), abs=0.1)
        assert found["suspicious"] == pytest.approx(expected_box(SUSPICIOUS_CELLS, width, height), abs=0.1)


def test_the_sr_holds_each_finding_on_its_source_instance(made, tmp_path, assert_valid) -> None:
    summary = sr_summary(made.sr)
    expected = {
        (str(v.header.SOPInstanceUID), f.operating_point): f
        for v in made.views
        for f in v.prediction.findings
    }
    read = {(f["source"], f["operating_point"]): f for f in summary["findings"]}
    assert set(read) == set(expected) and len(read) == 2 * len(GOOD)
    for key, finding in expected.items():
        assert read[key]["box"] == pytest.approx(finding.box, abs=0.01)
        assert read[key]["score"] == pytest.approx(finding.score, abs=1e-6)
    (path,) = [p for p in made.write(tmp_path) if p.name.startswith("SR_")]
    assert_valid([path])


def test_each_capture_shows_the_boxes_solid_and_dotted(made) -> None:
    for view, capture in zip(made.views, made.captures, strict=True):
        pixels = pydicom.dcmread(pydicom.filebase.DicomBytesIO(_bytes(capture))).pixel_array.astype(int)
        film = legible(view.pixels)
        top = pixels.shape[0] - film.shape[0]  # the banner above the film
        scale = film.shape[1] / view.pixels.shape[1]
        found = {f.operating_point: [round(c * scale) for c in f.box] for f in view.prediction.findings}
        edges = {op: pixels[top + y0, x0 + 4 : x1 - 4] for op, (x0, y0, x1, _) in found.items()}
        assert (edges["definite"] > 200).mean() > 0.95  # solid: white all along
        dotted = (edges["suspicious"] > 200).mean()
        assert 0.3 < dotted < 0.8  # dashes and gaps
        inside = pixels[top + found["definite"][1] + 8, found["definite"][0] + 8]
        film_inside = film[found["definite"][1] + 8, found["definite"][0] + 8]
        assert abs(int(inside) - int(film_inside)) < 30  # the film is not painted over inside the box


def _bytes(ds: pydicom.Dataset) -> bytes:
    from mura.pacs.results import dataset_bytes

    return dataset_bytes(ds)
