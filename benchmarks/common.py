"""What the benchmark modules share: names, sizes, and the timing and memory probes.

Imported by the worker under any interpreter (also the neural-tangents one), so it imports
nothing beyond the standard library at module level.
"""

from __future__ import annotations

import gc
import math
import os
import resource
import sys
import time
from pathlib import Path

# The repository this folder belongs to: presets and a finished run are read from here.
REPO_ROOT = Path(__file__).resolve().parents[1]

COLUMNS = (
    "benchmark",
    "size",
    "implementation",
    "time_s",
    "ratio_to_ours",
    "peak_mem_mb",
    "extra_mem_mb",
    "first_call_s",
    "gflops",
    "load_1min",
    "repeats",
    "note",
    "machine",
)
OURS = {
    "analytic": "ntk-repro theta_inf",
    "empirical": "ntk-repro empirical_ntk (structured)",
    "training": "ntk-repro train_ensemble (K together)",
    "generalization": "ntk-repro krr_predict (one eigh, all ridges)",
    "hessian": "ntk-repro top_eigenpairs (Lanczos on torch.func HVPs)",
}
NEURAL_TANGENTS = "neural-tangents"
# Architectures, shared by every implementation of a benchmark.
ANALYTIC = dict(depth=4, beta=0.1, n0=10)
EMPIRICAL = dict(depth=4, beta=0.1, n0=10)
TRAINING = dict(depth=4, beta=0.1, n0=2, batch=100, members=10, lr=0.5)
# Size presets: "full" for `make bench`, "quick" for a look in minutes, "smoke" for the tests.
SCALES = ("full", "quick", "smoke")

# A short run is repeated until this much time has been spent (at most _MAX_RUNS runs): the
# min over runs spread in time is robust to a burst of load from other processes.
MIN_TOTAL_S, _MAX_RUNS = 1.0, 100


def timed(run, repeats: int, warmup: bool, min_total_s: float = MIN_TOTAL_S) -> dict:
    """Wall times of ≥ ``repeats`` calls of ``run()``; the result of a call is freed before
    the next (an N = 20000 Gram is 3.2 GB). ``warmup``: one untimed call first (jit)."""
    first = None
    if warmup:
        start = time.perf_counter()
        out = run()
        first = time.perf_counter() - start
        del out
        gc.collect()
    times: list[float] = []
    while len(times) < repeats or (sum(times) < min_total_s and len(times) < _MAX_RUNS):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
        del out
        gc.collect()
    # Without a warm-up the first timed call is the first call (it pays e.g. the OS's first
    # provisioning of a multi-GB output); the min over all of them is the time reported.
    return {"times": times, "first_call_s": times[0] if first is None else first}


def best_seconds(fn, reps: int = 20) -> float:
    """Min wall time of ``reps`` calls of ``fn()`` after one untimed call."""
    fn()
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def proc_rss_mb(pid) -> float:
    """Resident set size of process ``pid`` ("self" for this one) in MB; 0 where unavailable."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux; 0 where unavailable)."""
    return proc_rss_mb("self")


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (ru_maxrss: KB on Linux, B on macOS)."""
    scale = 1024.0 if sys.platform != "darwin" else 1024.0 * 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def load_1min() -> float:
    """The machine's 1-minute load average (NaN where the OS does not report it)."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return float("nan")
