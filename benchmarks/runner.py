"""The parent process: command line, one subprocess per case, CSVs and plot."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from . import __doc__ as PACKAGE_DOC
from .analytic import analytic_cases
from .common import MIN_TOTAL_S, NEURAL_TANGENTS, REPO_ROOT, load_1min, proc_rss_mb
from .empirical import empirical_cases
from .generalization import generalization_cases
from .hessian import hessian_cases, hessian_rows
from .limits import LIMIT_COLUMNS, limits_case, limits_rows
from .pipeline import pipeline_rows
from .report import fill_ratios, machine_string, make_row, plot, read_rows, write_csv
from .training import TRAINING_IMPLS, training_cases
from .worker import RESULT_TAG

BENCHMARKS = ("analytic", "empirical", "training", "pipeline", "generalization", "hessian")


def _watch(proc: subprocess.Popen, mem_cap_mb: float, timeout_s: float) -> str | None:
    """Poll ``proc`` until it exits; kill it past the memory cap or the time limit and say why."""
    start = time.monotonic()
    while proc.poll() is None:
        rss = proc_rss_mb(proc.pid)
        killed = None
        if rss > mem_cap_mb:
            killed = f"killed: RSS {rss / 1024:.1f} GB exceeded the {mem_cap_mb / 1024:.1f} GB cap"
        elif time.monotonic() - start > timeout_s:
            killed = f"killed: exceeded the {timeout_s:.0f} s time limit"
        if killed:
            proc.kill()
            return killed
        time.sleep(0.05)
    return None


def run_case(case: dict, python: str, mem_cap_mb: float, timeout_s: float) -> dict:
    """Run one case in a worker subprocess; its result dict or {"error": ...}, with the load."""
    env = dict(os.environ)
    # This folder is a package of the repository, not installed: any interpreter (also the
    # neural-tangents one) finds it through PYTHONPATH. ntk_repro comes from site-packages.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    cmd = [python, "-m", f"{__package__}.worker", json.dumps(case)]
    load_start = load_1min()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT
    )
    killed = _watch(proc, mem_cap_mb, timeout_s)
    stdout, stderr = proc.communicate()
    load = max(load_start, load_1min())
    if killed:
        return {"error": killed, "load_1min": load}
    for line in stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :]) | {"load_1min": load}
    tail = (stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"failed (exit {proc.returncode}): {tail}", "load_1min": load}


def _predicted_mem_mb(rows: list[dict], impl: str, n: int) -> float | None:
    """Extra memory of ``impl`` at size n, scaled ∝ n² from its largest measured size."""
    measured = [
        (r["_n"], float(r["extra_mem_mb"]))
        for r in rows
        if r["implementation"] == impl and r.get("extra_mem_mb")
    ]
    if not measured:
        return None
    n_prev, mem = max(measured)
    return mem * (n / n_prev) ** 2


def _over_memory_cap(rows: list[dict], case: dict, mem_cap_gb: float) -> str | None:
    """Why an analytic case is not run (its predicted memory exceeds the cap), else None."""
    if case["benchmark"] != "analytic":
        return None
    predicted = _predicted_mem_mb(rows, case["impl"], case["_n"])
    if predicted is None or predicted <= mem_cap_gb * 1024:
        return None
    return (
        f"not run: predicted {predicted / 1024:.1f} GB (∝ N² from the largest measured "
        f"size) exceeds the {mem_cap_gb:g} GB cap"
    )


def _parts(case: dict, result: dict) -> list[tuple[dict, dict]]:
    """(case, result) per row: a training case measured all TRAINING_IMPLS interleaved."""
    if case["impl"] != "interleaved":
        return [(case, result)]
    note = "interleaved with the other rows of this size in one process (peak memory shared)"
    by_impl = result.get("by_impl", dict.fromkeys(TRAINING_IMPLS))
    return [
        (
            dict(case, impl=impl, note=note),
            dict(result, times=times) if "error" not in result else result,
        )
        for impl, times in by_impl.items()
    ]


def _log_row(log, row: dict) -> None:
    log(
        f"{row['benchmark']:9s} {row['size']:22s} {row['implementation']:45s} "
        f"t={row['time_s'] or '-':>10s} s  peak={row['peak_mem_mb'] or '-':>6s} MB  "
        f"load={row['load_1min']}  {row['note']}"
    )


def run_benchmark(cases, args, machine: str, log) -> list[dict]:
    """Rows of one benchmark: each case in its own worker, then the ratios to ours."""
    rows: list[dict] = []
    min_total_s = 0.0 if args.smoke else MIN_TOTAL_S
    for case in cases:
        case = dict(case, repeats=args.repeats, min_total_s=min_total_s)
        python = case.pop("python") or sys.executable
        if case["impl"] == NEURAL_TANGENTS and not args.nt_python:
            log(
                f"skip {case['benchmark']} {case['size']} neural-tangents: no interpreter that "
                "imports it (install the 'crosscheck' extra or pass --nt-python)"
            )
            continue
        skipped = _over_memory_cap(rows, case, args.mem_cap_gb)
        if skipped:
            case["note"] = skipped
            parts = [(case, {"error": "", "load_1min": load_1min()})]
        else:
            worker_case = {k: v for k, v in case.items() if not k.startswith("_") and k != "note"}
            parts = _parts(
                case, run_case(worker_case, python, args.mem_cap_gb * 1024, args.timeout)
            )
        for part_case, part_result in parts:
            rows.append(make_row(part_case, part_result, machine) | {"_n": case["_n"]})
            _log_row(log, rows[-1])
    fill_ratios(rows)
    return rows


def _default_nt_python() -> str | None:
    env = os.environ.get("NTK_REPRO_NT_PYTHON")
    if env:
        return env
    return sys.executable if importlib.util.find_spec("neural_tangents") else None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python -m {__package__}",
        description=PACKAGE_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="results/bench", help="output directory")
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help="comma-separated subset of " + ",".join(BENCHMARKS),
    )
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--quick", action="store_true", help="small sizes (minutes)")
    scale.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, no minimum run time (seconds; the test suite's run)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (min taken)")
    parser.add_argument(
        "--nt-python",
        default=_default_nt_python(),
        help="python interpreter that imports neural_tangents (default: "
        "$NTK_REPRO_NT_PYTHON, else this one if it can)",
    )
    parser.add_argument(
        "--mem-cap-gb", type=float, default=12.0, help="kill a measurement whose RSS exceeds this"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per measurement")
    parser.add_argument(
        "--root",
        type=Path,
        default=REPO_ROOT,
        help="project directory whose finished run and presets the pipeline "
        "benchmark reads (default: this repository)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error("--repeats must be >= 3")
    args.only = set(args.only.split(","))
    unknown = args.only - set(BENCHMARKS)
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {sorted(unknown)}")
    args.scale = "smoke" if args.smoke else "quick" if args.quick else "full"
    return args


def _log(msg: str) -> None:
    print(msg, flush=True)


def _machine_of_run() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return machine_string() + (f"; load average at start {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}")


def _measure(args, out: Path, machine: str) -> dict[str, list[dict]]:
    """Run the selected benchmarks; writes limits.csv (with analytic); returns rows by name."""
    rows: dict[str, list[dict]] = {}
    if "analytic" in args.only:
        rows["analytic"] = run_benchmark(
            analytic_cases(args.scale, args.nt_python), args, machine, _log
        )
    if "empirical" in args.only:
        rows["empirical"] = run_benchmark(
            empirical_cases(args.scale, args.nt_python), args, machine, _log
        )
    if "training" in args.only:
        rows["training"] = run_benchmark(training_cases(args.scale), args, machine, _log)
    if "analytic" in args.only:
        result = run_case(
            limits_case(args.scale), sys.executable, args.mem_cap_gb * 1024, args.timeout
        )
        limits = limits_rows(result, rows["analytic"], machine, _log)
        write_csv(out / "limits.csv", limits, LIMIT_COLUMNS)
    if "generalization" in args.only:
        rows["generalization"] = run_benchmark(
            generalization_cases(args.scale), args, machine, _log
        )
    if "hessian" in args.only:
        rows["hessian"] = hessian_rows(hessian_cases(args.scale), args, machine, _log)
    if "pipeline" in args.only:
        training = rows.get("training") or read_rows(out / "training.csv")
        rows["pipeline"] = pipeline_rows(args.root, training, machine, _log)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = _machine_of_run()
    _log(machine)
    _log(f"neural-tangents interpreter: {args.nt_python or 'none'}")
    rows_by_bench = _measure(args, out, machine)
    for bench, rows in rows_by_bench.items():
        write_csv(out / f"{bench}.csv", rows)
    written = [f"{b}.csv" for b in rows_by_bench]
    written += ["limits.csv"] if "analytic" in args.only else []
    # The plot also shows benchmarks measured by an earlier run into the same directory.
    for bench in ("analytic", "empirical", "training"):
        if bench not in rows_by_bench:
            rows_by_bench[bench] = read_rows(out / f"{bench}.csv")
    plot(rows_by_bench, out / "bench.png")
    _log(f"wrote {', '.join(written)} and bench.png to {out}")
    return 0
