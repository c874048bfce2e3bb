"""Benchmark 5: KRR risk curves over a grid of ridges, one eigendecomposition vs refitting.

The test risk of kernel ridge regression at 50 ridges λ (K + NλI) on N training and M test
points: ``generalization.krr_predict`` diagonalises K once and applies every ridge in its
eigenbasis; the alternative a user would write refits scikit-learn's ``KernelRidge``
(``kernel="precomputed"``, ``alpha = Nλ``: its loss ‖y − Kα‖² + alpha·αᵀKα is the "sum"
convention) once per ridge. Both get the same precomputed Grams (RBF on points of S⁴), so only
the solves are timed; the worker checks each curve against direct solves.
"""

from __future__ import annotations

from .common import OURS, rss_mb, timed

SKLEARN = "scikit-learn KernelRidge refit per ridge"
RIDGES = 50
SIZES = {"full": [500, 1000, 2000, 4000], "quick": [300, 1000], "smoke": [100]}


def generalization_cases(scale: str):
    """One case per (N, implementation); M = N/2 test points."""
    for n in SIZES[scale]:
        for impl in (OURS["generalization"], SKLEARN):
            yield {
                "benchmark": "generalization",
                "size": f"N={n},ridges={RIDGES}",
                "_n": n,
                "n": n,
                "impl": impl,
                "python": None,
            }


def _problem(n: int):
    """Grams of an RBF kernel on N + N/2 points of S⁴, labels, the ridge grid."""
    import numpy as np

    rng = np.random.default_rng(0)
    m = max(n // 2, 1)
    x = rng.standard_normal((n + m, 5))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    k = np.exp(-(1.0 - np.clip(x @ x.T, -1.0, 1.0)) / 0.49)
    y = np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2] + 0.3 * rng.standard_normal(n + m)
    return k[:n, :n], k[n:, :n], y[:n], y[n:], np.geomspace(1e-6, 1.0, RIDGES)


def work_generalization(case: dict) -> dict:
    """Time one implementation's 50-ridge risk curve at one N (in a worker process)."""
    import numpy as np

    n, impl = case["n"], case["impl"]
    k, kx, y, y_test, ridges = _problem(n)
    if impl == OURS["generalization"]:
        from ntk_repro.generalization import krr_predict

        def run():
            pred = krr_predict(k, y, ridges, kx, convention="mean")  # (R, M), one eigh
            return ((pred - y_test) ** 2).mean(axis=1)
    elif impl == SKLEARN:
        from sklearn.kernel_ridge import KernelRidge

        def run():
            risks = []
            for lam in ridges:
                model = KernelRidge(alpha=n * lam, kernel="precomputed").fit(k, y)
                risks.append(((model.predict(kx) - y_test) ** 2).mean())
            return np.array(risks)
    else:
        raise ValueError(f"impl: unknown generalization implementation {impl!r}")
    base = rss_mb()
    result = timed(run, case["repeats"], warmup=False, min_total_s=case["min_total_s"])
    # The two curves must agree: compare with a direct solve at three ridges.
    risks = run()
    check = []
    for i in (0, RIDGES // 2, RIDGES - 1):
        alpha = np.linalg.solve(k + n * ridges[i] * np.eye(n), y)
        check.append(abs(risks[i] / ((kx @ alpha - y_test) ** 2).mean() - 1.0))
    if max(check) > 1e-6:  # a fast wrong answer is no answer: the row reports the failure
        raise RuntimeError(f"{impl}: risk differs from a direct solve by {max(check):.2g}")
    return result | {"base_mem_mb": base, "info": {}}
