"""Freeze & Chaos, GANs (stretch): a generator in the freeze collapses onto few modes, a
chaotic one covers them.

The target is the classic ring of ``modes`` Gaussians (radius ``radius``, standard deviation
``std``) in the plane. The generator is an :class:`ntk_repro.networks.MLP` in the balanced
parametrisation from a Gaussian latent to R², trained by plain gradient descent (SGD), so that
its evolution is governed by its NTK; the discriminator is an ordinary fully connected net with
LeakyReLU trained by Adam (not under study). In the freeze (r < 1) the generator's NTK is nearly
constant over latents, so every update moves all samples together and the samples stay
bunched; in the chaos (r > 1) the NTK is close to diagonal and samples move independently. The
third generator is the freeze one with BatchNorm after its last non-linearity (the form of BN
the paper analyses for fully connected nets); it is drawn, with no claim attached.

Mode coverage: a sample is of good quality if it lies within 3·std of a mode centre; a mode is
covered if at least ``cover_share`` of the samples are of good quality and nearest to it.

Jobs: ``train`` with ``net`` in {freeze, chaos, bn} (``seeds`` GANs each); then ``plot`` and
``check``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ntk_repro.device import resolve_device
from ntk_repro.experiments import Experiment, Job
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

NETS = ("freeze", "chaos", "bn")
Z = 3.0
# "Collapse" criterion: a frozen generator covers at most this share of the modes.
COLLAPSE_SHARE = 0.25
# A standard error from the spread over seeds needs at least this many seeds.
MIN_SEEDS = 3


def mode_centres(p: dict) -> np.ndarray:
    angles = 2 * math.pi * np.arange(p["modes"]) / p["modes"]
    return p["radius"] * np.stack([np.cos(angles), np.sin(angles)], 1)


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


def _generator(p: dict, net: str, seed: int, dev) -> MLP:
    if net not in NETS:
        raise ValueError(f"net {net!r} is unknown; choose one of {list(NETS)}")
    beta = p["beta_chaos"] if net == "chaos" else p["beta_freeze"]
    return MLP(
        p["latent_dim"],
        p["generator_width"],
        p["generator_depth"],
        beta=beta,
        activation=p["activation"],
        parametrization=p["parametrization"],
        out_dim=2,
        norm="batch_last" if net == "bn" else None,
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


def train(p: dict, outputs, *, net: str) -> None:
    """Train ``seeds`` GANs with the ``net`` generator; record coverage along training."""
    dev = resolve_device(p["device"])
    eval_steps = sorted(set(range(0, p["steps"] + 1, p["eval_every"])) | {p["steps"]})
    covered = np.zeros((p["seeds"], len(eval_steps)))
    quality = np.zeros_like(covered)
    finals = np.zeros((p["seeds"], p["plot_samples"], 2))
    bce = nn.BCEWithLogitsLoss()
    for k in range(p["seeds"]):
        seed = derive_seed(p["seed"], "gan", net, k)
        gen = _generator(p, net, seed, dev)
        disc = _discriminator(p, seed + 1, dev)
        data_rng = torch.Generator().manual_seed(seed + 2)
        eval_z = torch.randn(
            p["eval_samples"], p["latent_dim"], generator=torch.Generator().manual_seed(seed + 3)
        ).to(dev)
        opt_g = torch.optim.SGD(gen.parameters(), lr=p["lr_generator"])
        opt_d = torch.optim.Adam(disc.parameters(), lr=p["lr_discriminator"], betas=(0.5, 0.999))
        ones = torch.ones(p["batch_size"], 1, device=dev)
        zeros = torch.zeros_like(ones)
        for step in range(p["steps"] + 1):
            if step in eval_steps:
                with torch.no_grad():
                    x = gen(eval_z).cpu().numpy()
                if not np.isfinite(x).all():
                    raise RuntimeError(f"gan {net} seed {k}: generator diverged at step {step}")
                j = eval_steps.index(step)
                covered[k, j], quality[k, j] = coverage(p, x)
            if step == p["steps"]:
                finals[k] = x[: p["plot_samples"]]
                break
            real = sample_ring(p, p["batch_size"], data_rng).to(dev)
            z = torch.randn(p["batch_size"], p["latent_dim"], generator=data_rng).to(dev)
            fake = gen(z)
            loss_d = bce(disc(real), ones) + bce(disc(fake.detach()), zeros)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            loss_g = bce(disc(fake), ones)  # non-saturating generator loss
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
    save_arrays(
        outputs[0],
        covered=covered,
        quality=quality,
        steps=np.array(eval_steps),
        final_samples=finals,
        modes=np.int64(p["modes"]),
    )


def _load(paths: list[str]):
    """The GANs' results by name: ``paths`` in the order of NETS."""
    if len(paths) != len(NETS):
        raise ValueError(f"gan needs one file per net {list(NETS)}, got {paths}")
    runs = {}
    for name, path in zip(NETS, paths):
        run = load_arrays(path)
        require_finite(f"gan {name}", covered=run["covered"], final_samples=run["final_samples"])
        runs[name] = run
    return runs


