"""Generalization: what the freeze, the edge and the chaos trade between speed and risk.

The networks of the regimes figure (balanced parametrisation, E σ(z)² = 1), at several depths,
learn a target on the sphere S^{d−1} of radius √d made of unit-norm zonal harmonics of a few
degrees, from N noisy labels (noise ε). Their infinite-width predictors are kernel methods with
the limiting NTK Θ∞, a dot-product kernel on the sphere: its population eigenvalues are exact
(Funk–Hecke, with multiplicities), so the risk is *predicted* before it is measured.

- **Speed**: gradient descent on the linearised net (the kernel ODE from f₀ = 0, the centred
  infinite-width predictor) at lr = lr_fraction · 2/(η λmax(Θ)), η = 1/N as in ``speed``; the
  training loss 1/(2N)‖Y_t − Y‖² after ``steps`` steps.
- **Generalization**: the test risk of kernel ridge regression f̂ = K(x, X)(K + NλI)⁻¹y with
  λ = ridge · Θ∞(x, x) (ridges relative to the kernel's diagonal, so that networks of different
  scale compare), over a grid of ridges, and of the early-stopped predictor at ``steps``.
- **Prediction**: the signal-capture-threshold risk from the Funk–Hecke spectrum
  (``ntk_repro.generalization.predicted_risk``). Degrees beyond ``max_degree`` (and degrees whose
  eigenvalue is below the quadrature error or float64's resolution of Θ∞) are not resolved:
  their trace, κ(1) − Σ_k N(d, k) μ_k, acts as an extra ridge tail/N, because each of those
  eigenvalues is far below ϑ (d/(d + ϑ) ≈ d/ϑ); a target degree among them is not learned.

Test risk is E(f̂ − f*)² over fresh test points plus ε² (the risk against noisy test labels).
"""

from __future__ import annotations

import math

import numpy as np

from ntk_repro import data, spectral
from ntk_repro.experiments import Experiment, Job
from ntk_repro.freeze_chaos import float64_resolution, ntk_of_cosine, parse_networks
from ntk_repro.generalization import effective_ridge, predicted_risk
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

# ----------------------------------------------------------------------------------- target


def target_axes(p: dict) -> np.ndarray:
    """(len(target_degrees), d) unit axes of the zonal harmonics, from the config seed."""
    rng = np.random.default_rng(derive_seed(p["seed"], "tradeoff", "target"))
    axes = rng.standard_normal((len(p["target_degrees"]), p["sphere_dim"]))
    return axes / np.linalg.norm(axes, axis=1, keepdims=True)


def target(x: np.ndarray, degrees, axes: np.ndarray) -> np.ndarray:
    """f*(x) = Σ_j √N(d, k_j) P_{k_j}(⟨x̂, u_j⟩): one unit-norm harmonic per degree (distinct
    degrees are orthogonal in L²(uniform)), so ‖f*‖² = number of degrees. x (n, d) → (n,)."""
    d = x.shape[1]
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    out = np.zeros(x.shape[0])
    for k, axis in zip(degrees, axes):
        zonal = spectral.sphere_polynomials(k, d, unit @ axis)[k]
        out += math.sqrt(spectral.multiplicity(d, k)) * zonal
    return out


# -------------------------------------------------------------------------------- prediction


def resolved_spectrum(net, depth: int, p: dict) -> dict:
    """Funk–Hecke eigenvalues μ_k of Θ∞ per degree k = 0 … max_degree, 0 where unresolved.

    A μ_k is resolved when it exceeds 4× its quadrature error and float64's resolution of
    Θ∞ (a few ulps of κ(1) per layer: the Gram matrix itself carries no more). Returns
    {"mu" (K+1,), "multiplicities" (K+1,), "tail" (κ(1) − Σ resolved N(d, k) μ_k), "kappa1"}.
    """
    kappa1 = float(ntk_of_cosine(net, depth, np.array([1.0]))[0])
    fh = spectral.funk_hecke(
        lambda t: ntk_of_cosine(net, depth, t),
        p["sphere_dim"],
        p["max_degree"],
        nodes=p["quadrature_nodes"],
    )
    floor = np.maximum(4.0 * fh.quadrature_error, float64_resolution(depth) * kappa1)
    mu = np.where(fh.eigenvalues > floor, fh.eigenvalues, 0.0)
    tail = max(kappa1 - float((fh.multiplicities * mu).sum()), 0.0)
    return {"mu": mu, "multiplicities": fh.multiplicities, "tail": tail, "kappa1": kappa1}


