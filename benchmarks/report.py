"""CSV rows, the machine string and the summary plot."""

from __future__ import annotations

import csv
import os
import platform
from pathlib import Path

from .common import COLUMNS, OURS


def machine_string() -> str:
    """Cores, CPU model, torch (threads, SIMD level), numpy and python versions."""
    import numpy as np
    import torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores, {model}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}), "
        f"numpy {np.__version__}, python {platform.python_version()}"
    )


def _note(case: dict, info: dict) -> str:
    note = case.get("note", "")
    if "nt_implementation" in info:
        note = (note + f" {info['nt_implementation']}").strip()
    if "fallback" in info:
        note = (note + f" (structured derivatives failed: {info['fallback']})").strip()
    return note


def make_row(case: dict, result: dict, machine: str) -> dict:
    """One CSV row from a case and its worker's result (or its ``error``)."""
    info = result.get("info", {})
    note = _note(case, info)
    row = dict.fromkeys(COLUMNS, "") | {
        "benchmark": case["benchmark"],
        "size": case["size"],
        "implementation": case["impl"],
        "load_1min": f"{result['load_1min']:.1f}",
        "repeats": 0,
        "machine": machine,
    }
    if "error" in result:
        return row | {"note": (note + " " + result["error"]).strip()}
    best = min(result["times"])
    peak, base = result["peak_mem_mb"], result["base_mem_mb"]
    flops = info.get("flops_per_step")
    versions = ", ".join(f"{k} {v}" for k, v in info.items() if k in ("jax", "neural_tangents"))
    return row | {
        "time_s": f"{best:.6g}",
        "peak_mem_mb": f"{peak:.0f}",
        "extra_mem_mb": f"{peak - base:.0f}",
        "first_call_s": "" if result["first_call_s"] is None else f"{result['first_call_s']:.3g}",
        "gflops": "" if flops is None else f"{flops / best / 1e9:.4g}",
        "repeats": len(result["times"]),
        "note": note,
        "machine": machine + (f", {versions}" if versions else ""),
        "threads": result.get("threads", ""),
    }


def fill_ratios(rows: list[dict]) -> None:
    """ratio_to_ours = time / time of ntk-repro at the same benchmark and size."""
    ours = {
        (r["benchmark"], r["size"]): float(r["time_s"])
        for r in rows
        if r["implementation"] == OURS.get(r["benchmark"]) and r["time_s"]
    }
    for r in rows:
        key = (r["benchmark"], r["size"])
        if r["time_s"] and key in ours:
            r["ratio_to_ours"] = f"{float(r['time_s']) / ours[key]:.4g}"


def read_rows(path: Path) -> list[dict]:
    """Rows of an earlier run's CSV (for --only pipeline), with the numeric size restored."""
    if not path.exists():
        return []
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        size = r["size"]
        key = "width=" if "width=" in size else "N=" if size.startswith("N=") else None
        r["_n"] = int(size.split(key)[1].split(",")[0]) if key else 0
    return rows


def write_csv(path: Path, rows: list[dict], columns=COLUMNS) -> None:
    """``rows`` restricted to ``columns`` (the bookkeeping keys like _n are left out)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in columns} for r in rows)


def _size_ticks(ax, rows: list[dict]) -> None:
    """Plain tick labels at the measured sizes (log axes otherwise label 3×10² etc.)."""
    sizes = sorted({r["_n"] for r in rows})
    if sizes:
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()


def _lines(ax, rows: list[dict], value: str, plot_fn: str, xlabel: str, title: str) -> None:
    """One line per implementation: ``value`` against the numeric size."""
    for impl in dict.fromkeys(r["implementation"] for r in rows):
        pts = sorted((r["_n"], float(r[value])) for r in rows if r["implementation"] == impl)
        getattr(ax, plot_fn)(*zip(*pts, strict=True), marker="o", label=impl)
    _size_ticks(ax, rows)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    if ax.lines:
        ax.legend(fontsize=7)


def _ratio_bars(ax, rows_by_bench: dict[str, list[dict]]) -> None:
    bars = [
        (f"{bench} {r['size']}: {r['implementation']}", float(r["ratio_to_ours"]))
        for bench in OURS
        for r in rows_by_bench.get(bench, [])
        if r["ratio_to_ours"] and r["implementation"] != OURS[bench]
    ]
    if bars:
        labels, values = zip(*bars, strict=True)
        ax.barh(range(len(values)), values, color=["C0" if v >= 1 else "C3" for v in values])
        ax.set_yticks(range(len(values)), labels, fontsize=5)
        ax.set_xscale("log")
        ax.axvline(1.0, color="black", lw=0.8)
        ax.invert_yaxis()
    ax.set_title("time of alternative / time of ntk-repro (> 1: ntk-repro faster)", fontsize=9)


def plot(rows_by_bench: dict[str, list[dict]], out: Path) -> None:
    """Times of benchmarks 1 and 2, training GFLOP/s, and all ratios, in one 2×2 figure."""
    from ntk_repro.results import new_figure, save_figure

    fig, axes = new_figure(2, 2, width=12, height=10)
    analytic = [r for r in rows_by_bench.get("analytic", []) if r["time_s"]]
    _lines(axes[0, 0], analytic, "time_s", "loglog", "N", "Θ∞ Gram, float64, depth 4: time [s]")
    # The comparison sizes only (N = 256 in full runs, N = 64 in quick ones).
    empirical = [
        r
        for r in rows_by_bench.get("empirical", [])
        if r["time_s"] and (r["size"].startswith("N=256") or "N=64," in r["size"])
    ]
    _lines(
        axes[0, 1],
        empirical,
        "time_s",
        "loglog",
        "width",
        "empirical NTK, N = 256, float32: time [s]",
    )
    training = [r for r in rows_by_bench.get("training", []) if r["gflops"]]
    _lines(
        axes[1, 0],
        training,
        "gflops",
        "semilogx",
        "width",
        "training, K = 10, N = 100, float32: GFLOP/s",
    )
    _ratio_bars(axes[1, 1], rows_by_bench)
    save_figure(fig, [out])
