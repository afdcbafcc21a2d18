"""Models: a registry of multi-task (fracture + body part) classifiers on 1-channel radiographs."""

from mura.models.freeze import FREEZE_POLICIES, apply_freeze
from mura.models.heads import MultiTaskHeads
from mura.models.multitask import MultiTaskModel
from mura.models.registry import create_model, list_models, model_from_config, register_model
from mura.models.stems import adapt_first_conv, load_backbone_weights, read_state_dict

__all__ = [
    "FREEZE_POLICIES",
    "MultiTaskHeads",
    "MultiTaskModel",
    "adapt_first_conv",
    "apply_freeze",
    "create_model",
    "list_models",
    "load_backbone_weights",
    "model_from_config",
    "read_state_dict",
    "register_model",
]