def predicted_curve(spec: dict, target_degrees, ridges, n: int, noise: float) -> np.ndarray:
    """SCT test risk (against noisy labels) at each relative ridge: (len(ridges),).

    The target has one unit component in each of its degrees' eigenspaces; an unresolved
    degree (μ_k = 0 here) is not learned and keeps its whole norm in the bias.
    """
    # degrees beyond max_degree: eigenvalue 0 (their trace is in the tail)
    size = max(len(spec["mu"]), max(target_degrees) + 1)
    pad = size - len(spec["mu"])
    coefficients = np.zeros(size)
    coefficients[list(target_degrees)] = 1.0
    return predicted_risk(
        np.pad(spec["mu"], (0, pad)),
        coefficients,
        np.asarray(ridges) * spec["kappa1"],
        n,
        noise=noise,
        multiplicities=np.pad(spec["multiplicities"], (0, pad), constant_values=1),
        tail=spec["tail"],
    ).risk


def captured_share(spec: dict, ridge: float, n: int) -> np.ndarray:
    """μ_k/(μ_k + ϑ) per degree k: the share of a degree-k component of the target that the
    expected predictor learns at the relative ridge ``ridge`` (0 for unresolved degrees)."""
    threshold, _ = effective_ridge(
        spec["mu"],
        ridge * spec["kappa1"],
        n,
        multiplicities=spec["multiplicities"],
        tail=spec["tail"],
    )
    return spec["mu"] / (spec["mu"] + threshold)


# ---------------------------------------------------------------------------------- measured


def measured_draw(net, depth: int, p: dict, draw: int, ridges, checkpoints) -> dict:
    """Kernel regression and the kernel ODE of one draw of training and test points."""
    n, n_test = p["n_train"], p["n_test"]
    seed = derive_seed(p["seed"], "tradeoff", "draw", draw)
    x = data.sphere_points(n + n_test, p["sphere_dim"], seed=seed)
    clean = target(x, p["target_degrees"], target_axes(p))
    noise = p["noise"] * np.random.default_rng(seed + 1).standard_normal(n)
    y = clean[:n] + noise
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    gram = ntk_of_cosine(net, depth, np.clip(unit @ unit[:n].T, -1.0, 1.0))  # (n + n_test, n)
    evals, evecs = np.linalg.eigh(gram[:n])
    evals = np.clip(evals, 0.0, None)  # rounding can leave −1e-16·λmax
    coef = evecs.T @ y
    test_k = gram[n:] @ evecs
    kappa1 = float(gram[0, 0])

    def test_risk(filter_: np.ndarray) -> float:
        return float(np.mean((test_k @ (filter_ * coef) - clean[n:]) ** 2) + p["noise"] ** 2)

    ridge_risk = [test_risk(1.0 / (evals + n * r * kappa1)) for r in ridges]
    # Kernel ODE from f₀ = 0 at lr·η·λmax = 2·lr_fraction: residual e^{−lr·η·λ_i·s}.
    rates = 2.0 * p["lr_fraction"] * evals / evals[-1]
    train_loss, stopped_risk = [], []
    for s in checkpoints:
        decay = np.exp(-rates * s)
        train_loss.append(0.5 * float(np.mean((evecs @ (decay * coef)) ** 2)))
        learnt = np.divide(1.0 - decay, evals, out=np.zeros_like(evals), where=evals > 0)
        stopped_risk.append(test_risk(learnt))
    return {"ridge": ridge_risk, "train": train_loss, "stopped": stopped_risk}


def ridge_grid(p: dict) -> np.ndarray:
    low, high = p["ridge_decades"]
    return np.logspace(low, high, p["ridge_count"])


