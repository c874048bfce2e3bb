"""KRR risk from the training set (KARE) and from the spectrum (signal-capture threshold).

Kernel ridge regression f̂_λ(x) = K(x, X)(K + NλI)⁻¹y (the "mean" ridge convention of
:mod:`ntk_repro.generalization`) with three dot-product kernels — the limiting NTK Θ∞ of a ReLU
net (``ntk2018``) and the classical RBF exp(−‖u − v‖²/2ℓ²) and Laplace exp(−‖u − v‖/ℓ) on unit
vectors — on two data sets:

- ``sphere``: N points uniform on S^{d−1}, labels f*(x) + ε·noise with the target
  f* = Σₖ aₖYₖ (unit-norm zonal harmonics, :func:`generalization.harmonic_target`). For every
  ridge of a grid, each draw gives the test risk *exactly* — ‖f̂ − f*‖² under the uniform measure
  (:func:`generalization.sphere_risk`, from the Funk–Hecke eigenvalues) plus ε² — so the only
  Monte Carlo error is over the training draws; one draw is also scored on held-out points, as a
  check of that exact risk. From the training set alone: KARE (and GCV, the same number) and
  the data-driven threshold ϑ̂ = 1/[(1/N)Tr(K/N + λ)⁻¹]. From the population spectrum alone: the
  SCT risk and ϑ (:func:`generalization.predicted_risk`). The kernels share the draws.
- ``digits``: scikit-learn's 8×8 digits on the sphere of radius 8, labels ±1 by parity (even
  +1, odd −1); N random training images, the other 1797 − N are the test set.

Jobs: ``sphere`` and ``digits``; then ``plot`` and ``check``.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.stats

from ntk_repro import data, spectral
from ntk_repro import generalization as gen
from ntk_repro.experiments import Experiment, Job
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

KERNELS = ("ntk", "rbf", "laplace")
LABELS = {"ntk": "NTK Θ∞", "rbf": "RBF", "laplace": "Laplace"}
# λ range of the KARE / SCT / ϑ̂ claims (the issue's, at N = claim_n).
CLAIM_RIDGES = (1e-4, 1.0)
# On the digits KARE holds only from here up (measured; see _leverage_row): below, the
# uneven leverages of clustered data make it underestimate the risk.
DIGITS_CLAIM_RIDGES = (1e-2, 1.0)


def kernel_of_cosine(name: str, p: dict):
    """κ(t) of a configured kernel as a function of the cosine t (unit vectors, or vectors of
    norm √n0 for the NTK, whose kernels_of_cosine takes ‖x‖²/n0 = 1)."""
    if name == "ntk":
        ntk = p["ntk"]

        def kappa(t):
            return kernels_of_cosine(
                t, depth=ntk["depth"], beta=ntk["beta"], activation=ntk["activation"]
            )[1]

        return kappa
    if name == "rbf":
        length = float(p["rbf_length"])
        return lambda t: np.exp(-(1.0 - np.asarray(t)) / length**2)
    if name == "laplace":
        length = float(p["laplace_length"])
        return lambda t: np.exp(-np.sqrt(np.maximum(2.0 * (1.0 - np.asarray(t)), 0.0)) / length)
    raise ValueError(f"kernel {name!r} is unknown; choose from {KERNELS}")


def ridge_grid(p: dict) -> np.ndarray:
    return np.geomspace(p["ridge_min"], p["ridge_max"], p["ridge_count"])


def _gram(kappa, cosines: np.ndarray) -> np.ndarray:
    gram = kappa(cosines)
    return 0.5 * (gram + gram.T)


def _unit_points(n: int, d: int, seed: int) -> np.ndarray:
    return data.sphere_points(n, d, seed=seed, radius=1.0)


def _spectra(p: dict) -> dict:
    """Funk–Hecke eigenvalues (clipped at 0: negatives are quadrature rounding), their
    quadrature error, the trace κ(1) and the tail trace beyond the last degree, per kernel."""
    out = {"mu": [], "quadrature_error": [], "trace": [], "tail": []}
    d = int(p["sphere_dim"])
    for name in p["kernels"]:
        kappa = kernel_of_cosine(name, p)
        fh = spectral.funk_hecke(kappa, d, int(p["max_degree"]), nodes=int(p["quadrature_nodes"]))
        mu = np.clip(fh.eigenvalues, 0.0, None)
        trace = float(kappa(np.array([1.0]))[0])
        out["mu"].append(mu)
        out["quadrature_error"].append(fh.quadrature_error)
        out["trace"].append(trace)
        out["tail"].append(max(trace - float(fh.multiplicities @ mu), 0.0))
    out = {k: np.array(v) for k, v in out.items()}
    out["multiplicities"] = spectral.multiplicities(d, int(p["max_degree"]))
    return out


def _training_draw(p: dict, n: int, draw: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``draw`` of N training points on S^{d−1} (N, d) and their noisy labels (N,)."""
    d, noise = int(p["sphere_dim"]), float(p["noise"])
    amps = np.asarray(p["amplitudes"], dtype=np.float64)
    seed = derive_seed(p["seed"], "kare", "sphere", n, draw)
    u = _unit_points(n, d, seed)
    y = gen.harmonic_target(u, amps) + noise * np.random.default_rng(seed + 1).standard_normal(n)
    return u, y


