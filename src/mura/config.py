"""One typed configuration for a training run: defaults, then a YAML file, then command-line flags.

The resolved config is saved next to every checkpoint (and inside it), so a run can be reproduced
exactly with `mura train --config RUN_DIR/config.yaml`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mura.errors import MuraError


@dataclass
class DataConfig:
    index: str = ""  # index CSV written by `mura index`
    cache: str = ""  # cache directory written by `mura prepare`
    train_split: str = "train"
    val_split: str = "val"
    workers: int = 2  # DataLoader worker processes (0 = load in the main process)
    augment: str = "flip_rotate"  # none | flip_rotate (the spec) | strong (adds affine + contrast)
    rotation_degrees: float = 10.0
    max_train_images: int = 0  # 0 = all; >0 caps the train split (quick experiments)
    max_val_images: int = 0  # 0 = all; >0 caps the validation split
    persistent_workers: bool = True  # keep DataLoader workers alive between epochs


@dataclass
class ModelConfig:
    name: str = "efficientnet_b0"  # registry name or any timm backbone name
    pretrained: bool = False  # load ImageNet weights from the hub (needs internet) ...
    weights_file: str = ""  # ... or from a local file (.safetensors / .pth state dict)
    # auto (last_stage if pretrained, else full) | frozen | last_stage | last_stages:N | full
    freeze: str = "auto"
    embed_dim: int = 32  # body-part embedding concatenated before the fracture head
    dropout: float = 0.3
    body_part_head: bool = True  # custom_cnn: False gives the spec's exact single-output baseline
    size: int = 224  # input side in pixels (must match the cache)


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    scheduler: str = "plateau"  # plateau | cosine (with warm-up) | none
    warmup_epochs: int = 1
    plateau_patience: int = 2
    plateau_factor: float = 0.5
    early_stopping_patience: int = 5  # epochs without improvement of `monitor` before stopping (0 = never)
    early_stopping_min_delta: float = 0.0  # smallest change of `monitor` that counts as improvement
    monitor: str = "val_loss"  # val_loss (the spec) | val_auc | val_kappa
    body_part_loss_weight: float = 1.0
    loss: str = "ce"  # ce | focal
    focal_gamma: float = 2.0
    class_weights: str = "none"  # none | per_body_part (MURA paper) | global
    grad_clip: float = 1.0
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    channels_last: bool = True
    feature_cache: bool = True  # frozen backbone: compute features once, train heads on them
    feature_cache_views: int = 4  # augmented views per train image in the feature cache (+1 clean)
    threads: int = 0  # torch intra-op CPU threads (0 = torch's default: one per core)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    target_sensitivity: float = 0.9  # the "suspicious" operating point, chosen on validation
    target_specificity: float = 0.9  # the "definite" operating point, chosen on validation
    calibration: str = "platt"  # none | temperature | platt (bias + temperature), fitted on validation


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str = "runs/run"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _section_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Turn a YAML or command-line value into the field's declared type, or say which key is wrong."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    try:
        if annotation is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if annotation in (int, float, str):
            if annotation is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return annotation(value) if annotation is not int else int(float(value))
    except (TypeError, ValueError):
        raise MuraError(f"config: {key}={value!r} is not a valid {annotation.__name__}") from None
    return value


def _apply(cfg: Config, dotted: str, value: Any) -> None:
    section_name, _, key = dotted.partition(".")
    if not key:
        if section_name != "out":
            raise MuraError(f"config: unknown key {dotted!r}")
        cfg.out = str(value)
        return
    section = getattr(cfg, section_name, None)
    if section is None or not dataclasses.is_dataclass(section):
        raise MuraError(f"config: unknown section {section_name!r} in {dotted!r}")
    hints = _section_types(type(section))
    if key not in hints:
        raise MuraError(f"config: unknown key {dotted!r} (known: {', '.join(sorted(hints))})")
    setattr(section, key, _coerce(value, hints[key], dotted))


def _leaf_names() -> dict[str, str]:
    """Short flag names (`--lr`) for every key that is unique across sections."""
    seen: dict[str, list[str]] = {}
    for section in ("data", "model", "train"):
        for key in _section_types(type(getattr(Config(), section))):
            seen.setdefault(key, []).append(f"{section}.{key}")
    return {key: paths[0] for key, paths in seen.items() if len(paths) == 1}


def resolve_key(key: str) -> str:
    """`lr` -> `train.lr`; `train.lr` stays; `out` stays."""
    key = key.lstrip("-").replace("-", "_")
    if "." in key or key == "out":
        return key
    leaves = _leaf_names()
    if key not in leaves:
        raise MuraError(f"config: unknown option --{key}")
    return leaves[key]


def load_config(
    yaml_path: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None
) -> Config:
    """Defaults, then the YAML file (nested sections), then overrides (`key=value` or a mapping)."""
    cfg = Config()
    if yaml_path:
        path = Path(yaml_path)
        if not path.is_file():
            raise MuraError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise MuraError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise MuraError(f"{path}: expected a mapping of sections (data, model, train)")
        for section, values in data.items():
            if isinstance(values, dict):
                for key, value in values.items():
                    _apply(cfg, f"{section}.{key}", value)
            else:
                _apply(cfg, section, values)
    items: list[tuple[str, Any]]
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = []
        for text in overrides or []:
            key, sep, value = text.partition("=")
            if not sep:
                raise MuraError(f"config: override {text!r} is not key=value")
            items.append((key, value))
    for key, value in items:
        _apply(cfg, resolve_key(key), value)
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config saved with `to_dict` (e.g. from a checkpoint); unknown keys are errors."""
    overrides: dict[str, Any] = {"out": data["out"]} if "out" in data else {}
    for section, values in data.items():
        if isinstance(values, dict):
            overrides.update({f"{section}.{key}": value for key, value in values.items()})
    return load_config(overrides=overrides)
