"""The experiments: one module per reproduced result, each declared once by its ``EXPERIMENT``.

An :class:`Experiment` says everything the workflow needs to know about a result: its name
(= its config section, its folder ``results/<name>/``, its figure ``results/figures/<name>``,
its caption ``workflow/report/<name>.rst``), which other config values its stages read, its
jobs (stage function, result file, the wildcard values it runs over, resources) and what the
figure and the checks are drawn from. The Snakefile builds one rule per job from these
declarations; nothing else lists the experiments.

A stage is a plain function ``stage(p, outputs, **inputs, **wildcards)``:

- ``p``: the experiment's config section merged with the values it declares in ``uses``;
- ``outputs``: the list of files it writes;
- ``inputs``: one keyword per declared input (a path, or a list of paths for a job that runs
  over wildcard values, in the order of its ``each``);
- ``wildcards``: one keyword per wildcard of its output pattern, as strings.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

Stage = Callable[..., None]
# (p, wildcards) -> MB or minutes; p as the stage sees it, wildcards as strings.
Resource = int | Callable[[dict, Mapping[str, str]], int]


@dataclass(frozen=True)
class Job:
    """One rule of an experiment: a stage writing ``results/<experiment>/<output>``.

    ``each(p)`` lists the wildcard values the job runs over (one job per dict); ``inputs``
    maps a keyword of the stage to the name of another job of the same experiment, whose
    file(s) it reads. ``fixed`` are constant keywords (e.g. which normalisation).
    """

    name: str
    stage: Stage
    output: str
    each: Callable[[dict], list[dict]] | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)
    fixed: Mapping[str, str] = field(default_factory=dict)
    threads: int = 1
    gpu: bool = False  # asks for `gpus_per_job` GPUs on a cluster
    mem_mb: Resource = 1000
    runtime: Resource = 10  # minutes

    def wildcards(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.output)


@dataclass(frozen=True)
class Experiment:
    """A reproduced result: its jobs, its figure and its checked claims."""

    name: str
    order: int  # place of the figure and its claims in reports (NTK paper first)
    uses: tuple[str, ...]  # top-level config keys/sections, or "section.key", the stages read
    jobs: tuple[Job, ...]
    plot: Stage
    check: Stage
    figure_inputs: Mapping[str, str]  # keyword of plot/check -> job name
    figure_mem_mb: int = 2000
    # What the schema cannot say (relations between keys): called with the stages' params when
    # the workflow loads the config, before any job; raises a one-line ValueError naming the key.
    validate: Callable[[dict], None] | None = None

    def job(self, name: str) -> Job:
        for job in self.jobs:
            if job.name == name:
                return job
        raise KeyError(f"experiment {self.name!r} has no job {name!r}")

    def stage(self, name: str) -> Stage:
        """The function of a job, or of the ``plot`` / ``check`` step."""
        if name in ("plot", "check"):
            return getattr(self, name)
        return self.job(name).stage

    def params(self, config: Mapping) -> dict:
        """What the stages see: the ``uses`` values, then the experiment's own section."""
        merged: dict = {}
        for key in self.uses:
            section, _, item = key.partition(".")
            if item:
                merged[item] = config[section][item]
            elif isinstance(config[section], Mapping):
                merged.update(config[section])
            else:
                merged[section] = config[section]
        merged.update(config[self.name])
        return merged

    @property
    def source(self) -> Path:
        """The module file: an input of every job, so editing it reruns this experiment."""
        return Path(importlib.import_module(f"{__name__}.{self.name}").__file__)


def over(wildcard: str, config_key: str) -> Callable[[dict], list[dict]]:
    """``each`` of a job that runs once per value of a configured list, e.g. widths."""
    return lambda p: [{wildcard: value} for value in p[config_key]]


def ensemble_mem_mb(p: dict, wildcards: Mapping[str, str]) -> int:
    """Memory of ``p["inits"]`` stacked float32 nets of the job's width: weights, gradients
    and their copies (4 × 12 bytes per weight), plus 2 GB for the interpreter and data."""
    return 2000 + int(wildcards["width"]) ** 2 * 12 * p.get("inits", 1) // 2**20 * 4


def _discover() -> dict[str, Experiment]:
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        spec = getattr(module, "EXPERIMENT", None)
        if spec is None:
            raise RuntimeError(f"experiment module {info.name!r} declares no EXPERIMENT")
        if spec.name != info.name:
            raise RuntimeError(f"module {info.name!r} declares experiment {spec.name!r}")
        found[spec.name] = spec
    return dict(sorted(found.items(), key=lambda item: item[1].order))


def registry() -> dict[str, Experiment]:
    """Every experiment, by name, in report order (imports every module once)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _discover()
    return _REGISTRY


_REGISTRY: dict[str, Experiment] | None = None
