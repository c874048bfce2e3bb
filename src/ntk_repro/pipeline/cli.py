"""The one command line shared by every stage.

    python -m ntk_repro.pipeline.<stage> <experiment> --params JSON \
        [--input PATH ...] --output PATH [PATH ...] [--wildcard KEY=VALUE ...]

calls ``ntk_repro.experiments.<experiment>.<stage>(params, inputs, outputs, **wildcards)``.
``params`` is the experiment's resolved config section (JSON); wildcards arrive as strings.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time

STAGES = ("data", "kernels", "training", "spectrum", "tables", "figures", "checks")
log = logging.getLogger("ntk_repro")


def _parse(stage: str, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m ntk_repro.pipeline.{stage}",
                                     description=f"Run the {stage} stage of one experiment.")
    parser.add_argument("experiment", help="experiment module in ntk_repro.experiments")
    parser.add_argument("--params", default="{}", help="JSON of the experiment's config")
    parser.add_argument("--input", nargs="*", default=[], help="input files")
    parser.add_argument("--output", nargs="+", required=True, help="output files")
    parser.add_argument("--wildcard", nargs="*", default=[], metavar="KEY=VALUE")
    return parser.parse_args(argv)


def run_stage(stage: str, argv: list[str] | None = None) -> int:
    """Entry point of ``python -m ntk_repro.pipeline.<stage>``; returns an exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    args = _parse(stage, argv)
    try:
        params = json.loads(args.params)
        wildcards = dict(item.split("=", 1) for item in args.wildcard)
    except (json.JSONDecodeError, ValueError) as err:
        print(f"error: bad --params or --wildcard: {err}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(f"ntk_repro.experiments.{args.experiment}")
    except ModuleNotFoundError:
        print(f"error: unknown experiment {args.experiment!r}", file=sys.stderr)
        return 2
    fn = getattr(module, stage, None)
    if fn is None:
        print(f"error: experiment {args.experiment!r} has no {stage} stage", file=sys.stderr)
        return 2
    start = time.perf_counter()
    log.info("%s %s %s -> %s", stage, args.experiment, wildcards or "", args.output)
    try:
        fn(params, inputs=args.input, outputs=args.output, **wildcards)
    except (ValueError, RuntimeError) as err:
        # Expected failures (bad data file, diverging training) get one clear line.
        print(f"error: {args.experiment} {stage} {wildcards or ''}: {err}", file=sys.stderr)
        return 1
    log.info("done in %.1f s", time.perf_counter() - start)
    return 0
