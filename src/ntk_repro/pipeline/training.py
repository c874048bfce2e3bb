"""The training stage: `python -m ntk_repro.pipeline.training <experiment> ...` (see :mod:`.cli`)."""

import sys

from ntk_repro.pipeline.cli import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("training"))
