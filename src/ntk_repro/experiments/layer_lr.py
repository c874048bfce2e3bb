"""Freeze & Chaos, a layer-dependent learning rate for deconvolution nets, derived from the NTK.

Gradient descent with a rate η_ℓ = η·w_ℓ for the parameters of layer ℓ moves the outputs, to
first order, along the kernel K_w = Σ_ℓ w_ℓ Θ_ℓ, where Θ_ℓ = J_ℓ J_ℓᵀ is layer ℓ's
contribution to the NTK Θ = Σ_ℓ Θ_ℓ (:func:`ntk_repro.deconv.layer_ntks`). With η at a fixed
fraction of the stability limit 2·NQ/λmax(K_w), the mode k of the residual decays like
(1 − 2·frac·λ_k/λmax)^t: the condition number λmax/λmin of K_w sets the training speed. In a
deconvolution net the layers near the output dominate tr Θ; the rule here balances the
contributions, w_ℓ = mean_ℓ' tr Θ_ℓ' / tr Θ_ℓ (every layer then adds the same trace), computed
on the training batch at initialisation. The plain rate is w_ℓ = 1. Which rule the paper uses is
not known to us (abstract only): the rule and the mechanism are inferred.

Jobs: ``runs`` (``inits`` nets, each with its own inputs and a teacher target: Θ_ℓ, the
spectra of Θ and K_w, and the training loss of the same net trained with the plain and with
the layer-dependent rate); then ``plot`` and ``check``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ntk_repro import data
from ntk_repro.deconv import DeconvNet, layer_ntks, layer_shapes
from ntk_repro.device import resolve_device
from ntk_repro.experiments import Experiment, Job
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

Z = 3.0  # standard errors of slack in every statistical claim
RULES = ("plain", "layer")


def symmetric_eigh(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of a symmetric float64 matrix, by torch (its
    LAPACK call respects the thread setting; numpy's BLAS stalls on a shared machine)."""
    evals, evecs = torch.linalg.eigh(torch.as_tensor(np.asarray(a, dtype=np.float64)))
    return evals.numpy(), evecs.numpy()


def balanced_weights(traces: np.ndarray) -> np.ndarray:
    """w_ℓ = mean(tr Θ) / tr Θ_ℓ: every layer contributes the same trace to Σ_ℓ w_ℓ Θ_ℓ."""
    traces = np.asarray(traces, dtype=np.float64)
    if traces.ndim != 1 or not (traces > 0).all():
        raise ValueError(f"traces must be a positive 1-D array, got {traces!r}")
    return traces.mean() / traces


def linear_loss(evals: np.ndarray, evecs: np.ndarray, residual, lr: float, steps) -> np.ndarray:
    """Loss ½·mean(r_t²) of the linearised model r_{t+1} = (I − lr·K/Q) r_t, Q = len(r), at
    every t in ``steps``, from the eigen-decomposition K = U diag(λ) Uᵀ (as ``np.linalg.eigh``)
    and the initial residual r_0 (Q,). Returns (len(steps),)."""
    coef = evecs.T @ residual
    q = residual.shape[0]
    decay = np.abs(1.0 - lr * evals / q)[None, :] ** np.asarray(steps)[:, None]
    return 0.5 * ((decay * coef) ** 2).sum(1) / q


def _net(p: dict, seed: int, place: dict) -> DeconvNet:
    return DeconvNet(
        p["in_channels"],
        p["width"],
        p["depth"],
        stride=p["stride"],
        kernel_size=p["kernel_size"],
        padding=p["padding"],
        scaling=p["scaling"],
        dim=2,
        beta=float(p["beta"]),
        activation=p["activation"],
        parametrization=p["parametrization"],
        generator=torch.Generator().manual_seed(seed),
        **place,
    )


def _inputs(p: dict, seed: int) -> np.ndarray:
    """``batch`` input images (N, n0, m0, m0), every pixel of norm √n0."""
    m0, n0 = p["input_size"], p["in_channels"]
    x = data.sphere_points(p["batch"] * m0 * m0, n0, seed=seed)
    return x.reshape(p["batch"], m0, m0, n0).transpose(0, 3, 1, 2).copy()


