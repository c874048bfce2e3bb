"""Freeze & Chaos: the eigenvalues of the limiting NTK on the sphere (Funk–Hecke).

On the sphere ‖x‖² = n0 = d the limiting NTK is a dot-product kernel, Θ∞(x, y) = κ(xᵀy/d), so
for the uniform measure its eigenfunctions are the spherical harmonics and its eigenvalues μ_k
(multiplicity N(d, k)) are one-variable integrals against Gegenbauer polynomials
(:mod:`ntk_repro.spectral`, Gauss–Jacobi quadrature). They are compared with the eigenvalues of
the Gram of N uniform points divided by N (several independent draws), and their decay with the
degree k is drawn per regime: a frozen NTK puts almost all of its trace κ(1) = Σ N(d,k)·μ_k on
the constant (k = 0) and its other eigenvalues fall off fast; a chaotic one spreads it over
many degrees.

Jobs: ``eigen`` (Funk–Hecke and Gram eigenvalues); then ``plot`` and ``check``.
"""

from __future__ import annotations

import math

import numpy as np

from ntk_repro import data, spectral
from ntk_repro.experiments import Experiment, Job
from ntk_repro.freeze_chaos import ntk_of_cosine, parse_networks
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

# The Gram is compared with Funk–Hecke on the degrees whose harmonics number at most N/8 in
# total: beyond, the Marchenko–Pastur spread √(m/N) of a degree is no longer small.
TOP_SHARE = 8


