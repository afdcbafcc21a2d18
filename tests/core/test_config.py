"""The run config: validated when loaded, before any data is read or file written, one line per mistake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import mura
from mura.cli import main
from mura.config import Config, config_fields
from mura.config_loading import config_from_dict, load_config, resolve_key
from mura.errors import MuraError

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_train(*args: str) -> subprocess.CompletedProcess:
    """`python -m mura train --cache /nonexistent ...`, as a user runs it: a real process, real stderr."""
    env = {**os.environ, "PYTHONPATH": str(Path(mura.__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "mura", "train", "--cache", "/nonexistent", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--train.lr", "-0.01"],
            "config: train.lr=-0.01 must be greater than or equal to 0 (from --train.lr)",
        ),
        (["--epochs", "2.5"], "config: train.epochs=2.5 must be a valid integer"),
        (["--lr", "abc"], "config: train.lr='abc' must be a valid number (from --train.lr)"),
        (["--amp", "maybe"], "config: train.amp='maybe' must be a valid boolean"),
        (["--device", "gpu"], "config: train.device='gpu' is not one of auto, cpu, cuda, cuda:N"),
        (
            ["--freeze", "last_stages:0"],
            "model.freeze='last_stages:0' is not one of auto, frozen, last_stage",
        ),
        (["--target_specificity", "1"], "config: train.target_specificity=1 must be less than 1"),
        (["--dropout", "nan"], "config: model.dropout='nan' must be a finite number"),
        (
            ["--train.batch_size", "1000000000"],
            "config: train.batch_size=1000000000 must be less than or equal to 4096",
        ),
    ],
)
def test_a_bad_flag_value_is_one_line_before_anything_is_read_or_written(tmp_path, flags, message):
    out = tmp_path / "run"
    done = run_train("--out", str(out), *flags)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mura train: error: config: ")
    assert message in done.stderr and "Traceback" not in done.stderr
    assert "/nonexistent" not in done.stderr  # the cache was never opened
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_bad_choice_flag_is_refused_by_argparse_naming_flag_value_and_choices(tmp_path):
    out = tmp_path / "run"
    done = run_train("--out", str(out), "--train.monitor", "val_typo")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    usage, error = done.stderr.strip().splitlines()  # argparse: a one-line usage, then the error
    assert usage.startswith("usage: mura train")
    assert (
        "--train.monitor" in error and "'val_typo'" in error and "'val_loss', 'val_auc', 'val_kappa'" in error
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "train:\n  monitor: val_typo\n",
            "train.monitor='val_typo' is not one of val_loss, val_auc, val_kappa",
        ),
        ("train:\n  lrr: 0.1\n", "unknown key 'train.lrr' (did you mean train.lr?)"),
        ("trian:\n  lr: 0.1\n", "unknown key 'trian.lr' (did you mean train.lr?)"),
        ("model:\n  size: 16\n", "model.size=16 must be greater than or equal to 32"),
        ("train:\n  epochs: true\n", "train.epochs=True must be a number, not a boolean"),
        (
            "train:\n  epochs: 2.5\n",
            "train.epochs=2.5 must be a valid integer, got a number with a fractional part",
        ),
        ("data:\n  index: 7\n", "data.index=7 must be a valid string"),
        ("train: 3\n", "train=3 must be a mapping of train keys"),
        ("train:\n  lr: [1\n", "not valid YAML at line 3"),
        ("- a list\n", "expected a mapping of sections"),
    ],
)
def test_a_bad_yaml_value_is_one_line_naming_the_file(tmp_path, text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    out = tmp_path / "run"
    done = run_train("--config", str(config), "--out", str(out))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert message in done.stderr and str(config) in done.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["bad.yaml"]


def test_every_problem_is_reported_at_once_on_one_line():
    with pytest.raises(MuraError) as caught:
        load_config(overrides={"train.lr": -1, "train.loss": "hinge", "data.workers": -1})
    text = str(caught.value)
    assert "\n" not in text and text.startswith("config: ")
    assert "data.workers=-1 must be greater than or equal to 0" in text
    assert "train.lr=-1 must be greater than or equal to 0" in text
    assert "train.loss='hinge' is not one of ce, focal" in text


def test_flag_strings_become_typed_values_and_override_the_yaml(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  lr: 0.01\n  epochs: 3\n  amp: false\nmodel:\n  name: resnet50\n")
    flags = {"lr": "3e-4", "train.batch_size": "8", "channels_last": "0", "pretrained": "true"}
    cfg = load_config(config, flags, from_flags=True)
    assert cfg.train.lr == 3e-4 and cfg.train.epochs == 3 and cfg.train.batch_size == 8
    assert cfg.train.amp is False and cfg.train.channels_last is False and cfg.model.pretrained is True
    assert cfg.model.name == "resnet50" and cfg.train.scheduler == "plateau"  # untouched keys keep defaults


def test_saved_config_reloads_to_an_equal_config(tmp_path):
    overrides = {
        "data.index": "007",  # a string that YAML would otherwise read as a number
        "data.rotation_degrees": 180,
        "model.freeze": "last_stages:2",
        "model.body_part_head": False,
        "train.lr": 1e-10,
        "train.device": "cuda:1",
        "train.calibration": "temperature",
        "train.target_specificity": 0.95,
        "out": str(tmp_path / "run"),
    }
    cfg = load_config(overrides=overrides)
    path = tmp_path / "config.yaml"
    path.write_text("an older file")
    cfg.save(path)
    assert load_config(path) == cfg and config_from_dict(cfg.to_dict()) == cfg
    assert yaml.safe_load(path.read_text())["data"]["index"] == "007"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # written in place, no temp left


def test_saved_config_with_an_unknown_key_is_refused():
    saved = Config().to_dict()
    saved["train"]["removed_option"] = 1
    with pytest.raises(MuraError, match=r"^config: unknown key 'train.removed_option' \(from checkpoint\)$"):
        config_from_dict(saved, source="checkpoint")


def test_assignment_is_validated_like_loading():
    cfg = Config()
    cfg.train.lr = "0.5"
    assert cfg.train.lr == 0.5
    with pytest.raises(MuraError, match=r"^config: train.monitor='val_typo' is not one of"):
        cfg.train.monitor = "val_typo"
    with pytest.raises(MuraError, match=r"^config: model.dropout=1 must be less than 1$"):
        cfg.model.dropout = 1
    assert cfg.train.monitor == "val_loss" and cfg.model.dropout == 0.3


def test_short_names_resolve_only_when_unambiguous():
    assert resolve_key("lr") == "train.lr" and resolve_key("--batch-size") == "train.batch_size"
    assert resolve_key("model.size") == "model.size" and resolve_key("out") == "out"
    with pytest.raises(MuraError, match=r"unknown option --lrr \(did you mean lr\?\)"):
        resolve_key("lrr")
    shorts = [spec.short for spec in config_fields() if spec.short]
    assert len(shorts) == len(set(shorts))


def test_fields_describe_every_key_with_help_choices_and_defaults():
    fields = {spec.dotted: spec for spec in config_fields()}
    assert set(fields) == {
        f"{section}.{key}"
        for section, values in Config().to_dict().items()
        if isinstance(values, dict)
        for key in values
    } | {"out"}
    assert all(spec.help for spec in fields.values())
    assert fields["train.monitor"].choices == ("val_loss", "val_auc", "val_kappa")
    assert fields["train.calibration"].choices == ("none", "temperature", "platt")
    assert (
        fields["train.calibration"].default == "platt" and fields["train.target_specificity"].default == 0.9
    )
    assert fields["train.lr"].choices is None and "[>= 0]" in fields["train.lr"].help


def test_train_help_lists_choices_defaults_and_ranges(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--train.monitor {val_loss,val_auc,val_kappa}, --monitor {val_loss,val_auc,val_kappa}" in text
    assert "--data.augment {none,flip_rotate,strong,crop}" in text and "(default: 'flip_rotate')" in text
    assert "--train.amp {true,false}" in text and "[>= 0] (default: 0.001)" in text


@pytest.mark.parametrize(
    "path", sorted((REPO_ROOT / "configs").rglob("*.yaml")), ids=lambda p: str(p.relative_to(REPO_ROOT))
)
def test_shipped_configs_are_valid(path):
    assert isinstance(load_config(path), Config)
