# ntk-repro: the Neural Tangent Kernel papers, regenerated from first principles.
# `snakemake --cores all` builds every figure, results/checks.csv and the arrays behind them;
# `snakemake --cores 2 results/figures/fig2.pdf` builds one figure and only what it needs.
# The experiments are declared in src/ntk_repro/experiments/<name>.py (EXPERIMENT); the
# package is imported as installed (`pip install -e .`, which `make` does).
from pathlib import Path

from snakemake.utils import min_version

from ntk_repro.config import ConfigError, resolve_config
from ntk_repro.experiments import registry

min_version("9.0")


configfile: "config.yaml"


try:
    CFG = resolve_config(config, Path(workflow.basedir) / "workflow")
except ConfigError as err:
    # One line naming the key, before any job starts.
    raise SystemExit(f"config error: {err}") from None

EXPERIMENTS = registry()
for _exp in EXPERIMENTS.values():
    if _exp.validate is not None:
        try:
            _exp.validate(_exp.params(CFG))
        except ValueError as err:
            raise SystemExit(f"config error: {err}") from None


include: "workflow/rules/common.smk"
include: "workflow/rules/experiments.smk"
include: "workflow/rules/checks.smk"


rule all:
    default_target: True
    input:
        expand(f"{RESULTS}/figures/{{name}}.{{ext}}", name=EXPERIMENTS, ext=["png", "pdf"]),
        f"{RESULTS}/checks.csv",
        f"{RESULTS}/claims.txt",
