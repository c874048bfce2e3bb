"""Benchmark 1: the Θ∞ Gram (float64, depth 4, ReLU) of ntk-repro and its alternatives."""

from __future__ import annotations

from .common import ANALYTIC, NEURAL_TANGENTS, OURS, rss_mb, timed

GENERIC_TORCH = "ntk-repro generic torch path"
NUMPY_RECURSION = "numpy whole-matrix recursion"
SIZES = {"full": [1000, 2000, 4000, 8000, 20000], "quick": [500, 1000, 2000], "smoke": [300]}


def analytic_cases(scale: str, nt_python: str | None):
    """One case per (N, implementation); the slow alternatives stop at a smaller N."""
    sizes = SIZES[scale]
    max_n = {
        OURS["analytic"]: max(sizes),
        GENERIC_TORCH: 4000 if scale == "full" else 2000,
        NUMPY_RECURSION: 8000 if scale == "full" else 2000,
        NEURAL_TANGENTS: max(sizes),
    }
    for n in sizes:
        for impl, largest in max_n.items():
            if n <= largest:
                yield {
                    "benchmark": "analytic",
                    "size": f"N={n}",
                    "_n": n,
                    "n": n,
                    "impl": impl,
                    "python": nt_python if impl == NEURAL_TANGENTS else None,
                }


def numpy_theta(x, depth: int, beta: float):
    """Θ∞ of a ReLU net (ntk2018) as a user would write it: whole N×N numpy arrays per layer."""
    import numpy as np

    n0 = x.shape[1]
    sigma = x @ x.T / n0 + beta * beta
    theta = sigma.copy()
    for _ in range(depth - 1):
        diag = np.sqrt(np.diag(sigma))
        norms = np.outer(diag, diag)
        rho = np.clip(sigma / norms, -1.0, 1.0)
        angle = np.arccos(rho)
        sigma = norms * (np.sin(angle) + (np.pi - angle) * rho) / (2 * np.pi) + beta * beta
        theta = theta * (np.pi - angle) / (2 * np.pi) + sigma
    return theta


def analytic_inputs(n: int):
    """The N points every implementation gets: standard normal, n0 = 10, float64."""
    import numpy as np

    return np.random.default_rng(0).standard_normal((n, ANALYTIC["n0"]))


def work_analytic(case: dict) -> dict:
    """Time one torch/numpy implementation at one N (in a worker process)."""
    n, impl = case["n"], case["impl"]
    x = analytic_inputs(n)
    depth, beta = ANALYTIC["depth"], ANALYTIC["beta"]
    if impl in (OURS["analytic"], GENERIC_TORCH):
        from ntk_repro import kernels

        if impl == GENERIC_TORCH:
            # The fused numpy tile path is chosen by this private predicate; turning it off
            # (in this worker process only) leaves the generic torch tile path.
            kernels._fused_applies = lambda *args: False

        def run():
            return kernels.theta_inf(x, depth=depth, beta=beta)
    elif impl == NUMPY_RECURSION:

        def run():
            return numpy_theta(x, depth, beta)
    else:
        raise ValueError(f"impl: unknown analytic implementation {impl!r}")
    base = rss_mb()
    return timed(run, case["repeats"], warmup=False, min_total_s=case["min_total_s"]) | {
        "base_mem_mb": base,
        "info": {},
    }
