"""End to end: a trained checkpoint -> `mura evaluate` (single and ensemble) -> report and scorer file."""

import json

import pandas as pd
import pytest

from mura.cli import main
from mura.config import load_config
from mura.training.loop import train


@pytest.fixture(scope="module")
def checkpoint(synthetic_mura, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_run") / "custom_cnn"
    cfg = load_config(
        overrides={
            "data.index": str(synthetic_mura.index_csv),
            "data.cache": str(synthetic_mura.cache_dir),
            "data.workers": 0,
            "model.name": "custom_cnn",
            "model.size": 64,
            "train.epochs": 1,
            "train.batch_size": 32,
            "train.device": "cpu",
            "out": str(out),
        }
    )
    return train(cfg).best_checkpoint


@pytest.mark.slow
def test_evaluate_cli_writes_the_report(checkpoint, synthetic_mura, tmp_path, capsys):
    out = tmp_path / "eval"
    args = [
        "evaluate",
        "--checkpoint",
        str(checkpoint),
        "--index",
        str(synthetic_mura.index_csv),
        "--cache",
        str(synthetic_mura.cache_dir),
        "--split",
        "test",
        "--out",
        str(out),
        "--by",
        "view",
        "--bootstrap",
        "50",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    assert "report.html" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    test_rows = pd.read_csv(synthetic_mura.cache_dir / "index.csv").query("split == 'test'")
    assert metrics["meta"]["n_images"] == len(test_rows)
    assert metrics["meta"]["models"] == ["custom_cnn"] and metrics["meta"]["synthetic"]
    assert "youden" in metrics["thresholds"]  # chosen on validation by training, applied here
    scorer = (out / "mura_scorer.csv").read_text().splitlines()
    assert len(scorer) == test_rows["study_id"].nunique()
    html = (out / "report.html").read_text()
    assert "Training curves" in html and "Subgroups by view" in html

    # The headline test figures travel in the checkpoint (what `mura serve` shows at /v1/model).
    from mura.checkpoint import load_checkpoint

    recorded = load_checkpoint(checkpoint)["test_metrics"]
    assert recorded["n_images"] == len(test_rows)
    assert recorded["image"]["default"]["roc_auc"] == pytest.approx(metrics["image"]["default"]["roc_auc"])

    # The same checkpoint twice is an ensemble whose mean equals the single model.
    assert (
        main(
            [
                *args[:3],
                str(checkpoint),
                *args[3:-8],
                "--out",
                str(tmp_path / "ens"),
                "--bootstrap",
                "0",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    single = pd.read_csv(out / "predictions.csv")
    ensemble = pd.read_csv(tmp_path / "ens" / "predictions.csv")
    assert ensemble["fracture_prob"].to_numpy() == pytest.approx(single["fracture_prob"].to_numpy(), abs=1e-6)


def test_evaluate_cli_bad_split_is_one_line(checkpoint, synthetic_mura, tmp_path, capsys):
    rc = main(
        [
            "evaluate",
            "--checkpoint",
            str(checkpoint),
            "--cache",
            str(synthetic_mura.cache_dir),
            "--split",
            "nope",
            "--out",
            str(tmp_path / "x"),
            "--device",
            "cpu",
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "no images in split 'nope'" in err and "\n" not in err
