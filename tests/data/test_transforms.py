"""Batch augmentation: deterministic for a generator seed, geometrically right, intensities in range."""

from __future__ import annotations

import pytest
import torch

from mura.data.transforms import augment_batch, augment_with_masks


def _batch(n: int = 8, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, size, size, generator=g)


@pytest.mark.parametrize("mode", ["flip_rotate", "strong", "crop"])
def test_same_seed_same_views_other_seed_other_views(mode: str) -> None:
    x = _batch()
    a = augment_batch(x, mode, 10.0, torch.Generator().manual_seed(5))
    b = augment_batch(x, mode, 10.0, torch.Generator().manual_seed(5))
    c = augment_batch(x, mode, 10.0, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert a.shape == x.shape and float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_zero_rotation_is_exact_flip_or_identity() -> None:
    x = _batch(16)
    out = augment_batch(x, "flip_rotate", 0.0, torch.Generator().manual_seed(0))
    flipped = torch.flip(x, dims=[3])
    kinds = [
        torch.allclose(o, f, atol=1e-5) and not torch.allclose(o, i, atol=1e-5)
        for o, f, i in zip(out, flipped, x, strict=True)
    ]
    same = [torch.allclose(o, i, atol=1e-5) for o, i in zip(out, x, strict=True)]
    assert all(k or s for k, s in zip(kinds, same, strict=True))
    assert 0 < sum(kinds) < len(x)  # some images flipped, some not


def test_rotation_moves_pixels_by_at_most_the_angle() -> None:
    image = torch.zeros(1, 1, 65, 65)
    image[..., 32, 32:60] = 1.0  # horizontal bar from the centre to the right
    out = augment_batch(image.repeat(32, 1, 1, 1), "flip_rotate", 15.0, torch.Generator().manual_seed(3))
    assert not torch.allclose(out[0], out[1])
    for view in out:
        ys, xs = torch.nonzero(view[0] > 0.3, as_tuple=True)
        angle = torch.rad2deg(torch.atan2((ys - 32).float().abs(), (xs - 32).float().abs().clamp(min=1)))
        far = (xs - 32).abs() > 12
        assert float(angle[far].max()) < 15.0 + 6.0  # bilinear spread of a 1-px bar


def test_none_is_identity_and_unknown_mode_is_an_error() -> None:
    x = _batch()
    assert torch.equal(augment_batch(x, "none", 10.0, torch.Generator()), x)
    with pytest.raises(ValueError):
        augment_batch(x, "bogus", 10.0, torch.Generator())


def test_crop_zooms_into_the_image_and_keeps_intensities_in_range() -> None:
    """A random resized crop magnifies: a centred square covers at least as much of the view, never less."""
    image = torch.zeros(64, 1, 65, 65)
    image[..., 24:41, 24:41] = 1.0  # centred square, 17 px a side
    generator = torch.Generator().manual_seed(4)
    cropped = augment_batch(image, "crop", 0.0, generator)
    assert cropped.shape == image.shape and float(cropped.min()) >= 0.0 and float(cropped.max()) <= 1.0
    bright = (cropped > 0.5).flatten(1).sum(dim=1).float()
    plain = (
        (augment_batch(image, "flip_rotate", 0.0, torch.Generator().manual_seed(4)) > 0.5).flatten(1).sum(1)
    )
    assert float(bright.median()) > float(plain.float().median()) * 1.1  # zoomed in (area 0.6-1 -> x1-1.7)
    assert float(bright.max()) <= 17 * 17 / 0.6 * 1.5  # never beyond the smallest crop's magnification
    assert not torch.allclose(cropped[0], cropped[1])


@pytest.mark.parametrize("mode", ["flip_rotate", "strong", "crop"])
def test_masks_move_with_the_pixels_and_do_not_change_the_views(mode: str) -> None:
    """A box mask drawn where the image is bright stays on the bright pixels through flip/rotate/crop."""
    image = torch.zeros(16, 1, 64, 64)
    image[..., 10:22, 40:56] = 1.0  # an off-centre bright rectangle: its box
    mask = (image > 0).float()
    alone = augment_batch(image, mode, 20.0, torch.Generator().manual_seed(7))
    views, moved = augment_with_masks(image, mask, mode, 20.0, torch.Generator().manual_seed(7))
    assert torch.equal(views, alone)  # the same random views with or without masks
    bright = (
        alone > 0.5 if mode == "flip_rotate" else alone > alone.flatten(1).median(1).values.view(-1, 1, 1, 1)
    )
    inside = moved > 0.5
    overlap = (bright & inside).flatten(1).sum(1).float() / inside.flatten(1).sum(1).clamp(min=1)
    assert float(overlap.min()) > 0.9
    flips = augment_with_masks(image, mask, "flip_rotate", 0.0, torch.Generator().manual_seed(7))[1]
    mirrored = torch.zeros(1, 64, 64)
    mirrored[..., 10:22, 8:24] = 1.0
    assert any(torch.allclose(m, mirrored, atol=1e-5) for m in flips)  # some were flipped, box and all
