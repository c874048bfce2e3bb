"""Configuration: a preset (laptop / paper / test) overlaid by the user's values, validated.

The Snakefile calls :func:`resolve_config` before any job starts. The preset file
``workflow/presets/<preset>.yaml`` holds every value; ``config.yaml`` and ``--config`` override
any of them (nested keys merge). The merged result is checked against
``workflow/schemas/config.schema.yaml``; the first problem is reported in one line that names
the key, e.g. ``config key 'fig1.widths[0]': 0 is less than the minimum of 1``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A config value is wrong; the message names the key."""


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _coerce_scalars(value):
    """Snakemake parses nested ``--config`` values with YAML's BaseLoader, which leaves every
    scalar a string ('500'); give numbers, booleans and null back their types."""
    if isinstance(value, dict):
        return {k: _coerce_scalars(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_coerce_scalars(v) for v in value]
    if isinstance(value, str):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if parsed is None or isinstance(parsed, (bool, int, float)):
            return parsed
    return value


def _key_path(error) -> str:
    parts = ""
    for p in error.absolute_path:
        parts += f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p))
    return parts or "<top level>"


def validate(config: dict, schema: dict) -> None:
    """Raise ConfigError naming the key of the first schema violation."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (list(e.absolute_path), e.message))
    if not errors:
        return
    err = errors[0]
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        where = _key_path(err)
        name = ".".join(([] if where == "<top level>" else [where]) + extra[:1])
        raise ConfigError(f"config key '{name}' is not a known setting (typo?)")
    raise ConfigError(f"config key '{_key_path(err)}': {err.message}")


def resolve_config(user: dict, workflow_dir) -> dict:
    """Merge the chosen preset with the user's values and validate the result."""
    workflow_dir = Path(workflow_dir)
    user = _coerce_scalars(user or {})
    preset = user.get("preset", "laptop")
    preset_file = workflow_dir / "presets" / f"{preset}.yaml"
    if not isinstance(preset, str) or not preset_file.is_file():
        known = sorted(p.stem for p in (workflow_dir / "presets").glob("*.yaml"))
        raise ConfigError(f"config key 'preset': {preset!r} is not one of {known}")
    with open(preset_file) as fh:
        merged = deep_merge(yaml.safe_load(fh), user)
    with open(workflow_dir / "schemas" / "config.schema.yaml") as fh:
        schema = yaml.safe_load(fh)
    validate(merged, schema)
    return merged