def _sphere_draw(p: dict, n: int, draw: int, ridges, spectra) -> dict:
    """Every kernel on one draw of N training points: exact risk, KARE, GCV, ϑ̂, shape (K, R)."""
    noise = float(p["noise"])
    amps = np.asarray(p["amplitudes"], dtype=np.float64)
    u, y = _training_draw(p, n, draw)
    cos = spectral.cosines(u)
    rows = {"risk": [], "kare": [], "gcv": [], "theta_hat": []}
    for k, name in enumerate(p["kernels"]):
        gram = _gram(kernel_of_cosine(name, p), cos)
        alpha = gen.krr_coefficients(gram, y, ridges, convention="mean")
        rows["risk"].append(gen.sphere_risk(u, alpha, spectra["mu"][k], amps) + noise**2)
        rows["kare"].append(gen.kare(gram, y, ridges))
        rows["theta_hat"].append(gen.empirical_threshold(gram, ridges))
        if draw == 0:  # the KARE = GCV identity, checked on the first draw (a solve per ridge)
            rows["gcv"].append(gen.gcv(gram, y, ridges))
    return {key: np.array(v) for key, v in rows.items()}


def _held_out(p: dict, n: int, ridges, spectra) -> dict:
    """Draw 0 at N scored on fresh held-out points: per kernel, the mean squared error against
    noisy labels, its standard error, and the exact risk of the same fit. (K, R) each."""
    d, noise = int(p["sphere_dim"]), float(p["noise"])
    amps = np.asarray(p["amplitudes"], dtype=np.float64)
    u, y = _training_draw(p, n, 0)
    m = int(p["held_out"])
    test_seed = derive_seed(p["seed"], "kare", "held_out")
    v = _unit_points(m, d, test_seed)
    y_test = gen.harmonic_target(v, amps)
    y_test = y_test + noise * np.random.default_rng(test_seed + 1).standard_normal(m)
    cos_train, cos_test = spectral.cosines(u), np.clip(v @ u.T, -1.0, 1.0)
    out = {"held_out": [], "held_out_se": [], "exact": []}
    for k, name in enumerate(p["kernels"]):
        kappa = kernel_of_cosine(name, p)
        alpha = gen.krr_coefficients(_gram(kappa, cos_train), y, ridges, convention="mean")
        sq = (alpha @ kappa(cos_test).T - y_test) ** 2  # (R, M)
        out["held_out"].append(sq.mean(axis=1))
        out["held_out_se"].append(sq.std(axis=1, ddof=1) / math.sqrt(m))
        out["exact"].append(gen.sphere_risk(u, alpha, spectra["mu"][k], amps) + noise**2)
    return {key: np.array(v) for key, v in out.items()}