def step_grid(p: dict) -> np.ndarray:
    """Log-spaced gradient-descent steps 0, 1, …, ``steps`` (unique integers)."""
    grid = np.unique(np.round(np.logspace(0, math.log10(p["steps"]), 40)).astype(np.int64))
    return np.concatenate([[0], grid])


def network(p: dict, outputs, *, network: str) -> None:
    """Every depth of one network: predicted and measured risks, training losses."""
    nets = {net.name: net for net in parse_networks(p["networks"])}
    if network not in nets:
        raise ValueError(f"network {network!r} is not configured (have {sorted(nets)})")
    net = nets[network]
    ridges, steps = ridge_grid(p), step_grid(p)
    arrays = {"predicted": [], "captured": [], "tail_share": []}
    measured = {"ridge": [], "train": [], "stopped": []}
    for depth in p["depths"]:
        spec = resolved_spectrum(net, depth, p)
        predicted = predicted_curve(spec, p["target_degrees"], ridges, p["n_train"], p["noise"])
        arrays["predicted"].append(predicted)
        # at the ridge the prediction says is best for this network and depth
        best = float(ridges[np.argmin(predicted)])
        arrays["captured"].append(captured_share(spec, best, p["n_train"]))
        arrays["tail_share"].append(spec["tail"] / spec["kappa1"])
        draws = [measured_draw(net, depth, p, i, ridges, steps) for i in range(p["draws"])]
        for key in measured:
            measured[key].append([draw[key] for draw in draws])
    save_arrays(
        outputs[0],
        network=np.array(net.name),
        regime=np.array(net.regime),
        label=np.array(net.label),
        depths=np.array(p["depths"]),
        ridges=ridges,
        steps=steps,
        **{k: np.array(v) for k, v in arrays.items()},
        **{f"measured_{k}": np.array(v) for k, v in measured.items()},  # (depths, draws, …)
    )


# ------------------------------------------------------------------------------ figure, checks

_TINY = np.finfo(np.float64).tiny
_SPEED_FLOOR = 1e-16


def _load(runs: list[str]) -> list[dict]:
    loaded = [load_arrays(path) for path in runs]
    for run in loaded:
        require_finite(
            f"tradeoff {run['network']}",
            **{k: run[k] for k in ("predicted", "measured_ridge", "measured_train")},
            stopped=run["measured_stopped"],
        )
    return loaded


