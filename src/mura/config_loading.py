"""Reading a run's configuration: defaults, then a YAML file, then overrides (flags or a mapping), into the
validated `mura.config.Config`; and rebuilding one saved with a checkpoint.

Apart from the schema because it is the only part that touches files and flag syntax; every error
names the key, the value and where it came from (`mura.config.config_error`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mura.config import SECTIONS, Config, config_error, config_fields, dotted_keys, suggestion
from mura.errors import MuraError


def resolve_key(key: str) -> str:
    """`lr` -> `train.lr`; `train.lr` stays; `out` stays."""
    key = key.lstrip("-").replace("-", "_")
    if "." in key or key == "out":
        return key
    known = {spec.short: spec.dotted for spec in config_fields() if spec.short}
    if key not in known:
        raise MuraError(f"config: unknown option --{key}{suggestion(key, list(known))}")
    return known[key]


def load_config(
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
    *,
    from_flags: bool = False,
) -> Config:
    """Defaults, then the YAML file (nested sections), then overrides (`key=value` or a mapping).

    `from_flags` says the overrides are command-line flags, so an error names `--train.lr`.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if yaml_path:
        path = str(yaml_path)
        for key, value in _read_yaml(Path(yaml_path)).items():
            if isinstance(value, dict):
                for leaf, leaf_value in value.items():
                    _put(values, sources, f"{key}.{leaf}", leaf_value, path)
            elif not (value is None and key in SECTIONS):  # `train:` with nothing under it
                _put(values, sources, str(key), value, path)
    for key, value in _override_items(overrides):
        dotted = resolve_key(key)
        _put(values, sources, dotted, value, f"--{dotted}" if from_flags else "overrides")
    return _validate(values, sources)


def config_from_dict(data: dict[str, Any], source: str = "saved config") -> Config:
    """Rebuild a Config saved with `to_dict` (e.g. from a checkpoint); unknown keys are errors."""
    if not isinstance(data, dict):
        raise MuraError(f"config: {source} is not a mapping of sections (data, model, train)")
    return _validate(data, {}, default_source=source)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MuraError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise MuraError(f"{path}: not valid YAML{where} ({reason})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MuraError(f"{path}: cannot read config ({exc})") from None
    if not isinstance(data, dict):
        raise MuraError(f"{path}: expected a mapping of sections (data, model, train)")
    return data


def _override_items(overrides: dict[str, Any] | list[str] | None) -> list[tuple[str, Any]]:
    if isinstance(overrides, dict):
        return list(overrides.items())
    items = []
    for text in overrides or []:
        key, sep, value = text.partition("=")
        if not sep:
            raise MuraError(f"config: override {text!r} is not key=value")
        items.append((key, value))
    return items


def _put(values: dict[str, Any], sources: dict[str, str], dotted: str, value: Any, source: str) -> None:
    """Set one key in the nested raw mapping, remembering where its value came from."""
    section, _, leaf = dotted.partition(".")
    if leaf:
        if section not in SECTIONS:
            raise MuraError(
                f"config: unknown key {dotted!r}{suggestion(dotted, dotted_keys())} (from {source})"
            )
        if not isinstance(values.get(section, {}), dict):
            raise MuraError(f"config: {section} must be a mapping of keys, so {dotted!r} cannot be set")
        values.setdefault(section, {})[leaf] = value
    else:
        values[section] = value
    sources[dotted] = source


def _validate(values: dict[str, Any], sources: dict[str, str], default_source: str | None = None) -> Config:
    try:
        return Config.model_validate(values)
    except ValidationError as exc:
        raise config_error(exc, sources, default_source) from None