def sphere(p: dict, outputs) -> None:
    ridges = ridge_grid(p)
    sizes = [int(n) for n in p["n_train"]]
    if int(p["claim_n"]) not in sizes:
        raise ValueError(f"kare.claim_n = {p['claim_n']} must be one of kare.n_train {sizes}")
    spectra = _spectra(p)
    amps = np.asarray(p["amplitudes"], dtype=np.float64)
    coefficients = np.zeros(int(p["max_degree"]) + 1)
    coefficients[: amps.size] = amps
    measured = {key: [] for key in ("risk", "kare", "theta_hat")}
    gcv = []
    sct = {"risk": [], "theta": []}
    for n in sizes:
        draws = [_sphere_draw(p, n, j, ridges, spectra) for j in range(int(p["draws"]))]
        for key in measured:
            measured[key].append(np.stack([dr[key] for dr in draws], axis=1))  # (K, D, R)
        gcv.append(draws[0]["gcv"])  # (K, R)
        preds = [
            gen.predicted_risk(
                spectra["mu"][k],
                coefficients,
                ridges,
                n,
                float(p["noise"]),
                multiplicities=spectra["multiplicities"],
                tail=float(spectra["tail"][k]),
            )
            for k in range(len(p["kernels"]))
        ]
        sct["risk"].append(np.stack([pr.risk for pr in preds]))
        sct["theta"].append(np.stack([pr.threshold for pr in preds]))
    held = _held_out(p, int(p["claim_n"]), ridges, spectra)
    save_arrays(
        outputs[0],
        kernels=np.array(p["kernels"]),
        ridges=ridges,
        n_train=np.array(sizes, dtype=np.int64),
        claim_n=np.int64(p["claim_n"]),
        noise=np.float64(p["noise"]),
        amplitudes=amps,
        # (N sizes, K kernels, D draws, R ridges)
        **{key: np.stack(v) for key, v in measured.items()},
        # (N sizes, K kernels, R ridges); gcv of draw 0
        gcv=np.stack(gcv),
        sct_risk=np.stack(sct["risk"]),
        sct_theta=np.stack(sct["theta"]),
        # (K kernels, R ridges), draw 0 at claim_n
        **{f"check_{key}": v for key, v in held.items()},
        mu=spectra["mu"],
        quadrature_error=spectra["quadrature_error"],
        trace=spectra["trace"],
        tail=spectra["tail"],
        multiplicities=spectra["multiplicities"],
    )


def digits(p: dict, outputs) -> None:
    """Parity of scikit-learn's digits: per N and draw, N training images, the rest test."""
    ridges = ridge_grid(p)
    x, labels = data.digits_inputs(1797, seed=derive_seed(p["seed"], "kare", "digits"))
    y_all = np.where(labels % 2 == 0, 1.0, -1.0)
    cos_all = spectral.cosines(x)
    grams = [_gram(kernel_of_cosine(name, p), cos_all) for name in p["kernels"]]
    sizes = [int(n) for n in p["digits_n"]]
    out = {
        key: np.empty((len(sizes), len(grams), p["draws"], len(ridges))) for key in ("risk", "kare")
    }
    # Draw 0 only: GCV (the KARE identity) and the exact leave-one-out error (a diagnosis).
    out["gcv"] = np.empty((len(sizes), len(grams), len(ridges)))
    out["loo"] = np.empty((len(sizes), len(grams), len(ridges)))
    for i, n in enumerate(sizes):
        for j in range(int(p["draws"])):
            rng = np.random.default_rng(derive_seed(p["seed"], "kare", "digits", n, j))
            order = rng.permutation(len(y_all))
            train, test = order[:n], order[n:]
            y = y_all[train]
            for k, gram in enumerate(grams):
                k_train = gram[np.ix_(train, train)]
                pred = gen.krr_predict(
                    k_train, y, ridges, gram[np.ix_(test, train)], convention="mean"
                )
                out["risk"][i, k, j] = ((pred - y_all[test]) ** 2).mean(axis=1)
                out["kare"][i, k, j] = gen.kare(k_train, y, ridges)
                if j == 0:
                    out["gcv"][i, k] = gen.gcv(k_train, y, ridges)
                    out["loo"][i, k] = gen.loo_risk(k_train, y, ridges)
    save_arrays(
        outputs[0],
        kernels=np.array(p["kernels"]),
        ridges=ridges,
        n_train=np.array(sizes, dtype=np.int64),
        **out,
    )


# --- figure --------------------------------------------------------------------------------------


def _load(sphere_path: str, digits_path: str) -> tuple[dict, dict]:
    s, dg = load_arrays(sphere_path), load_arrays(digits_path)
    for name, res in (("kare sphere", s), ("kare digits", dg)):
        require_finite(name, risk=res["risk"], kare=res["kare"])
    require_finite("kare sphere", sct=s["sct_risk"], theta_hat=s["theta_hat"])
    return s, dg


def _index(res: dict, n: int) -> int:
    sizes = [int(v) for v in res["n_train"]]
    if n not in sizes:
        raise ValueError(f"claim_n = {n} is not one of the sizes {sizes}")
    return sizes.index(n)