def _train(model: DeconvNet, x, y, lrs: list[float], steps: int) -> np.ndarray:
    """Full-batch GD on ½·mean((f − y)²) with rate lrs[ℓ] for layer ℓ; loss before each step
    and after the last: (steps + 1,)."""
    groups = [
        {"params": [model.weights[layer], model.biases[layer]], "lr": lr}
        for layer, lr in enumerate(lrs)
    ]
    opt = torch.optim.SGD(groups, lr=lrs[0])
    losses = np.empty(steps + 1)
    for step in range(steps + 1):
        loss = 0.5 * (model(x) - y).pow(2).mean()
        losses[step] = float(loss.detach())
        if step < steps:
            opt.zero_grad()
            loss.backward()
            opt.step()
    return losses


def runs(p: dict, outputs) -> None:
    """Per init: Θ_ℓ traces, spectra of Θ and K_w, weights, losses of both rules."""
    place = dict(device=resolve_device(p["device"]), dtype=getattr(torch, p["dtype"]))
    k, depth = p["inits"], p["depth"]
    res = {f"loss_{r}": np.empty((k, p["steps"] + 1)) for r in RULES}
    res |= {f"linear_{r}": np.empty((k, p["steps"] + 1)) for r in RULES}
    res |= {f"kappa_{r}": np.empty(k) for r in RULES}
    traces, weights, spectra = np.empty((k, depth)), np.empty((k, depth)), []
    for i in range(k):
        seed = derive_seed(p["seed"], "layer_lr", i)
        x = torch.as_tensor(_inputs(p, seed), **place)
        teacher = _net(p, derive_seed(p["seed"], "layer_lr", "teacher", i), place)
        with torch.no_grad():
            y = teacher(x)
            y = y / y.std()  # a learnable target of unit scale
        model = _net(p, seed, place)
        thetas = layer_ntks(model, x).double().cpu().numpy()
        traces[i] = np.trace(thetas, axis1=1, axis2=2)
        weights[i] = balanced_weights(traces[i])
        with torch.no_grad():
            residual = (model(x) - y).reshape(-1).double().cpu().numpy()
        spec = []
        for rule, w in zip(RULES, (np.ones(depth), weights[i])):
            evals, evecs = symmetric_eigh(np.tensordot(w, thetas, axes=1))
            lr = p["lr_fraction"] * 2 * len(evals) / evals[-1]
            res[f"kappa_{rule}"][i] = evals[-1] / evals[0]
            steps = np.arange(p["steps"] + 1)
            res[f"linear_{rule}"][i] = linear_loss(evals, evecs, residual, lr, steps)
            trained = _net(p, seed, place)  # the same init for both rules
            res[f"loss_{rule}"][i] = _train(trained, x, y, list(lr * w), p["steps"])
            spec.append(evals[::-1])
        spectra.append(spec)
    save_arrays(
        outputs[0],
        traces=traces,
        weights=weights,
        spectra=np.array(spectra),  # (inits, rule, NQ), descending
        **res,
    )


# --- figure and claims -------------------------------------------------------------------------


