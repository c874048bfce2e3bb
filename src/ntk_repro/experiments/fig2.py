"""NTK paper, Figure 2: trained networks against the limiting Gaussian process.

Nets of two widths, ``inits`` initialisations each, are trained by gradient descent on four
points of the unit circle. In the infinite-width limit the trained function f_t is Gaussian
(:func:`ntk_repro.kernels.kernel_ode_gaussian`); the figure draws its 10/50/90 percentiles at
the same t = steps · lr over the circle, with the trained nets on top.

Jobs: ``limit`` (the limiting Gaussian), ``train`` (one width); then ``plot`` and ``check``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ntk_repro import data, kernels
from ntk_repro.device import resolve_device
from ntk_repro.experiments import Experiment, Job, ensemble_mem_mb, over
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

Z90 = 1.2815515655446004  # the 90% quantile of N(0, 1)
BAND_SHARE = 0.8  # the share of a Gaussian between its 10 and 90 percentiles


def _architecture(p: dict) -> dict:
    return dict(
        depth=p["depth"],
        beta=p["beta"],
        activation=p["activation"],
        parametrization=p["parametrization"],
    )


def _eval_points(p: dict):
    return data.circle_points(p["circle_points"], radius=1.0)


def limit(p: dict, outputs) -> None:
    """The limiting Gaussian of f_t on the circle: mean and 10/50/90 percentiles."""
    x_train, y_train = data.fig2_training_set()
    x_eval, angles = _eval_points(p)
    arch = _architecture(p)
    at_train = kernels.kernel_matrices(x_train, **arch)
    cross = kernels.kernel_matrices(x_eval, x_train, **arch)
    diag = np.diag(kernels.nngp(x_eval, **arch)).copy()
    t = p["steps"] * p["lr"]
    mean, var = kernels.kernel_ode_gaussian(
        cross["ntk"],
        at_train["ntk"],
        diag,
        cross["nngp"],
        at_train["nngp"],
        y_train,
        t,
        loss=p["loss"],
    )
    sd = np.sqrt(var)
    save_arrays(
        outputs[0],
        angles=angles,
        x_eval=x_eval,
        x_train=x_train,
        y_train=y_train,
        angles_train=np.array(data.FIG2_ANGLES),
        mean=mean,
        sd=sd,
        p10=mean - Z90 * sd,
        p50=mean,
        p90=mean + Z90 * sd,
        t=np.float64(t),
        prior_sd=np.sqrt(diag),
    )


def train(p: dict, outputs, *, width: str) -> None:
    """Train ``inits`` nets of one width together; record f on the circle at 0 and the end."""
    width = int(width)
    x_train, y_train = data.fig2_training_set()
    x_eval, _ = _eval_points(p)
    seeds = [derive_seed(p["seed"], "fig2", width, k) for k in range(p["inits"])]
    result = train_ensemble(
        x_train,
        y_train,
        width=width,
        **_architecture(p),
        seeds=seeds,
        steps=p["steps"],
        lr=p["lr"],
        loss=p["loss"],
        x_eval=x_eval,
        eval_steps=(0, p["steps"]),
        dtype=getattr(torch, p["dtype"]),
        device=resolve_device(p["device"]),
        name=f"fig2 width={width}",
    )
    save_arrays(outputs[0], width=np.int64(width), **result.arrays())


def _load(limit_path: str, run_paths: list[str]):
    limit = load_arrays(limit_path)
    runs = sorted((load_arrays(path) for path in run_paths), key=lambda r: int(r["width"]))
    for r in runs:
        require_finite(f"fig2 width={int(r['width'])}", f_eval=r["f_eval"], losses=r["losses"])
    return limit, runs


def plot(p: dict, outputs, *, limit: str, runs: list[str]) -> None:
    limit, runs = _load(limit, runs)
    fig, ax = new_figure(width=6.4, height=3.8)
    g = limit["angles"]
    ax.fill_between(g, limit["p10"], limit["p90"], color="0.85", label="10–90 percentile (n = ∞)")
    ax.plot(g, limit["p50"], color="black", lw=1.4, label="50 percentile (n = ∞)")
    styles = ["--", "-", ":", "-."]
    colors = ["tab:red", "tab:blue", "tab:green", "tab:purple"]
    for i, run in enumerate(runs):
        final = run["f_eval"][:, -1, :]
        for k, f in enumerate(final):
            ax.plot(
                g,
                f,
                styles[i % 4],
                color=colors[i % 4],
                lw=0.8,
                alpha=0.8,
                label=f"n = {int(run['width'])}" if k == 0 else None,
            )
    ax.scatter(
        limit["angles_train"],
        limit["y_train"],
        color="black",
        zorder=5,
        s=25,
        label="training points",
    )
    ax.set_xlabel("γ  (x = (cos γ, sin γ))")
    ax.set_ylabel("f(x)")
    ax.set_xlim(-math.pi, math.pi)
    ax.set_title(
        f"Trained nets after t = {float(limit['t']):g} vs the limiting Gaussian "
        f"(L = {p['depth']}, β = {p['beta']})"
    )
    ax.legend(loc="upper left", ncol=2)
    save_figure(fig, outputs)


def check(p: dict, outputs, *, limit: str, runs: list[str]) -> None:
    limit, runs = _load(limit, runs)
    widest = runs[-1]
    final = widest["f_eval"][:, -1, :]  # (K, M)
    n_inits, width = final.shape[0], int(widest["width"])
    inside = ((final >= limit["p10"]) & (final <= limit["p90"])).mean()
    # At each x the share inside the band is a mean of K Bernoulli(0.8) draws: its standard
    # error is √(0.8·0.2/K); averaging over (correlated) circle points cannot increase it.
    share_tol = 3.0 * math.sqrt(BAND_SHARE * (1 - BAND_SHARE) / n_inits)
    # (mean of K nets − limiting mean) / (sd/√K) is ~N(0, 1) at each x in the limit.
    z = (final.mean(0) - limit["mean"]) / (limit["sd"] / math.sqrt(n_inits))
    z_rms = float(np.sqrt(np.mean(z * z)))
    train_loss = float(widest["losses"][:, -1].mean())
    rows = [
        Check(
            "fig2",
            f"share of trained functions (n = {width}) inside the 10-90 band",
            BAND_SHARE,
            inside,
            share_tol,
            "abs",
            note=f"tolerance 3 binomial standard errors, K = {n_inits}",
        ),
        Check(
            "fig2",
            f"mean of trained nets (n = {width}) vs 50 percentile: RMS z-score",
            0.0,
            z_rms,
            3.0,
            "abs",
            note="z = (mean_K - median)/(sd/sqrt K) over the circle",
        ),
        Check(
            "fig2",
            f"training loss at t = {float(limit['t']):g} (n = {width}) near 0",
            0.0,
            train_loss,
            1e-3,
            "at_most",
            note="the 4 targets are interpolated",
        ),
    ]
    write_checks(outputs[0], rows)


EXPERIMENT = Experiment(
    name="fig2",
    order=20,
    uses=("seed", "device", "model", "training"),
    jobs=(
        Job("limit", limit, "limit.npz"),
        Job(
            "train",
            train,
            "train_w{width}.npz",
            each=over("width", "widths"),
            threads=2,
            gpu=True,
            mem_mb=ensemble_mem_mb,
            runtime=120,
        ),
    ),
    plot=plot,
    check=check,
    figure_inputs={"limit": "limit", "runs": "train"},
)
