"""Configuration and environment files: presets validate, errors name the key, the conda env
lists every runtime dependency."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from ntk_repro.config import ConfigError, resolve_config

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "workflow"


@pytest.mark.parametrize("preset", ["laptop", "paper", "test"])
def test_every_preset_validates(preset):
    cfg = resolve_config({"preset": preset}, WORKFLOW)
    assert cfg["preset"] == preset


def test_command_line_strings_get_their_types_back():
    # snakemake --config 'fig2={widths: [50, 4000]}' delivers strings
    cfg = resolve_config({"fig2": {"widths": ["50", "4000"]}, "model": {"beta": "0.3"}}, WORKFLOW)
    assert cfg["fig2"]["widths"] == [50, 4000] and cfg["model"]["beta"] == 0.3
    assert cfg["fig2"]["steps"] == resolve_config({}, WORKFLOW)["fig2"]["steps"]  # merged


@pytest.mark.parametrize(
    "user, key",
    [
        ({"model": {"beta": 1.5}}, "model.beta"),
        ({"fig1": {"widths": [0, 10]}}, "fig1.widths[0]"),
        ({"fig2": {"widht": 3}}, "fig2.widht"),
        ({"training": {"loss": "l1"}}, "training.loss"),
        ({"preset": "huge"}, "preset"),
        ({"gpus_per_job": -1}, "gpus_per_job"),
    ],
)
def test_bad_values_name_the_key(user, key):
    with pytest.raises(ConfigError) as err:
        resolve_config(user, WORKFLOW)
    message = str(err.value)
    assert f"'{key}'" in message and "\n" not in message


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].lower()


def test_conda_env_lists_every_runtime_dependency():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    env = yaml.safe_load((REPO / "envs" / "ntk.yaml").read_text())
    listed = {_name(d) for d in env["dependencies"] if isinstance(d, str)}
    # conda names of PyPI packages where they differ
    conda_name = {"torch": "pytorch", "matplotlib": "matplotlib-base"}
    for dep in pyproject["project"]["dependencies"]:
        name = _name(dep)
        if name == "snakemake":  # the workflow manager runs the env, it is not in it
            continue
        assert conda_name.get(name, name) in listed, f"{name} missing from envs/ntk.yaml"
    assert "python>=3.11" in env["dependencies"]


def test_every_rule_declares_the_conda_env():
    for smk in (WORKFLOW / "rules").glob("*.smk"):
        text = smk.read_text()
        assert text.count("\nrule ") == text.count('conda:\n        "../../envs/ntk.yaml"'), smk
