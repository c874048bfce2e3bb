"""The Hessian of the loss (ICLR 2020), Fig. 2 reduced: I and S are asymptotically orthogonal.

The nets and digits of ``hessian_moments`` (one hidden layer, NTK parametrisation, β, N digits
on the sphere, targets ±1), here with the normalised smooth ReLU σ̄ of the paper's Fig. 2, at
initialisation (where S is largest). Everything is exact (block-diagonal ∇²f):

- Rayleigh quotients vᵀIv and vᵀSv of the top-``top`` eigenvectors of I (v = Jᵀu/√μ from the
  Gram Θ̂ = μ-eigenpairs) and of S (largest |λ|, from its blocks), at width ``width``: I's
  eigenvectors see almost no S, S's see almost no I.
- Over ``widths`` × ``seeds``: ‖IS‖_F / (‖I‖_F ‖S‖_F) (‖IS‖_F² = Tr(I²S²) = Tr(AR) with
  A = Θ̂/N, R = JS²Jᵀ/N), Tr H³ − Tr I³ − Tr S³ = 3 Tr(I²S) + 3 Tr(IS²) relative to
  ‖I‖_F ‖S‖_F² (both O(1)),
  and the largest Rayleigh quotient of the other part (relative to its norm) in each set.

Job ``spectra`` (all of it; ~seconds), then ``plot`` and ``check``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ntk_repro.device import resolve_device
from ntk_repro.experiments import Experiment, Job
from ntk_repro.experiments.normalisation import loglog_slope  # log |value|: pass np.abs
from ntk_repro.hessian import (
    LossHessian,
    digits_problem,
    hessian_moments,
    orthogonality,
    top_eigenpairs,
)
from ntk_repro.networks import MLP
from ntk_repro.results import (
    Check,
    derive_seed,
    load_arrays,
    new_figure,
    require_finite,
    save_arrays,
    save_figure,
    write_checks,
)

NAME = "hessian_orthogonality"
PARAMETRIZATION = "ntk2018"
DTYPE = torch.float64
Z = 3.0


def _net(p: dict, width: int, seed: int, device) -> MLP:
    return MLP(
        64,
        width,
        2,
        beta=p["beta"],
        activation=p["activation"],
        parametrization=PARAMETRIZATION,
        generator=torch.Generator().manual_seed(derive_seed(p["seed"], NAME, width, seed)),
        device=device,
        dtype=DTYPE,
    )


def rayleigh_quotients(model: MLP, x, y, top: int) -> dict[str, np.ndarray]:
    """vᵀIv and vᵀSv of the top eigenvectors of I and of S (exact), each (top,)."""
    op = LossHessian(model, x, y)
    lam_i, vec_i = top_eigenpairs(model, x, y, part="I", k=top, method="exact")
    lam_s, vec_s = top_eigenpairs(model, x, y, part="S", k=top, which="LM", method="exact")
    return {
        "I_of_I": lam_i,
        "S_of_I": (vec_i * op.product("S", vec_i)).sum(0),
        "S_of_S": lam_s,
        "I_of_S": (vec_s * op.product("I", vec_s)).sum(0),
    }


def spectra(p: dict, outputs) -> None:
    device = resolve_device(p["device"])
    x, y = digits_problem(p["n_points"], seed=derive_seed(p["seed"], "hessian", "inputs"))
    widths = np.array(p["widths"])
    ratio = np.zeros((len(widths), p["seeds"]))
    cubic = np.zeros_like(ratio)  # (Tr H³ − Tr I³ − Tr S³) / (‖I‖_F ‖S‖_F²)
    s_seen = np.zeros_like(ratio)  # mean |vᵀSv| / vᵀIv over I's top eigenvectors
    i_seen = np.zeros_like(ratio)  # mean vᵀIv / ‖I‖_op over S's top eigenvectors
    for a, width in enumerate(widths):
        for s in range(p["seeds"]):
            model = _net(p, int(width), s, device)
            ratio[a, s] = orthogonality(model, x, y, method="blocks")["ratio"]
            m = hessian_moments(model, x, y, orders=(2, 3), method="blocks")
            # Normalised by ‖I‖_F ‖S‖_F² (both O(1)): the cross terms scale with the residual²,
            # whose spread over nets would otherwise dominate the fit.
            cubic[a, s] = (m["H"][1] - m["I"][1] - m["S"][1]) / (math.sqrt(m["I"][0]) * m["S"][0])
            q = rayleigh_quotients(model, x, y, p["top"])
            s_seen[a, s] = np.mean(np.abs(q["S_of_I"]) / q["I_of_I"])
            i_seen[a, s] = np.mean(q["I_of_S"]) / q["I_of_I"][0]
    quotients = rayleigh_quotients(_net(p, p["width"], 0, device), x, y, p["top"])
    save_arrays(
        outputs[0],
        activation=np.array(p["activation"]),
        width=np.int64(p["width"]),
        widths=widths,
        ratio=ratio,
        cubic=cubic,
        s_seen=s_seen,
        i_seen=i_seen,
        **quotients,
    )


# --- figure and checks --------------------------------------------------------------------------


def _load(path: str) -> dict:
    run = load_arrays(path)
    require_finite(NAME, ratio=run["ratio"], cubic=run["cubic"], rayleigh=run["S_of_I"])
    return run


def plot(p: dict, outputs, *, spectra: str) -> None:
    run = _load(spectra)
    fig, axes = new_figure(1, 3, width=13.5, height=4.0)
    k = np.arange(1, len(run["I_of_I"]) + 1)
    ax = axes[0]
    ax.semilogy(k, run["I_of_I"], "o", color="C0", label="vᵀIv")
    ax.semilogy(k, np.abs(run["S_of_I"]), "x", color="C3", label="|vᵀSv|")
    ax.set_title(f"top eigenvectors v of I (width {int(run['width'])})", fontsize=9)
    ax = axes[1]
    ax.semilogy(k, np.abs(run["S_of_S"]), "x", color="C3", label="|vᵀSv|")
    ax.semilogy(k, run["I_of_S"], "o", color="C0", label="vᵀIv")
    ax.set_title(f"top eigenvectors v of S (largest |λ|), {run['activation']}", fontsize=9)
    for ax in axes[:2]:
        ax.set_xticks(k[:: max(1, len(k) // 10)])
        ax.set_xlabel("eigenvector rank")
        ax.set_ylabel("Rayleigh quotient")
        ax.legend(loc="center right", fontsize=7)
    ax = axes[2]
    widths = run["widths"].astype(float)
    for values, label, color in (
        (run["ratio"], "‖IS‖_F / (‖I‖_F ‖S‖_F)", "C1"),
        (np.abs(run["cubic"]), "|Tr H³ − Tr I³ − Tr S³| / (‖I‖_F ‖S‖_F²)", "C2"),
    ):
        slope, _, intercept = loglog_slope(run["widths"], np.abs(values))
        ax.loglog(np.repeat(widths, values.shape[1]), values.ravel(), "o", ms=3, color=color)
        ax.loglog(
            widths,
            np.exp(intercept) * widths**slope,
            color=color,
            label=f"{label}: slope {slope:.2f}",
        )
    ax.set_xticks(widths, [str(int(w)) for w in widths])
    ax.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
    ax.set_xlabel("width n₁")
    ax.set_title(f"{run['ratio'].shape[1]} nets per width, at initialisation", fontsize=9)
    ax.legend(loc="lower left", fontsize=7)
    save_figure(fig, outputs)


def _slope_row(widths, values, claim: str, note: str, rate: float | None) -> Check:
    """A log-log slope claim: equal to ``rate`` within 3 OLS standard errors, or (rate None,
    "→ 0") negative: the upper end of its 3-SE interval at most 0."""
    slope, slope_se, _ = loglog_slope(widths, np.abs(values))
    mean = np.abs(values).mean(1)
    note = (
        f"widths {widths.tolist()}, {values.shape[1]} nets each, exact; mean {mean[0]:.3g} -> "
        f"{mean[-1]:.3g}; {note}"
    )
    if rate is not None:
        return Check(
            NAME,
            f"{claim}: log-log slope over width",
            rate,
            slope,
            Z * slope_se,
            "abs",
            note=f"{note}; tolerance 3 x the OLS standard error ({slope_se:.3f})",
        )
    return Check(
        NAME,
        f"{claim} → 0: log-log slope over width + 3 OLS standard errors ≤ 0",
        0.0,
        slope + Z * slope_se,
        0.0,
        "at_most",
        note=f"{note}; slope {slope:.3f} ± {slope_se:.3f}",
    )


def check(p: dict, outputs, *, spectra: str) -> None:
    run = _load(spectra)
    widths = run["widths"]
    top = len(run["I_of_I"])
    rows = [
        _slope_row(
            widths,
            run["ratio"],
            "‖IS‖_F / (‖I‖_F ‖S‖_F) falls like width^-1/2",
            "‖S‖_op = O(width^-1/2) with ‖I‖_F, ‖S‖_F = O(1)",
            -0.5,
        ),
        _slope_row(
            widths,
            run["cubic"],
            "(Tr H³ − Tr I³ − Tr S³) / (‖I‖_F ‖S‖_F²) = 3(Tr I²S + Tr IS²) / (‖I‖_F ‖S‖_F²)",
            "I and S asymptotically orthogonal; ‖I‖_F, ‖S‖_F = O(1)",
            None,
        ),
        _slope_row(
            widths,
            run["s_seen"],
            f"Rayleigh: top-{top} eigenvectors v of I see no S, mean |vᵀSv| / vᵀIv",
            "v = Jᵀu/√μ from the Gram",
            None,
        ),
        _slope_row(
            widths,
            run["i_seen"],
            f"Rayleigh: top-{top} eigenvectors v of S see no I, mean vᵀIv / ‖I‖_op",
            "S's eigenvectors from its blocks (largest |λ|)",
            None,
        ),
    ]
    write_checks(outputs[0], rows)


def _mem_mb(p: dict, wildcards) -> int:
    """float64: the S-blocks with eigenvectors (n1, n0 + 2, n0 + 2) three times, SJᵀ twice
    (N × n1 × (n0 + 2)) and the cross terms' chunk temporaries (6 × 2²⁴ entries)."""
    width, n = max(max(p["widths"]), p["width"]), p["n_points"]
    blocks = width * 66**2 * 8 * 3
    cross = 2 * n * width * 66 * 8 + 6 * 2**24 * 8
    return 1000 + (blocks + cross) // 2**20


EXPERIMENT = Experiment(
    name=NAME,
    order=165,
    uses=("seed", "device"),
    jobs=(Job("spectra", spectra, "spectra.npz", gpu=True, mem_mb=_mem_mb, runtime=60),),
    plot=plot,
    check=check,
    figure_inputs={"spectra": "spectra"},
)
