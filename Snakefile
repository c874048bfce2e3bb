# ntk-repro: the Neural Tangent Kernel papers, regenerated from first principles.
# `snakemake --cores all` builds every figure, results/checks.csv and the arrays behind them;
# `snakemake --cores 2 results/figures/fig2.pdf` builds one figure and only what it needs.
import json
import shlex
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # also works without `pip install -e .`
from ntk_repro.config import ConfigError, resolve_config


configfile: "config.yaml"


try:
    CFG = resolve_config(config, Path(workflow.basedir) / "workflow")
except ConfigError as err:
    # One line naming the key, before any job starts.
    raise SystemExit(f"config error: {err}") from None

RESULTS = "results"
# Jobs import the library from this checkout, in a venv, a conda env or on a cluster node.
SRC = shlex.quote(str(Path(workflow.basedir) / "src"))


def params_for(section):
    """The resolved settings one experiment sees, shell-quoted JSON. Only a change of these
    values reruns that experiment's jobs (Snakemake's params rerun trigger)."""
    merged = {**CFG["model"], **CFG["training"], **CFG[section],
              "device": CFG["device"], "seed": CFG["seed"]}
    return shlex.quote(json.dumps(merged, sort_keys=True))


def stage(name, experiment):
    """Thin shell call of a stage entry point; torch uses exactly the job's threads."""
    return (f"OMP_NUM_THREADS={{threads}} MKL_NUM_THREADS={{threads}} PYTHONPATH={SRC}${{{{PYTHONPATH:+:$PYTHONPATH}}}} "
            f"python -m ntk_repro.pipeline.{name} {experiment} --params {{params.cfg}} ")


wildcard_constraints:
    width=r"\d+",
    depth=r"\d+",
    beta=r"\d+(\.\d+)?",
    seed=r"\d+",
    trial=r"\d+",
    figure=r"fig1|fig2|fig3|sweeps|normalisation|checkerboard|regimes|phase|speed|spectrum|gan",


FIGURES = ["fig1", "fig2", "fig3", "sweeps", "normalisation", "checkerboard", "regimes",
           "phase", "speed", "spectrum", "gan"]


include: "workflow/rules/data.smk"
include: "workflow/rules/kernels.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/spectrum.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/checks.smk"


rule all:
    default_target: True
    input:
        expand(f"{RESULTS}/figures/{{figure}}.{{ext}}", figure=FIGURES, ext=["png", "pdf"]),
        f"{RESULTS}/checks.csv",
