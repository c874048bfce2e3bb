"""The tables stage: `python -m ntk_repro.pipeline.tables <experiment> ...` (see :mod:`.cli`)."""

import sys

from ntk_repro.pipeline.cli import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("tables"))
