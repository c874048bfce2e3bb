"""Freeze & Chaos, GANs: a generator in the freeze collapses, a chaotic one covers the modes,
and Batch Normalization stops the collapse to a point but not the collapse onto few modes.

The target is the classic ring of ``modes`` Gaussians (radius ``radius``, standard deviation
``std``) in the plane. The generator is an :class:`ntk_repro.networks.MLP` in the balanced
parametrisation from a Gaussian code z to R², trained by plain gradient descent (SGD), so that
its evolution is governed by its NTK over codes; the discriminator is an ordinary fully
connected net with LeakyReLU trained by Adam (not under study). Four generators:

- ``freeze`` (β = ``beta_freeze``, r < 1): its NTK over codes is nearly constant, so every update
  moves all samples together and they stay bunched;
- ``chaos`` (β = ``beta_chaos``, r > 1): its NTK is close to diagonal, samples move on their own;
- ``bn_last``: the freeze generator with BatchNorm after its last non-linearity (the form the
  paper analyses: it leaves only the output bias in the NTK's constant mode);
- ``bn_all``: the freeze generator with BatchNorm after every non-linearity, as DCGAN
  generators use it in every hidden layer (here after σ, the paper's placement).

BatchNorm uses the statistics of the batch, without running statistics or affine parameters,
in training and evaluation alike (evaluation batches hold ``eval_samples`` codes).

Measured along training, for each of ``seeds`` GANs: the modes covered (a sample is of good
quality if it lies within 3·std of a mode centre; a mode is covered if at least
``cover_share`` of the samples are of good quality and nearest to it) and the generator's
output variance over codes, tr Cov_z G(z), against the target's r² + 2·std² (collapse to a
point: it stays near 0). At initialisation and at the end, the generator's empirical NTK over
``kernel_codes`` codes (float64, traced over the two outputs) is summarised by
:func:`kernel_shares`; for the nets without BatchNorm also the limit Θ∞ on the same codes.

All seeds of one generator train at once: their parameters are stacked and the forward pass is
vectorised over seeds (``torch.func``). The losses of the seeds are summed, so each seed's
gradient, SGD step and Adam step are those it would have alone.

Jobs: ``train`` with ``net`` in NETS; then ``plot`` and ``check``.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from ntk_repro.device import resolve_device
from ntk_repro.empirical import empirical_ntk
from ntk_repro.experiments import Experiment, Job
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

# name -> (config key of its β, MLP norm)
VARIANTS = {
    "freeze": ("beta_freeze", None),
    "chaos": ("beta_chaos", None),
    "bn_last": ("beta_freeze", "batch_last"),
    "bn_all": ("beta_freeze", "batch"),
}
NETS = tuple(VARIANTS)
BN_NETS = ("bn_last", "bn_all")
Z = 3.0
# The one "collapse" criterion (ours, not a number of the papers): a generator has collapsed
# when it covers at most this share of the modes, or when its output variance over codes is at
# most this share of the target's; above it, it has not. Criterion rows check the 3-SE
# confidence bound over seeds on the claimed side, with no tolerance.
COLLAPSE_SHARE = 0.25
# Relative NTK change over training: at most LAZY_CHANGE is "stays in the kernel regime", at
# least MOVED_CHANGE "has left it" (ours).
LAZY_CHANGE = 0.2
MOVED_CHANGE = 0.5
# A standard error from the spread over seeds needs at least this many seeds.
MIN_SEEDS = 3
# The BN identity (1/N²) Σ_ij Θ_aa(z_i, z_j) = β² holds exactly; float64 rounding of a sum of
# N² Jacobian products stays far below this.
IDENTITY_TOL = 1e-9


def mode_centres(p: dict) -> np.ndarray:
    angles = 2 * math.pi * np.arange(p["modes"]) / p["modes"]
    return p["radius"] * np.stack([np.cos(angles), np.sin(angles)], 1)


def target_variance(p: dict) -> float:
    """tr Cov of the ring mixture: radius² + 2·std²."""
    return p["radius"] ** 2 + 2 * p["std"] ** 2


def sample_ring(p: dict, n: int, generator: torch.Generator) -> torch.Tensor:
    """n samples (n, 2) of the ring mixture, float32 on the CPU."""
    centres = torch.as_tensor(mode_centres(p), dtype=torch.float32)
    idx = torch.randint(p["modes"], (n,), generator=generator)
    return centres[idx] + p["std"] * torch.randn(n, 2, generator=generator)


def coverage(p: dict, x: np.ndarray) -> tuple[int, float]:
    """(number of covered modes, share of good-quality samples) of samples x (n, 2)."""
    centres = mode_centres(p)
    dist = np.linalg.norm(x[:, None, :] - centres[None], axis=-1)
    nearest, good = dist.argmin(1), dist.min(1) < 3 * p["std"]
    counts = np.bincount(nearest[good], minlength=p["modes"])
    return int((counts >= p["cover_share"] * len(x)).sum()), float(good.mean())


def kernel_shares(theta: np.ndarray, z: np.ndarray) -> dict[str, float]:
    """Where an NTK Gram Θ (N, N) over codes z (N, d) puts its trace.

    ``constant`` = 1ᵀΘ1 / (N tr Θ): 1 when every update moves all samples alike (Θ constant),
    1/N when Θ ∝ I. Of the centred Gram Θc = CΘC (C = I − 11ᵀ/N, the part that moves samples
    apart): ``participation`` = (tr Θc)² / ‖Θc‖_F², the effective number of directions it moves
    samples in (N for Θc ∝ C, 1 for rank one), and ``linear`` = the share of tr Θc in the span
    of the centred linear functions of z (moves that only stretch the code distribution).
    """
    theta = np.asarray(theta, dtype=np.float64)
    n = theta.shape[0]
    centred = theta - theta.mean(0, keepdims=True)
    centred = centred - centred.mean(1, keepdims=True)
    basis, _ = np.linalg.qr(np.asarray(z, np.float64) - np.mean(z, 0))
    trace_c = np.trace(centred)
    return {
        "constant": float(theta.sum() / (n * np.trace(theta))),
        "participation": float(trace_c**2 / np.sum(centred**2)),
        "linear": float(np.trace(basis.T @ centred @ basis) / trace_c),
    }


SHARES = ("constant", "participation", "linear")


def _generator(p: dict, net: str, seed: int, dev) -> MLP:
    if net not in VARIANTS:
        raise ValueError(f"net {net!r} is unknown; choose one of {list(NETS)}")
    beta_key, norm = VARIANTS[net]
    return MLP(
        p["latent_dim"],
        p["generator_width"],
        p["generator_depth"],
        beta=p[beta_key],
        activation=p["activation"],
        parametrization=p["parametrization"],
        out_dim=2,
        norm=norm,
        generator=torch.Generator().manual_seed(seed),
        device=dev,
    )


def _discriminator(p: dict, seed: int, dev) -> nn.Module:
    with torch.random.fork_rng(devices=[]):  # torch's default init, from this seed only
        torch.manual_seed(seed)
        w = p["discriminator_width"]
        disc = nn.Sequential(
            nn.Linear(2, w), nn.LeakyReLU(0.2), nn.Linear(w, w), nn.LeakyReLU(0.2), nn.Linear(w, 1)
        )
    return disc.to(dev)


class _Stacked:
    """The parameters of one module per seed, stacked (leaves with requires_grad), and the
    forward pass vectorised over seeds: (S, B, ...) → (S, B, ...)."""

    def __init__(self, modules: list[nn.Module]):
        self.params, _ = stack_module_state(modules)
        self.template = modules[0]
        skeleton = copy.deepcopy(modules[0]).to("meta")
        self._forward = torch.vmap(lambda prm, x: functional_call(skeleton, prm, (x,)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(self.params, x)

    def member(self, k: int, dtype: torch.dtype) -> nn.Module:
        """Seed k's module as an ordinary copy, detached, in ``dtype``."""
        module = copy.deepcopy(self.template)
        module.load_state_dict({n: t[k].detach() for n, t in self.params.items()})
        return module.to(dtype)


