"""Freeze & Chaos: the limiting NTK Gram of a freeze, an edge and a chaos network at one depth.

Balanced parametrisation, σ with E[σ(z)²] = 1, inputs on the sphere ‖x‖² = n0 (the circle of
radius √2, and uniform points of S^{d−1} of radius √d). For every configured network the stage
computes Θ∞(L) on both point sets (``kernels.theta_inf``, the Gram path) and the normalised
kernel Θ(x, y)/Θ(x, x) against the angle between x and y (``kernels_of_cosine``, the
function-of-the-cosine path). Freeze: the Gram is nearly constant; chaos: nearly diagonal; edge
(scaled ReLU, β = 0): a diagonal on top of a constant.

A network whose σ has no closed form (e.g. ``normalized:tanh(0.5z)``, a tanh of gain 0.5)
takes the Hermite series of :mod:`ntk_repro.dual` for all four results, at the cosines of its
points (a 2-D quadrature per pair and layer would take minutes per Gram); the series is
checked against the quadrature path of ``kernels_of_cosine`` at a few cosines.

Jobs: ``limit`` (all Grams); then ``plot`` and ``check``.
"""

from __future__ import annotations

import math

import numpy as np

from ntk_repro import data, dual, spectral
from ntk_repro.activations import get_activation
from ntk_repro.experiments import Experiment, Job
from ntk_repro.freeze_chaos import (
    PARAMETRIZATION,
    float64_resolution,
    ntk_of_cosine,
    parse_networks,
    theta_diagonal,
)
from ntk_repro.kernels import kernels_of_cosine, theta_inf
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

# E σ², E σ'² of activations without a closed form come from the quadrature core, whose
# 1-D rule is accurate to ~1e-14; over L ≤ 100 layers the diagonal then agrees to 1e-11.
DIAGONAL_TOLERANCE = 1e-10
# Cosines at which the Hermite series is checked against the 2-D quadrature path.
SERIES_CHECK_COSINES = np.cos(np.linspace(0.0, math.pi, 7))


def _sphere(p: dict) -> np.ndarray:
    """Uniform points of the sphere of radius √d, ordered by their first coordinate so that
    the heatmap shows the kernel's dependence on the angle to e_1."""
    x = data.sphere_points(
        p["sphere_points"], p["sphere_dim"], seed=derive_seed(p["seed"], "regimes", "sphere")
    )
    return x[np.argsort(-x[:, 0], kind="stable")]


def _series_kernels(net, depth: int, cosines: list[np.ndarray]) -> list[np.ndarray]:
    """Θ∞(L) by the Hermite series at each array of cosines (inputs on the sphere)."""
    kw = dict(depth=depth, beta=net.beta, activation=net.activation)
    return [dual.kernels_of_cosine(c, parametrization=PARAMETRIZATION, **kw)[1] for c in cosines]


def series_gap(net, depth: int) -> float:
    """max |Θ_series − Θ_quadrature| / Θ(x,x) over SERIES_CHECK_COSINES."""
    series = _series_kernels(net, depth, [SERIES_CHECK_COSINES])[0]
    quad = kernels_of_cosine(
        SERIES_CHECK_COSINES,
        depth=depth,
        beta=net.beta,
        activation=net.activation,
        parametrization=PARAMETRIZATION,
        method="quadrature",
    )[1]
    return float(np.max(np.abs(series - quad)) / quad[0])  # the first cosine is 1