def _mean_se(values: np.ndarray, axis: int = -2) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over the draw axis (default −2, of (…, D, R))."""
    se = values.std(axis=axis, ddof=1) / math.sqrt(values.shape[axis])
    return values.mean(axis=axis), se


def _legend(ax, kernels, styles: dict[str, dict]) -> None:
    """One entry per kernel (its colour) and one per quantity (its line style)."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=f"C{k}", lw=2, label=LABELS[name]) for k, name in enumerate(kernels)
    ]
    handles += [
        Line2D([], [], color="0.3", label=label, **style) for label, style in styles.items()
    ]
    ax.legend(handles=handles, fontsize=6.5)


STYLES = {
    "test risk (mean ± SE over draws)": {"marker": "o", "ls": "none", "ms": 3.5},
    "KARE (training set alone)": {"ls": "-"},
    "SCT (Funk–Hecke spectrum alone)": {"ls": "--"},
}


def _risk_panel(ax, res: dict, i: int, title: str, sct: bool) -> None:
    ridges = res["ridges"]
    for k in range(len(res["kernels"])):
        color = f"C{k}"
        mean, se = _mean_se(res["risk"][i, k])
        ax.errorbar(ridges, mean, yerr=se, fmt="o", ms=3.5, color=color, capsize=2)
        ax.loglog(ridges, res["kare"][i, k].mean(axis=0), "-", color=color, lw=1.4)
        if sct:
            ax.loglog(ridges, res["sct_risk"][i, k], "--", color=color, lw=1.2)
    ax.set_xlabel("ridge λ (K + NλI)")
    ax.set_ylabel("risk E(f̂(x) − y)²")
    ax.set_title(title, fontsize=9)
    styles = STYLES if sct else {k: v for k, v in STYLES.items() if not k.startswith("SCT")}
    _legend(ax, res["kernels"], styles)


def plot(p: dict, outputs, *, sphere: str, digits: str) -> None:
    s, dg = _load(sphere, digits)
    fig, axes = new_figure(2, 2, width=11.5, height=8.4)
    i = _index(s, int(s["claim_n"]))
    d = int(p["sphere_dim"])
    _risk_panel(
        axes[0, 0],
        s,
        i,
        f"$S^{{{d - 1}}}$, N = {int(s['n_train'][i])}, ε = {float(s['noise']):g}, "
        f"{s['risk'].shape[2]} draws",
        sct=True,
    )
    j = len(dg["n_train"]) - 1
    _risk_panel(
        axes[0, 1],
        dg,
        j,
        f"digits (parity ±1), N = {int(dg['n_train'][j])}, {dg['risk'].shape[2]} draws",
        sct=False,
    )
    # Risk vs N at one ridge: where KARE and SCT break down (small N).
    ax = axes[1, 0]
    r = int(np.argmin(np.abs(np.log(s["ridges"] / float(p["ridge_vs_n"])))))
    sizes = s["n_train"]
    for k in range(len(s["kernels"])):
        color = f"C{k}"
        mean, se = _mean_se(s["risk"][:, k, :, r], axis=-1)
        ax.errorbar(
            sizes,
            mean,
            yerr=se,
            fmt="o",
            color=color,
            ms=3.5,
            capsize=2,
        )
        ax.loglog(sizes, s["kare"][:, k, :, r].mean(axis=1), "-", color=color)
        ax.loglog(sizes, s["sct_risk"][:, k, r], "--", color=color)
    ax.set_xlabel("N")
    ax.set_ylabel("risk")
    ax.set_title(f"$S^{{{d - 1}}}$: risk vs N at λ = {s['ridges'][r]:.2g}", fontsize=9)
    _legend(ax, s["kernels"], STYLES)
    # Ratios to the measured risk: KARE and SCT, and ϑ̂/ϑ, at claim_n.
    ax = axes[1, 1]
    for k in range(len(s["kernels"])):
        color = f"C{k}"
        risk = s["risk"][i, k].mean(axis=0)
        ax.semilogx(s["ridges"], s["kare"][i, k].mean(axis=0) / risk, "-", color=color)
        ax.semilogx(s["ridges"], s["sct_risk"][i, k] / risk, "--", color=color)
        ratio = s["theta_hat"][i, k].mean(axis=0) / s["sct_theta"][i, k]
        ax.semilogx(s["ridges"], ratio, ":", color=color)
    ax.axhline(1.0, color="black", lw=0.7)
    ax.axvspan(*CLAIM_RIDGES, color="0.9", zorder=0)
    ax.set_ylim(0.7, 1.3)
    ax.set_xlabel("ridge λ")
    ax.set_title(
        f"$S^{{{d - 1}}}$, N = {int(s['n_train'][i])}: ratios (grey: claimed range)", fontsize=9
    )
    _legend(
        ax,
        s["kernels"],
        {"KARE / test risk": {"ls": "-"}, "SCT / test risk": {"ls": "--"}, "ϑ̂ / ϑ": {"ls": ":"}},
    )
    save_figure(fig, outputs)


