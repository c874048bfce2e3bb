"""The Hessian of the loss (ICLR 2020), Fig. 3 and the narrow valley of the slides: the loss
around a trained minimum on the plane of the 1st and 4th eigenvectors of I, σ vs σ̄.

Large eigenvalues of I (= Θ̂/N on its range) are the cliffs of the loss surface and small ones
its flat floor; κ = λmax/λmin is the condition number. With the un-normalised smooth ReLU
(softplus, E σ > 0) the NTK has a large constant mode: a freeze-like spectrum, one cliff much
steeper than every other direction. The normalised σ̄ removes the mean and the constant mode
shrinks (towards the chaos: r = (1 − β²) E σ'(z)² / E σ(z)² grows, as in the phase figure; the
parametrisation here is the NTK one, so the link to r is inferred).

The N digits of the Hessian experiments (8 × 8 on the sphere ‖x‖² = 64, targets ±1; the paper
used points of the unit disk, whose smooth-kernel Gram has λmin at rounding level, so κ would
be meaningless), depth L, NTK parametrisation, β; ``seeds`` nets per σ trained together by
gradient descent on C = 1/(2N) Σ (f − y)² at lr = ``lr_fraction`` · 2/λmax(Θ̃/N) (the
linearised stability limit) for ``steps`` steps.

Job ``valley_{variant}`` (``plain`` = σ, ``normalized`` = σ̄): the limiting Θ̃ and its spectrum,
the trained nets, the spectrum of I at each minimum, and for the first net the loss on the grid
θ* + a v₁ + b v₄ (v_k = Jᵀu_k/√μ_k: the eigenvectors of I from those of Θ̂). ``plot``, ``check``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ntk_repro.activations import standard_moments
from ntk_repro.device import resolve_device
from ntk_repro.experiments import Experiment, Job
from ntk_repro.hessian import LossHessian, digits_problem, limiting_kernels
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
from ntk_repro.training import train_ensemble

NAME = "narrow_valley"
VARIANTS = ("plain", "normalized")
PARAMETRIZATION = "ntk2018"
DTYPE = torch.float64
Z = 3.0
DIRECTIONS = (0, 3)  # eigenvectors 1 and 4 of I
# The grid reaches a loss rise of RISE along v₄ in the quadratic model, ½ λ₄ R² = RISE.
RISE = 0.05


def activation_of(p: dict, variant: str) -> str:
    return p["activation"] if variant == "plain" else f"normalized:{p['activation']}"


def spectrum_summary(eigenvalues: np.ndarray) -> tuple[float, float]:
    """(λ₁/Tr, κ = λmax/λmin) of a Gram's eigenvalues."""
    ev = np.sort(eigenvalues)[::-1]
    return float(ev[0] / ev.sum()), float(ev[0] / ev[-1])


