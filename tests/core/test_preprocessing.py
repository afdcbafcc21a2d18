"""One preprocessing path: the cache's resize equals predict's, and other sizes are refused, not resized."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mura.errors import MuraError
from mura.preprocessing import Preprocessing, resize_image


def test_normalize_numpy_and_torch_agree_and_round_trip() -> None:
    pre = Preprocessing(size=16, resize_mode="letterbox", mean=0.5, std=0.25)
    pixels = np.full((2, 1, 16, 16), 255, dtype=np.uint8)
    x = pre.normalize(pixels)
    assert x.dtype == np.float32 and np.allclose(x, 2.0)
    assert torch.allclose(pre.normalize(torch.from_numpy(pixels)), torch.from_numpy(x))
    assert Preprocessing.from_dict(pre.to_dict()) == pre


def test_model_input_is_resize_then_normalize() -> None:
    image = (np.arange(40 * 30) % 251).astype(np.uint8).reshape(40, 30)
    pre = Preprocessing(size=24, resize_mode="stretch", mean=0.4, std=0.3)
    expected = (resize_image(image, 24).astype(np.float32) / 255 - np.float32(0.4)) / np.float32(0.3)
    assert np.array_equal(pre.model_input(image)[0, 0], expected)


def test_pixels_of_another_size_are_refused_with_the_fix() -> None:
    pre = Preprocessing(size=224)
    with pytest.raises(MuraError, match=r"64x64 .* takes 224x224 .*mura prepare INDEX --size 224"):
        pre.normalize(np.zeros((1, 1, 64, 64), np.uint8))
    with pytest.raises(MuraError, match="the cache holds 64 px stretch"):
        pre.check_cache(size=64, resize_mode="stretch", what="cache64")
    with pytest.raises(MuraError, match="the cache holds 224 px letterbox"):
        pre.check_cache(size=224, resize_mode="letterbox", what="cache224")
    pre.check_cache(size=224, resize_mode="stretch", what="cache224")


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(MuraError, match="resize mode 'crop'"):
        Preprocessing(resize_mode="crop")
    with pytest.raises(MuraError, match="resize mode must be one of"):
        resize_image(np.zeros((4, 4), np.uint8), 8, "crop")


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_boxes_map_into_the_input_onto_what_resize_put_there_and_back(mode: str) -> None:
    """A bright rectangle on a 300x200 film lands inside its mapped box after `resize`, and back."""
    film = np.full((200, 300), 10, np.uint8)  # height 200, width 300
    box = np.array([[60.0, 50.0, 150.0, 110.0]])
    film[50:110, 60:150] = 250
    pre = Preprocessing(size=64, resize_mode=mode)
    mapped = pre.boxes_to_input(box, width=300, height=200)
    resized = pre.resize(film).astype(float)
    rows, cols = np.nonzero(resized > 130)  # the rectangle's pixels after resizing (edges blur by 1 px)
    x0, y0, x1, y1 = mapped[0]
    assert (
        x0 - 1 <= cols.min()
        and cols.max() + 1 <= x1 + 1
        and y0 - 1 <= rows.min()
        and rows.max() + 1 <= y1 + 1
    )
    assert (
        abs((cols.max() + 1 - cols.min()) - (x1 - x0)) <= 1.5
        and abs((rows.max() + 1 - rows.min()) - (y1 - y0)) <= 1.5
    )
    assert np.allclose(pre.boxes_from_input(mapped, width=300, height=200), box)
    if mode == "letterbox":  # the padding rows above the picture shift y, not x
        assert mapped[0, 0] == pytest.approx(60 * 64 / 300) and mapped[0, 1] > 50 * 64 / 300