# --- checks --------------------------------------------------------------------------------------


def _in_claim_range(ridges: np.ndarray, bounds: tuple[float, float] = CLAIM_RIDGES) -> np.ndarray:
    lo, hi = bounds
    return (ridges >= lo * (1 - 1e-9)) & (ridges <= hi * (1 + 1e-9))


def _worst_ratio(estimate: np.ndarray, risk: np.ndarray, sel: np.ndarray) -> tuple:
    """Over the selected ridges, the largest |estimate/risk − 1| and its standard error over
    draws: (value, se, ridge index). Both (D, R): the mean over draws of the per-draw ratio
    (KARE and ϑ̂ estimate their own draw's quantity); estimate (R,) deterministic (the SCT):
    the ratio to the mean risk, its standard error by the delta method."""
    if estimate.ndim == 2 and risk.ndim == 2:
        ratio = estimate / risk
        mean = ratio.mean(axis=0) - 1.0
        se = ratio.std(axis=0, ddof=1) / math.sqrt(ratio.shape[0])
    elif risk.ndim == 2:
        avg = risk.mean(axis=0)
        mean = estimate / avg - 1.0
        se = (estimate / avg) * risk.std(axis=0, ddof=1) / math.sqrt(risk.shape[0]) / avg
    else:
        ratio = estimate / risk[None]
        mean = ratio.mean(axis=0) - 1.0
        se = ratio.std(axis=0, ddof=1) / math.sqrt(ratio.shape[0])
    idx = int(np.flatnonzero(sel)[np.argmax(np.abs(mean[sel]))])
    return float(mean[idx]), float(se[idx]), idx


def _ratio_check(
    claim: str, mean: float, se: float, ridge: float, draws: int, bound: float, paired: bool = True
):
    """|ratio − 1| within max(bound, 3 SE): the stated accuracy, unless the draws' own
    scatter is larger (then the standard error is what the run can resolve)."""
    statistical = 3.0 * se
    how = (
        "mean over draws of the per-draw ratio"
        if paired
        else "ratio to the mean over draws (delta-method standard error)"
    )
    binding = "the stated bound" if bound >= statistical else "3 standard errors over draws"
    return Check(
        "kare",
        claim,
        0.0,
        mean,
        max(bound, statistical),
        "abs",
        note=f"worst ridge λ = {ridge:.3g}; {how}, {draws} draws, standard error {se:.3g}; "
        f"tolerance max({bound:g}, 3 SE) — here {binding} is binding",
    )