def _stat(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


_COLORS = {"plain": "tab:gray", "layer": "tab:green"}


def plot(p: dict, outputs, *, runs: str) -> None:
    run = load_arrays(runs)
    require_finite("layer_lr", **run)
    fig, axes = new_figure(1, 3, width=11.0, height=3.6)
    ax = axes[0]
    share = run["traces"] / run["traces"].sum(1, keepdims=True)
    layers = np.arange(1, p["depth"] + 1)
    ax.bar(layers - 0.2, share.mean(0), 0.4, color="tab:gray", label="tr Θ_ℓ / tr Θ")
    ax.bar(
        layers + 0.2,
        run["weights"].mean(0),
        0.4,
        color="tab:green",
        label="w_ℓ (rate factor)",
    )
    ax.set_xlabel("layer ℓ (1 = input side)")
    ax.set_xticks(layers)
    ax.set_title("layer contributions and rates (mean over inits)", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    for j, rule in enumerate(RULES):
        spec = run["spectra"][:, j] / run["spectra"][:, j, :1]
        for s in spec:
            ax.semilogy(np.arange(1, len(s) + 1), s, color=_COLORS[rule], lw=0.7, alpha=0.6)
        kappa = np.exp(np.log(run[f"kappa_{rule}"]).mean())
        ax.plot([], [], color=_COLORS[rule], label=f"{rule} (geo. mean κ = {kappa:.3g})")
    ax.set_xscale("log")
    ax.set_xlabel("eigenvalue index")
    ax.set_ylabel("λ_k / λ_max of Σ_ℓ w_ℓ Θ_ℓ")
    ax.set_title(f"spectrum on the batch ({p['batch']} images)", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[2]
    steps = np.arange(p["steps"] + 1)
    for rule in RULES:
        c = _COLORS[rule]
        for loss in run[f"loss_{rule}"]:
            ax.semilogy(steps, loss, color=c, lw=0.6, alpha=0.5)
        ax.semilogy(steps, run[f"linear_{rule}"].mean(0), "--", color=c, lw=1.2, label=rule)
    ax.set_xlabel("GD step")
    ax.set_ylabel("training loss")
    ax.set_title(f"nets (thin), linearised mean (dashed), width {p['width']}", fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, outputs)


def check(p: dict, outputs, *, runs: str) -> None:
    run = load_arrays(runs)
    require_finite("layer_lr", **run)
    kappa = np.log10(run["kappa_layer"] / run["kappa_plain"])
    loss = np.log10(run["loss_layer"][:, -1] / run["loss_plain"][:, -1])
    lin = np.log10(run["linear_layer"][:, -1] / run["linear_plain"][:, -1])
    (km, ks), (lm, ls), (nm, ns) = _stat(kappa), _stat(loss), _stat(lin)
    size = (
        f"{p['inits']} inits, batch {p['batch']}, width {p['width']}, L = {p['depth']}, "
        f"k = {p['kernel_size']}, s = {p['stride']}, padding {p['padding']}, "
        f"{p['scaling']} scaling, {p['steps']} steps at {p['lr_fraction']} of each rule's "
        f"stability limit"
    )
    write_checks(
        outputs[0],
        [
            Check(
                "layer_lr",
                "layer-balanced rate improves the NTK conditioning: log10 κ(Σ w_ℓ Θ_ℓ)/κ(Θ) < 0",
                0.0,
                km + Z * ks,
                0.0,
                "at_most",
                note=f"inferred (rule w_ℓ = mean tr Θ / tr Θ_ℓ is ours); measured = mean + 3 SE "
                f"over inits (paired, same net); mean ratio {10**km:.3f} "
                f"(κ plain geo. mean {np.exp(np.log(run['kappa_plain']).mean()):.3g}); {size}",
            ),
            Check(
                "layer_lr",
                "layer-balanced rate trains faster: log10 final loss (layer)/(plain) < 0",
                0.0,
                lm + Z * ls,
                0.0,
                "at_most",
                note=f"inferred; the same init and target trained with both rules; measured = "
                f"mean + 3 SE over inits; mean loss ratio {10**lm:.3f}; the linearised model "
                f"with the init NTK gives {10**nm:.3f}; {size}",
            ),
            Check(
                "layer_lr",
                "the gain of the nets equals that of the linearised NTK dynamics (log10 ratio)",
                nm,
                lm,
                Z * math.hypot(ls, ns),
                "abs",
                note=f"inferred; paired over inits, tolerance 3 SE of both (finite width moves "
                f"the NTK during training); {size}",
            ),
        ],
    )


def _runs_mem_mb(p: dict, wildcards) -> int:
    # One layer's Jacobian (NQ × n²k²) and L + 4 kernels (NQ)², float64.
    shapes = layer_shapes(
        (p["input_size"],) * 2, p["stride"], p["depth"], p["kernel_size"], p["padding"]
    )
    rows = p["batch"] * shapes[-1][0] * shapes[-1][1]
    jac = rows * p["width"] ** 2 * p["kernel_size"] ** 2
    return 1500 + (rows**2 * (p["depth"] + 4) + jac) * 8 // 2**20


EXPERIMENT = Experiment(
    name="layer_lr",
    order=205,
    uses=("seed", "device", "training.dtype"),
    jobs=(
        Job(
            "runs",
            runs,
            "runs.npz",
            mem_mb=_runs_mem_mb,
            runtime=20,
        ),
    ),
    plot=plot,
    check=check,
    figure_inputs={"runs": "runs"},
)