def top_degree(mults: np.ndarray, n_points: int) -> int:
    """The largest K with Σ_{k≤K} N(d,k) <= N/TOP_SHARE (at least 0)."""
    cumulative = np.cumsum(mults)
    return max(int(np.searchsorted(cumulative, n_points // TOP_SHARE, side="right")) - 1, 0)


def eigen(p: dict, outputs) -> None:
    nets = parse_networks(p["networks"])
    d, depth, n = int(p["sphere_dim"]), int(p["depth"]), int(p["n_points"])
    draws = [
        data.sphere_points(n, d, seed=derive_seed(p["seed"], "spectrum", "draw", j))
        for j in range(p["draws"])
    ]
    eig, qerr, traces, gram = [], [], [], []
    mults = None
    for net in nets:

        def kappa(t, net=net):
            return ntk_of_cosine(net, depth, t)

        fh = spectral.funk_hecke(kappa, d, int(p["max_degree"]), nodes=int(p["quadrature_nodes"]))
        mults = fh.multiplicities
        eig.append(fh.eigenvalues)
        qerr.append(fh.quadrature_error)
        traces.append(float(kappa(np.array([1.0]))[0]))
        gram.append(np.stack([spectral.gram_eigenvalues(kappa, x) for x in draws]))
    save_arrays(
        outputs[0],
        names=np.array([n_.name for n_ in nets]),
        regimes=np.array([n_.regime for n_ in nets]),
        activations=np.array([n_.activation for n_ in nets]),
        betas=np.array([n_.beta for n_ in nets]),
        r=np.array([n_.r for n_ in nets]),
        eigenvalues=np.stack(eig),
        quadrature_error=np.stack(qerr),
        multiplicities=mults,
        trace=np.array(traces),
        gram_eigenvalues=np.stack(gram),
        depth=np.int64(depth),
        sphere_dim=np.int64(d),
        n_points=np.int64(n),
    )


def _load(path: str) -> dict:
    res = load_arrays(path)
    require_finite("spectrum", eigenvalues=res["eigenvalues"], gram=res["gram_eigenvalues"])
    return res


def _bands(res: dict, k: int) -> dict:
    n = int(res["n_points"])
    mults = res["multiplicities"]
    count = int(np.sum(mults[: top_degree(mults, n) + 1]))
    tol = spectral.degree_tolerance(res["eigenvalues"][k], mults, res["trace"][k], n)
    tol = tol + res["quadrature_error"][k]
    return spectral.sorted_bands(res["eigenvalues"][k], mults, tol, count)


def plot(p: dict, outputs, *, eigen: str) -> None:
    res = _load(eigen)
    names = res["names"]
    fig, axes = new_figure(1, 1 + len(names), width=3.3 * (1 + len(names)), height=3.9)
    ax = axes[0]
    degrees = np.arange(len(res["multiplicities"]))
    floor = 1e-15
    for k in range(len(names)):
        mu = res["eigenvalues"][k] / res["trace"][k]
        shown = mu > floor
        ax.semilogy(
            degrees[shown],
            mu[shown],
            "o-",
            ms=3,
            color=f"C{k + 3}",
            label=f"{res['regimes'][k]}: {res['activations'][k]}, β = {float(res['betas'][k]):g}",
        )
    ax.set_xlabel("degree k")
    ax.set_ylabel("μ_k / κ(1)")
    ax.set_title(
        f"Funk–Hecke eigenvalues, L = {int(res['depth'])}, $S^{{{int(res['sphere_dim']) - 1}}}$",
        fontsize=9,
    )
    ax.legend(loc="upper right", fontsize=6.5)
    n = int(res["n_points"])
    for k, name in enumerate(names):
        ax = axes[k + 1]
        bands = _bands(res, k)
        count = len(bands["center"])
        trace = res["trace"][k]
        index = np.arange(1, count + 1)
        ax.fill_between(
            index,
            np.maximum(bands["lower"], 0) / trace,
            bands["upper"] / trace,
            color=f"C{k + 3}",
            alpha=0.2,
            step="mid",
            label="sampling band",
        )
        ax.step(
            index,
            bands["center"] / trace,
            where="mid",
            color=f"C{k + 3}",
            lw=1.2,
            label="Funk–Hecke μ_(i)",
        )
        for j, values in enumerate(res["gram_eigenvalues"][k]):
            ax.plot(
                index,
                values[:count] / trace,
                ".",
                ms=2.5,
                color="black",
                label=f"Gram λ_i/N ({len(res['gram_eigenvalues'][k])} draws)" if j == 0 else None,
            )
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_ylim(bottom=max(float(np.min(bands["center"] / trace)) * 0.1, 1e-16))
        ax.set_xlabel("index i (sorted)")
        ax.set_title(f"{name}: top {count} of N = {n}", fontsize=9)
        ax.legend(loc="lower left", fontsize=6.5)
    save_figure(fig, outputs)


def check(p: dict, outputs, *, eigen: str) -> None:
    res = _load(eigen)
    n = int(res["n_points"])
    rows = []
    for k, name in enumerate(res["names"]):
        bands = _bands(res, k)
        count = len(bands["center"])
        scores = np.stack([spectral.band_score(v, bands) for v in res["gram_eigenvalues"][k]])
        worst = np.unravel_index(np.argmax(np.abs(scores)), scores.shape)
        rows.append(
            Check(
                "spectrum",
                f"{name}: Gram eigenvalues / N = Funk–Hecke μ_(i) for the top {count} "
                f"modes (N = {n}, {scores.shape[0]} draws), worst |deviation| / band half-width",
                0.0,
                float(np.abs(scores).max()),
                1.0,
                "abs",
                note=f"band per degree μ_k(2√(m_k/N) + m_k/N) + κ(1)/N + quadrature error: the "
                f"O(1/√N) Marchenko–Pastur spread of the m_k harmonics and the O(1/N) "
                f"coupling to other degrees; worst at i = {int(worst[1]) + 1}",
            )
        )
    regimes = list(res["regimes"])
    if "chaos" in regimes:
        c = regimes.index("chaos")
        k_decay = min(int(p["decay_degree"]), len(res["multiplicities"]) - 1)

        def decay(k):
            mu, err = res["eigenvalues"][k], res["quadrature_error"][k]
            value = math.log10(mu[1] / mu[k_decay])
            return value, (err[1] / abs(mu[1]) + err[k_decay] / abs(mu[k_decay])) / math.log(10)

        chaos_decay, chaos_err = decay(c)
        for k, name in enumerate(res["names"]):
            if regimes[k] != "freeze":
                continue
            value, err = decay(k)
            rows.append(
                Check(
                    "spectrum",
                    f"{name} (freeze) decays faster than {res['names'][c]} (chaos): "
                    f"log10(μ_1/μ_{k_decay}) difference",
                    0.0,
                    value - chaos_decay,
                    err + chaos_err,
                    "at_least",
                    note=f"freeze {value:.3g}, chaos {chaos_decay:.3g} decades from degree 1 to "
                    f"{k_decay}; tolerance: propagated quadrature error",
                )
            )
    write_checks(outputs[0], rows)


EXPERIMENT = Experiment(
    name="spectrum",
    order=100,
    uses=("seed",),
    jobs=(
        Job(
            "eigen",
            eigen,
            "eigen.npz",
            runtime=20,
            # Gram, eigen-solver workspace and copies: ~8 N × N float64 arrays (paper preset,
            # N = 4000: 1689 MB measured).
            mem_mb=lambda p, wildcards: 1000 + 8 * p["n_points"] ** 2 * 8 // 2**20,
        ),
    ),
    plot=plot,
    check=check,
    figure_inputs={"eigen": "eigen"},
)