def loss_plane(model, x, y, directions: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """C(θ* + a d₁ + b d₂) on the grid coords × coords: (G, G) float64 (rows: a along d₁)."""
    op = LossHessian(model, x, y)
    d = torch.as_tensor(directions, dtype=op.dtype, device=op.device)
    c = torch.as_tensor(coords, dtype=op.dtype, device=op.device)

    def loss(theta):
        return 0.5 * ((op._f(theta) - op.y) ** 2).mean()

    batched = torch.func.vmap(loss)
    out = np.empty((len(coords), len(coords)))
    with torch.no_grad():
        for i, a in enumerate(c):
            thetas = op.theta + a * d[:, 0] + c[:, None] * d[:, 1]
            out[i] = batched(thetas).double().cpu().numpy()
    return out


def valley(p: dict, outputs, *, variant: str) -> None:
    activation = activation_of(p, variant)
    device = resolve_device(p["device"])
    x, y = digits_problem(p["n_points"], seed=derive_seed(p["seed"], "hessian", "inputs"))
    n = len(y)
    theta = limiting_kernels(
        x, depth=p["depth"], beta=p["beta"], activation=activation, parametrization=PARAMETRIZATION
    )["ntk"]
    limit_ev = np.linalg.eigvalsh(theta / n)[::-1]
    lr = p["lr_fraction"] * 2.0 / limit_ev[0]
    result = train_ensemble(
        x,
        y,
        width=p["width"],
        depth=p["depth"],
        beta=p["beta"],
        activation=activation,
        parametrization=PARAMETRIZATION,
        seeds=[derive_seed(p["seed"], NAME, "net", k) for k in range(p["seeds"])],
        steps=p["steps"],
        lr=lr,
        loss="half_mse",
        dtype=DTYPE,
        device=device,
        name=f"{NAME} {variant}",
    )
    spectra = []
    for k in range(p["seeds"]):
        op = LossHessian(result.member(k), x, y)
        spectra.append(np.linalg.eigvalsh(op.ntk() / n)[::-1])
    # The plane of the first net: eigenvectors of I from those of Θ̂ (v = Jᵀu/√μ).
    model = result.member(0)
    op = LossHessian(model, x, y)
    mu, u = np.linalg.eigh(op.ntk())
    order = np.argsort(mu)[::-1][list(DIRECTIONS)]
    directions = op.jacobian_transpose_product(u[:, order]) / np.sqrt(mu[order])
    lam = mu[order] / n
    reach = math.sqrt(2.0 * RISE / lam[1])
    coords = reach * np.linspace(-1.0, 1.0, p["grid"])
    moments = standard_moments(activation)
    save_arrays(
        outputs[0],
        variant=np.array(variant),
        activation=np.array(activation),
        width=np.int64(p["width"]),
        depth=np.int64(p["depth"]),
        lr=np.float64(lr),
        limit_spectrum=limit_ev,
        spectra=np.stack(spectra),
        losses=result.losses,
        plane_eigenvalues=lam,
        coords=coords,
        plane=loss_plane(model, x, y, directions, coords),
        r=np.float64((1.0 - p["beta"] ** 2) * moments["grad_second"] / moments["second"]),
    )


# --- figure and checks --------------------------------------------------------------------------


def _load(runs: list[str]) -> dict[str, dict]:
    loaded = {str(r["variant"]): r for r in (load_arrays(path) for path in runs)}
    for variant, run in loaded.items():
        require_finite(f"{NAME} {variant}", plane=run["plane"], spectra=run["spectra"])
    return {v: loaded[v] for v in VARIANTS if v in loaded}


def plot(p: dict, outputs, *, runs: list[str]) -> None:
    runs = _load(runs)
    fig, axes = new_figure(1, 3, width=13.5, height=4.2)
    for ax, run in zip(axes[:2], runs.values()):
        coords = run["coords"] / run["coords"][-1]
        plane = run["plane"]
        floor = plane.min()
        levels = floor + RISE * np.array([0.05, 0.1, 0.2, 0.4, 0.7, 1.0, 1.5, 2.0])
        filled = ax.contourf(coords, coords, plane.T, levels=40, cmap="viridis")
        ax.contour(coords, coords, plane.T, levels=levels, colors="w", linewidths=0.6)
        fig.colorbar(filled, ax=ax, shrink=0.85, label="loss C")
        lam = run["plane_eigenvalues"]
        share, kappa = spectrum_summary(run["spectra"][0])
        ax.set_xlabel(f"along v₁ (λ₁ = {lam[0]:.3g}), units of R")
        ax.set_ylabel(f"along v₄ (λ₄ = {lam[1]:.3g}), units of R")
        ax.set_title(f"{run['activation']}: λ₁/Tr I = {share:.2f}, κ = {kappa:.3g}", fontsize=9)
    ax = axes[2]
    for n, run in enumerate(runs.values()):
        color = f"C{n}"
        for k, ev in enumerate(run["spectra"]):
            ax.semilogy(
                np.arange(1, len(ev) + 1),
                ev,
                color=color,
                lw=0.8,
                alpha=0.7,
                label=f"{run['activation']} (nets)" if k == 0 else None,
            )
        ax.semilogy(
            np.arange(1, len(run["limit_spectrum"]) + 1),
            run["limit_spectrum"],
            "o",
            ms=3,
            color=color,
            label=f"{run['activation']} (Θ̃/N, limit)",
        )
    ax.set_xlabel("eigenvalue index")
    ax.set_ylabel("eigenvalues of I at the minimum (= Θ̂/N)")
    first = next(iter(runs.values()))
    ax.set_title(f"L = {int(first['depth'])}, width {int(first['width'])}", fontsize=9)
    ax.legend(loc="lower left", fontsize=7)
    save_figure(fig, outputs)


def _log_ratio(plain: np.ndarray, normalized: np.ndarray) -> tuple[float, float]:
    """log10 of the ratio of the means (σ over σ̄) and its standard error (delta method)."""
    out, var = 0.0, 0.0
    for values, sign in ((plain, 1.0), (normalized, -1.0)):
        mean = values.mean()
        out += sign * math.log10(mean)
        if len(values) > 1:
            var += (values.std(ddof=1) / math.sqrt(len(values)) / (mean * math.log(10.0))) ** 2
    return out, math.sqrt(var)


def check(p: dict, outputs, *, runs: list[str]) -> None:
    runs = _load(runs)
    if set(runs) != set(VARIANTS):
        write_checks(outputs[0], [])
        return
    stats = {
        v: np.array([spectrum_summary(ev) for ev in run["spectra"]]) for v, run in runs.items()
    }
    limits = {v: spectrum_summary(run["limit_spectrum"]) for v, run in runs.items()}
    plain, normalized = runs["plain"], runs["normalized"]
    seeds = len(plain["spectra"])
    rows = []
    for column, what in ((0, "constant-mode share λ₁(I)/Tr I"), (1, "condition number κ of I")):
        ratio, se = _log_ratio(stats["plain"][:, column], stats["normalized"][:, column])
        limit_ratio = math.log10(limits["plain"][column] / limits["normalized"][column])
        rows.append(
            Check(
                NAME,
                f"{what} at the trained minimum is larger for {plain['activation']} (freeze-like) "
                f"than for {normalized['activation']}: log10 of the ratio > 0",
                0.0,
                ratio,
                Z * se,
                "at_least",
                note=f"{seeds} nets each, width {int(plain['width'])}, L = {int(plain['depth'])}; "
                f"values {stats['plain'][:, column].mean():.3g} vs "
                f"{stats['normalized'][:, column].mean():.3g}, limit Θ̃: "
                f"{limits['plain'][column]:.3g} vs {limits['normalized'][column]:.3g} "
                f"(log ratio {limit_ratio:.2f}); r = {float(plain['r']):.2f} vs "
                f"{float(normalized['r']):.2f} (link to r inferred); tolerance 3 standard "
                "errors over nets",
            )
        )
    write_checks(outputs[0], rows)


def _mem_mb(p: dict, wildcards) -> int:
    # float64 nets (weights, gradients, copies), one grid row of parameter vectors.
    params = p["width"] ** 2 * (p["depth"] - 2) + p["width"] * 4
    return 1000 + params * 8 * (4 * p["seeds"] + p["grid"] + 4) // 2**20


EXPERIMENT = Experiment(
    name=NAME,
    order=170,
    uses=("seed", "device"),
    jobs=(
        Job(
            "valley",
            valley,
            "valley_{variant}.npz",
            each=lambda p: [{"variant": v} for v in VARIANTS],
            gpu=True,
            mem_mb=_mem_mb,
            runtime=60,
        ),
    ),
    plot=plot,
    check=check,
    figure_inputs={"runs": "valley"},
)
