"""Build the served app from checkpoint files: load the model once, wire Grad-CAM and the model card."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from mura.errors import MuraError
from mura.service.app import create_app
from mura.service.model_card import model_card
from mura.service.viewer import Explainer

log = logging.getLogger(__name__)


def make_explainer(predictor: Any) -> Explainer | None:
    """Grad-CAM heatmaps of the fracture output, sharing the predictor's loaded PyTorch models.

    None (the service then answers `cam=true` with 400) when no PyTorch checkpoint is at hand, e.g. an
    exported `.onnx` served without its `.pt`: predictions still work.
    """
    from mura.inference.gradcam import GradCamExplainer

    try:
        return GradCamExplainer.from_predictor(predictor)
    except MuraError as exc:
        log.warning("Grad-CAM disabled: %s", exc)
        return None


def app_from_checkpoints(
    checkpoints: Sequence[str | Path],
    *,
    device: str = "auto",
    runtime: str = "auto",
    tta: bool = False,
    **options: Any,
) -> FastAPI:
    """`mura serve`'s app: one Predictor for the process's lifetime; `options` (limits, tokens, allowed
    hosts, docs) go to `create_app`."""
    from mura.inference.predictor import Predictor

    predictor = Predictor.from_checkpoints(list(checkpoints), device=device, runtime=runtime, tta=tta)
    return create_app(
        predictor, explainer=make_explainer(predictor), model_info=model_card(predictor), **options
    )
