"""Freeze & Chaos: the order parameter r_{σ,β} and the normalised NTK over depth.

Part 1 — r_{σ,β} = (1 − β²)·E[σ'(z)²] over β ∈ [0, 1] for ReLU, erf and tanh, each scaled so that
E[σ(z)²] = 1, and for their normalised versions σ̄ = (σ − Eσ)/sd(σ). Scaling: ReLU becomes
√2·max(0, z) (``scaled_relu``, E σ'² = 1 so r = 1 − β²); erf and tanh are odd, so E σ = 0 and
σ/√E[σ²] *is* σ̄ (``normalized:erf``, ``normalized:tanh``): for them the scaled and the
normalised curves coincide. E σ'² comes from the closed form where one exists and from the
quadrature core for every σ; both are stored.

Part 1b — the gain: σ = tanh(g·z) normalised (``normalized:tanh(<g>z)``) has
E σ̄'² = E σ'²/E σ² = 1 + (4/3)g⁴ − 8g⁶ + (2324/45)g⁸ − … (Taylor expansion of tanh in the
Gaussian moments), so r = 1 at β*(g) = √(1 − 1/E σ̄'²) ≈ (2/√3)g²: a small gain puts tanh in the
freeze for nearly every β > 0, a large gain in the chaos (E σ̄'² ≈ 4g/(3√(2π)) → ∞).
E σ̄'² over g ∈ ``gain_range`` (log-spaced) by the 1-D quadrature core with 32 nodes per panel
(the default 8 leave 3e-5 at g = 10, where σ' is a spike of width 1/g).

Part 2 — for every configured network, over depth L = 1 … max_depth, on the sphere ‖x‖² = n0:
the minimum over the sphere of Θ(x,y)/Θ(x,x) (a fine grid of the cosine t ∈ [−1, 1], since
Θ∞ depends on t only), and on N uniform points of S^{d−1}: the condition number λmax/λmin of
the Gram, the share of the constant mode 1ᵀΘ1/(N·tr Θ), the mean off-diagonal c of Θ/Θ(x,x)
and the RMS distance of Θ/Θ(x,x) to (1 − c)·I + c·11ᵀ, and the largest off-diagonal |Θ/Θ(x,x)|.

Networks whose σ has no closed form (e.g. ``normalized:tanh(0.5z)``) take the Hermite
series of :mod:`ntk_repro.dual` for the sweep (a 2-D quadrature per pair and layer would take
hours here), checked against the quadrature path at a few cosines at the largest depth, and
their r (1-D quadrature) against a Monte-Carlo estimate.

Jobs: ``limit`` (everything above); then ``plot`` and ``check``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ntk_repro import data, dual, spectral
from ntk_repro.activations import get_activation, standard_moments
from ntk_repro.experiments import Experiment, Job
from ntk_repro.freeze_chaos import (
    PARAMETRIZATION,
    float64_resolution,
    is_kinked,
    kernels_at_cosine,
    order_parameter_quadrature,
    parse_networks,
)
from ntk_repro.gauss import expect_1d
from ntk_repro.kernels import kernels_of_cosine
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

# A freeze deficit 1 − min ratio is "resolved" while it is this far above float64 rounding.
RESOLVED_DEFICIT = 1e-10
CHAOS_RATIO_BOUND = 0.05
EDGE_LIMIT_C = 0.25  # scaled ReLU, β = 0: Θ(L)(x, y)/L → 1/4 for x ≠ y (see checks)
# Rates and limits are estimated on the depth windows [L/4, L/2] and [L/2, L]; the estimates
# converge like 1/L², so below this many layers they are pre-asymptotic and not evaluated.
MIN_RATE_DEPTH = 20
# E σ̄'² − 1 of normalised tanh(g z) = (4/3)g⁴ − 8g⁶ + (2324/45)g⁸ − (1112/3)g¹⁰ + … (see
# gained_tanh_excess): each term is −(6 … 7.2)·g² times the one before, at most 0.3 in size up
# to g = 0.2, so there the remainder after the leading term lies between 0 and the next term
# −8g⁶ (as for an alternating series of shrinking terms).
TANH_SERIES = (4.0 / 3.0, -8.0, 2324.0 / 45.0, -1112.0 / 3.0)  # coefficients of g⁴, g⁶, …
MAX_ASYMPTOTIC_GAIN = 0.2
# Monte-Carlo samples of the r check of networks without a closed form.
MC_SAMPLES = 1 << 20
# The Hermite path and the quadrature path agree to ~1e-15 per layer; 1e-10 of Θ(x,x) is the
# stated accuracy of the quadrature core over L ≤ 100 layers (as in regimes).
DUAL_TOLERANCE = 1e-10
DUAL_CHECK_COSINES = np.cos(np.linspace(0.0, math.pi, 7))


def scaled_spec(name: str) -> str:
    """The activation spec of σ/√E[σ(z)²] (E σ² = 1) for a base name, maybe with a gain."""
    if get_activation(name).base.name == "relu":
        return "scaled_relu"  # relu(g z)/√E[relu(g z)²] = √2·relu(z) for every gain g
    if abs(standard_moments(name)["mean"]) > 1e-12:
        raise ValueError(f"activation {name!r} has E σ ≠ 0; its rescaling has no spec")
    return f"normalized:{name}"  # odd σ: subtracting E σ = 0 changes nothing


def _grad_second(spec: str) -> tuple[float, float]:
    """(E σ'² from the closed form or NaN, E σ'² from the quadrature core)."""
    from ntk_repro.activations import get_activation

    closed = (
        standard_moments(spec)["grad_second"] if get_activation(spec).has_closed_form else math.nan
    )
    return closed, order_parameter_quadrature(spec, 0.0)


def gained_tanh_excess(gain: float) -> float:
    """E σ̄'² − 1 for σ̄ = normalised tanh(g z): E σ'²/E σ² − 1 by the 1-D quadrature core
    (32 nodes per panel; tanh(g z) is odd, so normalising only divides by √E σ²)."""
    act = get_activation(f"tanh({float(gain)!r}z)")
    one = torch.ones((), dtype=torch.float64)
    grad_second = expect_1d(lambda u: act.derivative(u) ** 2, one, n_per_panel=32)
    second = expect_1d(lambda u: act(u) ** 2, one, n_per_panel=32)
    return float(grad_second / second) - 1.0


def monte_carlo_r(net, seed: int) -> tuple[float, float]:
    """(r, its standard error) = (1 − β²)·mean σ'(z)²/mean σ(z)² over MC_SAMPLES z ~ N(0, 1).

    The ratio makes the estimate independent of the normalisation constant of σ; its standard
    error is the delta method's sd(σ'² − R σ²)/(√n · mean σ²)."""
    act = get_activation(net.activation)
    z = torch.randn(MC_SAMPLES, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    num, den = act.derivative(z) ** 2, act(z) ** 2
    ratio = float(num.mean() / den.mean())
    se = float((num - ratio * den).std()) / (math.sqrt(MC_SAMPLES) * float(den.mean()))
    factor = 1.0 - net.beta**2
    return factor * ratio, factor * se


def has_closed_form(net) -> bool:
    return get_activation(net.activation).has_closed_form


def dual_gap(net, depth: int) -> float:
    """max |Θ_Hermite − Θ_quadrature| / Θ(x,x) over DUAL_CHECK_COSINES at ``depth``."""
    kw = dict(depth=depth, beta=net.beta, activation=net.activation)
    series = dual.kernels_of_cosine(DUAL_CHECK_COSINES, parametrization=PARAMETRIZATION, **kw)[1]
    quad = kernels_of_cosine(
        DUAL_CHECK_COSINES, parametrization=PARAMETRIZATION, method="quadrature", **kw
    )[1]
    return float(np.max(np.abs(series - quad)) / quad[0])


def quadrature_moment_error() -> float:
    """Largest relative error of the 1-D quadrature core on E z^{2k} = (2k−1)!!, k = 0 … 4."""
    one = torch.ones((), dtype=torch.float64)
    errors = []
    for k in range(5):
        exact = float(math.prod(range(1, 2 * k, 2)))
        moment = float(expect_1d(lambda u, k=k: u ** (2 * k), one))
        errors.append(abs(moment - exact) / exact)
    return max(errors)


def _depth_kernels(net, max_depth: int, both: np.ndarray):
    """A function depth -> (Σ, Θ) at the cosines ``both``: closed-form networks call the
    kernels per depth; the others take every depth from one pass of the Hermite series."""
    if has_closed_form(net):
        return lambda depth: kernels_at_cosine(net, depth, both)
    sigmas, thetas = dual.kernels_of_cosine(
        both,
        depth=max_depth,
        beta=net.beta,
        activation=net.activation,
        parametrization=PARAMETRIZATION,
        all_depths=True,
    )
    return lambda depth: (sigmas[depth - 1], thetas[depth - 1])


def _depth_sweep(net, max_depth: int, grid: np.ndarray, cos_points: np.ndarray) -> dict:
    """Per-depth summaries (arrays (max_depth,)) of one network; see the module docstring."""
    n = cos_points.shape[0]
    off = ~np.eye(n, dtype=bool)
    ones = np.ones(n)
    eps = np.finfo(np.float64).eps
    keys = (
        "min_ratio",
        "nngp_min_ratio",
        "argmin_cosine",
        "lam_max",
        "lam_min",
        "cond",
        "share",
        "c",
        "distance",
        "max_offdiag",
    )
    out = {k: np.empty(max_depth) for k in keys}
    both = np.concatenate([grid, cos_points.ravel()])
    kernels_at = _depth_kernels(net, max_depth, both)
    for i, depth in enumerate(range(1, max_depth + 1)):
        sigma, values = kernels_at(depth)
        curve, gram = values[: len(grid)], values[len(grid) :].reshape(n, n)
        diag = curve[-1]  # grid ends at t = 1
        ratio = curve / diag
        out["nngp_min_ratio"][i] = np.min(sigma[: len(grid)] / sigma[len(grid) - 1])
        j = int(np.argmin(ratio))
        out["min_ratio"][i], out["argmin_cosine"][i] = ratio[j], grid[j]
        evals = np.linalg.eigvalsh(0.5 * (gram + gram.T))
        out["lam_max"][i], out["lam_min"][i] = evals[-1], evals[0]
        # eigvalsh is backward stable: λmin is known to ~N·eps·λmax; below that it is noise.
        resolved = evals[0] > 100.0 * n * eps * evals[-1]
        out["cond"][i] = evals[-1] / evals[0] if resolved else math.nan
        out["share"][i] = ones @ gram @ ones / (n * np.trace(gram))
        normalised = gram / np.diagonal(gram)[:, None]
        c = normalised[off].mean()
        out["c"][i] = c
        out["distance"][i] = math.sqrt(np.mean((normalised[off] - c) ** 2))
        out["max_offdiag"][i] = np.abs(normalised[off]).max()
    return out


def limit(p: dict, outputs) -> None:
    """r_{σ,β} curves and the depth sweep of every network."""
    betas = np.linspace(0.0, 1.0, p["beta_points"])
    arrays = {
        "betas": betas,
        "activation_names": np.array(p["activations"]),
        "quadrature_moment_error": np.float64(quadrature_moment_error()),
    }
    for name in p["activations"]:
        for kind, spec in (("scaled", scaled_spec(name)), ("normalized", f"normalized:{name}")):
            closed, quad = _grad_second(spec)
            arrays[f"grad_second_closed_{kind}_{name}"] = np.float64(closed)
            arrays[f"grad_second_quad_{kind}_{name}"] = np.float64(quad)
            arrays[f"r_closed_{kind}_{name}"] = (1.0 - betas**2) * closed
            arrays[f"r_quad_{kind}_{name}"] = (1.0 - betas**2) * quad
    arrays["grad_second_quad_identity"] = np.float64(_grad_second("normalized:identity")[1])
    gains = np.geomspace(p["gain_range"][0], p["gain_range"][1], p["gain_points"])
    arrays.update(
        gains=gains,
        gain_betas=np.array(p["gain_betas"], dtype=np.float64),
        gain_excess=np.array([gained_tanh_excess(g) for g in gains]),
    )

    nets = parse_networks(p["networks"])
    max_depth = int(p["max_depth"])
    grid = np.linspace(-1.0, 1.0, p["cosine_points"])
    x = data.sphere_points(
        p["sphere_points"], p["sphere_dim"], seed=derive_seed(p["seed"], "phase", "sphere")
    )
    cos_points = spectral.cosines(x)
    arrays.update(
        names=np.array([n.name for n in nets]),
        regimes=np.array([n.regime for n in nets]),
        activations=np.array([n.activation for n in nets]),
        betas_net=np.array([n.beta for n in nets]),
        r=np.array([n.r for n in nets]),
        kinked=np.array([is_kinked(n.activation) for n in nets]),
        depths=np.arange(1, max_depth + 1),
        n_points=np.int64(x.shape[0]),
        sphere_dim=np.int64(x.shape[1]),
    )
    sweeps = [_depth_sweep(net, max_depth, grid, cos_points) for net in nets]
    for key in sweeps[0]:
        arrays[key] = np.stack([s[key] for s in sweeps])
    # Networks without a closed form: r by Monte Carlo, and the Hermite path against quadrature.
    mc = [
        monte_carlo_r(n, derive_seed(p["seed"], "phase", "mc", n.name))
        if not has_closed_form(n)
        else (math.nan, math.nan)
        for n in nets
    ]
    arrays.update(
        series_path=np.array([not has_closed_form(n) for n in nets]),
        r_mc=np.array([m[0] for m in mc]),
        r_mc_se=np.array([m[1] for m in mc]),
        dual_gap=np.array(
            [math.nan if has_closed_form(n) else dual_gap(n, max_depth) for n in nets]
        ),
    )
    save_arrays(outputs[0], **arrays)


def _load(path: str) -> dict:
    res = load_arrays(path)
    require_finite(
        "phase",
        min_ratio=res["min_ratio"],
        share=res["share"],
        c=res["c"],
        distance=res["distance"],
    )
    return res


# --- the analysis behind the claims and the figure ---------------------------------------------


def freeze_deficit(res: dict, i: int) -> np.ndarray:
    """d_L = 1 − min over the sphere of Θ(x,y)/Θ(x,x), clipped at 0 (rounding): (max_depth,)."""
    return np.maximum(1.0 - res["min_ratio"][i], 0.0)


def resolved_depth(res: dict, i: int) -> int:
    """The largest L up to which the freeze deficit is resolved in float64, at least 1.

    Both the NTK deficit d_L and the NNGP deficit 1 − min Σ(x,y)/Σ(x,x) = 1 − ρ_L must stay
    above RESOLVED_DEFICIT: the layer maps are evaluated at the correlation ρ_L, and once 1 − ρ_L
    reaches rounding level (ρ is snapped to 1 at 8 ulps) the √(1 − ρ) term of ReLU's Σ̇ is lost,
    although d_L ∝ r^{L/2} itself is still far above rounding.
    """
    deficits = np.minimum(freeze_deficit(res, i), 1.0 - res["nngp_min_ratio"][i])
    below = np.nonzero(deficits < RESOLVED_DEFICIT)[0]
    return max(int(below[0]), 1) if len(below) else len(deficits)


def bound_constant(deficit: np.ndarray, r: float, fit_depth: int) -> float:
    """C = max over L ≤ fit_depth of d_L/(L·r^L): the smallest C of the bound on those depths."""
    depths = np.arange(1, fit_depth + 1)
    return float(np.max(deficit[:fit_depth] / (depths * r**depths)))


def window_rate(values: np.ndarray, lo: int, hi: int) -> float:
    """Per-layer geometric factor (v_hi / v_lo)^{1/(hi−lo)} of a sequence indexed by depth."""
    return float((values[hi - 1] / values[lo - 1]) ** (1.0 / (hi - lo)))


def extrapolate(values: np.ndarray, lo: int, hi: int) -> float:
    """v(∞) of the least-squares fit v(L) = a + b/L + c/L² over depths lo … hi."""
    depths = np.arange(lo, hi + 1, dtype=np.float64)
    design = np.stack([np.ones_like(depths), 1.0 / depths, 1.0 / depths**2], axis=1)
    coef, *_ = np.linalg.lstsq(design, values[lo - 1 : hi], rcond=None)
    return float(coef[0])


def _windows(last: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The windows [last/4, last/2] and [last/2, last] of depths (each at least 2 long)."""
    half, quarter = max(last // 2, 2), max(last // 4, 1)
    return (quarter, half), (half, max(last, half + 2))


# --- figure ------------------------------------------------------------------------------------

_COLORS = {"relu": "tab:blue", "erf": "tab:orange", "tanh": "tab:green"}


def plot(p: dict, outputs, *, limit: str) -> None:
    res = _load(limit)
    fig, axes = new_figure(2, 4, width=17.0, height=7.6)
    net_colors = [f"C{k + 3}" for k in range(len(res["names"]))]
    _panel_order_parameter(axes[0, 0], res, net_colors)
    _panel_freeze(axes[0, 1], res, net_colors)
    _panel_off_diagonal(axes[0, 2], res, net_colors)
    _panel_gain(axes[0, 3], res, net_colors)
    _panel_distance(axes[1, 0], res, net_colors)
    _panel_condition(axes[1, 1], res, net_colors)
    _panel_constant_mode(axes[1, 2], res, net_colors)
    _panel_critical_beta(axes[1, 3], res, net_colors)
    save_figure(fig, outputs)


def critical_beta(excess: np.ndarray) -> np.ndarray:
    """β* with r = (1 − β*²)(1 + excess) = 1, i.e. √(1 − 1/E σ̄'²) (r < 1 for β > β*)."""
    return np.sqrt(excess / (1.0 + excess))


def _panel_gain(ax, res: dict, net_colors: list[str]) -> None:
    """r over the gain g of normalised tanh(g z) at a few β, with the boundary r = 1."""
    from matplotlib import colormaps
    from matplotlib.ticker import FormatStrFormatter

    gains, betas = res["gains"], res["gain_betas"]
    for j, beta in enumerate(betas):
        r = (1.0 - beta**2) * (1.0 + res["gain_excess"])
        color = colormaps["viridis"](0.9 * j / max(len(betas) - 1, 1))
        ax.loglog(gains, r, color=color, label=f"β = {beta:g}")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.text(gains[-1], 1.08, "chaos (r > 1)", fontsize=8, va="bottom", ha="right")
    ax.text(gains[-1], 0.93, "freeze (r < 1)", fontsize=8, va="top", ha="right")
    for k in _tanh_networks(res):
        act = get_activation(str(res["activations"][k]))
        ax.plot(act.gain, res["r"][k], "*", ms=10, color=net_colors[k], label=res["names"][k])
    for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis(FormatStrFormatter("%g"))
    ax.set_xlabel("gain g")
    ax.set_ylabel("r = (1 − β²) E σ̄'(z)²")
    ax.set_title("Normalised tanh(g z): r over the gain (★: networks)")
    ax.legend(loc="upper left", fontsize=7)


def _tanh_networks(res: dict) -> list[int]:
    """Indices of the networks whose σ is a (normalised) tanh, with or without a gain."""
    return [
        k
        for k in range(len(res["names"]))
        if get_activation(str(res["activations"][k])).base.name == "tanh"
    ]


def _panel_critical_beta(ax, res: dict, net_colors: list[str]) -> None:
    """β*(g) of normalised tanh(g z) against the small-gain asymptote (2/√3)g²."""
    gains = res["gains"]
    beta_star = critical_beta(res["gain_excess"])
    ax.loglog(gains, beta_star, color="tab:green", label="β*(g) (quadrature)")
    ax.fill_between(gains, beta_star, 1.0, color="tab:blue", alpha=0.08, label="freeze")
    small = gains <= 1.0
    ax.loglog(
        gains[small], 2.0 / math.sqrt(3.0) * gains[small] ** 2, "k--", lw=0.8, label="(2/√3)·g²"
    )
    for k in _tanh_networks(res):
        act = get_activation(str(res["activations"][k]))
        ax.plot(act.gain, res["betas_net"][k], "*", ms=10, color=net_colors[k])
    ax.set_xlabel("gain g")
    ax.set_ylabel("β* (r = 1)")
    ax.set_title("Normalised tanh(g z): freeze for β > β*(g)")
    ax.legend(loc="lower right")


def _panel_order_parameter(ax, res: dict, net_colors: list[str]) -> None:
    """r over β per activation (quadrature lines, closed-form circles) and the networks' r."""
    betas = res["betas"]
    for name in res["activation_names"]:
        scaled = res[f"r_quad_scaled_{name}"]
        normed = res[f"r_quad_normalized_{name}"]
        same = np.allclose(scaled, normed)
        label = f"{name}: σ/√E σ²" + (" = σ̄" if same else "")
        color = _COLORS.get(name, "tab:olive")  # (a gained σ such as tanh(0.5z))
        ax.plot(betas, scaled, color=color, lw=1.6, label=label)
        if not same:
            ax.plot(betas, normed, "--", color=color, lw=1.6, label=f"{name}: σ̄")
        if np.isfinite(res[f"r_closed_scaled_{name}"]).all():
            ax.plot(
                betas[::10],
                res[f"r_closed_scaled_{name}"][::10],
                "o",
                ms=3,
                color=color,
                mfc="none",
            )
    ax.axhline(1.0, color="black", lw=0.8)
    ax.text(0.02, 1.03, "chaos (r > 1)", fontsize=8, va="bottom")
    ax.text(0.02, 0.95, "freeze (r < 1)", fontsize=8, va="top")
    for k in range(len(res["names"])):
        ax.plot(res["betas_net"][k], res["r"][k], "*", ms=9, color=net_colors[k])
    ax.set_xlabel("β")
    ax.set_ylabel("r = (1 − β²) E σ'(z)²")
    ax.set_title("Order parameter (lines: quadrature, o: closed form, ★: networks)")
    ax.legend(loc="lower left")


def _panel_freeze(ax, res: dict, net_colors: list[str]) -> None:
    """The freeze deficit over depth of every freeze network, with its bound or rate."""
    max_depth = int(res["depths"][-1])
    for k, name in enumerate(res["names"]):
        if res["regimes"][k] != "freeze":
            continue
        _freeze_curves(ax, res, k, name, net_colors[k])
    ax.axhspan(1e-17, float64_resolution(max_depth), color="0.9", label="float64 rounding")
    ax.set_ylim(1e-17, 3.0)
    ax.set_xlabel("depth L")
    ax.set_title(
        "Freeze: distance of the NTK from a constant\n(faint: beyond float64 resolution "
        "of 1 − ρ_L)",
        fontsize=9,
    )
    ax.legend(loc="lower left")


def _freeze_curves(ax, res: dict, k: int, name: str, color: str) -> None:
    """One freeze network: resolved deficit, faint unresolved tail, and r^(L/2) or C·L·r^L."""
    depths = res["depths"]
    max_depth = int(depths[-1])
    r = float(res["r"][k])
    deficit = freeze_deficit(res, k)
    last = resolved_depth(res, k)
    ax.semilogy(
        depths[:last],
        deficit[:last],
        "o-",
        ms=3,
        color=color,
        label=f"{name}: 1 − min Θ(x,y)/Θ(x,x)",
    )
    tail = deficit[last - 1 :] > 0
    ax.semilogy(
        depths[last - 1 :][tail],
        deficit[last - 1 :][tail],
        "o-",
        ms=2,
        alpha=0.3,
        color=color,
    )
    if res["kinked"][k]:
        ref = deficit[last - 1] * r ** ((depths - last) / 2.0)
        ax.semilogy(depths, ref, ":", color=color, label="∝ r^(L/2) (ReLU kink)")
    else:
        c_bound = bound_constant(deficit, r, max(max_depth // 2, 1))
        ax.semilogy(
            depths,
            c_bound * depths * r**depths,
            "--",
            color=color,
            label=f"bound C·L·r^L, C = {c_bound:.3g}",
        )


def _panel_off_diagonal(ax, res: dict, net_colors: list[str]) -> None:
    """Mean and largest off-diagonal Θ(x,y)/Θ(x,x) over depth, against the claimed limits."""
    depths = res["depths"]
    for k, name in enumerate(res["names"]):
        ax.semilogy(depths, res["c"][k], "-", color=net_colors[k], label=f"{name}: mean c")
        ax.semilogy(
            depths, res["max_offdiag"][k], ":", color=net_colors[k], label=f"{name}: max |·|"
        )
    ax.axhline(CHAOS_RATIO_BOUND, color="0.4", lw=0.8, ls="--", label="chaos claim 0.05")
    ax.axhline(EDGE_LIMIT_C, color="0.4", lw=0.8, ls="-.", label="edge limit c = 1/4")
    ax.set_xlabel("depth L")
    ax.set_title(
        f"Off-diagonal Θ(x,y)/Θ(x,x), N = {int(res['n_points'])} points "
        f"of $S^{{{int(res['sphere_dim']) - 1}}}$"
    )
    ax.legend(loc="lower left", ncol=2, fontsize=7)


def _panel_distance(ax, res: dict, net_colors: list[str]) -> None:
    """RMS distance to (1−c)·I + c·11ᵀ over depth, with a 1/L guide at the edge."""
    depths = res["depths"]
    max_depth = int(depths[-1])
    for k, name in enumerate(res["names"]):
        ax.loglog(depths, res["distance"][k], color=net_colors[k], label=name)
    if "edge" in list(res["regimes"]):
        edge = list(res["regimes"]).index("edge")
        ax.loglog(
            depths, res["distance"][edge][-1] * max_depth / depths, "k--", lw=0.8, label="∝ 1/L"
        )
    ax.set_xlabel("depth L")
    ax.set_title("RMS distance of Θ/Θ(x,x) to (1−c)·I + c·11ᵀ")
    ax.legend(loc="lower left")


def _panel_condition(ax, res: dict, net_colors: list[str]) -> None:
    depths = res["depths"]
    for k, name in enumerate(res["names"]):
        ax.semilogy(depths, res["cond"][k], color=net_colors[k], label=name)
    ax.set_xlabel("depth L")
    ax.set_title("Condition number λmax/λmin of the Gram (resolved values)")
    ax.legend(loc="upper left")


def _panel_constant_mode(ax, res: dict, net_colors: list[str]) -> None:
    depths = res["depths"]
    for k, name in enumerate(res["names"]):
        ax.plot(depths, res["share"][k], color=net_colors[k], label=name)
    ax.set_xlabel("depth L")
    ax.set_ylim(0, 1.02)
    ax.set_title("Share of the constant mode 1ᵀΘ1 / (N·tr Θ)")
    ax.legend(loc="center right")


# --- claims ------------------------------------------------------------------------------------


def check(p: dict, outputs, *, limit: str) -> None:
    res = _load(limit)
    rows = _quadrature_rows(res) + _network_rows(res) + _gain_rows(res) + _series_rows(res)
    write_checks(outputs[0], rows)


def _gain_rows(res: dict) -> list[Check]:
    """Normalised tanh(g z): the small-gain asymptote at the smallest g, chaos at the largest."""
    gains, excess = res["gains"], res["gain_excess"]
    g = float(gains[0])
    beyond = (
        ""
        if g <= MAX_ASYMPTOTIC_GAIN
        else f"not evaluated at this size: smallest gain {g:g} > {MAX_ASYMPTOTIC_GAIN}, where "
        "the terms of the series stop shrinking fast and the next term no longer bounds the rest"
    )
    leading, nxt = TANH_SERIES[0] * g**4, TANH_SERIES[1] * g**6
    series = sum(c * g ** (4 + 2 * i) for i, c in enumerate(TANH_SERIES))
    derived = (
        "derived here (not a statement of the papers): tanh x = x - x³/3 + 2x⁵/15 - … in "
        "E σ'²/E σ² gives E σ̄'² - 1 = (4/3)g⁴ - 8g⁶ + (2324/45)g⁸ - (1112/3)g¹⁰ + …"
    )
    rows = [
        Check(
            "phase",
            f"normalised tanh(g z), g = {g:g}: E σ̄'² - 1 = (4/3)g⁴ (small-gain asymptote)",
            leading,
            float(excess[0]),
            abs(nxt),
            "abs",
            note=f"{derived}; tolerance the next term 8g⁶ = {abs(nxt):.3g} (the terms alternate, "
            f"each <= 0.3x the one before at g <= {MAX_ASYMPTOTIC_GAIN}); four terms give "
            f"{series:.8g}",
            not_evaluated=beyond,
        ),
        Check(
            "phase",
            f"normalised tanh(g z), g = {g:g}: β* (r = 1) = (2/√3)g², freeze for every β > β*",
            2.0 / math.sqrt(3.0) * g**2,
            float(critical_beta(excess[:1])[0]),
            2.0 * math.sqrt(3.0) * g**4,
            "abs",
            note=f"{derived}, so β*² = 1 - 1/E σ̄'² and β* = (2/√3)g² - 2√3 g⁴ + (142√3/15)g⁶ - …; "
            "tolerance the next term 2√3 g⁴",
            not_evaluated=beyond,
        ),
    ]
    top = float(res["gain_betas"].max())
    rows.append(
        Check(
            "phase",
            f"normalised tanh(g z), g = {float(gains[-1]):g}: chaos (r > 1) at every β <= {top:g}",
            1.0,
            float((1.0 - top**2) * (1.0 + excess[-1])),
            0.0,
            "at_least",
            note="derived here: as g → ∞, σ → sign, E σ² → 1 and E σ'² ≈ 4g/(3√(2π)) grows; "
            "r decreases in β, so the largest β of the gain panel is the binding case",
        )
    )
    return rows


def _series_rows(res: dict) -> list[Check]:
    """Networks without a closed form: r against Monte Carlo, Hermite path against quadrature."""
    rows = []
    max_depth = int(res["depths"][-1])
    for k, name in enumerate(res["names"]):
        if not res["series_path"][k]:
            continue
        r, se = float(res["r_mc"][k]), float(res["r_mc_se"][k])
        rows.append(
            Check(
                "phase",
                f"{name} ({res['activations'][k]}): r by 1-D quadrature = Monte Carlo",
                r,
                float(res["r"][k]),
                4.0 * se,
                "abs",
                note=f"MC over {MC_SAMPLES} z ~ N(0,1), r = (1-β²) mean σ'²/mean σ²; tolerance "
                f"4 standard errors (delta method), SE = {se:.2g}",
            )
        )
        rows.append(
            Check(
                "phase",
                f"{name}: Θ∞ by the Hermite series (used for the sweep) = quadrature path at "
                f"{len(DUAL_CHECK_COSINES)} cosines, L = {max_depth}, relative to Θ(x,x)",
                0.0,
                float(res["dual_gap"][k]),
                DUAL_TOLERANCE,
                "abs",
                note="two independent evaluations of one layer map (power series of ρ with "
                "Gauss-Hermite coefficients; polar 2-D quadrature); tolerance the stated "
                "accuracy of the quadrature core over <= 100 layers",
            )
        )
    return rows


def _quadrature_rows(res: dict) -> list[Check]:
    """The order parameter claims: scaled ReLU's r, and E σ̄'² > 1 unless σ is affine."""
    rows = []
    quad_err = float(res["quadrature_moment_error"])
    # The quadrature error on E z^{2k}, k ≤ 4, bounds that on E σ'² (σ' is a step or smooth);
    # 10× that and a few ulps is the tolerance of every quadrature-vs-exact comparison.
    quad_tol = 10.0 * quad_err + 16.0 * np.finfo(np.float64).eps
    if "relu" in list(res["activation_names"]):
        exact = 1.0 - res["betas"] ** 2
        gap = max(
            np.max(np.abs(res["r_quad_scaled_relu"] - exact)),
            np.max(np.abs(res["r_closed_scaled_relu"] - exact)),
        )
        rows.append(
            Check(
                "phase",
                "r of scaled ReLU = 1 - β² (closed form and quadrature), max over β grid",
                0.0,
                float(gap),
                quad_tol,
                "abs",
                note=f"tolerance 10x the quadrature error on E z^2k, k <= 4 ({quad_err:.1e})",
            )
        )
    for name in res["activation_names"]:
        value = float(res[f"grad_second_quad_normalized_{name}"])
        rows.append(
            Check(
                "phase",
                f"E[σ̄'(z)²] > 1 for σ = {name} (σ̄ normalised)",
                1.0,
                value,
                0.0,
                "at_least",
                note=f"Gaussian Poincaré: Var σ <= E σ'², equality iff σ affine; measured - 1 = "
                f"{value - 1:.3g} >> quadrature error {quad_err:.1e}",
            )
        )
    rows.append(
        Check(
            "phase",
            "E[σ̄'(z)²] = 1 for σ = identity (the equality case)",
            1.0,
            float(res["grad_second_quad_identity"]),
            quad_tol,
            "abs",
            note="the one σ that stays at r = 1 - β² after normalising",
        )
    )
    return rows


def _network_rows(res: dict) -> list[Check]:
    """The depth claims of every network, by its regime."""
    max_depth = int(res["depths"][-1])
    slack = float64_resolution(max_depth)
    too_shallow = (
        ""
        if max_depth >= MIN_RATE_DEPTH
        else (
            f"max_depth = {max_depth} < {MIN_RATE_DEPTH}: the window estimates of rates and limits "
            "converge like 1/L² and are pre-asymptotic at this depth"
        )
    )
    rows = []
    for k, name in enumerate(res["names"]):
        regime, r = res["regimes"][k], float(res["r"][k])
        if regime == "freeze":
            rows.extend(_freeze_rows(res, k, name, r, max_depth, slack, too_shallow))
        elif regime == "chaos":
            rows.append(_chaos_row(res, k, name, r, max_depth))
        elif regime == "edge":
            rows.extend(_edge_rows(res, k, name, r, max_depth, too_shallow))
    return rows


def _chaos_row(res, k, name, r, max_depth) -> Check:
    return Check(
        "phase",
        f"{name} (chaos, r = {r:.3g}): max off-diagonal |Θ(x,y)|/Θ(x,x) over "
        f"{int(res['n_points'])} sphere points at L = {max_depth}",
        CHAOS_RATIO_BOUND,
        float(res["max_offdiag"][k][-1]),
        0.0,
        "at_most",
        note="theory: Θ(x,y) tends to a finite limit while Θ(x,x) = (r^L-1)/(r-1) "
        "grows, so the ratio decays like r^-L",
    )


def _freeze_rows(res, k, name, r, max_depth, slack, too_shallow) -> list[Check]:
    deficit = freeze_deficit(res, k)
    last = resolved_depth(res, k)
    (lo1, hi1), (lo2, hi2) = _windows(last)
    rows = []
    if res["kinked"][k]:
        # ReLU: Σ̇(x,y) = (1−β²)(1 − arccos(ρ)/π) falls short of r by ∝ √(1−ρ) ∝ r^{ℓ/2}, so
        # the deficit decays like r^{L/2}; the C·L·r^L bound needs a twice-differentiable σ.
        est, prev = window_rate(deficit, lo2, hi2), window_rate(deficit, lo1, hi1)
        rows.append(
            Check(
                "phase",
                f"{name} (freeze, kinked σ): per-layer decay of 1 - min ratio = √r "
                f"(not r), depths {lo2}-{hi2}",
                math.sqrt(r),
                est,
                abs(est - prev),
                "abs",
                note=f"r = {r:.4g}; tolerance: change of the estimate from depths {lo1}-{hi1} "
                "(the estimate converges like 1/L², monotonically)",
                not_evaluated=too_shallow,
            )
        )
        return rows
    fit_depth = max(max_depth // 2, 1)
    c_bound = bound_constant(deficit, r, fit_depth)
    depths = np.arange(1, max_depth + 1)
    excess = float(np.max(deficit - c_bound * depths * r**depths))
    rows.append(
        Check(
            "phase",
            f"{name} (freeze, r = {r:.3g}): 1 >= Θ(x,y)/Θ(x,x) >= 1 - C·L·r^L at every "
            f"L = 1-{max_depth}, C fitted on L <= {fit_depth}",
            0.0,
            excess,
            slack,
            "at_most",
            note=f"C = {c_bound:.4g} = max d_L/(L r^L) over L <= {fit_depth}; measured max_L "
            f"(d_L - C L r^L); tolerance float64 rounding of the ratio ({slack:.1e}); "
            f"d_L resolved up to L = {last}",
        )
    )
    per_l = deficit / depths
    est, prev = window_rate(per_l, lo2, hi2), window_rate(per_l, lo1, hi1)
    rows.append(
        Check(
            "phase",
            f"{name} (freeze): per-layer decay of (1 - min ratio)/L = r, depths {lo2}-{hi2}",
            r,
            est,
            abs(est - prev),
            "abs",
            note=f"tolerance: change of the estimate from depths {lo1}-{hi1} (converges like 1/L²)",
            not_evaluated=too_shallow,
        )
    )
    return rows


def _edge_rows(res, k, name, r, max_depth, too_shallow) -> list[Check]:
    (lo1, hi1), (lo2, hi2) = _windows(max_depth)
    rows = []
    c_inf, c_prev = extrapolate(res["c"][k], lo2, hi2), extrapolate(res["c"][k], lo1, hi1)
    is_relu_edge = res["activations"][k] == "scaled_relu" and float(res["betas_net"][k]) == 0.0
    if is_relu_edge:
        rows.append(
            Check(
                "phase",
                f"{name} (edge): Θ/Θ(x,x) → (1-c)·I + c·11ᵀ, c extrapolated to L = ∞ "
                f"from depths {lo2}-{hi2}",
                EDGE_LIMIT_C,
                c_inf,
                abs(c_inf - c_prev),
                "abs",
                note="theory: 1-ρ_ℓ ≈ 9π²/(2ℓ²), Σ̇_ℓ ≈ 1 - 3/ℓ, so Θ(x,y) ≈ Σ_ℓ (ℓ/L)³ ≈ L/4 while "
                f"Θ(x,x) = L; tolerance: change of the extrapolation from depths {lo1}-{hi1}",
                not_evaluated=too_shallow,
            )
        )
    d_inf = extrapolate(res["distance"][k], lo2, hi2)
    d_prev = extrapolate(res["distance"][k], lo1, hi1)
    rows.append(
        Check(
            "phase",
            f"{name} (edge): RMS distance of Θ/Θ(x,x) to (1-c)·I + c·11ᵀ (c fitted) → 0, "
            f"extrapolated from depths {lo2}-{hi2}",
            0.0,
            d_inf,
            abs(d_inf - d_prev),
            "abs",
            note=f"distance at L = {max_depth}: {float(res['distance'][k][-1]):.3g} with c = "
            f"{float(res['c'][k][-1]):.3g}; fit a + b/L + c/L²; tolerance: change of the "
            f"extrapolation from depths {lo1}-{hi1}",
            not_evaluated=too_shallow,
        )
    )
    return rows


EXPERIMENT = Experiment(
    name="phase",
    order=80,
    uses=("seed",),
    jobs=(Job("limit", limit, "depth.npz", runtime=20),),
    plot=plot,
    check=check,
    figure_inputs={"limit": "limit"},
)
