"""Grad-CAM heatmaps of the fracture output (pytorch-grad-cam), at the size of the ORIGINAL image.

Target layer per model (`model.cam_layer`, set by the models package): custom_cnn the third conv block
(size/8 maps), resnet50 `layer4`, densenet169 the final `norm5` of `features`, efficientnet_b0 `bn2`
(conv_head's BatchNorm+SiLU, 7x7 at 224 px): the last convolutional maps before pooling.

The score explained is the fracture log-odds (logit[1] - logit[0]), with the body part bound to the
image (given, or -1 = the model's own prediction). Gradients are required, so nothing here runs under
`torch.no_grad()`; hooks live only inside `fracture_cam` (a context manager) and parameter gradients are
switched off meanwhile, so a shared model is left exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image

from mura.checkpoint import load_model
from mura.devices import resolve_device
from mura.errors import MuraError
from mura.preprocessing import Preprocessing


class FractureLogOdds:
    """pytorch-grad-cam target: the fracture log-odds of one image's `fracture_logits` row."""

    def __call__(self, fracture_logits: torch.Tensor) -> torch.Tensor:
        return fracture_logits[..., 1] - fracture_logits[..., 0]


class _FractureLogits(torch.nn.Module):
    """The model as image -> its `fracture_logits` (pytorch-grad-cam iterates a model's output row by row,
    so it must be one tensor, not the `ModelOutput`)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.body_part = torch.zeros(0, dtype=torch.long)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image, self.body_part.to(image.device)).fracture_logits


@contextmanager
def fracture_cam(model: torch.nn.Module) -> Iterator[Callable[[torch.Tensor, torch.Tensor], np.ndarray]]:
    """Yield `cam(image[B,1,S,S], body_part[B]) -> heatmaps [B, S, S] in [0, 1]`; hooks removed on exit."""
    wrapper = _FractureLogits(model).eval()
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        reshape = getattr(model, "cam_reshape", None)
        with GradCAM(model=wrapper, target_layers=[model.cam_layer], reshape_transform=reshape) as cam:

            def compute(image: torch.Tensor, body_part: torch.Tensor) -> np.ndarray:
                wrapper.body_part = body_part.long()
                # The input needs a gradient so activations after a frozen backbone still get one.
                x = image.detach().clone().requires_grad_(True)
                with torch.enable_grad():
                    maps = cam(input_tensor=x, targets=[FractureLogOdds()] * len(x))
                return np.nan_to_num(np.asarray(maps, dtype=np.float32))

            yield compute
    finally:
        for p in trainable:
            p.requires_grad_(True)


def cam_to_original(heatmap: np.ndarray, shape: tuple[int, int], resize_mode: str) -> np.ndarray:
    """Undo the preprocessing resize: [S, S] map -> [H, W] (letterbox padding cropped off first)."""
    height, width = shape
    size = heatmap.shape[0]
    if resize_mode == "letterbox":
        scale = size / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        top, left = (size - new_h) // 2, (size - new_w) // 2
        heatmap = heatmap[top : top + new_h, left : left + new_w]
    resized = Image.fromarray(np.ascontiguousarray(heatmap, dtype=np.float32), mode="F")
    return np.asarray(resized.resize((width, height), Image.BILINEAR), dtype=np.float32)


def overlay(image: np.ndarray, heatmap: np.ndarray, image_weight: float = 0.55) -> np.ndarray:
    """RGB uint8 [H, W, 3]: the grey radiograph under a jet-coloured heatmap."""
    rgb = np.repeat((image.astype(np.float32) / 255.0)[..., None], 3, axis=2)
    return show_cam_on_image(rgb, np.clip(heatmap, 0, 1), use_rgb=True, image_weight=image_weight)


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, format="PNG")
    return path


@dataclass
class CamModel:
    model: torch.nn.Module
    preprocessing: Preprocessing
    device: torch.device


class GradCamExplainer:
    """Heatmaps for one model or an ensemble (the mean of its members' normalised maps)."""

    def __init__(self, members: Sequence[CamModel]) -> None:
        if not members:
            raise MuraError("no model to explain")
        self.members = list(members)

    @classmethod
    def from_checkpoints(cls, paths: Sequence[str | Path], device: str = "auto") -> GradCamExplainer:
        resolved = resolve_device(device)
        members = []
        for path in paths:
            if Path(path).suffix.lower() == ".onnx":
                raise MuraError(f"{path}: Grad-CAM needs the PyTorch checkpoint (.pt), not the ONNX export")
            model, checkpoint = load_model(path, resolved)
            members.append(CamModel(model.eval(), checkpoint.meta.preprocessing, resolved))
        return cls(members)

    @classmethod
    def from_predictor(cls, predictor: object) -> GradCamExplainer:
        """Reuse the predictor's PyTorch models; members running on ONNX load their `.pt` checkpoint."""
        from mura.inference.members import TorchMember

        members, to_load = [], []
        for member in predictor.members:  # type: ignore[attr-defined]
            if isinstance(member, TorchMember) and member.model is not None:
                members.append(CamModel(member.model, member.preprocessing, member.device))
            else:
                to_load.append(member.source.with_suffix(".pt"))
        if to_load:
            members += cls.from_checkpoints(to_load, "cpu").members
        return cls(members)

    def heatmap(self, image: np.ndarray, body_part: int = -1) -> np.ndarray:
        """float32 [H, W] in [0, 1] for a uint8 [H, W] image; body part -1 = the model's prediction."""
        maps = []
        for member in self.members:
            pre = member.preprocessing
            x = torch.from_numpy(pre.model_input(image)).to(member.device)
            with fracture_cam(member.model) as cam:
                square = cam(x, torch.tensor([body_part], device=member.device))[0]
            maps.append(cam_to_original(square, image.shape, pre.resize_mode))
        return np.clip(np.mean(maps, axis=0), 0.0, 1.0)