def limit(p: dict, outputs) -> None:
    """Θ∞(L) Grams on the circle and the sphere, and Θ(x,y)/Θ(x,x) against the angle."""
    nets = parse_networks(p["networks"])
    depth = int(p["depth"])
    x_circle, gamma = data.circle_points(p["circle_points"], radius=math.sqrt(2.0))
    x_sphere = _sphere(p)
    angles = np.linspace(0.0, math.pi, p["angle_points"])
    sphere_cos = spectral.cosines(x_sphere)
    circle, sphere, sphere_of_cos, curve = [], [], [], []
    series = [not get_activation(net.activation).has_closed_form for net in nets]
    for net, by_series in zip(nets, series):
        if by_series:
            results = _series_kernels(
                net, depth, [spectral.cosines(x_circle), sphere_cos, sphere_cos, np.cos(angles)]
            )
            for out, result in zip((circle, sphere, sphere_of_cos, curve), results):
                out.append(result)
            continue
        arch = dict(
            depth=depth,
            beta=net.beta,
            activation=net.activation,
            parametrization=PARAMETRIZATION,
            device=p["device"],
        )
        circle.append(theta_inf(x_circle, **arch))
        sphere.append(theta_inf(x_sphere, **arch))
        sphere_of_cos.append(ntk_of_cosine(net, depth, sphere_cos))
        curve.append(ntk_of_cosine(net, depth, np.cos(angles)))
    save_arrays(
        outputs[0],
        names=np.array([n.name for n in nets]),
        regimes=np.array([n.regime for n in nets]),
        activations=np.array([n.activation for n in nets]),
        betas=np.array([n.beta for n in nets]),
        r=np.array([n.r for n in nets]),
        depth=np.int64(depth),
        gamma=gamma,
        angles=angles,
        x_sphere=x_sphere,
        circle_gram=np.stack(circle),
        sphere_gram=np.stack(sphere),
        sphere_gram_of_cosine=np.stack(sphere_of_cos),
        curve=np.stack(curve),
        series_path=np.array(series),
        series_gap=np.array(
            [series_gap(net, depth) if s else math.nan for net, s in zip(nets, series)]
        ),
    )


def _load(path: str) -> dict:
    res = load_arrays(path)
    require_finite(
        "regimes", circle=res["circle_gram"], sphere=res["sphere_gram"], curve=res["curve"]
    )
    return res


def _normalised(gram: np.ndarray) -> np.ndarray:
    """Θ(x, y)/Θ(x, x) for a stack of Grams (n, M, M) with a constant diagonal."""
    return gram / np.diagonal(gram, axis1=1, axis2=2)[:, :, None]


def _label(res, i) -> str:
    return (
        f"{res['regimes'][i]}: {res['activations'][i]}, β = {float(res['betas'][i]):g}\n"
        f"r = {float(res['r'][i]):.3g}"
    )


def plot(p: dict, outputs, *, limit: str) -> None:
    res = _load(limit)
    n = len(res["names"])
    fig, axes = new_figure(
        3, n, width=2.6 * n + 0.8, height=8.2, gridspec_kw={"height_ratios": [1, 1, 0.9]}
    )
    circle, sphere = _normalised(res["circle_gram"]), _normalised(res["sphere_gram"])
    low = min(0.0, float(circle.min()), float(sphere.min()))
    g = res["gamma"]
    image = None
    for i in range(n):
        ax = axes[0, i]
        image = ax.imshow(
            circle[i],
            vmin=low,
            vmax=1.0,
            cmap="viridis",
            origin="lower",
            extent=(g[0], g[-1], g[0], g[-1]),
            interpolation="nearest",
        )
        ax.set_title(_label(res, i), fontsize=8)
        ax.set_xlabel("γ(x)")
        ax.grid(False)
        ax = axes[1, i]
        ax.imshow(
            sphere[i], vmin=low, vmax=1.0, cmap="viridis", origin="upper", interpolation="nearest"
        )
        ax.set_xlabel("point (sorted by x₁)")
        ax.grid(False)
    axes[0, 0].set_ylabel(f"circle, {len(g)} points\nγ(y)")
    axes[1, 0].set_ylabel(f"sphere $S^{{{p['sphere_dim'] - 1}}}$, {sphere.shape[1]} points\npoint")
    fig.colorbar(image, ax=axes[:2, :], shrink=0.8, label="Θ∞(x, y) / Θ∞(x, x)")
    spec = axes[2, 0].get_gridspec()
    for ax in axes[2, :]:
        ax.remove()
    ax = fig.add_subplot(spec[2, :])
    for i in range(n):
        curve = res["curve"][i]
        ax.plot(
            np.degrees(res["angles"]),
            curve / curve[0],
            lw=1.4,
            color=f"C{i + 3}",
            label=_label(res, i).replace("\n", ", "),
        )
    ax.set_xlabel("angle between x and y (degrees)")
    ax.set_ylabel("Θ∞(x, y) / Θ∞(x, x)")
    ax.set_xlim(0, 180)
    ax.axhline(0.0, color="0.5", lw=0.6)
    ax.legend(loc="center right")
    fig.suptitle(
        f"Limiting NTK at depth L = {int(res['depth'])} (balanced parametrisation, "
        "E σ(z)² = 1, ‖x‖² = n0)",
        fontsize=10,
    )
    save_figure(fig, outputs)