_STYLE = {"freeze": "tab:blue", "chaos": "tab:red", "bn": "tab:green"}
_LABEL = {
    "freeze": "freeze (β = {b})",
    "chaos": "chaos (β = {b})",
    "bn": "freeze + BN after last layer (β = {b})",
}


def plot(p: dict, outputs, *, runs: list[str]) -> None:
    runs = _load(runs)
    fig, axes = new_figure(1, 4, width=12.0, height=3.3)
    ax = axes[0]
    for name in NETS:
        run = runs[name]
        mean = run["covered"].mean(0)
        se = run["covered"].std(0, ddof=1) / math.sqrt(run["covered"].shape[0])
        beta = p["beta_chaos"] if name == "chaos" else p["beta_freeze"]
        ax.plot(run["steps"], mean, color=_STYLE[name], label=_LABEL[name].format(b=beta))
        ax.fill_between(run["steps"], mean - se, mean + se, color=_STYLE[name], alpha=0.2)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"modes covered (of {p['modes']})")
    ax.set_ylim(0, p["modes"] + 0.3)
    ax.set_title(f"mode coverage, mean ± SE of {p['seeds']} GANs")
    ax.legend(loc="upper left", fontsize=7)
    centres = mode_centres(p)
    lim = p["radius"] + 1.0
    for ax, name in zip(axes[1:], NETS):
        x = runs[name]["final_samples"][0]
        ax.scatter(x[:, 0], x[:, 1], s=2, color=_STYLE[name], alpha=0.5)
        ax.scatter(centres[:, 0], centres[:, 1], marker="x", color="black", s=25)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(f"{name}: samples after {p['steps']} steps (seed 0)", fontsize=8)
    save_figure(fig, outputs)


def check(p: dict, outputs, *, runs: list[str]) -> None:
    runs = _load(runs)
    final = {name: runs[name]["covered"][:, -1] for name in NETS}
    seeds = len(final["freeze"])
    diff = final["chaos"].mean() - final["freeze"].mean()
    diff_se = math.sqrt(
        final["chaos"].var(ddof=1) / len(final["chaos"]) + final["freeze"].var(ddof=1) / seeds
    )
    share = final["freeze"].mean() / p["modes"]
    share_se = final["freeze"].std(ddof=1) / math.sqrt(seeds) / p["modes"]
    too_few = (
        ""
        if seeds >= MIN_SEEDS
        else (
            f"{seeds} seeds < {MIN_SEEDS}: the spread of so few seeds is no basis for a 3-SE bound"
        )
    )
    rows = [
        Check(
            "gan",
            "modes covered at the end: chaotic minus frozen generator, lower 3-SE "
            "confidence bound, at least one mode",
            1.0,
            diff - Z * diff_se,
            0.0,
            "at_least",
            note=f"{seeds} GANs each; chaos {final['chaos'].mean():.2f}, freeze "
            f"{final['freeze'].mean():.2f}, BN-last {final['bn'].mean():.2f} of "
            f"{p['modes']} modes; SE from the spread over seeds",
            not_evaluated=too_few,
        ),
        Check(
            "gan",
            "frozen generator collapses: share of modes covered at the end",
            COLLAPSE_SHARE,
            share,
            Z * share_se,
            "at_most",
            note=f"criterion: at most {COLLAPSE_SHARE} of the {p['modes']} modes; tolerance "
            f"3 SE over {seeds} seeds",
            not_evaluated=too_few,
        ),
    ]
    write_checks(outputs[0], rows)


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
            mem_mb=1500,
            runtime=60,
        ),
    ),
    plot=plot,
    check=check,
    figure_inputs={"runs": "train"},
)
