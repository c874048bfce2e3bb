"""Benchmark 6: the top-20 eigenvalues (largest |λ|) of the loss Hessian of a net, by Lanczos
on matrix-free Hessian-vector products, against the dense Hessian and power iteration.

Net: ``MLP`` of depth 3 (two hidden layers of ``width``), softplus, float64, N = 64 random
inputs of dimension 16 with random targets, C = 1/(2N) Σ (f − y)²; P = width² + 19·width + 1
parameters (width 320: 108k). Implementations:

- ntk-repro ``hessian.top_eigenpairs`` (``scipy.sparse.linalg.eigsh`` on a LinearOperator of
  torch.func HVPs, forward-over-reverse);
- the dense Hessian (``torch.autograd.functional.hessian``, vectorised) and ``eigvalsh``, where
  it fits;
- power iteration with Hotelling deflation on the same HVPs (until a relative change < 1e-10,
  at most 200 products per eigenvalue; 100 with --quick, 5 with --smoke);
- curvlinops' ``HessianLinearOperator`` with the same ``eigsh``, only if this interpreter
  imports curvlinops (not a dependency of the project).

Accuracy is in the note: the largest relative error of the 20 eigenvalues against the dense
ones at the same size (or against ntk-repro's where there is no dense row), and the largest
relative residual ‖Hv − λv‖/|λ| of the returned vectors (computed after the timed runs).
"""

from __future__ import annotations

import importlib.util

from .common import MIN_TOTAL_S, OURS, rss_mb, timed

NET = dict(depth=3, n0=16, n=64, beta=0.5, activation="softplus", top=20)
DENSE = "dense autograd Hessian + eigvalsh"
POWER = "power iteration with deflation (same HVPs)"
CURVLINOPS = "curvlinops HessianLinearOperator + eigsh"
# (widths, largest width with a dense row, power iterations per eigenvalue) per scale.
SIZES = {"full": ([40, 70, 320], 70, 200), "quick": ([30, 100], 30, 100), "smoke": ([12], 12, 5)}
POWER_TOL = 1e-10


def n_params(width: int) -> int:
    return width * width + 19 * width + 1


def hessian_cases(scale: str):
    """One case per (width, implementation); dense only up to the scale's dense width."""
    widths, dense_max, max_iter = SIZES[scale]
    impls = [OURS["hessian"], POWER, DENSE]
    if importlib.util.find_spec("curvlinops") is not None:
        impls.append(CURVLINOPS)
    for width in widths:
        for impl in impls:
            if impl == DENSE and width > dense_max:
                continue
            yield {
                "benchmark": "hessian",
                "size": f"P={n_params(width)},width={width}",
                "_n": n_params(width),
                "width": width,
                "impl": impl,
                "max_iter": max_iter,
                "python": None,
            }


def _problem(width: int):
    import numpy as np
    import torch

    from ntk_repro.networks import MLP

    model = MLP(
        NET["n0"],
        width,
        NET["depth"],
        beta=NET["beta"],
        activation=NET["activation"],
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
    )
    rng = np.random.default_rng(1)
    return model, rng.standard_normal((NET["n"], NET["n0"])), rng.standard_normal(NET["n"])


