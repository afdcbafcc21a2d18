"""Training records in every checkpoint the body parts its data covered: what the scope gate lets in."""

from __future__ import annotations

import pandas as pd

from mura.checkpoint import load_checkpoint
from mura.data.index import read_index
from mura.training.loop import train


def test_a_run_records_the_parts_of_its_train_and_val_rows(make_cfg, synthetic_mura) -> None:
    result = train(make_cfg("scope", **{"train.epochs": 1}))
    index = read_index(synthetic_mura.index_csv)
    rows: pd.DataFrame = index[index["split"].isin(["train", "val"])]
    for path in (result.best_checkpoint, result.last_checkpoint):
        meta = load_checkpoint(path).meta
        assert meta.scope_parts == tuple(sorted(set(rows["body_part"])))
        assert meta.provenance["scope"].startswith("body parts named by the train, val split(s)")
