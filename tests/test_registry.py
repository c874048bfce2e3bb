"""Every experiment is declared once and found everywhere: module, schema, preset, caption,
figure target and rules agree, and a stage reads only what its experiment declares."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ntk_repro.config import load_preset, resolve_config
from ntk_repro.experiments import registry

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "workflow"
SHARED_KEYS = {"preset", "seed", "device", "gpus_per_job", "model", "training"}
MODULES = sorted(p.stem for p in (REPO / "src/ntk_repro/experiments").glob("[!_]*.py"))


def _schema_sections() -> set[str]:
    schema = yaml.safe_load((WORKFLOW / "schemas/config.schema.yaml").read_text())
    return set(schema["properties"]) - SHARED_KEYS


def test_every_module_is_an_experiment_with_schema_preset_and_caption():
    experiments = registry()
    assert sorted(experiments) == MODULES
    assert _schema_sections() == set(MODULES)  # and no schema section without a module
    schema = yaml.safe_load((WORKFLOW / "schemas/config.schema.yaml").read_text())
    assert set(schema["required"]) - SHARED_KEYS == set(MODULES)  # a preset cannot drop one
    laptop = load_preset("laptop", WORKFLOW)
    for name in MODULES:
        assert name in laptop, f"workflow/presets/laptop.yaml has no section {name!r}"
        caption = WORKFLOW / "report" / f"{name}.rst"
        assert caption.is_file() and len(caption.read_text()) > 200, caption
    captions = {p.stem for p in (WORKFLOW / "report").glob("*.rst")} - {"checks"}
    assert captions == set(MODULES)


def test_every_experiment_has_a_figure_target_and_rules():
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--list-rules"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    rules = set(out.stdout.split())
    for name, exp in registry().items():
        expected = {f"{name}_{job.name}" for job in exp.jobs} | {f"{name}_plot", f"{name}_check"}
        assert expected <= rules, expected - rules


@pytest.mark.parametrize("name", MODULES)
def test_stage_signatures_match_the_declaration(name):
    exp = registry()[name]
    for job in exp.jobs:
        params = inspect.signature(job.stage).parameters
        keywords = set(job.inputs) | set(job.wildcards()) | set(job.fixed)
        assert keywords == {k for k, v in params.items() if v.kind == v.KEYWORD_ONLY}, job
    for step in (exp.plot, exp.check):
        params = inspect.signature(step).parameters
        assert set(exp.figure_inputs) == {
            k for k, v in params.items() if v.kind == v.KEYWORD_ONLY
        }, step
    for job_name in list(exp.figure_inputs.values()) + [
        j for job in exp.jobs for j in job.inputs.values()
    ]:
        exp.job(job_name)  # every input names a job of the experiment


@pytest.mark.parametrize("name", MODULES)
def test_params_hold_only_what_the_experiment_declares(name):
    exp = registry()[name]
    cfg = resolve_config({"preset": "test"}, WORKFLOW)
    p = exp.params(cfg)
    json.dumps(p)  # what the rule passes on the command line
    assert set(cfg[name]) <= set(p)
    for key in exp.uses:
        section, _, item = key.partition(".")
        assert section in cfg and (not item or item in cfg[section]), key
    extra = set(p) - set(cfg[name])
    if "model" not in exp.uses:  # e.g. Freeze & Chaos: model.beta never reaches them
        assert not (extra & {"beta", "depth"} - set(cfg[name])), extra


def test_an_input_from_a_job_over_wildcards_is_always_a_list():
    from argparse import Namespace

    from ntk_repro.run import _keywords

    exp = registry()["fig2"]
    one_width = Namespace(step="plot", input=[["limit", "l.npz"], ["runs", "w50.npz"]], wildcard=[])
    assert _keywords(one_width, exp) == {"limit": "l.npz", "runs": ["w50.npz"]}
    train = Namespace(step="train", input=[], wildcard=["width=50"])
    assert _keywords(train, exp) == {"width": "50"}
    nets = Namespace(step="layer", input=[], wildcard=["width=64"])
    assert _keywords(nets, registry()["normalisation"]) == {"norm": "layer", "width": "64"}
