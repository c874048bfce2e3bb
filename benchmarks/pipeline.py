"""Benchmark 4: the Snakemake pipeline, measured (a finished laptop run's job times) and
estimated (the paper preset's training cost at the FLOP/s measured by benchmark 3)."""

from __future__ import annotations

import csv
from pathlib import Path

from .common import COLUMNS, OURS

EXPERIMENTS = ("fig1", "fig2", "fig3", "sweeps")


def read_yaml(path: Path) -> dict:
    import yaml

    with open(path) as fh:
        return yaml.safe_load(fh) or {}


def pipeline_rows(root: Path, training_rows: list[dict], machine: str, log) -> list[dict]:
    """A finished laptop run's job times under ``root``, and the paper preset's estimate."""
    rows = []
    laptop = _laptop_run_row(root, machine)
    if laptop:
        rows.append(laptop)
    else:
        log(
            "pipeline: no finished laptop run (results/checks.csv and logs/**/*.benchmark.tsv "
            f"under {root}, preset laptop): its row is left out"
        )
    measured = [
        (r["_n"], float(r["gflops"]))
        for r in training_rows
        if r["implementation"] == OURS["training"] and r.get("gflops")
    ]
    paper = _paper_preset(root)
    if measured and paper:
        width, gflops = max(measured)
        rows.extend(paper_estimate(paper, gflops, width, machine))
    else:
        log("pipeline: no training FLOP/s measured or no paper preset: no paper estimate")
    for r in rows:
        for col in COLUMNS:
            r.setdefault(col, "")
    return rows


def _paper_preset(root: Path) -> dict | None:
    """Every value of the paper preset (an overlay on the laptop one), or None without it."""
    from ntk_repro.config import resolve_config

    workflow = root / "workflow"
    if not (workflow / "presets" / "paper.yaml").exists():
        return None
    return resolve_config({"preset": "paper"}, workflow)


def _laptop_run_row(root: Path, machine: str) -> dict | None:
    """Sum of the job times in Snakemake's benchmark TSVs (the rules' ``benchmark:`` files,
    ``<root>/logs/<experiment>/<output>.benchmark.tsv``) of a finished run of the laptop
    preset, else None."""
    checks, tsv_dir = root / "results" / "checks.csv", root / "logs"
    preset = "laptop"
    if (root / "config.yaml").exists():
        preset = read_yaml(root / "config.yaml").get("preset", preset)
    tsvs = sorted(tsv_dir.rglob("*.benchmark.tsv")) if tsv_dir.exists() else []
    if not (checks.exists() and tsvs and preset == "laptop"):
        return None
    seconds, ends, starts = 0.0, [], []
    for tsv in tsvs:
        with open(tsv) as fh:
            job = next(csv.DictReader(fh, delimiter="\t"))
        s = float(job["s"])
        seconds += s
        ends.append(tsv.stat().st_mtime)
        starts.append(tsv.stat().st_mtime - s)
    span = max(ends) - min(starts)
    return {
        "benchmark": "pipeline",
        "size": "preset=laptop",
        "implementation": "snakemake run, sum of job times",
        "time_s": f"{seconds:.1f}",
        "note": f"{len(tsvs)} jobs; wall span from the TSV times ≈ {span:.0f} s",
        "machine": machine,
    }


def _training_jobs(cfg: dict) -> list[tuple]:
    """(experiment, layer dims, batch, members, steps, count) of a preset's training jobs."""
    depth = cfg.get("model", {}).get("depth", 4)
    f1, f2, f3, sw = (cfg.get(k, {}) for k in EXPERIMENTS)
    jobs = []
    for w in f1.get("widths", []):
        jobs.append(
            (
                "fig1",
                [2] + [w] * (depth - 1) + [1],
                f1.get("batch_size", 100),
                f1.get("inits", 10),
                f1.get("steps", 0),
                1,
            )
        )
    for w in f2.get("widths", []):
        jobs.append(
            ("fig2", [2] + [w] * (depth - 1) + [1], 4, f2.get("inits", 10), f2.get("steps", 0), 1)
        )
    for w in f3.get("widths", []):
        jobs.append(
            (
                "fig3",
                [64] + [w] * (depth - 1) + [1],
                f3.get("n_points", 512),
                f3.get("trials", 2),
                f3.get("steps", 0),
                1,
            )
        )
    cells = len(sw.get("betas", [])) * len(sw.get("seeds", []))
    for w in sw.get("widths", []):
        for d in sw.get("depths", []):
            jobs.append(
                (
                    "sweeps",
                    [sw.get("input_dim", 8)] + [w] * (d - 1) + [1],
                    sw.get("n_train", 16),
                    sw.get("inits", 4),
                    sw.get("steps", 0),
                    cells,
                )
            )
    return jobs


def paper_estimate(cfg: dict, gflops: float, width_measured: int, machine: str) -> list[dict]:
    """Training cost of the paper preset: Σ steps · flops_per_step / measured FLOP/s."""
    from ntk_repro.training import flops_per_step

    jobs = _training_jobs(cfg)
    rows = []
    for exp in EXPERIMENTS:
        flops = sum(
            flops_per_step(dims, batch, k) * steps * count
            for e, dims, batch, k, steps, count in jobs
            if e == exp
        )
        if flops:
            rows.append(
                {
                    "benchmark": "pipeline",
                    "size": f"preset=paper,{exp}",
                    "implementation": "estimate: training FLOPs / measured FLOP/s",
                    "time_s": f"{flops / (gflops * 1e9):.4g}",
                    "gflops": f"{gflops:.4g}",
                    "note": (
                        f"{flops / 1e12:.3g} TFLOP of training (∝ width² × steps × inits × "
                        f"batch); at the {gflops:.3g} GFLOP/s train_ensemble reached at width "
                        f"{width_measured}; excludes empirical-NTK recordings and analytic "
                        "Grams; small widths run below that rate"
                    ),
                    "machine": machine,
                }
            )
    if rows:
        total = sum(float(r["time_s"]) for r in rows)
        rows.append(
            dict(
                rows[-1],
                size="preset=paper,total",
                time_s=f"{total:.4g}",
                note=f"sum of the rows above ≈ {total / 3600:.2g} h of training on this "
                "machine (same caveats)",
            )
        )
    return rows
