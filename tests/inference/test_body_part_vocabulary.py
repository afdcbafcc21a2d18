"""Body parts in answers: old 7-part checkpoints as before, new ones say UNKNOWN below their floor."""

from __future__ import annotations

import numpy as np
import torch

from mura.checkpoint import load_model, update_checkpoint
from mura.constants import MURA_BODY_PARTS, UNSURE_BODY_PART
from mura.inference.files import FileResult, study_prediction
from mura.inference.predictor import Predictor


def test_a_checkpoint_from_before_the_vocabulary_grew_loads_and_feeds_its_argmax(
    make_checkpoint, smooth_images, tmp_path
) -> None:
    source = make_checkpoint("legacy.pt", legacy_body_parts=True)
    raw = torch.load(source, weights_only=True)
    del raw["meta"]["body_part_floor"], raw["meta"]["body_parts"]  # written as mura wrote them before
    torch.save(raw, tmp_path / "old.pt")
    model, checkpoint = load_model(tmp_path / "old.pt")
    assert checkpoint.meta.body_parts == MURA_BODY_PARTS and checkpoint.meta.body_part_floor is None
    assert not model.heads.has_unknown_part
    predictor = Predictor.from_checkpoints([tmp_path / "old.pt"], device="cpu")
    batch = predictor.predict_images(smooth_images(6))
    assert predictor.body_parts == MURA_BODY_PARTS and batch.body_part_probs.shape == (6, 7)
    assert list(batch.body_part) == list(batch.body_part_probs.argmax(axis=1))  # every guess, as before
    answer = batch.prediction(0, predictor.identity)
    assert list(answer.body_part_probabilities) == list(MURA_BODY_PARTS)
    assert answer.body_part == MURA_BODY_PARTS[batch.body_part[0]] and answer.body_part_origin == "predicted"
    hip = predictor.predict_images(smooth_images(6), [7] * 6)  # a part the model has no class for
    assert np.allclose(hip.fracture_prob, batch.fracture_prob)  # judged as if none was given


def test_an_unsure_part_is_reported_unknown_and_a_sure_one_by_name(
    make_checkpoint, smooth_images, tmp_path
) -> None:
    source = make_checkpoint("vocabulary_plain.pt")
    images = smooth_images(8)
    tops = Predictor.from_checkpoints([source]).predict_images(images).body_part_probs.max(axis=1)
    floored = update_checkpoint(source, tmp_path / "floored.pt", body_part_floor=float(np.median(tops)))
    predictor = Predictor.from_checkpoints([floored])
    batch = predictor.predict_images(images, [-1] * 7 + [3])
    answers = [batch.prediction(i, predictor.identity) for i in range(8)]
    for answer, top in zip(answers[:7], tops, strict=False):
        assert answer.body_part_origin == "predicted"
        assert (answer.body_part == UNSURE_BODY_PART) == (top < predictor.body_part_floor)
    assert {a.body_part for a in answers[:7]} & {UNSURE_BODY_PART} and answers[7].body_part == "HAND"
    assert answers[7].body_part_origin == "given"
    row = answers[0].flat()
    assert row["body_part"] == answers[0].body_part and "prob_LEG" in row
    unsure = [a for a in answers[:7] if a.body_part == UNSURE_BODY_PART]
    views = [FileResult(tmp_path / f"{i}.png", prediction=a) for i, a in enumerate(unsure)]
    assert study_prediction("study", views, predictor.tiers).body_part == UNSURE_BODY_PART