def _kare_rows(
    res: dict, dataset: str, claim_n: int, bounds: tuple[float, float] = CLAIM_RIDGES
) -> list[Check]:
    """Per kernel: KARE / risk at N = claim_n over the claimed ridges; argmin of KARE vs of
    the risk at the largest N."""
    sizes = [int(v) for v in res["n_train"]]
    ridges, sel, draws = res["ridges"], _in_claim_range(res["ridges"], bounds), res["risk"].shape[2]
    top = len(sizes) - 1
    rows = []
    for k, name in enumerate(res["kernels"]):
        claim = (
            f"{dataset}, {LABELS[name]}: KARE / test risk − 1 at N = {claim_n}, worst over "
            f"λ in [{bounds[0]:g}, {bounds[1]:g}]"
        )
        if claim_n in sizes:
            i = sizes.index(claim_n)
            mean, se, idx = _worst_ratio(res["kare"][i, k], res["risk"][i, k], sel)
            row = _ratio_check(claim, mean, se, ridges[idx], draws, 0.10)
            if "loo" in res:  # digits: leave-one-out of draw 0 at the same ridge
                loo = res["loo"][i, k, idx] / res["risk"][i, k, 0, idx]
                row.note += (
                    f"; draw 0 at that λ: exact leave-one-out / test risk = {loo:.3g} vs KARE / "
                    f"test risk = {res['kare'][i, k, 0, idx] / res['risk'][i, k, 0, idx]:.3g}"
                )
        else:
            row = Check(
                "kare",
                claim,
                0.0,
                math.nan,
                0.10,
                "abs",
                not_evaluated=f"the claim is at N = {claim_n}, the largest N here is {sizes[-1]}",
            )
        rows.append(row)
        risk, kare = res["risk"][top, k].mean(axis=0), res["kare"][top, k].mean(axis=0)
        gap = abs(math.log10(ridges[np.argmin(kare)] / ridges[np.argmin(risk)]))
        regret = risk[np.argmin(kare)] / risk.min() - 1.0
        rows.append(
            Check(
                "kare",
                f"{dataset}, {LABELS[name]}: argmin over λ of KARE within one decade of the "
                f"measured argmin (|log10 ratio|), N = {sizes[top]}",
                0.0,
                gap,
                1.0,
                "at_most",
                note=f"argmin KARE {ridges[np.argmin(kare)]:.3g}, argmin risk "
                f"{ridges[np.argmin(risk)]:.3g} (grid of {len(ridges)} ridges, means over "
                f"{draws} draws); risk at KARE's choice exceeds the minimum by "
                f"{100 * regret:.2g}%",
            )
        )
    return rows


def _leverage_row(res: dict, claim_n: int, k: int) -> Check:
    """The measured finding below DIGITS_CLAIM_RIDGES: at the smallest ridge of the issue's
    range KARE underestimates the digits' risk (significantly, by 3 standard errors), while
    exact leave-one-out (which uses each point's own leverage) does not."""
    name = LABELS[str(res["kernels"][k])]
    claim = (
        f"digits, {name}: finding — at λ = {CLAIM_RIDGES[0]:g} and N = {claim_n} KARE "
        "underestimates the test risk (KARE / test risk − 1 below 0 by 3 standard errors)"
    )
    sizes = [int(v) for v in res["n_train"]]
    if claim_n not in sizes:
        return Check(
            "kare",
            claim,
            0.0,
            math.nan,
            0.0,
            "at_most",
            not_evaluated=f"the claim is at N = {claim_n}, the largest N here is {sizes[-1]}",
        )
    i, j = sizes.index(claim_n), int(np.argmin(np.abs(np.log(res["ridges"] / CLAIM_RIDGES[0]))))
    ratio = res["kare"][i, k, :, j] / res["risk"][i, k, :, j]
    se = float(ratio.std(ddof=1) / math.sqrt(len(ratio)))
    loo = float(res["loo"][i, k, j] / res["risk"][i, k, 0, j])
    return Check(
        "kare",
        claim,
        0.0,
        float(ratio.mean() - 1.0),
        -3.0 * se,  # holds only if below 0 by 3 standard errors
        "at_most",
        note=f"beyond KARE's 10 % accuracy: {abs(ratio.mean() - 1.0) > 0.1}; "
        f"the issue's claim (within 10 % for λ in [1e-4, 1]) fails on the digits below "
        f"λ ≈ {DIGITS_CLAIM_RIDGES[0]:g}; exact leave-one-out / test risk = {loo:.3g} on draw "
        "0 at this λ: KARE replaces each point's leverage [(K + NλI)⁻¹]ᵢᵢ by their mean, and "
        "clustered data have uneven leverages (points uniform on the sphere do not); "
        f"{len(ratio)} draws, standard error {se:.3g}",
    )