def _generator_grams(gens: _Stacked, codes: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Each seed's empirical NTK over its codes (S, N, d) in float64: the Gram traced over the
    two outputs (S, N, N), and the constant mode (1/N²) Σ_ij Θ_aa(z_i, z_j) per output a
    (S, 2). With BatchNorm it is the kernel of the whole batch's output."""
    grams, constants = [], []
    for k, z in enumerate(codes):
        theta = empirical_ntk(gens.member(k, torch.float64), z.to(torch.float64))  # (N,N,2,2)
        grams.append((theta[..., 0, 0] + theta[..., 1, 1]).cpu().numpy())
        constants.append(theta.mean(dim=(0, 1)).diagonal().cpu().numpy())
    return np.stack(grams), np.stack(constants)


def _shares(grams: np.ndarray, codes: torch.Tensor) -> np.ndarray:
    """kernel_shares of each seed's Gram: (S, len(SHARES))."""
    z = codes.to(torch.float64).cpu().numpy()
    return np.array([[kernel_shares(g, zk)[s] for s in SHARES] for g, zk in zip(grams, z)])


def _limit_kernels(p: dict, net: str, codes: torch.Tensor) -> np.ndarray:
    """kernel_shares of Θ∞ on each seed's codes (nets without BatchNorm; NaN otherwise)."""
    out = np.full((codes.shape[0], len(SHARES)), np.nan)
    if VARIANTS[net][1] is not None:
        return out
    for k, z in enumerate(codes):
        z64 = z.to(torch.float64).cpu().numpy()
        gram = theta_inf(
            z64,
            depth=p["generator_depth"],
            beta=p[VARIANTS[net][0]],
            activation=p["activation"],
            parametrization=p["parametrization"],
        )
        shares = kernel_shares(gram, z64)
        out[k] = [shares[s] for s in SHARES]
    return out


def _seed_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each seed's mean BCE over its batch, summed over seeds (S, B, 1) → scalar."""
    loss = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return loss.mean(dim=(1, 2)).sum()


def _train_loop(p: dict, gens: _Stacked, discs: _Stacked, data_rngs, evaluate) -> None:
    """``steps`` GAN steps of every seed at once; ``evaluate(step)`` at every step."""
    dev = next(iter(gens.params.values())).device
    opt_g = torch.optim.SGD(list(gens.params.values()), lr=p["lr_generator"])
    opt_d = torch.optim.Adam(
        list(discs.params.values()), lr=p["lr_discriminator"], betas=(0.5, 0.999)
    )
    shape = (len(data_rngs), p["batch_size"], 1)
    ones, zeros = torch.ones(shape, device=dev), torch.zeros(shape, device=dev)
    for step in range(p["steps"] + 1):
        evaluate(step)
        if step == p["steps"]:
            return
        real = torch.stack([sample_ring(p, p["batch_size"], r) for r in data_rngs]).to(dev)
        z = torch.stack(
            [torch.randn(p["batch_size"], p["latent_dim"], generator=r) for r in data_rngs]
        ).to(dev)
        fake = gens(z)
        loss_d = _seed_loss(discs(real), ones) + _seed_loss(discs(fake.detach()), zeros)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = _seed_loss(discs(fake), ones)  # non-saturating generator loss
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()


def _codes(p: dict, seeds: list[int], offset: int, n: int, dev) -> torch.Tensor:
    """n Gaussian codes per seed (S, n, latent_dim), each seed's from its own stream."""
    draws = [
        torch.randn(n, p["latent_dim"], generator=torch.Generator().manual_seed(s + offset))
        for s in seeds
    ]
    return torch.stack(draws).to(dev)


def check_config(p: dict) -> None:
    """The relation between keys the schema cannot state: the experiment's ``validate``."""
    if p["kernel_codes"] <= p["latent_dim"] + 1:
        raise ValueError(
            f"gan.kernel_codes = {p['kernel_codes']} must exceed gan.latent_dim + 1 = "
            f"{p['latent_dim'] + 1} (the linear functions of the codes need room)"
        )


def train(p: dict, outputs, *, net: str) -> None:
    """Train ``seeds`` GANs with the ``net`` generator; record coverage, output variance and
    the generator's NTK summary. Seed k is the same for every net (paired comparisons)."""
    if net not in VARIANTS:
        raise ValueError(f"net {net!r} is unknown; choose one of {list(NETS)}")
    check_config(p)
    dev = resolve_device(p["device"])
    seeds = [derive_seed(p["seed"], "gan", k) for k in range(p["seeds"])]
    gens = _Stacked([_generator(p, net, s, dev) for s in seeds])
    discs = _Stacked([_discriminator(p, s + 1, dev) for s in seeds])
    data_rngs = [torch.Generator().manual_seed(s + 2) for s in seeds]
    eval_z = _codes(p, seeds, 3, p["eval_samples"], dev)
    kernel_z = _codes(p, seeds, 4, p["kernel_codes"], dev)
    grams_init, constant_init = _generator_grams(gens, kernel_z)
    eval_steps = sorted(set(range(0, p["steps"] + 1, p["eval_every"])) | {p["steps"]})
    covered = np.zeros((len(seeds), len(eval_steps)))
    quality, variance = np.zeros_like(covered), np.zeros_like(covered)
    finals = np.zeros((len(seeds), p["plot_samples"], 2))

    def evaluate(step: int) -> None:
        if step not in eval_steps:
            return
        with torch.no_grad():
            x = gens(eval_z).cpu().numpy().astype(np.float64)
        diverged = np.flatnonzero(~np.isfinite(x).all(axis=(1, 2)))
        if diverged.size:
            raise RuntimeError(f"gan {net} seeds {list(diverged)}: diverged at step {step}")
        j = eval_steps.index(step)
        for k in range(len(seeds)):
            covered[k, j], quality[k, j] = coverage(p, x[k])
        variance[:, j] = x.var(axis=1).sum(axis=-1)
        finals[:] = x[:, : p["plot_samples"]]

    _train_loop(p, gens, discs, data_rngs, evaluate)
    grams_end, _ = _generator_grams(gens, kernel_z)
    save_arrays(
        outputs[0],
        covered=covered,
        quality=quality,
        variance=variance,
        steps=np.array(eval_steps),
        final_samples=finals,
        kernels_init=_shares(grams_init, kernel_z),
        kernels_end=_shares(grams_end, kernel_z),
        kernels_limit=_limit_kernels(p, net, kernel_z),
        kernel_change=np.linalg.norm(grams_end - grams_init, axis=(1, 2))
        / np.linalg.norm(grams_init, axis=(1, 2)),
        constant_mode=constant_init,
        modes=np.int64(p["modes"]),
    )


def _load(paths: list[str]):
    """The GANs' results by name: ``paths`` in the order of NETS."""
    if len(paths) != len(NETS):
        raise ValueError(f"gan needs one file per net {list(NETS)}, got {paths}")
    runs = {}
    for name, path in zip(NETS, paths):
        run = load_arrays(path)
        require_finite(
            f"gan {name}",
            covered=run["covered"],
            variance=run["variance"],
            final_samples=run["final_samples"],
            kernels_init=run["kernels_init"],
            kernels_end=run["kernels_end"],
            kernel_change=run["kernel_change"],
            constant_mode=run["constant_mode"],
            quality=run["quality"],
        )
        runs[name] = run
    return runs


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard error over seeds (axis 0)."""
    values = np.asarray(values, dtype=np.float64)
    return values.mean(0), values.std(0, ddof=1) / math.sqrt(values.shape[0])


_STYLE = {"freeze": "tab:blue", "chaos": "tab:red", "bn_last": "tab:green", "bn_all": "tab:purple"}
_LABEL = {
    "freeze": "freeze (β = {b})",
    "chaos": "chaos (β = {b})",
    "bn_last": "freeze + BN after the last layer",
    "bn_all": "freeze + BN after every layer",
}


def _beta(p: dict, name: str) -> float:
    return p[VARIANTS[name][0]]


def _plot_curves(p: dict, runs: dict, ax_cover, ax_var) -> None:
    for name in NETS:
        run, color = runs[name], _STYLE[name]
        label = _LABEL[name].format(b=_beta(p, name))
        for ax, values in ((ax_cover, run["covered"]), (ax_var, run["variance"])):
            mean, se = _mean_se(values / (1.0 if ax is ax_cover else target_variance(p)))
            ax.plot(run["steps"], mean, color=color, label=label)
            ax.fill_between(run["steps"], mean - se, mean + se, color=color, alpha=0.2)
    ax_cover.set_ylabel(f"modes covered (of {p['modes']})")
    ax_cover.set_ylim(0, p["modes"] + 0.3)
    ax_cover.set_title(f"mode coverage, mean ± SE of {p['seeds']} GANs", fontsize=9)
    ax_cover.legend(loc="upper left", fontsize=7)
    ax_var.set_yscale("log")
    ax_var.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax_var.set_ylabel("output variance over codes / target's")
    ax_var.set_title("tr Cov_z G(z): collapse to a point → 0", fontsize=9)
    for ax in (ax_cover, ax_var):
        ax.set_xlabel("training step")


def _plot_kernels(p: dict, runs: dict, ax) -> None:
    """Constant share and participation ratio of each generator's NTK at initialisation, and
    the relative change of the NTK over training."""
    x = np.arange(len(NETS))
    bars = (
        ("constant share", 0, None),
        ("participation / N", 1, "//"),
        ("NTK change, init → end", None, ".."),
    )
    for offset, (key, col, hatch) in enumerate(bars):
        at = x + 0.27 * (offset - 1)
        if col is None:
            values = {n: runs[n]["kernel_change"] for n in NETS}
        else:
            scale = 1.0 if col == 0 else 1.0 / p["kernel_codes"]
            values = {n: runs[n]["kernels_init"][:, col] * scale for n in NETS}
            limits = [runs[n]["kernels_limit"][0, col] * scale for n in NETS]
            ax.plot(at, np.array(limits), "k_", ms=10, mew=2)  # NaN for BN: no marker
        means, ses = zip(*(_mean_se(values[n]) for n in NETS))
        colors = [_STYLE[n] for n in NETS]
        ax.bar(
            at,
            means,
            0.25,
            yerr=ses,
            hatch=hatch,
            label=key,
            color=colors,
            alpha=0.9 - 0.25 * offset,
            edgecolor="black",
        )
    ax.set_xticks(x, [n.replace("_", "\n") for n in NETS], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(top=8.0)  # room for the legend above the bars
    ax.set_title(f"generator NTK over N = {p['kernel_codes']} codes (— = Θ∞ at init)", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")


def plot(p: dict, outputs, *, runs: list[str]) -> None:
    runs = _load(runs)
    fig, axes = new_figure(2, 4, width=13.0, height=6.4)
    _plot_curves(p, runs, axes[0, 0], axes[0, 1])
    _plot_kernels(p, runs, axes[0, 2])
    ax = axes[0, 3]
    for name in NETS:
        mean, se = _mean_se(runs[name]["quality"])
        ax.plot(runs[name]["steps"], mean, color=_STYLE[name])
        ax.fill_between(runs[name]["steps"], mean - se, mean + se, color=_STYLE[name], alpha=0.2)
    ax.set_xlabel("training step")
    ax.set_ylabel("share of samples within 3 std of a mode")
    ax.set_title("sample quality", fontsize=9)
    centres, lim = mode_centres(p), p["radius"] + 1.0
    for ax, name in zip(axes[1], NETS):
        x = runs[name]["final_samples"][0]
        ax.scatter(x[:, 0], x[:, 1], s=2, color=_STYLE[name], alpha=0.5)
        ax.scatter(centres[:, 0], centres[:, 1], marker="x", color="black", s=25)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(f"{name}: samples after {p['steps']} steps (seed 0)", fontsize=8)
    save_figure(fig, outputs)


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean of a − b over seeds and its standard error (the seeds are paired)."""
    mean, se = _mean_se(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return float(mean), float(se)


def check(p: dict, outputs, *, runs: list[str]) -> None:
    runs = _load(runs)
    seeds = runs["freeze"]["covered"].shape[0]
    cover = {n: runs[n]["covered"][:, -1] for n in NETS}
    spread = {n: runs[n]["variance"][:, -1] / target_variance(p) for n in NETS}
    too_few = (
        ""
        if seeds >= MIN_SEEDS
        else f"{seeds} seeds < {MIN_SEEDS}: the spread of so few seeds is no basis for a 3-SE bound"
    )
    summary = ", ".join(
        f"{n} {cover[n].mean():.2f} modes / variance {spread[n].mean():.3f}" for n in NETS
    )
    gain, gain_se = _paired(cover["chaos"], cover["freeze"])
    share, share_se = _mean_se(cover["freeze"] / p["modes"])
    rows = [
        Check(
            "gan",
            "modes covered at the end: chaotic minus frozen generator, lower 3-SE "
            "confidence bound, at least one mode",
            1.0,
            gain - Z * gain_se,
            0.0,
            "at_least",
            note=f"{seeds} GANs each, paired by seed; at the end: {summary} (variance as a share "
            "of the target's)",
            not_evaluated=too_few,
        ),
        Check(
            "gan",
            "frozen generator collapses: share of modes covered at the end, upper 3-SE "
            "confidence bound",
            COLLAPSE_SHARE,
            float(share + Z * share_se),
            0.0,
            "at_most",
            note=f"criterion (ours): at most {COLLAPSE_SHARE} of the {p['modes']} modes; "
            f"measured {share:.3f} ± {share_se:.3f} over {seeds} seeds",
            not_evaluated=too_few,
        ),
        *_variance_rows(p, spread, seeds, too_few),
        *_bn_coverage_rows(p, cover, seeds, too_few),
        *_kernel_rows(p, runs, seeds, too_few),
    ]
    write_checks(outputs[0], rows)


def _bn_coverage_rows(p: dict, cover: dict, seeds: int, too_few: str) -> list[Check]:
    """The finding: BatchNorm after every layer leaves the frozen generator collapsed."""
    share, share_se = _mean_se(cover["bn_all"] / p["modes"])
    behind, behind_se = _paired(cover["chaos"], cover["bn_all"])
    with_bn, with_bn_se = _paired(cover["bn_all"], cover["freeze"])
    note = (
        f"BN-every-layer minus freeze {with_bn:+.2f} ± {with_bn_se:.2f} modes (paired by seed); "
        f"BN-last {cover['bn_last'].mean():.2f}; the generator NTK rows below say why"
    )
    return [
        Check(
            "gan",
            "finding: with BatchNorm after every layer the frozen generator still collapses "
            "onto few modes (slides: 'Solutions: Batch Normalization'): share of modes covered "
            "at the end, upper 3-SE confidence bound, by the freeze's collapse criterion",
            COLLAPSE_SHARE,
            float(share + Z * share_se),
            0.0,
            "at_most",
            note=note,
            not_evaluated=too_few,
        ),
        Check(
            "gan",
            "finding: BatchNorm after every layer is no substitute for the chaos: modes covered "
            "at the end, chaotic minus BN-every-layer generator, lower 3-SE confidence bound, "
            "at least one mode",
            1.0,
            behind - Z * behind_se,
            0.0,
            "at_least",
            note=f"measured {behind:.2f} ± {behind_se:.2f} modes (paired by seed)",
            not_evaluated=too_few,
        ),
    ]


def _variance_rows(p: dict, spread: dict, seeds: int, too_few: str) -> list[Check]:
    freeze, freeze_se = _mean_se(spread["freeze"])
    bn, bn_se = _mean_se(spread["bn_all"])
    return [
        Check(
            "gan",
            "frozen generator collapses towards a point: output variance over codes at the end, "
            "as a share of the target's, upper 3-SE confidence bound",
            COLLAPSE_SHARE,
            float(freeze + Z * freeze_se),
            0.0,
            "at_most",
            note=f"criterion (ours): at most {COLLAPSE_SHARE}; measured {freeze:.3f} ± "
            f"{freeze_se:.3f} over {seeds} seeds",
            not_evaluated=too_few,
        ),
        Check(
            "gan",
            "BatchNorm after every layer prevents the collapse to a point: output variance over "
            "codes at the end, as a share of the target's, lower 3-SE confidence bound",
            COLLAPSE_SHARE,
            float(bn - Z * bn_se),
            0.0,
            "at_least",
            note=f"criterion (ours): above {COLLAPSE_SHARE}; measured {bn:.3f} ± {bn_se:.3f} over "
            f"{seeds} seeds; BN-last {np.mean(spread['bn_last']):.3f}",
            not_evaluated=too_few,
        ),
    ]


def _kernel_rows(p: dict, runs: dict, seeds: int, too_few: str) -> list[Check]:
    beta2 = p["beta_freeze"] ** 2
    identity = max(float(np.max(np.abs(runs[n]["constant_mode"] - beta2))) / beta2 for n in BN_NETS)
    col = {s: i for i, s in enumerate(SHARES)}
    rows = [
        Check(
            "gan",
            "BatchNorm after the last non-linearity leaves only the output bias in the "
            "generator NTK's constant mode: (1/N²) Σ_ij Θ_aa(z_i, z_j) = β², worst relative "
            "deviation over BN generators, seeds and outputs",
            0.0,
            identity,
            IDENTITY_TOL,
            "abs",
            note=f"exact identity at any width (float64 NTK over {p['kernel_codes']} codes at "
            "init); tolerance: float64 rounding",
        )
    ]
    for name in ("freeze", "chaos"):
        run = runs[name]
        diff, se = _paired(run["kernels_init"][:, 0], run["kernels_limit"][:, 0])
        rows.append(
            Check(
                "gan",
                f"{name} generator: constant-mode share 1ᵀΘ1/(N tr Θ) of its NTK over codes at "
                "init equals that of Θ∞ on the same codes",
                0.0,
                diff,
                Z * se,
                "abs",
                note=f"empirical {run['kernels_init'][:, 0].mean():.4f} at width "
                f"{p['generator_width']}, Θ∞ {run['kernels_limit'][:, 0].mean():.4f}; tolerance "
                f"3 SE of the paired differences over {seeds} seeds",
                not_evaluated=too_few,
            )
        )
    spread, spread_se = _paired(
        runs["bn_all"]["kernels_init"][:, col["participation"]],
        runs["chaos"]["kernels_init"][:, col["participation"]],
    )
    rows.append(
        Check(
            "gan",
            "finding: at init the NTK of the generator with BatchNorm after every layer spreads "
            "samples as the chaotic one's does: participation ratio of the centred Gram, BN-all "
            "minus chaos, lower 3-SE bound, at least 0",
            0.0,
            spread - Z * spread_se,
            0.0,
            "at_least",
            note=f"participation {_summary(runs, 'kernels_init', col['participation'])} of "
            f"{p['kernel_codes']}; constant share {_summary(runs, 'kernels_init', 0)}: "
            "the kernel at init predicts BN to help as much as the chaos",
            not_evaluated=too_few,
        )
    )
    return rows + _laziness_rows(p, runs, too_few)


def _summary(runs: dict, key: str, col: int) -> str:
    return ", ".join(f"{n} {runs[n][key][:, col].mean():.3g}" for n in NETS)


def _laziness_rows(p: dict, runs: dict, too_few: str) -> list[Check]:
    """Whether the NTK at init can govern training: its relative change over training."""
    freeze, freeze_se = _mean_se(runs["freeze"]["kernel_change"])
    bn, bn_se = _mean_se(runs["bn_all"]["kernel_change"])
    changes = ", ".join(f"{n} {runs[n]['kernel_change'].mean():.3f}" for n in NETS)
    return [
        Check(
            "gan",
            "the frozen generator stays in the kernel regime: relative change "
            "‖Θ_end − Θ_init‖_F/‖Θ_init‖_F of its NTK over codes, upper 3-SE confidence bound",
            LAZY_CHANGE,
            float(freeze + Z * freeze_se),
            0.0,
            "at_most",
            note=f"criterion (ours): at most {LAZY_CHANGE}; measured {freeze:.3f} ± "
            f"{freeze_se:.3f}; all: {changes}",
            not_evaluated=too_few,
        ),
        Check(
            "gan",
            "finding: the generator with BatchNorm after every layer leaves the kernel regime "
            "(so its NTK at init does not govern its training): relative NTK change, lower 3-SE "
            "confidence bound",
            MOVED_CHANGE,
            float(bn - Z * bn_se),
            0.0,
            "at_least",
            note=f"criterion (ours): at least {MOVED_CHANGE}; measured {bn:.3f} ± {bn_se:.3f}; "
            "the chaotic generator moves too "
            f"({runs['chaos']['kernel_change'].mean():.3f}) and covers the modes, BN does not",
            not_evaluated=too_few,
        ),
    ]


def _train_mem_mb(p: dict, wildcards) -> int:
    # The whole-batch float64 Jacobian of a BatchNorm generator (2·kernel_codes rows, one per
    # output, by its parameter count), about three copies of it in flight.
    w, d = p["generator_width"], p["generator_depth"]
    params = (p["latent_dim"] + 1) * w + (d - 2) * (w + 1) * w + (w + 1) * 2
    return 1500 + 3 * 2 * p["kernel_codes"] * params * 8 // 2**20


def _train_runtime(p: dict, wildcards) -> int:
    # Minutes on one CPU core: the laptop preset's 8 seeds x 1500 steps of a 128-wide,
    # 4-layer generator (~7.5e10 multiply-adds) take about a minute.
    work = p["steps"] * p["seeds"] * p["batch_size"] * p["generator_width"] ** 2
    return 10 + math.ceil(work * (p["generator_depth"] - 1) / 7.5e10)


EXPERIMENT = Experiment(
    name="gan",
    order=110,
    uses=("seed", "device"),
    jobs=(
        Job(
            "train",
            train,
            "{net}.npz",
            each=lambda p: [{"net": n} for n in NETS],
            mem_mb=_train_mem_mb,
            runtime=_train_runtime,
        ),
    ),
    plot=plot,
    check=check,
    figure_inputs={"runs": "train"},
    validate=check_config,
)
