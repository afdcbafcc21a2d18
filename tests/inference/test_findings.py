"""Findings from a fracture map: boxes in original pixels, graded at the image's operating points, from
every member (ensembles, flip TTA) and on every file answer. Today's checkpoints have no map head, so the
model here is a stand-in whose map is the film's own brightness (a bright patch is "the fracture")."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mura.constants import BODY_PARTS
from mura.inference.files import iter_file_predictions
from mura.inference.findings import MapGeometry, findings_from_map
from mura.inference.predictor import Predictor
from mura.outputs import ModelOutput
from mura.preprocessing import Preprocessing

POINTS = {"default": 0.5, "suspicious": 0.4, "definite": 0.8}
PATCH = (128, 32, 192, 64)  # x0, y0, x1, y1 of the bright patch on a 256 x 128 film


class BrightnessMap(torch.nn.Module):
    """A model with a map head: cells of the input that are mostly bright are fracture evidence; the
    image's fracture margin is fixed (`margin`), its body-part head uniform."""

    def __init__(self, margin: float, cell: int = 4) -> None:
        super().__init__()
        self.margin, self.cell = margin, cell

    def forward(self, image: torch.Tensor, body_part: torch.Tensor) -> ModelOutput:
        batch = len(image)
        logits = torch.tensor([[0.0, self.margin]]).repeat(batch, 1)
        evidence = torch.nn.functional.avg_pool2d(image, self.cell) * 10  # normalised: bright +1, dark -1
        return ModelOutput(logits, torch.zeros(batch, len(BODY_PARTS)), fracture_map=evidence)


def film(patch: tuple[int, int, int, int] = PATCH) -> np.ndarray:
    image = np.zeros((128, 256), np.uint8)
    x0, y0, x1, y1 = patch
    image[y0:y1, x0:x1] = 255
    return image


def with_map_head(predictor: Predictor, margin: float) -> Predictor:
    for member in predictor.members:
        member.model = BrightnessMap(margin)
    return predictor


@pytest.fixture(scope="module")
def graded(make_checkpoint):
    """`graded(size, resize_mode)`: a checkpoint storing suspicious 0.4 and definite 0.8."""

    def make(size: int = 32, resize_mode: str = "stretch"):
        name = f"graded{size}{resize_mode}.pt"
        return make_checkpoint(name, "custom_cnn", size, threshold=POINTS, resize_mode=resize_mode)

    return make


@pytest.mark.parametrize("resize_mode", ["stretch", "letterbox"])
def test_a_region_of_the_map_is_a_box_in_original_pixels(resize_mode: str) -> None:
    """An 8x8 map over a 32 px input of a 256 x 128 film: cells (rows 3, cols 4-5) go back where the
    resize took them, letterbox padding accounted for."""
    probability_map = np.zeros((8, 8))
    row = 3 if resize_mode == "letterbox" else 2  # letterbox: the 16 px high film starts 8 px down
    probability_map[row, 4:6] = 0.9
    geometry = MapGeometry(Preprocessing(32, resize_mode), 256, 128)
    (finding,) = findings_from_map(probability_map, geometry, 0.9, {"suspicious": 0.4, "definite": 0.8})
    expected_y = (32, 64) if resize_mode == "letterbox" else (32, 48)
    assert finding.box == pytest.approx((128, expected_y[0], 192, expected_y[1]))
    assert finding.score == pytest.approx(0.81)  # image probability x region peak: never above the image
    assert finding.operating_point == "definite"


