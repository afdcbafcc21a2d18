"""Cache rows through the Predictor: aligned with the index, same numbers as files, a cache of another
resize mode refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mura.constants import BODY_PARTS
from mura.errors import MuraError
from mura.inference.cache_predictions import predict_cache
from mura.inference.predictor import Predictor


def test_predict_cache_is_aligned_with_the_index(make_checkpoint, synthetic_mura) -> None:
    from mura.data.cache import open_cache

    path = make_checkpoint("cnn64.pt", "custom_cnn", 64, seed=6)
    cache = open_cache(synthetic_mura.cache_dir)
    predictor = Predictor.from_checkpoints([path], runtime="torch")
    predictor.batch_size = 7  # several batches and a ragged last one
    frame = predict_cache(predictor, cache, "val", body_part_mode="given")
    expected_rows = cache.index[cache.index["split"] == "val"]
    assert list(frame.columns[:7]) == [
        "path",
        "study_id",
        "body_part",
        "label",
        "fracture_prob",
        "body_part_pred",
        "body_part_used",
    ]
    assert list(frame.index) == list(expected_rows.index) and len(frame) > 5
    pd.testing.assert_series_equal(frame["path"], expected_rows["path"])
    assert set(frame["body_part_used"]) == {"given"} and set(frame["body_part_pred"]) <= set(BODY_PARTS)
    # Same numbers as predicting the cached pixels one by one.
    rows = expected_rows["cache_row"].to_numpy()[:3]
    parts = [BODY_PARTS.index(p) for p in expected_rows["body_part"][:3]]
    one_by_one = predictor.predict_images([np.asarray(cache.images[r]) for r in rows], parts)
    np.testing.assert_allclose(frame["fracture_prob"].to_numpy()[:3], one_by_one.fracture_prob, atol=1e-5)
    predicted = predict_cache(predictor, cache, "val", body_part_mode="predicted")
    assert set(predicted["body_part_used"]) == {"predicted"}
    assert not np.allclose(predicted["fracture_prob"], frame["fracture_prob"])


def test_predict_cache_refuses_a_differently_resized_cache(make_checkpoint, synthetic_mura) -> None:
    path = make_checkpoint("letterbox48.pt", "custom_cnn", 48, seed=3, resize_mode="letterbox")
    with pytest.raises(MuraError, match="letterbox"):
        predict_cache(Predictor.from_checkpoints([path]), synthetic_mura.cache_dir, "val")
