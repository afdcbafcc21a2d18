"""End to end: a trained checkpoint -> `mura evaluate` (single and ensemble) -> report and scorer file."""

import json

import pandas as pd
import pytest

from mura.cli import main
from mura.training.loop import train


@pytest.fixture(scope="module")
def checkpoint(make_cfg, synthetic_mura):
    """custom_cnn at 64 px trained one epoch on the 64 px cache."""
    cfg = make_cfg(
        "eval_run",
        **{"data.cache": str(synthetic_mura.cache_dir), "model.size": 64, "train.epochs": 1},
        **{"train.batch_size": 32, "train.device": "cpu"},
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
    from mura.checkpoint import file_sha256, load_checkpoint

    before = file_sha256(checkpoint)
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "report.html" in printed
    assert file_sha256(checkpoint) == before  # an evaluation only reads the model it is given
    metrics = json.loads((out / "metrics.json").read_text())
    # the headline first: the deployed point's figures with their intervals, not file paths
    assert printed.splitlines()[0] == metrics["headline"]
    assert metrics["headline"].startswith("AUC ") and "suspicious: sensitivity" in metrics["headline"]
    test_rows = pd.read_csv(synthetic_mura.cache_dir / "index.csv").query("split == 'test'")
    # every test row is scored or listed apart as not assessed (layer 3 refuses ~1% of in-scope films)
    refused = metrics["meta"]["not_assessed"].get("images", 0)
    assert metrics["meta"]["n_images"] + refused == len(test_rows) and refused <= 2
    assert metrics["meta"]["models"] == ["custom_cnn"] and metrics["meta"]["synthetic"]
    assert {"youden", "suspicious", "definite"} <= set(metrics["thresholds"])  # stored by training
    assert metrics["meta"]["default_operating_point"] == "suspicious"
    assert metrics["calibration"]["method"] == "platt"
    scorer = (out / "mura_scorer.csv").read_text().splitlines()
    assert len(scorer) == test_rows["study_id"].nunique()
    html = (out / "report.html").read_text()
    assert "Training curves" in html and "Subgroups by view" in html

    # Asked to, it records the headline test figures in the checkpoint (what `mura serve` shows).
    assert main([*args[:-4], "--bootstrap", "0", "--device", "cpu", "--record"]) == 0
    recorded = load_checkpoint(checkpoint).meta.test_metrics
    assert recorded["n_images"] == metrics["meta"]["n_images"]
    assert recorded["image"]["default"]["roc_auc"] == pytest.approx(metrics["image"]["default"]["roc_auc"])

    # The same checkpoint twice is an ensemble whose mean equals the single model.
    ensemble_args = [*args[:3], str(checkpoint), *args[3:]]
    ensemble_args[ensemble_args.index("--out") + 1] = str(tmp_path / "ens")
    assert main([*ensemble_args[:-4], "--bootstrap", "0", "--device", "cpu"]) == 0
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


def test_evaluate_cli_refuses_a_folder_holding_the_users_files(checkpoint, synthetic_mura, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.html").write_text("my own report")
    args = ["evaluate", "--checkpoint", str(checkpoint), "--cache", str(synthetic_mura.cache_dir)]
    assert main([*args, "--out", str(out), "--bootstrap", "0", "--device", "cpu"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the prediction's progress bar
    assert error.startswith("mura evaluate: error: ") and "no mura report wrote (report.html)" in error
    assert [p.name for p in out.iterdir()] == ["report.html"]
    assert (out / "report.html").read_text() == "my own report"


def test_record_needs_one_checkpoint_on_test_named_as_the_caller_names_it(
    checkpoint, synthetic_mura, tmp_path, capsys
):
    from mura.checkpoint import file_sha256
    from mura.errors import MuraError
    from mura.evaluation.runner import evaluate_checkpoints

    before = file_sha256(checkpoint)
    with pytest.raises(MuraError, match=r"record=True .* split='test'") as raised:
        evaluate_checkpoints([checkpoint], synthetic_mura.cache_dir, tmp_path / "x", split="val", record=True)
    assert "--" not in str(raised.value)  # the Python API names its parameters, not the CLI's flags
    args = ["evaluate", "--checkpoint", str(checkpoint), "--cache", str(synthetic_mura.cache_dir)]
    assert main([*args, "--split", "val", "--record", "--out", str(tmp_path / "y"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--record writes" in err and "--split test" in err and "record=True" not in err
    assert file_sha256(checkpoint) == before and not (tmp_path / "y").exists()