def test_findings_are_graded_at_the_image_points_and_dropped_below_them() -> None:
    probability_map = np.zeros((8, 8))
    probability_map[1, 1], probability_map[5, 5:7] = 0.6, [0.95, 0.7]
    geometry = MapGeometry(Preprocessing(32), 64, 64)
    points = {"suspicious": 0.4, "definite": 0.8}
    found = findings_from_map(probability_map, geometry, 0.9, points)
    assert [(f.operating_point, round(f.score, 3)) for f in found] == [
        ("definite", 0.855),
        ("suspicious", 0.54),
    ]
    assert [f.box for f in found] == [(40.0, 40.0, 56.0, 48.0), (8.0, 8.0, 16.0, 16.0)]
    assert [f.operating_point for f in findings_from_map(probability_map, geometry, 0.6, points)] == [
        "suspicious"  # 0.6 x 0.6 = 0.36 is below suspicious: noise to a reader, dropped
    ]
    assert findings_from_map(probability_map, geometry, 0.3, points) == []  # an image below suspicious
    assert findings_from_map(probability_map, geometry, None, points) == []  # not assessed
    assert findings_from_map(np.full((8, 8), 0.2), geometry, 0.9, points) == []  # no cell above 0.5


@pytest.mark.parametrize("tta", [False, True])
def test_predictions_carry_the_box_of_the_bright_patch(graded, tta: bool) -> None:
    """Flip TTA flips the mirrored view's map back: otherwise a second, mirrored box would appear."""
    predictor = with_map_head(Predictor.from_checkpoints([graded()], runtime="torch", tta=tta), margin=3.0)
    batch = predictor.predict_images([film(), film((0, 0, 64, 32))])
    first, second = (batch.prediction(i, predictor.identity) for i in range(2))
    assert [f.box for f in first.findings] == [pytest.approx(PATCH, abs=1)]
    assert [f.box for f in second.findings] == [pytest.approx((0, 0, 64, 32), abs=1)]
    assert first.findings[0].operating_point == "definite"  # sigmoid(3) = 0.95 x a peak near 1


def test_an_ensemble_averages_its_members_maps_in_the_original_frame(graded) -> None:
    """Members of other sizes and resize modes: their maps meet on the film, one box where both look."""
    paths = [graded(32, "stretch"), graded(48, "letterbox")]
    predictor = with_map_head(Predictor.from_checkpoints(paths, runtime="torch"), margin=3.0)
    (finding,) = predictor.predict_images([film()]).prediction(0, predictor.identity).findings
    assert finding.box == pytest.approx(PATCH, abs=6)


def test_a_model_without_a_map_head_answers_without_findings(graded) -> None:
    predictor = Predictor.from_checkpoints([graded()], runtime="torch")
    batch = predictor.predict_images([film()])
    assert batch.member_maps == [] and batch.prediction(0, predictor.identity).findings == []


def test_file_answers_carry_findings_in_the_file_s_pixels(graded, tmp_path) -> None:
    path = tmp_path / "film.png"
    Image.fromarray(film()).save(path)
    predictor = with_map_head(Predictor.from_checkpoints([graded()], runtime="torch"), margin=3.0)
    (result,) = iter_file_predictions(predictor, [path], score_all=True)
    assert [f.box for f in result.prediction.findings] == [pytest.approx(PATCH, abs=1)]
    quiet = with_map_head(Predictor.from_checkpoints([graded()], runtime="torch"), margin=-3.0)
    (result,) = iter_file_predictions(quiet, [path], score_all=True)
    assert result.prediction.decision == "normal" and result.prediction.findings == []


def test_cached_rows_carry_every_map_box_and_the_peak_for_evaluation(graded) -> None:
    predictor = with_map_head(Predictor.from_checkpoints([graded()], runtime="torch"), margin=0.0)
    columns = predictor.predict_images([film()]).localisation_columns()
    assert set(columns) == {"map_boxes", "map_peak_x", "map_peak_y"}
    (box,) = json.loads(columns["map_boxes"][0])
    assert box[:4] == pytest.approx(PATCH, abs=1) and box[4] == pytest.approx(0.5, abs=0.01)
    assert (
        PATCH[0] <= columns["map_peak_x"][0] <= PATCH[2] and PATCH[1] <= columns["map_peak_y"][0] <= PATCH[3]
    )
