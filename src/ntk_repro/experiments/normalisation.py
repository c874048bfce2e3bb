"""Freeze & Chaos, normalisation: LayerNorm ≈ the normalised non-linearity σ̄; BatchNorm after
the last non-linearity pins the constant mode of the NTK to β².

LayerNorm. In the balanced parametrisation with ‖x‖² = n0, a layer whose input has
(1/n)‖α‖² = 1 produces pre-activations that are exactly N(0, 1) given that input, and
LayerNorm (centring and scaling over the n neurons, no affine parameters) makes every α(ℓ)
satisfy (1/n)‖α‖² = 1 again. Over the neurons, the mean and variance of σ(α̃) converge to
E[σ(z)] and Var[σ(z)], z ~ N(0, 1), so the LayerNorm net approaches the net with
σ̄ = (σ − E σ)/sd σ and no normalisation, whose limit is Θ∞ with activation
``normalized:<σ>``. The relative error ‖Θ_n − Θ̄∞‖_F/‖Θ̄∞‖_F is a fluctuation of order n^{−1/2}.

BatchNorm after the last non-linearity (``MLP(norm="batch_last")``: every neuron of the last
hidden layer centred and scaled over the batch of N inputs). Then Σ_i α(L−1)(x_i) = 0 for
every θ, so Σ_i f(x_i) = N β b(L−1): the sum of the outputs depends on the output bias alone,
with derivative N β. Since (1/N²) Σ_ij Θ(x_i, x_j) = ‖∂/∂θ (1/N) Σ_i f(x_i)‖², the constant
mode equals β² exactly, at every width and for every θ — the finite-width statement is the
same as the infinite-width one, and only rounding separates the computed value from β².

Jobs: ``limit`` (the analytic limits), ``layer`` and ``batch_last`` (empirical NTK Grams of
``seeds`` nets of one width, LayerNorm or BN after the last layer); then ``plot`` and
``check``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ntk_repro import data
from ntk_repro.device import resolve_device
from ntk_repro.empirical import empirical_ntk
from ntk_repro.experiments import Experiment, Job, over
from ntk_repro.kernels import theta_inf
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

NORMS = ("layer", "batch_last")
Z = 3.0  # standard errors of slack for the slope
DTYPE = torch.float64  # the BN claim is at rounding level: keep it float64


def _inputs(p: dict) -> np.ndarray:
    """N points on the sphere ‖x‖ = √n0 (so that every pre-activation has variance 1)."""
    return data.sphere_points(
        p["n_points"], p["input_dim"], seed=derive_seed(p["seed"], "normalisation", "inputs")
    )


def _normalized(activation: str) -> str:
    return activation if activation.startswith("normalized:") else f"normalized:{activation}"


def _limit_kwargs(p: dict) -> dict:
    return dict(
        depth=p["depth"], beta=p["beta"], parametrization=p["parametrization"], device=p["device"]
    )


def constant_mode(theta) -> np.ndarray:
    """(1/N²) Σ_ij Θ_ij of one Gram (N, N) or a stack (..., N, N)."""
    return np.asarray(theta).mean(axis=(-2, -1))


# --- stages ------------------------------------------------------------------------------------


def limit(p: dict, outputs) -> None:
    """The analytic limits: Θ∞ of σ̄ and of σ, and of the BN net's plain σ."""
    x = _inputs(p)
    save_arrays(
        outputs[0],
        x=x,
        theta_bar=theta_inf(x, activation=_normalized(p["activation"]), **_limit_kwargs(p)),
        theta_raw=theta_inf(x, activation=p["activation"], **_limit_kwargs(p)),
        theta_bn_plain=theta_inf(x, activation=p["bn_activation"], **_limit_kwargs(p)),
    )


