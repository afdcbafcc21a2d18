"""One typed configuration for a training run: defaults, then a YAML file, then command-line flags.

The whole config is validated when it is loaded, before any data is read or file written: every
choice is a `Literal`, every number has its range, unknown keys are errors, and each bad value is
reported on one line naming the key, the value, what is allowed and where the value came from.
The schema is pydantic (already a dependency through FastAPI) rather than hand-written coercion.

The resolved config is saved next to every checkpoint (and inside it), so a run can be reproduced
exactly with `mura train --config RUN_DIR/config.yaml`. This module is the schema and its one-line
errors; reading YAML and flags into it is `mura.config_loading`.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from mura import atomic
from mura.errors import MuraError

AugmentMode = Literal["none", "flip_rotate", "strong", "crop"]
Scheduler = Literal["plateau", "cosine", "none"]
Monitor = Literal["val_loss", "val_auc", "val_kappa"]
FractureLoss = Literal["ce", "focal"]
ClassWeightMode = Literal["none", "per_body_part", "global"]
Calibration = Literal["none", "temperature", "platt"]
DEVICE_FORMS = ("auto", "cpu", "cuda", "cuda:N")
FREEZE_FORMS = ("auto", "frozen", "last_stage", "last_stages:N", "full")
# Far above what fits one accelerator at the sizes used (224-320 px); a larger number is a typo, refused
# at load rather than found as an allocation failure after the run folder was made.
MAX_BATCH_SIZE = 4096


def _not_bool(value: Any) -> Any:
    """pydantic reads True as 1; a boolean where a number belongs is a mistake, not a number."""
    if isinstance(value, bool):
        raise PydanticCustomError("number_not_bool", "must be a number, not a boolean")
    return value


def _one_of(pattern: str, forms: tuple[str, ...]) -> AfterValidator:
    """A string choice with a numbered form (`cuda:N`), which a `Literal` cannot spell."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise PydanticCustomError("not_one_of", "is not one of " + ", ".join(forms))
        return value

    return AfterValidator(check)


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]
Device = Annotated[str, _one_of(r"auto|cpu|cuda(:\d+)?", DEVICE_FORMS)]
Freeze = Annotated[str, _one_of(r"auto|frozen|last_stage|last_stages:[1-9]\d*|full", FREEZE_FORMS)]
Fraction = Annotated[float, BeforeValidator(_not_bool), Field(gt=0, lt=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    def __setattr__(self, name: str, value: Any) -> None:
        """Assignments are validated too (`cfg.train.lr = -1` fails), with the same one-line error."""
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            section = next((key for key, cls in SECTIONS.items() if isinstance(self, cls)), "")
            raise config_error(exc, {}, None, prefix=f"{section}." if section else "") from None


class DataConfig(_Section):
    index: str = Field("", description="index CSV written by `mura index`")
    cache: str = Field("", description="cache directory written by `mura prepare`")
    train_split: str = Field("train", description="split of the index/cache to train on")
    val_split: str = Field("val", description="split used for validation, early stopping and thresholds")
    workers: Int = Field(2, ge=0, description="DataLoader worker processes (0 = load in the main process)")
    augment: AugmentMode = Field(
        "flip_rotate",
        description="train augmentation: flip_rotate (the spec); strong adds affine + contrast; "
        "crop: strong with a random resized crop instead of its scale/shift",
    )
    rotation_degrees: Float = Field(10.0, ge=0, le=180, description="largest random rotation, in degrees")
    max_train_images: Int = Field(0, ge=0, description="cap on train images (0 = all; quick experiments)")
    max_val_images: Int = Field(0, ge=0, description="cap on validation images (0 = all)")
    persistent_workers: bool = Field(True, description="keep DataLoader workers alive between epochs")
    folds: Int = Field(
        0,
        ge=0,
        description="cross-validation folds over fold_splits (0 = train_split and val_split as indexed)",
    )
    fold: Int = Field(0, ge=0, description="cross-validation: the fold held out (validated on), 0..folds-1")
    fold_splits: str = Field(
        "train,val,test", description="cross-validation: comma-separated splits pooled into folds"
    )
    fold_block_size: Int = Field(
        20,
        ge=1,
        description="cross-validation: consecutive ids kept in one fold when there are no patient ids",
    )


class ModelConfig(_Section):
    name: str = Field("efficientnet_b0", description="registry name or any timm backbone name")
    pretrained: bool = Field(False, description="load ImageNet weights from the hub (needs internet)")
    weights_file: str = Field("", description="load backbone weights from a local .safetensors/.pth file")
    freeze: Freeze = Field(
        "auto",
        description="backbone layers to freeze: auto (last_stage with weights, else full), "
        "frozen, last_stage, last_stages:N or full",
    )
    embed_dim: Int = Field(32, ge=1, description="body-part embedding concatenated before the fracture head")
    dropout: Float = Field(0.3, ge=0, lt=1, description="dropout before the heads")
    body_part_head: bool = Field(
        True, description="custom_cnn: false gives the spec's exact single-output baseline"
    )
    size: Int = Field(224, ge=32, description="input side in pixels (must match the cache)")
    map_head: bool = Field(
        False, description="add a dense fracture-map head on the backbone's unpooled maps (box-trained)"
    )
    map_subcells: Int = Field(
        1,
        ge=1,
        le=8,
        description="fracture map: sub-cells per backbone cell side (pixel shuffle); 4 = a 4x finer map",
    )
    map_to_logit: bool = Field(
        False, description="fracture map: add its pooled evidence (LSE) to the image fracture logit"
    )
    map_stride: Int = Field(
        32, ge=8, le=32, description="fracture map: 16 also reads the stride-16 stage (finer boxes)"
    )


class TrainConfig(_Section):
    epochs: Int = Field(20, ge=1, description="most epochs to train")
    batch_size: Int = Field(
        32,
        ge=1,
        le=MAX_BATCH_SIZE,
        description="images per batch on each process (a train set smaller than this is one batch)",
    )
    lr: Float = Field(1e-3, ge=0, description="Adam learning rate (0: a control run whose weights stay put)")
    weight_decay: Float = Field(1e-4, ge=0, description="Adam weight decay")
    scheduler: Scheduler = Field("plateau", description="LR schedule: plateau, cosine (with warm-up) or none")
    warmup_epochs: Int = Field(1, ge=0, description="cosine: epochs of linear LR warm-up")
    plateau_patience: Int = Field(2, ge=0, description="plateau: epochs without improvement before a cut")
    plateau_factor: Fraction = Field(0.5, description="plateau: factor the LR is multiplied by at a cut")
    early_stopping_patience: Int = Field(
        5, ge=0, description="epochs without improvement of `monitor` before stopping (0 = never)"
    )
    early_stopping_min_delta: Float = Field(
        0.0, ge=0, description="smallest change of `monitor` that counts as improvement"
    )
    monitor: Monitor = Field("val_loss", description="metric that picks the best epoch (val_loss: the spec)")
    body_part_loss_weight: Float = Field(1.0, ge=0, description="weight of the body-part loss")
    map_loss_weight: Float = Field(
        1.0, ge=0, description="weight of the fracture-map loss (box targets), when the model has a map head"
    )
    loss: FractureLoss = Field("ce", description="fracture loss: ce (cross-entropy) or focal")
    focal_gamma: Float = Field(2.0, ge=0, description="focal loss: focusing parameter gamma")
    label_smoothing: Float = Field(
        0.0, ge=0, lt=0.5, description="fracture loss: share of each target spread evenly over both classes"
    )
    class_weights: ClassWeightMode = Field(
        "none", description="class weights: none, per_body_part (MURA paper) or global"
    )
    grad_clip: Float = Field(1.0, ge=0, description="clip the gradient norm to this (0 = no clipping)")
    amp: bool = Field(True, description="bf16 autocast on CUDA; ignored on CPU")
    cpu_bf16: bool = Field(
        False,
        description="bf16 autocast on CPUs that compute bf16 natively (AVX512-BF16 / AMX); ignored elsewhere",
    )
    channels_last: bool = Field(True, description="channels-last memory format for convolutions")
    feature_cache: bool = Field(
        True,
        description="frozen backbone: compute features once, train the heads on them (not with map_head)",
    )
    feature_cache_views: Int = Field(
        4, ge=1, description="augmented views per train image in the feature cache (+1 clean)"
    )
    threads: Int = Field(0, ge=0, description="torch intra-op CPU threads (0 = torch's default)")
    seed: Int = Field(0, ge=0, description="seed for weights, shuffling and augmentation")
    device: Device = Field("auto", description="auto, cpu, cuda or cuda:N")
    target_sensitivity: Fraction = Field(
        0.9, description="sensitivity of the 'suspicious' threshold chosen on validation"
    )
    target_specificity: Fraction = Field(
        0.9, description="specificity of the 'definite' threshold chosen on validation"
    )
    calibration: Calibration = Field(
        "platt", description="probability calibration fitted on validation: none, temperature or platt"
    )


class Config(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    out: str = Field("runs/run", description="run directory: checkpoints, config.yaml, metrics, tensorboard/")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def save(self, path: str | Path) -> None:
        atomic.write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


SECTIONS: dict[str, type[_Section]] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


@dataclass(frozen=True)
class FieldSpec:
    """One config key, as the CLI shows it: `--train.lr` (`--lr` where `short` is set)."""

    dotted: str
    short: str | None  # the key alone, where no other section has a key of that name
    help: str  # the description, then the allowed range (`> 0`) for numbers
    choices: tuple[str, ...] | None  # the allowed values of a `Literal` key
    default: Any
    value_type: type  # bool, int, float or str


def config_fields() -> list[FieldSpec]:
    """Every key of `Config`, sections first (data, model, train), then `out`."""
    leaves = [
        (section, name, info) for section, cls in SECTIONS.items() for name, info in cls.model_fields.items()
    ]
    counts = Counter(name for _, name, _ in leaves)
    specs = []
    for section, name, info in [*leaves, ("", "out", Config.model_fields["out"])]:
        literal = get_origin(info.annotation) is Literal
        specs.append(
            FieldSpec(
                dotted=f"{section}.{name}" if section else name,
                short=name if section and counts[name] == 1 else None,
                help=" ".join(filter(None, [info.description, _range_text(info.metadata)])),
                choices=tuple(get_args(info.annotation)) if literal else None,
                default=info.get_default(call_default_factory=True),
                value_type=str if literal else info.annotation,
            )
        )
    return specs


_BOUND_SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _range_text(metadata: list[Any]) -> str:
    """`[>= 0, < 1]` from a field's bounds (annotated_types' Gt, Ge, Lt, Le), for the CLI help."""
    bounds = [
        f"{sym} {getattr(m, attr)}"
        for m in metadata
        for attr, sym in _BOUND_SYMBOLS.items()
        if hasattr(m, attr)
    ]
    return f"[{', '.join(bounds)}]" if bounds else ""


def config_error(
    exc: ValidationError, sources: dict[str, str], default_source: str | None, prefix: str = ""
) -> MuraError:
    """All of pydantic's complaints on one line, each naming key, value, what is allowed and source."""
    problems = [_describe(error, sources, default_source, prefix) for error in exc.errors()]
    return MuraError("config: " + "; ".join(problems))


def _describe(error: Any, sources: dict[str, str], default_source: str | None, prefix: str) -> str:
    """One pydantic error as `train.lr=-0.01 must be greater than 0 (from --train.lr)`."""
    dotted = prefix + ".".join(str(part) for part in error["loc"])
    source = sources.get(dotted) or sources.get(dotted.partition(".")[0]) or default_source
    where = f" (from {source})" if source else ""
    value = _show(error["input"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown key {dotted!r}{suggestion(dotted, dotted_keys())}{where}"
    if kind == "literal_error":
        choices = next(spec.choices for spec in config_fields() if spec.dotted == dotted)
        return f"{dotted}={value} is not one of {', '.join(choices or ())}{where}"
    if kind in ("model_type", "dict_type"):
        return f"{dotted}={value} must be a mapping of {dotted} keys{where}"
    problem = error["msg"].replace("Input should be", "must be", 1).split(", unable to")[0]
    return f"{dotted}={value} {problem}{where}"


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _show(value: Any) -> str:
    """Numbers as typed (`-0.01`, even from a flag's string), everything else as Python shows it."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return value.strip()
    return repr(value)


def dotted_keys() -> list[str]:
    return [spec.dotted for spec in config_fields()]


def suggestion(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""
