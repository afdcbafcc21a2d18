"""The one preprocessing path: a decoded grey image (file, DICOM, upload, cache row) -> model input.

Two steps, each written once, here:
1. `resize`: uint8 [H, W] -> uint8 [size, size] (`stretch` or `letterbox`). `mura prepare` stores
   exactly this in the cache, and predict/serve/explain compute exactly this from the original file,
   so a cache row and a freshly decoded file give the model the same pixels.
2. `normalize`: uint8 -> float32 `(x / 255 - mean) / std`, for numpy arrays or torch tensors.
Boxes follow the pixels: `boxes_to_input` / `boxes_from_input` map `[x0, y0, x1, y1]` between a film's
original (EXIF-upright) pixels and the resized input, by the same scale and padding `resize` applies.

A `Preprocessing` travels in every checkpoint. Pixels whose side differs from `size` are refused,
never silently interpolated: resizing a cache row again (64 px cache, 224 px model) gives other
pixels than resizing the original, which is how evaluation and deployment used to disagree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from mura.errors import MuraError

if TYPE_CHECKING:  # torch is imported by whoever hands us tensors; the CLI's parser stays light
    import torch

RESIZE_MODES = ("stretch", "letterbox")


def resize_image(image: np.ndarray, size: int, mode: str = "stretch") -> np.ndarray:
    """Resize a uint8 [H, W] image to [size, size].

    `stretch` scales each axis independently (what the spec and MURA baselines do); `letterbox` keeps the
    aspect ratio and pads with black. PIL's bilinear filter widens its kernel when shrinking, so this is
    antialiased (no aliasing of fine trabecular texture into moire).
    """
    if mode not in RESIZE_MODES:
        raise MuraError(f"resize mode must be one of {', '.join(RESIZE_MODES)}, not {mode!r}")
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {image.shape}")
    height, width = image.shape
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="L")
    if mode == "stretch":
        if (height, width) == (size, size):
            return np.array(image, dtype=np.uint8)
        return np.asarray(pil.resize((size, size), Image.BILINEAR, reducing_gap=None))
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = np.asarray(pil.resize((new_w, new_h), Image.BILINEAR))
    out = np.zeros((size, size), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized
    return out


@dataclass(frozen=True)
class Preprocessing:
    """How pixels become model input: resize to `size` px square, then `(x / 255 - mean) / std`."""

    size: int = 224
    resize_mode: str = "stretch"
    mean: float = 0.5
    std: float = 0.5

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise MuraError(f"preprocessing: resize mode {self.resize_mode!r} is not one of {RESIZE_MODES}")
        if self.size < 8 or self.std <= 0:
            raise MuraError(f"preprocessing: size {self.size} / std {self.std} out of range")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            size=int(data["size"]),
            resize_mode=str(data.get("resize_mode", "stretch")),
            mean=float(data["mean"]),
            std=float(data["std"]),
        )

    def resize(self, image: np.ndarray) -> np.ndarray:
        """Decoded uint8 [H, W] -> uint8 [size, size]: what the cache stores for this image."""
        return resize_image(image, self.size, self.resize_mode)

    def check_pixels(self, shape: tuple[int, ...], what: str) -> None:
        """Refuse pixels of another side than `size` (they would need a second, different resize)."""
        if tuple(shape[-2:]) != (self.size, self.size):
            side = "x".join(str(s) for s in shape[-2:])
            raise MuraError(
                f"{what}: pixels are {side} but the model takes {self.size}x{self.size} "
                f"({self.resize_mode}); prepare a cache with `mura prepare INDEX --size {self.size} "
                f"--resize {self.resize_mode} --out DIR`"
            )

    def check_cache(self, *, size: int, resize_mode: str, what: str) -> None:
        """A cache (`CacheSettings.input_spec`) fits when its side and resize mode are this one's."""
        if (size, resize_mode) != (self.size, self.resize_mode):
            raise MuraError(
                f"{what}: the cache holds {size} px {resize_mode} images but the model takes {self.size} px "
                f"{self.resize_mode}; prepare a matching cache with `mura prepare INDEX --size {self.size} "
                f"--resize {self.resize_mode} --out DIR`"
            )

    def _box_transform(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-coordinate scale and offset of `resize` for a `width` x `height` film: input = x * a + b."""
        if self.resize_mode == "stretch":
            scale_x, scale_y, left, top = self.size / width, self.size / height, 0, 0
        else:  # letterbox: the side lengths `resize_image` rounds to, centred with the same padding
            scale = self.size / max(height, width)
            new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
            scale_x, scale_y = new_w / width, new_h / height
            left, top = (self.size - new_w) // 2, (self.size - new_h) // 2
        return np.array([scale_x, scale_y] * 2), np.array([left, top] * 2, dtype=float)

    def boxes_to_input(self, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
        """Boxes [K, 4] (x0, y0, x1, y1) in a film's original pixels -> the same in input pixels."""
        scale, shift = self._box_transform(width, height)
        return np.asarray(boxes, dtype=float).reshape(-1, 4) * scale + shift

    def boxes_from_input(self, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
        """Boxes [K, 4] in input pixels -> the film's original pixels (a model's finding, for output)."""
        scale, shift = self._box_transform(width, height)
        return (np.asarray(boxes, dtype=float).reshape(-1, 4) - shift) / scale

    def normalize(self, pixels: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """uint8 (or float in 0..255) pixels of side `size` -> float32 model input, numpy or torch."""
        self.check_pixels(tuple(pixels.shape), "preprocessing")
        if not isinstance(pixels, np.ndarray):  # a torch tensor
            return self.normalize_unit(pixels.float().div(255.0))
        unit = np.asarray(pixels, dtype=np.float32) / np.float32(255.0)
        return (unit - np.float32(self.mean)) / np.float32(self.std)

    def normalize_unit(self, unit: torch.Tensor) -> torch.Tensor:
        """Pixels already scaled to [0, 1] (after augmentation) -> model input."""
        return (unit - self.mean) / self.std

    def model_input(self, image: np.ndarray) -> np.ndarray:
        """One decoded uint8 [H, W] image -> float32 [1, 1, size, size]: both steps."""
        return np.asarray(self.normalize(self.resize(image)[None, None]))