def nets(p: dict, outputs, *, norm: str, width: str) -> None:
    """Empirical NTK Grams of ``seeds`` nets of one width with the normalisation ``norm``."""
    if norm not in NORMS:
        raise ValueError(f"norm {norm!r} is unknown; choose one of {list(NORMS)}")
    width = int(width)
    x = torch.as_tensor(_inputs(p), dtype=DTYPE)
    dev = resolve_device(p["device"])
    activation = p["activation"] if norm == "layer" else p["bn_activation"]
    thetas, plain = [], []
    for k in range(p["seeds"]):
        seed = derive_seed(p["seed"], "normalisation", norm, width, k)

        def net(norm_kind, seed=seed):
            # The same seed gives the same parameters with and without the normalisation.
            return MLP(
                p["input_dim"],
                width,
                p["depth"],
                beta=p["beta"],
                activation=activation,
                parametrization=p["parametrization"],
                norm=norm_kind,
                generator=torch.Generator().manual_seed(seed),
                device=dev,
                dtype=DTYPE,
            )

        model = net(norm)
        thetas.append(empirical_ntk(model, x).cpu().numpy())
        if norm == "batch_last":
            plain.append(empirical_ntk(net(None), x).cpu().numpy())
    n_params = sum(q.numel() for q in model.parameters())
    save_arrays(
        outputs[0],
        theta=np.stack(thetas),
        width=np.int64(width),
        theta_plain=np.stack(plain) if plain else np.zeros((0,) + thetas[0].shape),
        n_params=np.int64(n_params),
        eps=np.float64(torch.finfo(DTYPE).eps),
    )


# --- statistics --------------------------------------------------------------------------------


def _load(limit_path: str, paths: dict[str, list[str]]):
    limit = load_arrays(limit_path)
    runs = {norm: [load_arrays(path) for path in paths[norm]] for norm in NORMS}
    for norm in NORMS:
        for run in runs[norm]:
            require_finite(
                f"normalisation {norm} width={int(run['width'])}",
                theta=run["theta"],
                theta_plain=run["theta_plain"],
            )
        runs[norm].sort(key=lambda r: int(r["width"]))
        if not runs[norm]:
            raise ValueError(f"normalisation inputs lack the {norm} nets")
    return limit, runs


