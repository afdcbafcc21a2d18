"""mura: fracture / abnormality classifiers for musculoskeletal radiographs.

    import mura
    model = mura.load("runs/b0/best.pt")             # several paths: an ensemble
    model.predict("xray.png")                        # Prediction(fracture_probability=..., decision=...)
    model.predict_study(["view1.dcm", "view2.dcm"])  # StudyPrediction: the mean of its views
    net = mura.create_model("efficientnet_b0", pretrained=True)
    cfg = mura.load_config("configs/efficientnet_b0.yaml", {"data.cache": "cache_224", "out": "runs/b0"})
    mura.train(cfg)
    mura.evaluate(["runs/b0/best.pt"], "cache_224", "runs/b0/eval")

Names are imported on first use, so `import mura` (and the CLI) stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "load": ("mura.api.model", "load"),
    "Model": ("mura.api.model", "Model"),
    "Prediction": ("mura.prediction", "Prediction"),
    "StudyPrediction": ("mura.prediction", "StudyPrediction"),
    "create_model": ("mura.models.registry", "create_model"),
    "list_models": ("mura.models.registry", "list_models"),
    "load_config": ("mura.config_loading", "load_config"),
    "Config": ("mura.config", "Config"),
    "train": ("mura.training.loop", "train"),
    "evaluate": ("mura.evaluation.runner", "evaluate_checkpoints"),
    "MuraError": ("mura.errors", "MuraError"),
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'mura' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = getattr(import_module(module), attribute)
    globals()[name] = value
    return value
