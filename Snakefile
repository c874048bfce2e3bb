# ntk-repro: the Neural Tangent Kernel papers, regenerated from first principles.
# `snakemake --cores all` builds every figure, results/checks.csv and the arrays behind them;
# `snakemake --cores 2 results/figures/fig2.pdf` builds one figure and only what it needs.
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

wildcard_constraints:
    width=r"\d+",
    depth=r"\d+",
    beta=r"\d+(\.\d+)?",
    seed=r"\d+",
    trial=r"\d+",
    figure=r"fig1|fig2|fig3|sweeps|normalisation|checkerboard|regimes|phase|speed|spectrum|gan",


FIGURES = ["fig1", "fig2", "fig3", "sweeps", "normalisation", "checkerboard", "regimes",
           "phase", "speed", "spectrum", "gan"]


include: "workflow/rules/common.smk"
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