def power_deflation(op, k: int, max_iter: int, seed: int = 0):
    """The k eigenpairs of largest |λ| by power iteration, deflating the ones found; at most
    ``max_iter`` products per eigenvalue (stops earlier at a relative change < POWER_TOL)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vals, vecs = [], []
    for _ in range(k):
        v = rng.standard_normal(op.n_params)
        v /= np.linalg.norm(v)
        lam = 0.0
        for _ in range(max_iter):
            w = op.product("H", v)
            for value, vec in zip(vals, vecs):
                w -= value * (vec @ v) * vec
            new = float(v @ w)
            v = w / np.linalg.norm(w)
            if abs(new - lam) <= POWER_TOL * abs(new):
                break
            lam = new
        vals.append(new)
        vecs.append(v)
    return np.array(vals), np.stack(vecs, 1)


def _dense_eigenvalues(model, x, y, k: int):
    import numpy as np
    import torch

    names = [name for name, _ in model.named_parameters()]
    params = list(model.parameters())
    shapes, sizes = [p.shape for p in params], [p.numel() for p in params]
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)

    def loss(theta):
        parts = {n: t.view(s) for n, t, s in zip(names, torch.split(theta, sizes), shapes)}
        f = torch.func.functional_call(model, parts, (xt,)).reshape(-1)
        return 0.5 * ((f - yt) ** 2).mean()

    theta = torch.cat([p.detach().reshape(-1) for p in params])
    ev = np.linalg.eigvalsh(torch.autograd.functional.hessian(loss, theta, vectorize=True).numpy())
    return ev[np.argsort(-np.abs(ev))[:k]], None


def _curvlinops_eigenpairs(model, x, y, k: int):
    import numpy as np
    import torch
    from curvlinops import HessianLinearOperator
    from scipy.sparse.linalg import eigsh

    data = [(torch.as_tensor(x), torch.as_tensor(y).reshape(-1, 1))]
    params = [p for p in model.parameters()]
    operator = HessianLinearOperator(
        model, torch.nn.MSELoss(), params, data, check_deterministic=False
    ).to_scipy()
    v0 = np.random.default_rng(0).standard_normal(operator.shape[0])
    vals, vecs = eigsh(operator, k=k, which="LM", v0=v0, tol=0.0)
    order = np.argsort(-np.abs(vals))
    return vals[order] / 2.0, vecs[:, order]  # MSELoss is 1/N Σ (f − y)²: twice our C


def _run(impl: str, model, x, y, k: int, max_iter: int):
    from ntk_repro.hessian import LossHessian, top_eigenpairs

    if impl == OURS["hessian"]:
        return lambda: top_eigenpairs(model, x, y, part="H", k=k, which="LM", method="lanczos")
    if impl == POWER:
        return lambda: power_deflation(LossHessian(model, x, y), k, max_iter)
    if impl == DENSE:
        return lambda: _dense_eigenvalues(model, x, y, k)
    if impl == CURVLINOPS:
        return lambda: _curvlinops_eigenpairs(model, x, y, k)
    raise ValueError(f"impl: unknown hessian implementation {impl!r}")


def work_hessian(case: dict) -> dict:
    """Time one implementation at one width (in a worker process); eigenvalues and the
    residual of the vectors go back in ``info``."""
    import numpy as np

    from ntk_repro.hessian import LossHessian

    model, x, y = _problem(case["width"])
    run = _run(case["impl"], model, x, y, NET["top"], case["max_iter"])
    base = rss_mb()
    result = timed(run, case["repeats"], warmup=False, min_total_s=case["min_total_s"])
    vals, vecs = run()
    info = {"eigenvalues": [float(v) for v in vals]}
    if vecs is not None:
        hv = LossHessian(model, x, y).product("H", vecs)
        info["residual"] = float((np.linalg.norm(hv - vecs * vals, axis=0) / np.abs(vals)).max())
    return result | {"base_mem_mb": base, "info": info}


def _accuracy_note(row_info: dict, reference: list[float] | None, ref_name: str) -> str:
    import numpy as np

    parts = []
    if reference is not None and row_info.get("eigenvalues"):
        ours, ref = np.array(row_info["eigenvalues"]), np.array(reference)
        err = np.abs(ours - ref) / np.abs(ref)
        parts.append(f"max rel. error of the top-{len(ref)} |λ| vs {ref_name}: {err.max():.1e}")
    if "residual" in row_info:
        parts.append(f"max ‖Hv − λv‖/|λ|: {row_info['residual']:.1e}")
    return "; ".join(parts)


def hessian_rows(cases, args, machine: str, log) -> list[dict]:
    """Run the cases (each in its own worker) and write the accuracy into each row's note."""
    import sys

    from .report import fill_ratios, make_row
    from .runner import _log_row, run_case

    min_total_s = 0.0 if args.smoke else MIN_TOTAL_S
    rows, infos = [], []
    for case in cases:
        case = dict(case, repeats=args.repeats, min_total_s=min_total_s)
        case.pop("python")
        worker_case = {k: v for k, v in case.items() if not k.startswith("_")}
        result = run_case(worker_case, sys.executable, args.mem_cap_gb * 1024, args.timeout)
        rows.append(make_row(case, result, machine) | {"_n": case["_n"]})
        infos.append(result.get("info", {}))
    for size in dict.fromkeys(r["size"] for r in rows):
        at_size = [(r, i) for r, i in zip(rows, infos) if r["size"] == size]
        by_impl = {r["implementation"]: i for r, i in at_size}
        ref_name = DENSE if DENSE in by_impl else OURS["hessian"]
        reference = by_impl.get(ref_name, {}).get("eigenvalues")
        for row, info in at_size:
            note = _accuracy_note(
                info, None if row["implementation"] == ref_name else reference, ref_name
            )
            row["note"] = "; ".join(filter(None, [row["note"], note]))
            _log_row(log, row)
    fill_ratios(rows)
    return rows
