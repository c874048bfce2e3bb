"""NTK paper, Figure 3: kernel PCA of the NTK and convergence along a principal component.

N inputs on the sphere of radius √n0 (scikit-learn's digits, or MNIST when config ``mnist``
points at its files). The kernel operator on the empirical distribution is the Gram matrix
divided by N, K = Θ(X, X)/N; its eigenvalues λ1 ≥ λ2 ≥ … and eigenvectors f(k), normalised to
‖f‖² = (1/N) Σ_i f(x_i)² = 1, are the kernel principal components.

With the half_mse loss C = 1/(2N) Σ (f − f*)² and a fixed kernel, gradient descent is
∂t f = (1/N) Θ (f* − f), so the residual f* − f_t decays like e^{−λ t} along an eigenvector
of K. A net is trained (full batch, t = step · lr) on f* = f0 + 0.5·f(2), where f0 is its own
output at initialisation: in the infinite-width limit the residual stays on the line of f(2)
and ‖g_t‖ = 0.5·e^{−λ2 t} exactly. At finite width we split the residual
f* − f_t = g_t + h_t into its component g_t along f(2) and the orthogonal rest h_t; both
deviations from the limit, |‖g_t‖ − 0.5 e^{−λ2 t}| and ‖h_t‖, are finite-width effects of
order 1/√n.

Jobs: ``images`` (the N inputs), ``kernel`` (Θ∞ Gram in float64 and empirical NTK Grams at
init of ``KERNEL_NETS`` nets of every width), ``spectrum`` (eigen-decompositions of the
Grams / N), ``train`` (one width, one trial); then ``plot`` and ``check``.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np
import torch

from ntk_repro import data as datasets
from ntk_repro import kernels
from ntk_repro.device import resolve_device
from ntk_repro.empirical import empirical_ntk
from ntk_repro.experiments import Experiment, Job, ensemble_mem_mb
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

log = logging.getLogger("ntk_repro")

TARGET_SCALE = 0.5  # f* = f0 + 0.5·f(2), as in the paper
N_COMPONENTS = 3  # principal components kept (f(1), f(2), f(3))
N_EIGENVALUES = 10  # eigenvalues drawn in the figure
# Nets per width whose NTK at init is computed in the kernel job. Nets 0 … trials−1 are the
# nets trained by the train jobs (same seeds); the extra ones measure the spread of the
# finite-width eigenvalues, from which the eigenvalue tolerance is derived.
KERNEL_NETS = 6
# Tolerances are this many times a measured fluctuation scale (≈ 3 standard deviations).
N_SIGMA = 3.0


def _architecture(p: dict) -> dict:
    return dict(
        depth=p["depth"],
        beta=p["beta"],
        activation=p["activation"],
        parametrization=p["parametrization"],
    )


def _net_seed(p: dict, width: int, trial: int) -> int:
    """Initialisation seed of net ``trial`` of a width: shared by the kernel and train jobs."""
    return derive_seed(p["seed"], "fig3", int(width), int(trial))


def _eval_steps(p: dict) -> list[int]:
    steps = list(range(0, p["steps"] + 1, p["record_every"]))
    if steps[-1] != p["steps"]:
        steps.append(p["steps"])
    return steps


# --- images ------------------------------------------------------------------------------------


def _mnist_labels_beside(path: str) -> str | None:
    """The IDX label file next to an IDX image file (MNIST's naming), if it exists."""
    folder, name = os.path.split(path)
    if "images-idx3" not in name:
        return None
    candidate = os.path.join(folder, name.replace("images-idx3", "labels-idx1"))
    return candidate if os.path.isfile(candidate) else None


def load_inputs(p: dict) -> tuple[np.ndarray, np.ndarray, str]:
    """The N = n_points inputs on the sphere ‖x‖² = n0.

    Returns x (N, n0) float64, labels (N,) int64 (−1 when the files carry none) and the name
    of the source. Raises ValueError naming the file when config ``mnist`` is a missing or
    malformed file.
    """
    n, seed = p["n_points"], derive_seed(p["seed"], "fig3", "data")
    if p.get("mnist"):
        path = os.path.expanduser(str(p["mnist"]))
        labels_path = _mnist_labels_beside(path) if os.path.isfile(path) else None
        x, labels = datasets.load_mnist(path, n, seed=seed, labels_path=labels_path)
        source = "MNIST"
    else:
        x, labels = datasets.digits_inputs(n, seed=seed)
        source = "digits"
    if labels is None:
        labels = np.full(n, -1, dtype=np.int64)
    return x, labels, source


def images(p: dict, outputs) -> None:
    """The inputs shared by every other stage: x (N, n0), labels (N,), source name.

    The first job of the experiment, so a bad ``mnist`` file fails before any compute.
    """
    x, labels, source = load_inputs(p)
    log.info("fig3 data: %d %s images of dimension %d", x.shape[0], source, x.shape[1])
    save_arrays(outputs[0], x=x, labels=labels, source=np.array(source))


# --- kernel ------------------------------------------------------------------------------------


def _init_net(p: dict, n0: int, width: int, trial: int, device) -> torch.nn.Module:
    """Net ``trial`` of a width at initialisation, exactly as the train job draws it
    (in the training dtype), then cast to float64 so that its NTK is computed accurately."""
    from ntk_repro.networks import MLP

    net = MLP(
        n0,
        int(width),
        p["depth"],
        beta=p["beta"],
        activation=p["activation"],
        parametrization=p["parametrization"],
        generator=torch.Generator().manual_seed(_net_seed(p, width, trial)),
        device=device,
        dtype=getattr(torch, p["dtype"]),
    )
    return net.to(torch.float64)


def kernel(p: dict, outputs, *, images: str) -> None:
    """Θ∞(X, X) (N, N) in float64 and the empirical NTK Grams (W, KERNEL_NETS, N, N) at init.

    Net k of width n is the net that trial k of the train jobs trains (same seed), so the
    Gram of "the wide net" is that of the net trained at the largest width in trial 0.
    """
    source = load_arrays(images)
    x = source["x"]
    device = resolve_device(p["device"])
    theta = kernels.theta_inf(x, **_architecture(p), device=device)
    widths = sorted(int(w) for w in p["widths"])
    n_nets = max(KERNEL_NETS, p["trials"])
    grams = np.empty((len(widths), n_nets, *theta.shape))
    seeds = np.empty((len(widths), n_nets), dtype=np.int64)
    x_t = torch.from_numpy(x).to(device=device, dtype=torch.float64)
    for i, width in enumerate(widths):
        for trial in range(n_nets):
            net = _init_net(p, x.shape[1], width, trial, device)
            grams[i, trial] = empirical_ntk(net, x_t).cpu().numpy()
            seeds[i, trial] = _net_seed(p, width, trial)
        log.info("fig3 kernels: empirical NTK of %d nets of width %d", n_nets, width)
    save_arrays(
        outputs[0],
        theta_inf=theta,
        empirical=grams,
        widths=np.array(widths),
        seeds=seeds,
        labels=source["labels"],
        source=source["source"],
    )


# --- spectrum ----------------------------------------------------------------------------------


def principal_components(gram: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Kernel PCA of a Gram matrix (N, N) on the empirical distribution of its N points.

    Returns all eigenvalues (N,) of Gram/N in decreasing order and the top ``count``
    eigenfunctions (N, count) on the points, normalised to (1/N) Σ_i f(x_i)² = 1 and signed
    so that the entry of largest magnitude is positive (a fixed convention: an eigenvector's
    sign is arbitrary).
    """
    n = gram.shape[0]
    values, vectors = np.linalg.eigh(gram / n)
    values, vectors = values[::-1].copy(), vectors[:, ::-1][:, :count] * math.sqrt(n)
    rows = np.abs(vectors).argmax(axis=0)
    vectors *= np.sign(vectors[rows, np.arange(vectors.shape[1])])
    return values, np.ascontiguousarray(vectors)


def spectrum(p: dict, outputs, *, kernel: str) -> None:
    """Eigenvalues and top principal components of Θ∞ and of every net's Gram at init.

    Output: eigenvalues (N,) and components (N, N_COMPONENTS) of Θ∞'s Gram/N;
    empirical_eigenvalues (W, nets, N_EIGENVALUES); empirical_overlaps (W, nets,
    N_COMPONENTS) = |⟨f(k)∞, f(k)n⟩| (1 = the same direction); widths, labels, source.
    """
    kernel = load_arrays(kernel)
    values, components = principal_components(kernel["theta_inf"], N_COMPONENTS)
    grams = kernel["empirical"]
    n = grams.shape[-1]
    emp_values = np.empty((*grams.shape[:2], N_EIGENVALUES))
    overlaps = np.empty((*grams.shape[:2], N_COMPONENTS))
    for i in range(grams.shape[0]):
        for j in range(grams.shape[1]):
            v, f = principal_components(grams[i, j], N_COMPONENTS)
            emp_values[i, j] = v[:N_EIGENVALUES]
            overlaps[i, j] = np.abs((f * components).sum(axis=0)) / n
    log.info(
        "fig3 spectrum: top eigenvalues of Theta_inf Gram/N %s",
        np.array2string(values[:4], precision=5),
    )
    save_arrays(
        outputs[0],
        eigenvalues=values,
        components=components,
        empirical_eigenvalues=emp_values,
        empirical_overlaps=overlaps,
        widths=kernel["widths"],
        labels=kernel["labels"],
        source=kernel["source"],
    )


# --- train -------------------------------------------------------------------------------------


def train(p: dict, outputs, *, images: str, spectrum: str, width: str, trial: str) -> None:
    """Train one net on f* = f0 + 0.5·f(2); record f on the N inputs every record_every steps.

    Reads the ``images`` and ``spectrum`` files. Output: f_eval (E, N) in the training dtype at
    eval_steps (E,), t = eval_steps · lr, the target (N,) and f0 (N,), losses (steps + 1,).
    """
    width, trial = int(width), int(trial)
    x = load_arrays(images)["x"]
    spec = load_arrays(spectrum)
    f2 = spec["components"][:, 1]
    lam2 = float(spec["eigenvalues"][1])
    t_end = p["steps"] * p["lr"]
    if lam2 * t_end < 1.0:
        log.warning(
            "fig3: lambda2 * t = %.3g at the last step; the decay along f(2) is barely "
            "visible (raise fig3.steps to about %d)",
            lam2 * t_end,
            math.ceil(3.0 / (lam2 * p["lr"])),
        )
    common = dict(
        width=width,
        **_architecture(p),
        seeds=[_net_seed(p, width, trial)],
        lr=p["lr"],
        loss=p["loss"],
        x_eval=x,
        dtype=getattr(torch, p["dtype"]),
        device=resolve_device(p["device"]),
        name=f"fig3 width={width} trial={trial}",
    )
    # f0 in exactly the arithmetic of the training run: the same trainer, zero steps.
    f0 = train_ensemble(x, np.zeros(len(x)), steps=0, eval_steps=(0,), **common).f_eval[0, 0]
    target = f0.astype(np.float64) + TARGET_SCALE * f2
    eval_steps = _eval_steps(p)
    result = train_ensemble(x, target, steps=p["steps"], eval_steps=eval_steps, **common)
    arrays = result.arrays()
    save_arrays(
        outputs[0],
        width=np.int64(width),
        trial=np.int64(trial),
        seed=arrays["seeds"][0],
        lr=arrays["lr"],
        eval_steps=arrays["eval_steps"],
        t=arrays["eval_steps"] * float(p["lr"]),
        f_eval=arrays["f_eval"][0],
        losses=arrays["losses"][0],
        target=target,
        f0=f0,
    )


# --- analysis ----------------------------------------------------------------------------------


def decompose(f_eval: np.ndarray, target: np.ndarray, direction: np.ndarray):
    """Split the residual f* − f_t = g_t + h_t along a unit direction (‖d‖² = mean d² = 1).

    f_eval (E, N), target (N,), direction (N,) → ‖g_t‖ (E,) and ‖h_t‖ (E,) in the norm
    ‖u‖² = (1/N) Σ_i u(x_i)² of the empirical distribution.
    """
    residual = target[None, :] - f_eval.astype(np.float64)
    n = residual.shape[1]
    along = residual @ direction / n
    rest = residual - along[:, None] * direction[None, :]
    return np.abs(along), np.sqrt((rest * rest).mean(axis=1))


def _load(spectrum_path: str, run_paths: list[str]):
    spec = load_arrays(spectrum_path)
    runs = sorted(
        (load_arrays(path) for path in run_paths), key=lambda r: (int(r["width"]), int(r["trial"]))
    )
    f2 = spec["components"][:, 1]
    lam2 = float(spec["eigenvalues"][1])
    for r in runs:
        name = f"fig3 width={int(r['width'])} trial={int(r['trial'])}"
        require_finite(name, f_eval=r["f_eval"], losses=r["losses"])
        r["g"], r["h"] = decompose(r["f_eval"], r["target"], f2)
        r["g_limit"] = TARGET_SCALE * np.exp(-lam2 * r["t"])
        # max_t |‖g_t‖ − 0.5 e^{−λ2 t}| / 0.5: the relative deviation from the kernel limit.
        r["g_dev"] = float(np.abs(r["g"] - r["g_limit"]).max() / TARGET_SCALE)
    return spec, runs


def _by_width(runs, key):
    """{width: array of ``key`` over the trials of that width}, widths increasing."""
    out: dict[int, list] = {}
    for r in runs:
        out.setdefault(int(r["width"]), []).append(r[key])
    return {w: np.array(v) for w, v in sorted(out.items())}


# --- figure ------------------------------------------------------------------------------------


_COLORS = ["tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange"]


def plot(p: dict, outputs, *, spectrum: str, runs: list[str]) -> None:
    spec, runs = _load(spectrum, runs)
    lam = spec["eigenvalues"]
    source = str(spec["source"])
    fig, axes = new_figure(2, 2, width=9.6, height=7.0)
    _panel_eigenvalues(axes[0, 0], spec)
    _panel_components(fig, axes[0, 1], spec)
    _panel_residuals(axes[1, 0], spec, runs)
    _panel_path(axes[1, 1], runs)
    fig.suptitle(
        f"Figure 3: N = {len(lam)} {source} inputs, L = {p['depth']}, β = {p['beta']}, "
        f"lr = {p['lr']}, trials per width = {p['trials']}"
    )
    save_figure(fig, outputs)


def _width_color(runs, run) -> str:
    """The colour of a run's width: widths in increasing order take the colours in turn."""
    widths = sorted({int(r["width"]) for r in runs})
    return _COLORS[widths.index(int(run["width"])) % len(_COLORS)]


def _panel_eigenvalues(ax, spec) -> None:
    """The top eigenvalues of every net's Gram/N at init, next to those of Θ∞."""
    lam = spec["eigenvalues"]
    ks = np.arange(1, N_EIGENVALUES + 1)
    for i, width in enumerate(spec["widths"]):
        vals = spec["empirical_eigenvalues"][i]  # (nets, N_EIGENVALUES)
        shift = 0.12 * (i + 1)
        ax.plot(
            np.repeat(ks[None] + shift, len(vals), 0).ravel(),
            vals.ravel(),
            ".",
            color=_COLORS[i % len(_COLORS)],
            ms=3,
            alpha=0.7,
            label=f"n = {int(width)} at init",
        )
    ax.plot(ks, lam[:N_EIGENVALUES], "_", color="black", ms=14, mew=2, label="Θ∞")
    ax.set_yscale("log")
    ax.set_xticks(ks)
    ax.set_xlabel("k")
    ax.set_ylabel("λ_k of Gram / N")
    ax.set_title(f"NTK kernel PCA: λ1 = {lam[0]:.4g}, λ2 = {lam[1]:.4g}, λ3 = {lam[2]:.4g}")
    ax.legend()


def _panel_components(fig, ax, spec) -> None:
    """f(3) against f(2) on the inputs, coloured by class when the labels are known."""
    comps, labels = spec["components"], spec["labels"]
    source = str(spec["source"])
    if (labels >= 0).any():
        sc = ax.scatter(comps[:, 1], comps[:, 2], c=labels, cmap="tab10", s=6, vmin=-0.5, vmax=9.5)
        fig.colorbar(sc, ax=ax, ticks=range(10), label="class")
    else:
        ax.scatter(comps[:, 1], comps[:, 2], s=6, color="0.3")
    ax.set_xlabel("f(2)(x)")
    ax.set_ylabel("f(3)(x)")
    ax.set_title(f"2nd and 3rd principal components of Θ∞ ({source})")


def _panel_residuals(ax, spec, runs) -> None:
    """‖g_t‖ and ‖h_t‖ over t for every run, against the kernel limit 0.5·exp(−λ2 t)."""
    t = runs[0]["t"]
    ax.plot(t, runs[0]["g_limit"], color="black", lw=1.6, label="0.5·exp(−λ2 t)")
    for r in runs:
        c = _width_color(runs, r)
        first = int(r["trial"]) == 0
        ax.plot(
            r["t"],
            r["g"],
            "-",
            color=c,
            lw=0.9,
            label=f"‖g_t‖, n = {int(r['width'])}" if first else None,
        )
        # h_0 = 0 exactly (the residual starts on f(2)): drawn from the first record on.
        ax.plot(
            r["t"][1:],
            r["h"][1:],
            "--",
            color=c,
            lw=0.9,
            label=f"‖h_t‖, n = {int(r['width'])}" if first else None,
        )
    ax.set_yscale("log")
    floor = min(min(r["g"].min(), r["h"][1:].min()) for r in runs)
    ax.set_ylim(bottom=0.5 * floor)
    ax.set_xlabel("t")
    ax.set_ylabel("norm of the residual part")
    ax.set_title(
        f"Residual along f(2) (g) and orthogonal to it (h); λ2·t_end = "
        f"{float(spec['eigenvalues'][1] * t[-1]):.2f}"
    )
    ax.legend(ncol=2)


def _panel_path(ax, runs) -> None:
    """The path (‖g_t‖, ‖h_t‖) of every run; the kernel limit is the line h = 0."""
    for r in runs:
        ax.plot(
            r["g"],
            r["h"],
            "-",
            color=_width_color(runs, r),
            lw=0.9,
            label=f"n = {int(r['width'])}" if int(r["trial"]) == 0 else None,
        )
    ax.axhline(0.0, color="black", lw=1.2, label="n = ∞ (straight line)")
    ax.set_xlim(TARGET_SCALE * 1.02, 0)
    ax.set_xlabel("‖g_t‖ (t increases to the right)")
    ax.set_ylabel("‖h_t‖")
    ax.set_title("Deviation of f_t from the straight line to f*")
    ax.legend()


# --- checks ------------------------------------------------------------------------------------


def check(p: dict, outputs, *, spectrum: str, runs: list[str]) -> None:
    spec, runs = _load(spectrum, runs)
    widths = [int(w) for w in spec["widths"]]
    n_small, n_wide = widths[0], widths[-1]
    rows = _gap_rows(spec["eigenvalues"])
    rows += _eigenvalue_rows(spec, n_small, n_wide)
    rows += _training_rows(spec["eigenvalues"], runs, n_small, n_wide)
    write_checks(outputs[0], rows)


def _shrink(n_small: int, n_wide: int) -> float:
    """Fluctuations of a finite-width NTK around Θ∞ scale like 1/√n: a spread measured at the
    smallest width predicts the spread at the widest, times this factor."""
    return math.sqrt(n_small / n_wide)


def _gap_rows(lam: np.ndarray) -> list[Check]:
    """The spectrum of Θ∞: f(1) and f(2) are separate, simple directions."""
    return [
        Check(
            "fig3",
            "Θ∞ Gram/N: λ1 > λ2 (gap λ1 − λ2)",
            0.0,
            lam[0] - lam[1],
            0.0,
            "at_least",
            note=f"paper (MNIST): 0.0457 − 0.00108 = 0.0446; here λ1/λ2 = "
            f"{lam[0] / lam[1]:.3g} (paper 42)",
        ),
        Check(
            "fig3",
            "Θ∞ Gram/N: λ2 ≥ λ3 (gap λ2 − λ3)",
            0.0,
            lam[1] - lam[2],
            0.0,
            "at_least",
            note=f"paper (MNIST): 0.00108 − 0.00078 = 0.0003; here (λ2 − λ3)/λ2 = "
            f"{(lam[1] - lam[2]) / lam[1]:.3g} (paper 0.28): f(2) is a simple direction",
        ),
    ]


def _eigenvalue_rows(spec, n_small: int, n_wide: int) -> list[Check]:
    """The top eigenvalues of the widest net at init against those of Θ∞."""
    lam = spec["eigenvalues"]
    emp = spec["empirical_eigenvalues"]  # (W, nets, N_EIGENVALUES)
    rel = emp[..., :N_COMPONENTS] / lam[None, None, :N_COMPONENTS] - 1.0
    n_nets = emp.shape[1]
    rows = []
    for k in range(N_COMPONENTS):
        rms_small = float(np.sqrt(np.mean(rel[0, :, k] ** 2)))
        rows.append(
            Check(
                "fig3",
                f"λ{k + 1} of the n = {n_wide} net at init vs Θ∞: relative difference",
                0.0,
                rel[-1, 0, k],
                N_SIGMA * rms_small * _shrink(n_small, n_wide),
                "abs",
                note=f"tolerance {N_SIGMA:g} x RMS relative difference over {n_nets} nets at "
                f"n = {n_small} ({rms_small:.3g}) x sqrt({n_small}/{n_wide}) (1/sqrt(n) "
                f"fluctuations); RMS at n = {n_wide}: "
                f"{float(np.sqrt(np.mean(rel[-1, :, k] ** 2))):.3g}",
            )
        )
    return rows


def _training_rows(lam: np.ndarray, runs, n_small: int, n_wide: int) -> list[Check]:
    """Training along f(2): ‖g_t‖ follows the kernel limit and ‖h_t‖ shrinks with width."""
    shrink = _shrink(n_small, n_wide)
    g_dev = _by_width(runs, "g_dev")
    dev_small = float(np.sqrt(np.mean(g_dev[n_small] ** 2)))
    h_max = {w: np.array([h.max() for h in hs]) for w, hs in _by_width(runs, "h").items()}
    ratio = float(h_max[n_wide].mean() / h_max[n_small].mean())
    return [
        Check(
            "fig3",
            f"max_t |‖g_t‖ − 0.5 exp(−λ2 t)| / 0.5 at n = {n_wide} (worst trial)",
            0.0,
            g_dev[n_wide].max(),
            N_SIGMA * dev_small * shrink,
            "abs",
            note=f"tolerance {N_SIGMA:g} x RMS over trials at n = {n_small} ({dev_small:.3g}) x "
            f"sqrt({n_small}/{n_wide}): the deviation from the kernel limit is O(1/sqrt(n)); "
            f"λ2 = {lam[1]:.4g}, λ2·t_end = {lam[1] * runs[0]['t'][-1]:.2f}",
        ),
        Check(
            "fig3",
            f"max_t ‖h_t‖ shrinks with width: ratio n = {n_wide} / n = {n_small}",
            1.0,
            ratio,
            0.0,
            "at_most",
            note=f"trial means {h_max[n_small].mean():.3g} -> {h_max[n_wide].mean():.3g}; "
            f"1/sqrt(n) scaling predicts {shrink:.3g}",
        ),
    ]


def _kernel_mem_mb(p: dict, wildcards) -> int:
    # float64 nets of the widest width (~10 bytes per weight with the NTK factors): width 10000,
    # depth 4 of the paper preset needs ~5.4 GB, extrapolated from widths 1000-4000.
    return max(4000, 2000 + max(p["widths"]) ** 2 * p["depth"] * 10 // 2**20)


EXPERIMENT = Experiment(
    name="fig3",
    order=30,
    uses=("seed", "device", "model", "training"),
    jobs=(
        Job("images", images, "images.npz"),
        Job(
            "kernel",
            kernel,
            "kernel.npz",
            inputs={"images": "images"},
            threads=2,
            gpu=True,
            mem_mb=_kernel_mem_mb,
            runtime=60,
        ),
        Job(
            "spectrum",
            spectrum,
            "spectrum.npz",
            inputs={"kernel": "kernel"},
            threads=2,
            mem_mb=2000,
            runtime=20,
        ),
        Job(
            "train",
            train,
            "train_w{width}_t{trial}.npz",
            each=lambda p: [
                {"width": w, "trial": t} for w in p["widths"] for t in range(p["trials"])
            ],
            inputs={"images": "images", "spectrum": "spectrum"},
            threads=2,
            gpu=True,
            mem_mb=ensemble_mem_mb,
            runtime=240,
        ),  # one net: no inits
    ),
    plot=plot,
    check=check,
    figure_inputs={"spectrum": "spectrum", "runs": "train"},
)
