"""Configuration: a preset (laptop / paper / test) overlaid by the user's values, validated.

The Snakefile calls :func:`resolve_config` before any job starts. ``workflow/presets/laptop.yaml``
holds every value; another preset (``paper.yaml``, ``test.yaml``) is an overlay on it, and
``config.yaml`` and ``--config`` override any value (nested keys merge). The merged result is
checked against ``workflow/schemas/config.schema.yaml``; the most specific problem is
reported in one line that names the key, e.g.
``config key 'fig1.widths[0]': -5 is less than the minimum of 1``.
"""

from __future__ import annotations

import copy
import os
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
    # The most specific problem first: for widths [-5] that the width is negative, not that
    # the list is too short.
    errors = sorted(
        validator.iter_errors(config),
        key=lambda e: (-len(e.absolute_path), [str(p) for p in e.absolute_path], e.message),
    )
    if not errors:
        return
    err = errors[0]
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        where = _key_path(err)
        name = ".".join(([] if where == "<top level>" else [where]) + extra[:1])
        raise ConfigError(f"config key '{name}' is not a known setting (typo?)")
    raise ConfigError(f"config key '{_key_path(err)}': {err.message}")


BASE_PRESET = "laptop"


def _read_yaml(path: Path) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh) or {}


def load_preset(preset, workflow_dir) -> dict:
    """Every value of a preset: ``laptop.yaml`` overlaid by ``<preset>.yaml``."""
    presets = Path(workflow_dir) / "presets"
    preset_file = presets / f"{preset}.yaml"
    if not isinstance(preset, str) or not preset_file.is_file():
        known = sorted(p.stem for p in presets.glob("*.yaml"))
        raise ConfigError(f"config key 'preset': {preset!r} is not one of {known}")
    base = _read_yaml(presets / f"{BASE_PRESET}.yaml")
    return base if preset == BASE_PRESET else deep_merge(base, _read_yaml(preset_file))


def _mnist_file(path: str, section: dict) -> None:
    from ntk_repro.data import check_mnist_file

    check_mnist_file(os.path.expanduser(path), n=section["n_points"])


# Config keys that name a user's file -> a cheap parser (headers only) that raises ValueError
# naming the file; a later data path adds its entry here.
DATA_FILES = {("fig3", "mnist"): _mnist_file}


def check_data_files(config: dict) -> None:
    """Every file named in the config exists and parses, before any job starts."""
    for (section, key), check in DATA_FILES.items():
        path = config.get(section, {}).get(key)
        if path is None:
            continue
        try:
            check(str(path), config[section])
        except ValueError as err:
            raise ConfigError(f"config key '{section}.{key}': {err}") from None


def resolve_config(user: dict, workflow_dir) -> dict:
    """Merge the chosen preset with the user's values and validate the result."""
    workflow_dir = Path(workflow_dir)
    user = _coerce_scalars(user or {})
    merged = deep_merge(load_preset(user.get("preset", BASE_PRESET), workflow_dir), user)
    with open(workflow_dir / "schemas" / "config.schema.yaml") as fh:
        schema = yaml.safe_load(fh)
    validate(merged, schema)
    check_data_files(merged)
    return merged