def check(p: dict, outputs, *, limit: str) -> None:
    res = _load(limit)
    depth = int(res["depth"])
    rows = []
    for i, name in enumerate(res["names"]):
        r = float(res["r"][i])
        expected = theta_diagonal(r, depth)
        diag = np.concatenate(
            [np.diagonal(res["circle_gram"][i]), np.diagonal(res["sphere_gram"][i])]
        )
        farthest = float(diag[np.argmax(np.abs(diag - expected))])
        rows.append(
            Check(
                "regimes",
                f"{name}: Θ∞(x,x) on the sphere = (1 - r^L)/(1 - r), L = {depth}, r = {r:.4g}",
                expected,
                farthest,
                DIAGONAL_TOLERANCE * expected,
                "abs",
                note="E σ² = 1 keeps Σ(x,x) = 1 at every layer and Σ̇(x,x) = r; tolerance: "
                "quadrature accuracy of E σ², E σ'² (1e-10 relative)",
            )
        )
    # The Gram path (x xᵀ by a matrix product) and the cosine path see cosines that differ by
    # rounding, δt ≲ n0·eps; the ReLU kernels have a √(1 − t) term at t = 1, so δt becomes
    # at most √(2 δt) per layer in the normalised kernel.
    n0 = res["x_sphere"].shape[1]
    delta_t = 4.0 * n0 * np.finfo(np.float64).eps
    tol = depth * math.sqrt(2.0 * delta_t) + float64_resolution(depth)
    # (Networks on the Hermite series have both from the series: not two paths, left out.)
    paths = ~res["series_path"]
    gap = np.abs(res["sphere_gram"] - res["sphere_gram_of_cosine"])[paths]
    scale = np.diagonal(res["sphere_gram"], axis1=1, axis2=2)[paths][:, :, None]
    every = "all networks" if paths.all() else "all networks with a closed form"
    rows.append(
        Check(
            "regimes",
            "Gram (kernel_matrices) = κ(xᵀy/n0) (kernels_of_cosine) on the sphere points, "
            f"{every}, relative to Θ(x,x)",
            0.0,
            float(np.max(gap / scale)),
            tol,
            "abs",
            note="two code paths of one layer map; tolerance L·√(2δt) with δt = 4·n0·eps the "
            "rounding of a cosine (the √(1-t) term of ReLU kernels at t = 1)",
        )
    )
    for i, name in enumerate(res["names"]):
        if res["series_path"][i]:
            rows.append(
                Check(
                    "regimes",
                    f"{name} ({res['activations'][i]}): Θ∞ by the Hermite series (used for the "
                    f"figure) = quadrature path at {len(SERIES_CHECK_COSINES)} cosines, "
                    f"L = {depth}, relative to Θ(x,x)",
                    0.0,
                    float(res["series_gap"][i]),
                    DIAGONAL_TOLERANCE,
                    "abs",
                    note="two independent evaluations of one layer map (power series of ρ with "
                    "Gauss-Hermite coefficients; polar 2-D quadrature); tolerance the "
                    "quadrature accuracy as for the diagonal",
                )
            )
    write_checks(outputs[0], rows)


EXPERIMENT = Experiment(
    name="regimes",
    order=70,
    uses=("seed", "device"),
    jobs=(Job("limit", limit, "kernels.npz"),),
    plot=plot,
    check=check,
    figure_inputs={"limit": "limit"},
)
