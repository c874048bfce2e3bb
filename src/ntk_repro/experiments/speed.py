"""Freeze & Chaos: training speed in the freeze, at the edge and in the chaos.

N points uniform on the sphere S^{d−1} of radius √d, target y = x₁·x₂ (a degree-2 spherical
harmonic: no constant part, so the constant mode of a frozen NTK cannot help). Every network is
trained by full-batch gradient descent with the learning rate at a fixed fraction of the
stability limit of the linearised dynamics, lr = lr_fraction · 2/(η·λmax(Θ∞)) with η the rate
of the loss convention (η = 1/N for half_mse): a large λmax — the constant mode of a frozen
NTK — forces a small lr, and every other mode then decays at the slow rate lr·η·λ_k.

- ``limit``: Θ∞ and Σ Grams of each network on the training points, its lr, and the expected
  loss of the kernel ODE Y_t = Y − e^{−ηtΘ}(Y − Y₀) with Y₀ ~ N(0, Σ) (the infinite-width net):
  E C_t = (η/2)(‖e^{−ηtΘ}Y‖² + tr(e^{−ηtΘ} Σ e^{−ηtΘ})), at t = lr·step.
- ``train`` (wildcard ``network``): ``inits`` finite-width nets of that network trained
  together (balanced parametrisation), their loss at every step.
- ``plot``, ``check``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ntk_repro import data
from ntk_repro.device import resolve_device
from ntk_repro.experiments import Experiment, Job
from ntk_repro.freeze_chaos import PARAMETRIZATION, parse_networks
from ntk_repro.kernels import kernel_matrices, linearised_flow, loss_rate
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


def _training_set(p: dict) -> tuple[np.ndarray, np.ndarray]:
    x = data.sphere_points(
        p["n_train"], p["sphere_dim"], seed=derive_seed(p["seed"], "speed", "inputs")
    )
    return x, data.product_target(x)


def expected_ode_loss(theta, sigma, y, rate: float, times) -> np.ndarray:
    """E C_t of the kernel ODE from f₀ ~ N(0, Σ): (η/2)(‖e^{−ηtΘ}y‖² + tr(e^{−ηtΘ}Σe^{−ηtΘ})).

    theta, sigma (N, N); y (N,); rate η; times (T,). Returns (T,) float64.
    """
    flow = linearised_flow(theta, rate)
    evecs = flow.eigenvectors
    coef = evecs.T @ y
    sigma_diag = np.einsum("ni,nm,mi->i", evecs, sigma, evecs)  # diag of UᵀΣU
    decay = flow.decay(times)  # (T, N): e^{−ηtλ}, λ clipped at 0
    return 0.5 * rate * ((decay * coef) ** 2 + decay**2 * sigma_diag).sum(axis=1)


def limit(p: dict, outputs) -> None:
    nets = parse_networks(p["networks"])
    x, y = _training_set(p)
    n = x.shape[0]
    rate = loss_rate(p["loss"], n)
    steps = np.arange(p["steps"] + 1)
    lrs, curves, spectra = [], [], []
    for net in nets:
        grams = kernel_matrices(
            x,
            depth=p["depth"],
            beta=net.beta,
            activation=net.activation,
            parametrization=PARAMETRIZATION,
            device=p["device"],
        )
        evals = np.linalg.eigvalsh(grams["ntk"])
        # Gradient descent on the linearised model is stable iff lr·η·λmax < 2.
        lr = p["lr_fraction"] * 2.0 / (rate * evals[-1])
        lrs.append(lr)
        curves.append(expected_ode_loss(grams["ntk"], grams["nngp"], y, rate, lr * steps))
        spectra.append(evals[::-1])
    save_arrays(
        outputs[0],
        names=np.array([n.name for n in nets]),
        regimes=np.array([n.regime for n in nets]),
        activations=np.array([n.activation for n in nets]),
        betas=np.array([n.beta for n in nets]),
        r=np.array([n.r for n in nets]),
        x=x,
        y=y,
        lr=np.array(lrs),
        steps=steps,
        ode_loss=np.stack(curves),
        spectrum=np.stack(spectra),
        depth=np.int64(p["depth"]),
    )


def train(p: dict, outputs, *, limit: str, network: str) -> None:
    """Train ``inits`` nets of one configured network at the lr of the ``limit`` job."""
    limit = load_arrays(limit)
    names = list(limit["names"])
    if network not in names:
        raise ValueError(f"network {network!r} is not configured (have {names})")
    k = names.index(network)
    net = parse_networks(p["networks"])[k]
    seeds = [derive_seed(p["seed"], "speed", network, i) for i in range(p["inits"])]
    result = train_ensemble(
        limit["x"],
        limit["y"],
        width=p["width"],
        depth=p["depth"],
        beta=net.beta,
        activation=net.activation,
        parametrization=PARAMETRIZATION,
        seeds=seeds,
        steps=p["steps"],
        lr=float(limit["lr"][k]),
        loss=p["loss"],
        dtype=getattr(torch, p["dtype"]),
        device=resolve_device(p["device"]),
        name=f"speed {network}",
    )
    save_arrays(
        outputs[0], network=np.array(network), width=np.int64(p["width"]), **result.arrays()
    )


def _load(limit_path: str, run_paths: list[str]) -> tuple[dict, list[dict]]:
    limit = load_arrays(limit_path)
    runs = {str(r["network"]): r for r in (load_arrays(path) for path in run_paths)}
    ordered = [runs[name] for name in limit["names"]]
    for name, run in zip(limit["names"], ordered):
        require_finite(f"speed {name}", losses=run["losses"])
    require_finite("speed kernel ODE", ode=limit["ode_loss"])
    return limit, ordered


def plot(p: dict, outputs, *, limit: str, runs: list[str]) -> None:
    limit, runs = _load(limit, runs)
    fig, (ax, ax2) = new_figure(
        1, 2, width=11.5, height=4.4, gridspec_kw={"width_ratios": [1.5, 1]}
    )
    steps = limit["steps"]
    for k, name in enumerate(limit["names"]):
        color = f"C{k + 3}"
        ax.semilogy(
            steps,
            limit["ode_loss"][k],
            color=color,
            lw=2.2,
            label=f"{limit['regimes'][k]}: {limit['activations'][k]}, "
            f"β = {float(limit['betas'][k]):g}, lr = {float(limit['lr'][k]):.3g}",
        )
        for member in runs[k]["losses"]:
            ax.semilogy(steps, member, color=color, lw=0.6, alpha=0.6)
        spectrum = limit["spectrum"][k]
        ax2.semilogy(
            np.arange(1, len(spectrum) + 1),
            spectrum / spectrum[0],
            "o-",
            ms=2.5,
            color=color,
            label=f"{name}: λmax/λmin = {spectrum[0] / spectrum[-1]:.3g}",
        )
    width = int(runs[0]["width"])
    ax.set_xlabel("gradient-descent step (lr = lr_fraction · 2/(η λmax))")
    ax.set_ylabel("training loss")
    ax.set_title(
        f"Kernel ODE (thick, expected loss) vs nets of width {width} (thin), "
        f"L = {int(limit['depth'])}, N = {len(limit['y'])}",
        fontsize=9,
    )
    ax.legend(loc="lower left", fontsize=7)
    ax2.set_xlabel("eigenvalue index")
    ax2.set_ylabel("λ_k / λmax of Θ∞ on the training points")
    ax2.set_title("Why: the spectrum of the Gram")
    ax2.legend(loc="lower left", fontsize=7)
    save_figure(fig, outputs)


def _final(losses: np.ndarray) -> tuple[float, float]:
    """(log10 of the mean final loss over members, its standard error)."""
    final = losses[:, -1].astype(np.float64)
    mean = float(final.mean())
    # Delta method: se(log10 m) = se(m)/(m ln 10), se(m) = sd/√K.
    se = float(final.std(ddof=1) / math.sqrt(len(final))) / (mean * math.log(10.0))
    return math.log10(mean), se


def check(p: dict, outputs, *, limit: str, runs: list[str]) -> None:
    limit, runs = _load(limit, runs)
    regimes = list(limit["regimes"])
    if "chaos" not in regimes:
        write_checks(outputs[0], [])
        return
    c = regimes.index("chaos")
    chaos_log, chaos_se = _final(runs[c]["losses"])
    chaos_ode = float(limit["ode_loss"][c][-1])
    steps = int(limit["steps"][-1])
    rows = []
    for k, name in enumerate(limit["names"]):
        if regimes[k] == "chaos":
            continue
        log_k, se_k = _final(runs[k]["losses"])
        ode_gap = math.log10(float(limit["ode_loss"][k][-1]) / chaos_ode)
        rows.append(
            Check(
                "speed",
                f"{name} ({regimes[k]}) trains slower than {limit['names'][c]} (chaos): "
                f"log10 of the final-loss ratio after {steps} steps, width {int(runs[k]['width'])}",
                0.0,
                log_k - chaos_log,
                3.0 * math.hypot(se_k, chaos_se),
                "at_least",
                note=f"kernel ODE gives {ode_gap:.3g}; tolerance 3 standard errors over "
                f"{runs[k]['losses'].shape[0]} inits; both at lr = lr_fraction x stability limit",
            )
        )
    write_checks(outputs[0], rows)


EXPERIMENT = Experiment(
    name="speed",
    order=90,
    uses=("seed", "device", "training.dtype", "training.loss"),
    jobs=(
        Job("limit", limit, "limit.npz"),
        Job(
            "train",
            train,
            "train_{network}.npz",
            each=lambda p: [{"network": n["name"]} for n in p["networks"]],
            inputs={"limit": "limit"},
            runtime=60,
            mem_mb=lambda p, wildcards: (
                1000 + p["width"] ** 2 * p["depth"] * p["inits"] * 8 // 2**20
            ),
        ),
    ),
    plot=plot,
    check=check,
    figure_inputs={"limit": "limit", "runs": "train"},
)