def _mean_se(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over the draws axis (axis 1 of (depths, draws, …))."""
    count = samples.shape[1]
    return samples.mean(axis=1), samples.std(axis=1, ddof=1) / math.sqrt(count)


def best_risk(run: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per depth: the measured risk at the ridge minimising the mean over draws, its standard
    error, and the minimum over ridges of the prediction."""
    mean, se = _mean_se(run["measured_ridge"])
    best = mean.argmin(axis=1)
    rows = np.arange(len(best))
    return mean[rows, best], se[rows, best], run["predicted"].min(axis=1)


def _log_ratio(a: float, se_a: float, b: float, se_b: float) -> tuple[float, float]:
    """log10(a/b) and its standard error (delta method). A loss that underflowed to 0 (the
    chaos at large depth) counts as the smallest positive float."""
    a, b = max(a, _TINY), max(b, _TINY)
    return math.log10(a / b), math.hypot(se_a / a, se_b / b) / math.log(10.0)


def plot(p: dict, outputs, *, runs: list[str]) -> None:
    runs = _load(runs)
    fig, axes = new_figure(2, 2, width=11.5, height=8.0)
    (ax_speed, ax_best), (ax_stop, ax_capture) = axes
    depths = runs[0]["depths"]
    for k, run in enumerate(runs):
        color, label = f"C{k + 3}", str(run["label"])
        train, train_se = _mean_se(run["measured_train"][:, :, -1])
        # the deep chaos fits to below float64's range: drawn at the floor of the axis
        train = np.maximum(train, _SPEED_FLOOR)
        ax_speed.errorbar(depths, train, train_se, fmt="o-", color=color, ms=3, label=label)
        best, best_se, predicted = best_risk(run)
        ax_best.errorbar(depths, best, best_se, fmt="o", color=color, ms=4, label=label)
        ax_best.plot(depths, predicted, "-", color=color, lw=1.2)
        stopped, stopped_se = _mean_se(run["measured_stopped"][:, :, -1])
        ax_stop.errorbar(depths, stopped, stopped_se, fmt="o-", color=color, ms=3)
        captured = run["captured"][-1][: p["panel_degrees"] + 1]
        ax_capture.plot(np.arange(len(captured)), captured, "o-", color=color, ms=3)
    steps = int(runs[0]["steps"][-1])
    ax_speed.set_yscale("log")
    ax_speed.set_ylim(bottom=_SPEED_FLOOR / 3)
    ax_speed.set_title(f"Speed: training loss after {steps} GD steps (kernel ODE, f₀ = 0)")
    ax_speed.set_ylabel("1/(2N)‖Y_t − Y‖² (floored at 1e-16)")
    ax_best.set_yscale("log")
    ax_best.set_title("Generalization: best test risk over ridges (dots) vs SCT (lines)")
    ax_best.set_ylabel("test risk (noisy labels)")
    ax_best.legend(fontsize=7)
    ax_stop.set_yscale("log")
    ax_stop.set_title(f"The trade-off: test risk of the predictor stopped at {steps} steps")
    ax_stop.set_ylabel("test risk (noisy labels)")
    for ax in (ax_speed, ax_best, ax_stop):
        ax.set_xlabel("depth L")
    for ax in (ax_best, ax_stop):
        ax.axhline(p["noise"] ** 2, color="0.5", lw=0.8, ls=":")  # the noise floor ε²
    ax_capture.set_title(
        f"Captured share μ_k/(μ_k + ϑ) per degree, L = {int(depths[-1])}, at each network's "
        "best ridge (SCT)"
    )
    ax_capture.set_xlabel("spherical-harmonic degree k")
    ax_capture.set_ylim(-0.03, 1.03)
    for k in p["target_degrees"]:
        ax_capture.axvline(k, color="0.6", lw=0.8, ls="--")
    fig.suptitle(
        f"Freeze, edge and chaos: speed vs generalization on S^{p['sphere_dim'] - 1}, "
        f"N = {p['n_train']}, target degrees {list(p['target_degrees'])}, ε = {p['noise']:g}, "
        f"{p['draws']} draws",
        fontsize=10,
    )
    save_figure(fig, outputs)


def _speed_rows(runs: list[dict], chaos: dict) -> list[Check]:
    c_mean, c_se = _mean_se(chaos["measured_train"][:, :, -1])
    rows = []
    for run in runs:
        if run is chaos:
            continue
        mean, se = _mean_se(run["measured_train"][:, :, -1])
        ratios = [_log_ratio(mean[i], se[i], c_mean[i], c_se[i]) for i in range(len(mean))]
        worst = int(np.argmin([r for r, _ in ratios]))
        rows.append(
            Check(
                "tradeoff",
                f"speed: {run['network']} ({run['regime']}) trains slower than the chaos at "
                "every depth (log10 of its training-loss ratio after the fixed steps, "
                "smallest over depths)",
                0.0,
                ratios[worst][0],
                3.0 * ratios[worst][1],
                "at_least",
                note=f"smallest at depth {int(run['depths'][worst])}; tolerance 3 standard "
                "errors over the draws; thesis: the chaos trains fastest",
            )
        )
    return rows


def _risk_rows(p: dict, runs: list[dict], chaos: dict) -> list[Check]:
    chaos_best, chaos_se, _ = best_risk(chaos)
    rows = []
    for run in runs:
        if run["regime"] != "freeze":
            continue
        best, se, _ = best_risk(run)
        ratio, ratio_se = _log_ratio(chaos_best[-1], chaos_se[-1], best[-1], se[-1])
        rows.append(
            Check(
                "tradeoff",
                f"generalization: at depth {int(run['depths'][-1])} {run['network']} (freeze) "
                "has a lower best test risk than the chaos (log10 of chaos/freeze risk)",
                0.0,
                ratio,
                3.0 * ratio_se,
                "at_least",
                note="best over the ridge grid; tolerance 3 standard errors over the draws; "
                "thesis: the chaos generalizes worse when deep",
            )
        )
    low = int(np.argmin(chaos_best))
    ratio, ratio_se = _log_ratio(chaos_best[-1], chaos_se[-1], chaos_best[low], chaos_se[low])
    rows.append(
        Check(
            "tradeoff",
            "generalization: the chaos's best test risk grows with depth (log10 of its risk "
            "at the deepest depth over its smallest)",
            0.0,
            ratio,
            3.0 * ratio_se,
            "at_least",
            note=f"smallest at depth {int(chaos['depths'][low])}; measured "
            f"{chaos_best[low]:.3g} -> {chaos_best[-1]:.3g} (noise floor ε² = "
            f"{p['noise'] ** 2:g}); tolerance 3 standard errors",
        )
    )
    return rows


def _stopped_row(runs: list[dict]) -> list[Check]:
    edges = [run for run in runs if run["regime"] == "edge"]
    if not edges:
        return []
    edge = edges[0]
    stats = {str(r["network"]): _mean_se(r["measured_stopped"][:, :, -1]) for r in runs}
    e_mean, e_se = stats[str(edge["network"])]
    others = {name: s for name, s in stats.items() if name != str(edge["network"])}
    rival = min(others, key=lambda name: others[name][0][-1])
    ratio, ratio_se = _log_ratio(others[rival][0][-1], others[rival][1][-1], e_mean[-1], e_se[-1])
    return [
        Check(
            "tradeoff",
            f"trade-off: at depth {int(edge['depths'][-1])} and the fixed number of steps the "
            f"edge ({edge['network']}) has the lowest test risk (log10 of the best other, "
            f"{rival}, over the edge's)",
            0.0,
            ratio,
            3.0 * ratio_se,
            "at_least",
            note="inferred (our measurement, not a statement of the papers): the freeze is too "
            "slow to learn the target in time, the chaos learns it but generalizes badly; "
            "tolerance 3 standard errors",
        )
    ]


def _prediction_rows(p: dict, runs: list[dict]) -> list[Check]:
    """One row per claim ridge: the largest relative error over networks and depths."""
    rows = []
    ridges = runs[0]["ridges"]
    for ridge in p["claim_ridges"]:
        j = int(np.argmin(np.abs(np.log(ridges / ridge))))
        errors = []  # (relative error, its tolerance, network, depth)
        for run in runs:
            mean, se = _mean_se(run["measured_ridge"][:, :, j])
            rel = np.abs(run["predicted"][:, j] / mean - 1.0)
            for i in range(len(rel)):
                slack = p["prediction_accuracy"] + 3.0 * float(se[i] / mean[i])
                errors.append((float(rel[i]), slack, str(run["network"]), int(run["depths"][i])))
        # The binding case: the largest error relative to its own tolerance.
        error, slack, name, depth = max(errors, key=lambda e: e[0] / e[1])
        rows.append(
            Check(
                "tradeoff",
                f"prediction: SCT risk from the Funk–Hecke spectrum vs measured test risk at "
                f"ridge {float(ridges[j]):.3g}·Θ(x,x), every network and depth (the case "
                "closest to its tolerance)",
                0.0,
                error,
                slack,
                "at_most",
                note=f"{name} at depth {depth}; largest error over all cases "
                f"{max(e[0] for e in errors):.3g}; tolerance: the SCT's accuracy "
                f"{p['prediction_accuracy']:g} at this N (measured in the docs) + 3 standard "
                "errors of the measured mean over the draws",
            )
        )
    return rows


def check(p: dict, outputs, *, runs: list[str]) -> None:
    runs = _load(runs)
    chaos = [run for run in runs if run["regime"] == "chaos"]
    rows = _prediction_rows(p, runs)
    if chaos:
        rows += _speed_rows(runs, chaos[0]) + _risk_rows(p, runs, chaos[0]) + _stopped_row(runs)
    write_checks(outputs[0], rows)


EXPERIMENT = Experiment(
    name="tradeoff",
    order=140,
    uses=("seed",),
    jobs=(
        Job(
            "network",
            network,
            "network_{network}.npz",
            each=lambda p: [{"network": n["name"]} for n in p["networks"]],
            runtime=30,
            mem_mb=1500,
        ),
    ),
    plot=plot,
    check=check,
    figure_inputs={"runs": "network"},
)
