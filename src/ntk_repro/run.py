"""Run one step of one experiment: the command every Snakemake rule calls.

    python -m ntk_repro.run <experiment> <step> --params JSON \
        [--input NAME PATH [PATH ...]] ... --output PATH [PATH ...] [--wildcard KEY=VALUE ...]

``<step>`` is a job name of the experiment's ``EXPERIMENT`` (e.g. ``train``) or ``plot`` /
``check``. Inputs arrive at the stage by name, exactly as the rule names them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from ntk_repro.experiments import registry

log = logging.getLogger("ntk_repro")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ntk_repro.run", description="Run one step of one experiment."
    )
    parser.add_argument("experiment", help="an experiment of ntk_repro.experiments")
    parser.add_argument("step", help="one of its jobs, or plot / check")
    parser.add_argument("--params", default="{}", help="JSON of what the experiment reads")
    parser.add_argument(
        "--input",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "PATH"),
        help="a named input and its file(s)",
    )
    parser.add_argument("--output", nargs="+", required=True, help="output files")
    parser.add_argument("--wildcard", nargs="*", default=[], metavar="KEY=VALUE")
    return parser.parse_args(argv)


def _keywords(args: argparse.Namespace, exp) -> dict:
    """The stage's keywords: fixed values, named inputs and wildcards.

    An input is a list of files when the job it comes from runs over wildcard values (the
    declaration says so), even when that list holds a single file.
    """
    plotting = args.step in ("plot", "check")
    sources = exp.figure_inputs if plotting else exp.job(args.step).inputs
    keywords = {} if plotting else dict(exp.job(args.step).fixed)
    for name, *paths in args.input:
        if not paths:
            raise ValueError(f"--input {name} names no file")
        many = exp.job(sources[name]).each is not None if name in sources else len(paths) > 1
        keywords[name] = paths if many else paths[0]
    for item in args.wildcard:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--wildcard {item!r} is not KEY=VALUE")
        keywords[key] = value
    return keywords


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    args = _parse(argv)
    experiments = registry()
    if args.experiment not in experiments:
        print(
            f"error: unknown experiment {args.experiment!r}; known: {list(experiments)}",
            file=sys.stderr,
        )
        return 2
    exp = experiments[args.experiment]
    try:
        stage = exp.stage(args.step)
        params = json.loads(args.params)
        keywords = _keywords(args, exp)
    except (KeyError, ValueError, json.JSONDecodeError) as err:
        print(f"error: {args.experiment} {args.step}: {err}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    log.info("%s %s %s -> %s", args.experiment, args.step, keywords, args.output)
    try:
        stage(params, args.output, **keywords)
    except (ValueError, RuntimeError) as err:
        # Expected failures (bad data file, diverging training) get one clear line.
        print(f"error: {args.experiment} {args.step}: {err}", file=sys.stderr)
        return 1
    log.info("done in %.1f s", time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