def _rank_row(res: dict, dataset: str) -> Check:
    """Kernel ranking by min over λ of the mean risk vs of the mean KARE, at the largest N. A
    pair counts only when its risks differ by more than 2 standard errors of the paired
    per-draw difference (the kernels share the draws)."""
    i = len(res["n_train"]) - 1
    names = list(res["kernels"])
    risk = res["risk"][i]  # (K, D, R)
    kare = res["kare"][i].mean(axis=1)
    best = [int(np.argmin(risk[k].mean(axis=0))) for k in range(len(names))]
    discordant, resolved, text = 0, 0, []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            diff = risk[a, :, best[a]] - risk[b, :, best[b]]
            se = diff.std(ddof=1) / math.sqrt(len(diff))
            if abs(diff.mean()) <= 2 * se:
                text.append(f"{names[a]}~{names[b]} unresolved")
                continue
            resolved += 1
            agree = np.sign(diff.mean()) == np.sign(kare[a].min() - kare[b].min())
            discordant += int(not agree)
            text.append(
                f"{names[a]}{'<' if diff.mean() < 0 else '>'}{names[b]}"
                f"{'' if agree else ' (KARE disagrees)'}"
            )
    order = sorted(names, key=lambda nm: risk[names.index(nm)].mean(axis=0).min())
    return Check(
        "kare",
        f"{dataset}: KARE ranks the kernels as the test risk does (discordant pairs, best λ "
        f"of each), N = {int(res['n_train'][i])}",
        0.0,
        float(discordant),
        0.0,
        "abs",
        note=f"test-risk order {' < '.join(order)}; {resolved} resolved pairs "
        f"({'; '.join(text)}); a pair is resolved when the paired difference over draws "
        "exceeds 2 standard errors",
    )


def check(p: dict, outputs, *, sphere: str, digits: str) -> None:
    s, dg = _load(sphere, digits)
    claim_n = int(p["claim_n"])
    rows = _kare_rows(s, "sphere", claim_n) + _kare_rows(dg, "digits", claim_n, DIGITS_CLAIM_RIDGES)
    rows += [_leverage_row(dg, claim_n, k) for k in range(len(dg["kernels"]))]
    rows += [_rank_row(s, "sphere"), _rank_row(dg, "digits")]
    rel = max(float(np.max(np.abs(res["kare"][:, :, 0] / res["gcv"] - 1.0))) for res in (s, dg))
    rows.append(
        Check(
            "kare",
            "KARE equals generalized cross-validation TrainMSE/(1 − df/N)² (an identity): "
            "max relative difference",
            0.0,
            rel,
            1e-10,
            "at_most",
            note="KARE from one eigh per Gram, GCV from one linear solve per ridge; every kernel, "
            "N and ridge of the first draw of both data sets",
        )
    )
    i = _index(s, int(s["claim_n"]))
    n = int(s["n_train"][i])
    sel = _in_claim_range(s["ridges"])
    draws = s["risk"].shape[2]
    # (quantity, estimate, reference, stated accuracy, per-draw ratio) of the spectrum claims.
    spectrum_claims = (
        ("data-driven threshold 1/[(1/N)Tr(K/N+λ)⁻¹] / ϑ", "theta_hat", "sct_theta", 0.03, True),
        ("SCT risk from the Funk–Hecke spectrum / test risk", "sct_risk", "risk", 0.10, False),
    )
    for k, name in enumerate(s["kernels"]):
        for quantity, estimate, reference, bound, paired in spectrum_claims:
            mean, se, idx = _worst_ratio(s[estimate][i, k], s[reference][i, k], sel)
            claim = f"sphere, {LABELS[name]}: {quantity} − 1 at N = {n}, worst over λ in [1e-4, 1]"
            rows.append(_ratio_check(claim, mean, se, s["ridges"][idx], draws, bound, paired))
    z = np.abs(s["check_exact"] - s["check_held_out"]) / s["check_held_out_se"]
    count = z.size
    bound = float(scipy.stats.norm.isf(0.01 / (2 * count)))
    rows.append(
        Check(
            "kare",
            "sphere: the exact test risk (Funk–Hecke series) agrees with held-out points "
            "(max |difference| / standard error)",
            0.0,
            float(z.max()),
            bound,
            "at_most",
            note=f"draw 0 at N = {n}, {len(s['kernels'])} kernels x {len(s['ridges'])} ridges, "
            f"held-out points with noisy labels; tolerance: the two-sided 1% family-wise "
            f"(Bonferroni, {count} comparisons) Gaussian quantile",
        )
    )
    write_checks(outputs[0], rows)


def _sphere_mem(p: dict, wildcards) -> int:
    n = max(int(v) for v in p["n_train"])
    return 1000 + 40 * n * n * 8 // 2**20 + 200


EXPERIMENT = Experiment(
    name="kare",
    order=120,
    uses=("seed",),
    jobs=(
        Job("sphere", sphere, "sphere.npz", mem_mb=_sphere_mem, runtime=30),
        Job("digits", digits, "digits.npz", mem_mb=2000, runtime=20),
    ),
    plot=plot,
    check=check,
    figure_inputs={"sphere": "sphere", "digits": "digits"},
)
