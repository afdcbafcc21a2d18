"""A checkpoint that cannot be used says why and what to do: a newer mura's file, another tool's, one
whose config this mura does not know, one without metadata, a truncated copy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mura.checkpoint import FORMAT_VERSION, load_checkpoint, load_model
from mura.errors import MuraError


@pytest.fixture(scope="module")
def saved(make_checkpoint) -> Path:
    return make_checkpoint("errors.pt", "custom_cnn", 32, seed=5)


def rewritten(source: Path, target: Path, change) -> Path:
    """A copy of `source` whose loaded dict was changed by `change` (as another version or tool would)."""
    raw = torch.load(source, weights_only=True)
    change(raw)
    torch.save(raw, target)
    return target


def one_line_error(call, *args) -> str:
    with pytest.raises(MuraError) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_newer_format_names_the_upgrade(saved, tmp_path) -> None:
    def newer(raw: dict) -> None:
        raw["format_version"] = FORMAT_VERSION + 1
        raw["meta"]["provenance"]["versions"]["mura"] = "9.0.0"

    message = one_line_error(load_checkpoint, rewritten(saved, tmp_path / "newer.pt", newer))
    assert f"checkpoint format {FORMAT_VERSION + 1} is newer than this mura" in message
    assert "written by mura 9.0.0" in message and message.endswith("upgrade mura (pip install -U mura)")


def test_an_unknown_config_key_names_who_wrote_it_and_the_fix(saved, tmp_path) -> None:
    def extra_key(raw: dict) -> None:
        raw["meta"]["config"]["model"]["attention"] = "cbam"
        raw["meta"]["provenance"]["versions"]["mura"] = "0.3.0"

    message = one_line_error(load_model, rewritten(saved, tmp_path / "extra.pt", extra_key))
    assert "unknown key 'model.attention'" in message and "written by mura 0.3.0" in message
    assert "upgrade mura (pip install -U mura), or load it with the version that wrote it" in message


def test_missing_metadata_names_save_model(saved, tmp_path) -> None:
    message = one_line_error(
        load_checkpoint, rewritten(saved, tmp_path / "bare.pt", lambda raw: raw["meta"].pop("config"))
    )
    assert "checkpoint metadata incomplete (no 'config')" in message
    assert "re-export it with mura.checkpoint.save_model(path, model, config, preprocessing)" in message


def test_another_tools_state_dict_names_save_model(saved, tmp_path) -> None:
    plain = tmp_path / "state_dict.pt"
    torch.save(torch.load(saved, weights_only=True)["model_state"], plain)
    message = one_line_error(load_checkpoint, plain)
    assert "not a mura checkpoint (no model_state)" in message and "mura.checkpoint.save_model(" in message


@pytest.mark.parametrize("kept", [0.5, 0.99])
def test_a_truncated_copy_is_called_truncated_and_says_copy_it_again(saved, tmp_path, kept) -> None:
    data = saved.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: int(len(data) * kept)])
    message = one_line_error(load_checkpoint, cut)
    assert message.startswith(f"{cut}: truncated checkpoint ({cut.stat().st_size} bytes")
    assert "copy it again and compare its SHA-256" in message


def test_a_file_that_is_not_pytorch_at_all_says_so(tmp_path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("not a model")
    message = one_line_error(load_checkpoint, text)
    assert "not a readable mura checkpoint" in message and "not a PyTorch file" in message