def relative_errors(runs, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Widths (W,) and ‖Θ_n − Θ∞‖_F/‖Θ∞‖_F per width and seed (W, S)."""
    widths = np.array([int(r["width"]) for r in runs])
    norm = np.linalg.norm(reference)
    errs = np.array([[np.linalg.norm(t - reference) / norm for t in r["theta"]] for r in runs])
    return widths, errs


def loglog_slope(widths: np.ndarray, errs: np.ndarray) -> tuple[float, float, float]:
    """OLS fit of log err = a + b log n over every (width, seed): (b, SE of b, a)."""
    lx = np.repeat(np.log(widths.astype(float)), errs.shape[1])
    ly = np.log(errs.ravel())
    design = np.stack([lx, np.ones_like(lx)], 1)
    coef, *_ = np.linalg.lstsq(design, ly, rcond=None)
    resid = ly - design @ coef
    dof = len(ly) - 2
    if dof < 1:
        raise ValueError("the slope needs at least three (width, seed) points")
    sxx = ((lx - lx.mean()) ** 2).sum()
    return float(coef[0]), float(math.sqrt((resid @ resid) / dof / sxx)), float(coef[1])


def rounding_bound(run) -> np.ndarray:
    """Worst-case rounding of the computed constant mode, per seed.

    Each Θ_ij is a dot product of two Jacobian rows over P parameters (error ≤ P·ε·|J_i||J_j|
    ≤ P·ε·max_i Θ_ii), then N² of them are summed (≤ N²·ε·max Θ_ii more); dividing by N²
    gives (P + N²)·ε·max_i Θ_ii. The Jacobian rows' own rounding enters only at second order:
    the exact cancellation is in Σ_i J_i, which multiplies itself.
    """
    theta = run["theta"]
    n = theta.shape[-1]
    diag_max = np.abs(np.diagonal(theta, axis1=-2, axis2=-1)).max(-1)
    return (float(run["n_params"]) + n * n) * float(run["eps"]) * diag_max


# --- figure and claims -------------------------------------------------------------------------


def _width_axis(ax, widths) -> None:
    """Log-scaled width axis labelled at the measured widths only."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.set_xticks(widths)
    ax.set_xticklabels([str(int(w)) for w in widths])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(widths.min() / 1.4, widths.max() * 1.4)


def plot(p: dict, outputs, *, limit: str, layer: list[str], batch_last: list[str]) -> None:
    limit, runs = _load(limit, {"layer": layer, "batch_last": batch_last})
    fig, (ax_ln, ax_bn) = new_figure(1, 2, width=10.0, height=3.9)
    _panel_layernorm(ax_ln, p, limit, runs["layer"])
    _panel_batchnorm(ax_bn, p, limit, runs["batch_last"])
    save_figure(fig, outputs)


def _panel_layernorm(ax, p: dict, limit, layer_runs) -> None:
    """Relative error of the LayerNorm nets against Θ∞ of σ̄ (fitted power law) and of σ."""
    widths, errs = relative_errors(layer_runs, limit["theta_bar"])
    slope, slope_se, intercept = loglog_slope(widths, errs)
    for j in range(errs.shape[1]):
        ax.plot(
            widths,
            errs[:, j],
            "o",
            color="tab:blue",
            ms=3,
            alpha=0.5,
            label="LayerNorm net vs Θ∞(σ̄), one seed each" if j == 0 else None,
        )
    ax.plot(widths, errs.mean(1), "-", color="tab:blue", lw=1.2, label="mean over seeds")
    grid = np.geomspace(widths.min(), widths.max(), 50)
    ax.plot(
        grid,
        np.exp(intercept) * grid**slope,
        "--",
        color="black",
        lw=1,
        label=f"fit: slope {slope:.3f} ± {slope_se:.3f}",
    )
    raw_errs = relative_errors(layer_runs, limit["theta_raw"])[1]
    ax.plot(
        widths,
        raw_errs.mean(1),
        "s-",
        color="tab:orange",
        ms=3,
        lw=0.8,
        label=f"LayerNorm net vs Θ∞ of the plain σ = {p['activation']}: no convergence",
    )
    ax.set_yscale("log")
    _width_axis(ax, widths)
    ax.set_xlabel("width n")
    ax.set_ylabel("‖Θ_n − Θ∞‖_F / ‖Θ∞‖_F")
    ax.set_title(
        f"LayerNorm ≈ σ̄ = normalised {p['activation']} "
        f"(L = {p['depth']}, β = {p['beta']}, N = {p['n_points']})"
    )
    ax.legend(loc="lower left", fontsize=7)


def _panel_batchnorm(ax, p: dict, limit, bn_runs) -> None:
    """Constant mode of the nets with BN after the last layer, and of the same nets without."""
    bn_widths = np.array([int(r["width"]) for r in bn_runs])
    beta2 = p["beta"] ** 2
    for i, run in enumerate(bn_runs):
        w = np.full(run["theta"].shape[0], bn_widths[i])
        ax.plot(
            w,
            constant_mode(run["theta"]),
            "o",
            color="tab:green",
            ms=4,
            label="BN after the last non-linearity" if i == 0 else None,
        )
        ax.plot(
            w,
            constant_mode(run["theta_plain"]),
            "s",
            color="tab:gray",
            ms=3,
            alpha=0.7,
            label="same nets without BN" if i == 0 else None,
        )
    ax.axhline(
        constant_mode(limit["theta_bn_plain"]),
        color="tab:gray",
        ls="--",
        lw=1,
        label="without BN, n = ∞",
    )
    ax.axhline(beta2, color="tab:green", ls=":", lw=1.2, label=f"β² = {beta2:g}")
    _width_axis(ax, bn_widths)
    ax.set_xlabel("width n")
    ax.set_ylabel("constant mode (1/N²) Σ_ij Θ(x_i, x_j)")
    top = max(
        float(constant_mode(r["theta_plain"]).max()) if r["theta_plain"].size else 0.0
        for r in bn_runs
    )
    top = max(top, float(constant_mode(limit["theta_bn_plain"])), beta2)
    ax.set_ylim(0, 1.45 * top)  # headroom for the legend
    ax.set_title(
        f"BatchNorm kills the constant mode ({p['bn_activation']}, "
        f"{bn_runs[0]['theta'].shape[0]} seeds)"
    )
    ax.legend(loc="upper right", ncol=2, fontsize=7)


def check(p: dict, outputs, *, limit: str, layer: list[str], batch_last: list[str]) -> None:
    limit, runs = _load(limit, {"layer": layer, "batch_last": batch_last})
    widths, errs = relative_errors(runs["layer"], limit["theta_bar"])
    slope, slope_se, _ = loglog_slope(widths, errs)

    beta2 = p["beta"] ** 2
    deviations, tolerances = [], []
    for run in runs["batch_last"]:
        deviations.append(constant_mode(run["theta"]) - beta2)
        tolerances.append(rounding_bound(run))
    deviations, tolerances = np.concatenate(deviations), np.concatenate(tolerances)
    worst = int(np.argmax(np.abs(deviations) / tolerances))
    bn_widths = [int(r["width"]) for r in runs["batch_last"]]
    rows = [
        Check(
            "normalisation",
            f"LayerNorm net -> Θ∞ of σ̄ = normalised {p['activation']}: log-log slope of "
            f"the relative error over width",
            -0.5,
            slope,
            Z * slope_se,
            "abs",
            note=f"widths {widths.tolist()}, {errs.shape[1]} seeds each; error "
            f"{errs.mean(1)[0]:.3f} -> {errs.mean(1)[-1]:.3f}; tolerance 3 x the OLS "
            f"standard error of the slope ({slope_se:.3f})",
        ),
        Check(
            "normalisation",
            "BatchNorm after the last non-linearity: constant mode (1/N²) Σ_ij Θ = β² "
            "(exact at every width; worst net)",
            beta2,
            beta2 + float(deviations[worst]),
            float(tolerances[worst]),
            "abs",
            note=f"widths {bn_widths}, {len(deviations)} nets, largest |deviation| "
            f"{np.abs(deviations).max():.2e}; tolerance the worst-case float64 rounding "
            f"(P + N²)·eps·max Θ_ii of that net",
        ),
    ]
    write_checks(outputs[0], rows)


def _nets_mem_mb(norm: str):
    def mem_mb(p: dict, wildcards) -> int:
        # float64 weights; the BN path holds the whole-batch Jacobian (N x parameters) twice.
        per_weight = 2 * p["n_points"] if norm == "batch_last" else 4
        return 1000 + int(wildcards["width"]) ** 2 * p["depth"] * 8 * per_weight // 2**20

    return mem_mb


EXPERIMENT = Experiment(
    name="normalisation",
    order=50,
    uses=("seed", "device"),
    jobs=(
        Job("limit", limit, "limit.npz"),
        Job(
            "layer",
            nets,
            "layer_w{width}.npz",
            fixed={"norm": "layer"},
            each=over("width", "widths"),
            mem_mb=_nets_mem_mb("layer"),
            runtime=30,
        ),
        Job(
            "batch_last",
            nets,
            "batch_last_w{width}.npz",
            fixed={"norm": "batch_last"},
            each=over("width", "bn_widths"),
            mem_mb=_nets_mem_mb("batch_last"),
            runtime=30,
        ),
    ),
    plot=plot,
    check=check,
    figure_inputs={"limit": "limit", "layer": "layer", "batch_last": "batch_last"},
)
