"""Freeze & Chaos, checkerboard artefacts: the NTK of a deconvolution net over output pixels.

A 1-D deconvolution net (:class:`ntk_repro.deconv.DeconvNet`: L transposed convolutions with
stride = kernel = s, balanced parametrisation, a standardised σ with E[σ(z)²] = 1) maps one
latent pixel to P = s^L output pixels. Two pixels p, p' are reached through the same kernel
taps in the top v layers, v the largest value in {0, …, L−1} with s^v | p − p'. In the freeze
(r = (1 − β²) E[σ'(z)²] < 1) the paper bounds the NTK ratio by

    (1 − r^{v+1})/(1 − r^L) − C₁(v+1) r^v  ≤  Θ_pp'/Θ_pp  ≤  (1 − r^{v+1})/(1 − r^L),

so the kernel, and with it what gradient descent can change, alternates with the s-adic
structure of p − p': a checkerboard. In the chaos (r > 1) or with BatchNorm the pattern goes.

C₁ is derived, not fitted: in the infinite-channel limit Θ∞_pp' depends on the pair only
through v (:func:`ntk_repro.deconv.split_pair_ntk`), and the lower bound holds for every depth
L ≥ v + 1 iff C₁ ≥ C(v) = D(v)(1 − r)/((1 − r^{v+1})(v + 1) r^v), D(v) = Σ_{k≤v} r^k − Θ∞_pp'
(the depth L = v + 1 is the tight case). C₁ is the largest C(v) over the v for which D(v) is
far above rounding ((v+1) r^v ≥ 1e−7). This needs a smooth σ: for ReLU the slope kernel
converges like √(1 − ρ), D(v) decays like r^{v/2} and C(v) grows without bound, so the preset
uses σ̄ = normalised erf.

Jobs: ``limit`` (the analytic limit, bounds and C₁), ``nets`` with ``net`` in {freeze, chaos,
bn} (empirical NTKs of ``inits`` random nets, 1-D and 2-D); then ``plot`` and ``check``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ntk_repro import data
from ntk_repro.activations import standard_moments
from ntk_repro.deconv import (
    DeconvNet,
    deconv_ntk,
    deconv_ntk_limit,
    ntk_rows,
    offset_valuation,
    pixel_offsets,
    split_pair_ntk,
)
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

NETS = ("freeze", "chaos", "bn")
# D(v) is a difference of O(1) numbers: below this size of (v+1)·r^v it is rounding noise.
_C1_RESOLUTION = 1e-7
# "Pattern absent" criterion for the chaos and BatchNorm nets: the spread over v of the mean
# ratio is at most this share of the freeze spread (the chaotic limit has about 0.02).
SPREAD_SHARE = 0.1
Z = 3.0  # standard errors of slack in every statistical claim


def _net(p: dict, net: str) -> dict:
    if net not in NETS:
        raise ValueError(f"net {net!r} is unknown; choose one of {list(NETS)}")
    beta = p["beta_chaos"] if net == "chaos" else p["beta_freeze"]
    return dict(
        activation=p["activation"],
        beta=float(beta),
        parametrization=p["parametrization"],
        norm="batch" if net == "bn" else None,
    )


def _r(p: dict, beta: float) -> float:
    """r_{σ,β} = (1 − β²) E[σ'(z)²]; the bounds need a standardised σ (E[σ(z)²] = 1)."""
    m = standard_moments(p["activation"])
    if abs(m["second"] - 1.0) > 1e-9:
        raise ValueError(
            f"activation {p['activation']!r} has E[σ(z)²] = {m['second']:.4g}; "
            "the freeze/chaos bounds need a standardised σ (E[σ²] = 1)"
        )
    return (1.0 - beta * beta) * m["grad_second"]


def _latents(p: dict, n: int, seed: int, dim: int) -> np.ndarray:
    """``n`` latent pixels on the sphere ‖x‖² = n0: (n, n0, 1[, 1])."""
    x = data.sphere_points(n, p["in_channels"], seed=seed)
    return x.reshape(n, p["in_channels"], *([1] * dim))


def c1_curve(r: float, beta: float, activation: str, parametrization: str) -> np.ndarray:
    """C(v) for v = 0, 1, … while (v+1)·r^v ≥ 1e−7; C₁ = its maximum (module notes)."""
    v_max = 0
    while (v_max + 2) * r ** (v_max + 1) >= _C1_RESOLUTION:
        v_max += 1
    diag, cross = split_pair_ntk(
        v_max, beta=beta, activation=activation, parametrization=parametrization
    )
    v = np.arange(v_max + 1)
    deficit = diag - cross  # diag[v] = Σ_{k≤v} r^k for a standardised σ
    return deficit * (1 - r) / ((1 - r ** (v + 1)) * (v + 1) * r**v)


def bounds(r: float, c1: float, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) bounds on Θ_pp'/Θ_pp for v = 0 … L−1."""
    v = np.arange(depth)
    upper = (1 - r ** (v + 1)) / (1 - r**depth)
    return upper - c1 * (v + 1) * r**v, upper


# --- stages ------------------------------------------------------------------------------------


def limit(p: dict, outputs) -> None:
    """The analytic limit, r, C₁ and the bounds."""
    out = outputs[0]
    depth, s = p["depth"], p["stride"]
    x = _latents(p, 1, derive_seed(p["seed"], "checkerboard", "limit"), 1)[0]
    offsets = pixel_offsets((1,), s, depth)
    valuation = offset_valuation(offsets, s, depth)
    arrays = dict(offsets=offsets[..., 0], valuation=valuation)
    for net in ("freeze", "chaos"):
        arch = _net(p, net)
        theta = deconv_ntk_limit(
            x,
            stride=s,
            depth=depth,
            beta=arch["beta"],
            activation=arch["activation"],
            parametrization=arch["parametrization"],
            device=p["device"],
        )
        arrays[f"ratio_{net}"] = theta / np.diag(theta)[:, None]
        arrays[f"r_{net}"] = np.float64(_r(p, arch["beta"]))
    r = float(arrays["r_freeze"])
    if not r < 1:
        raise ValueError(f"beta_freeze gives r = {r:.3f} >= 1: not in the freeze")
    if not float(arrays["r_chaos"]) > 1:
        raise ValueError(f"beta_chaos gives r = {float(arrays['r_chaos']):.3f} <= 1: no chaos")
    arch = _net(p, "freeze")
    curve = c1_curve(r, arch["beta"], arch["activation"], arch["parametrization"])
    lower, upper = bounds(r, float(curve.max()), depth)
    save_arrays(out, c1_curve=curve, c1=np.float64(curve.max()), lower=lower, upper=upper, **arrays)


def nets(p: dict, outputs, *, net: str) -> None:
    """Empirical pixel NTKs of ``inits`` deconvolution nets in the freeze, the chaos or with BN."""
    arch = _net(p, net)
    # The finite nets' dtype (training.dtype) and device.
    place = dict(device=resolve_device(p["device"]), dtype=getattr(torch, p["dtype"]))
    batch = p["bn_batch"] if net == "bn" else 1
    ratios, row_refs = _ratios_1d(p, net, arch, batch, place)
    maps, side = _maps_2d(p, net, arch, batch, place)
    save_arrays(
        outputs[0],
        ratios=ratios,
        refs=row_refs,
        maps_2d=maps,
        centre_2d=np.array([side // 2, side // 2]),
        width=np.int64(p["width"]),
        beta=np.float64(arch["beta"]),
        batch=np.int64(batch),
    )


def _deconv_net(p: dict, arch: dict, place: dict, seed: int, width: int, depth: int, dim: int):
    return DeconvNet(
        p["in_channels"],
        width,
        depth,
        stride=p["stride"],
        dim=dim,
        generator=torch.Generator().manual_seed(seed),
        device=place["device"],
        dtype=place["dtype"],
        **arch,
    )


def _ratios_1d(p: dict, net: str, arch: dict, batch: int, place: dict):
    """1-D nets: Θ_pp'/Θ_pp of every reference row, (inits, rows, P), and the rows' pixels."""
    depth, s = p["depth"], p["stride"]
    n_pix = s**depth
    if net == "bn":
        # Batch-coupled: rows of chosen reference pixels of every sample, by JVP/VJP.
        refs = np.array(
            [j * n_pix // p["bn_reference_pixels"] for j in range(p["bn_reference_pixels"])]
        )
        rows = [(i, int(ref)) for i in range(batch) for ref in refs]
        row_refs = np.tile(refs, batch)
    else:
        row_refs = np.arange(n_pix)
    ratios = np.empty((p["inits"], len(row_refs), n_pix))
    for k in range(p["inits"]):
        seed = derive_seed(p["seed"], "checkerboard", net, "1d", k)
        model = _deconv_net(p, arch, place, seed, p["width"], depth, dim=1)
        x = torch.as_tensor(_latents(p, batch, seed, 1), **place)
        if net == "bn":
            theta_rows = ntk_rows(model, x, rows)  # (R, N, P)
            own = torch.stack([theta_rows[m, i] for m, (i, _) in enumerate(rows)])  # (R, P)
            diag = own[torch.arange(len(rows)), torch.as_tensor(row_refs)]
            ratios[k] = (own / diag[:, None]).double().cpu().numpy()
        else:
            theta = deconv_ntk(model, x)[0, 0]
            ratios[k] = (theta / torch.diagonal(theta)[:, None]).double().cpu().numpy()
    return ratios, row_refs


def _maps_2d(p: dict, net: str, arch: dict, batch: int, place: dict):
    """2-D images: the NTK row of the centre pixel, Θ_{p0, p'}/Θ_{p0, p0}, over the image:
    (inits_2d, side, side), and the side."""
    side = p["stride"] ** p["depth_2d"]
    centre = (side // 2) * side + side // 2
    maps = np.empty((p["inits_2d"], side, side))
    for k in range(p["inits_2d"]):
        seed = derive_seed(p["seed"], "checkerboard", net, "2d", k)
        model = _deconv_net(p, arch, place, seed, p["width_2d"], p["depth_2d"], dim=2)
        x = torch.as_tensor(_latents(p, batch, seed, 2), **place)
        if net == "bn":
            row = ntk_rows(model, x, [(0, centre)])[0, 0]
        else:  # the structured formula, without the torch.func machinery
            row = deconv_ntk(model, x)[0, 0, centre]
        maps[k] = (row / row[centre]).reshape(side, side).double().cpu().numpy()
    return maps, side


# --- statistics --------------------------------------------------------------------------------


def _load(limit_path: str, net_paths: list[str]):
    """The limit and the nets' results, by name: ``net_paths`` in the order of NETS."""
    if len(net_paths) != len(NETS):
        raise ValueError(f"checkerboard needs one file per net {list(NETS)}, got {net_paths}")
    limit = load_arrays(limit_path)
    nets = {}
    for name, path in zip(NETS, net_paths):
        run = load_arrays(path)
        require_finite(f"checkerboard {name}", ratios=run["ratios"], maps_2d=run["maps_2d"])
        nets[name] = run
    return limit, nets


def _pair_table(run, depth: int, stride: int):
    """Per pair (reference row m, pixel p'): offset, v and mask of p' ≠ reference."""
    n_pix = run["ratios"].shape[2]
    offsets = np.arange(n_pix)[None, :] - run["refs"][:, None]  # (M, P)
    v = offset_valuation(offsets[..., None], stride, depth)
    return offsets, v, offsets != 0


def by_valuation(run, depth: int, stride: int):
    """Mean ratio over the pairs of each v, per init: (K, L); and its mean and SE over inits."""
    _, v, off = _pair_table(run, depth, stride)
    per_init = np.stack([run["ratios"][:, (v == k) & off].mean(1) for k in range(depth)], 1)
    k = per_init.shape[0]
    return per_init, per_init.mean(0), per_init.std(0, ddof=1) / math.sqrt(k)


def spread(per_init: np.ndarray) -> tuple[float, float]:
    """Pattern strength max_v R̄(v) − min_v R̄(v) and its standard error over inits."""
    mean = per_init.mean(0)
    hi, lo = int(mean.argmax()), int(mean.argmin())
    diff = per_init[:, hi] - per_init[:, lo]
    return float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(len(diff)))


def by_offset(run, depth: int, stride: int):
    """Mean ratio for each |p' − p| = 1 … P−1 (over inits and pairs)."""
    offsets, _, _ = _pair_table(run, depth, stride)
    mean = run["ratios"].mean(0)
    n_pix = mean.shape[1]
    d = np.abs(offsets)
    return np.array([mean[d == j].mean() for j in range(1, n_pix)])


# --- figure and claims -------------------------------------------------------------------------

_STYLE = {"freeze": ("tab:blue", "o"), "chaos": ("tab:red", "s"), "bn": ("tab:green", "^")}


def _label(name, run, limit=None):
    beta = float(run["beta"])
    if name == "bn":
        return f"freeze + BatchNorm (β = {beta:g})"
    return f"{name} (β = {beta:g}, r = {float(limit[f'r_{name}']):.2f})"


def plot(p: dict, outputs, *, limit: str, nets: list[str]) -> None:
    limit, nets = _load(limit, nets)
    fig = new_figure(width=10.0, height=7.2)[0]
    fig.clf()
    grid = fig.add_gridspec(2, 6, height_ratios=[1.0, 1.05])
    ax_off = fig.add_subplot(grid[0, :4])
    ax_v = fig.add_subplot(grid[0, 4:])
    _panel_by_offset(ax_off, p, limit, nets)
    _panel_by_valuation(ax_v, p, limit, nets)
    _panels_2d(fig, grid[1, :], p, limit, nets)
    save_figure(fig, outputs)


def _panel_by_offset(ax, p: dict, limit, nets) -> None:
    """Mean ratio over pixel offsets for every net, inside the freeze bounds."""
    depth, s = p["depth"], p["stride"]
    n_pix = s**depth
    d = np.arange(1, n_pix)
    v_of_d = offset_valuation(d[:, None], s, depth)
    lower, upper = limit["lower"], limit["upper"]
    ax.fill_between(
        d,
        np.maximum(lower[v_of_d], 0),
        upper[v_of_d],
        step="mid",
        color="tab:blue",
        alpha=0.15,
        label="freeze bounds (C₁ derived)",
    )
    ax.step(d, upper[v_of_d], where="mid", color="tab:blue", lw=0.6, alpha=0.6)
    ax.plot(
        d, limit["ratio_freeze"][0, 1:], "_", color="black", ms=7, label="freeze, infinite width"
    )
    for name in NETS:
        color, marker = _STYLE[name]
        ax.plot(
            d,
            by_offset(nets[name], depth, s),
            marker,
            color=color,
            ms=3,
            lw=0.6,
            ls="-",
            alpha=0.85,
            label=_label(name, nets[name], limit),
        )
    ax.set_xlabel("pixel offset |p − p′|")
    ax.set_ylabel("Θ_pp′ / Θ_pp   (mean over inits)")
    ax.set_xlim(0, n_pix)
    ax.set_ylim(-0.05, 1.3)  # headroom for the legend
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_xticks(np.arange(0, n_pix + 1, max(n_pix // 16, 1)))
    ax.set_title(
        f"1-D deconvolution net, L = {depth}, stride {s}, {p['width']} channels, {p['inits']} inits"
    )
    ax.legend(loc="upper left", ncol=2, fontsize=7)


def _panel_by_valuation(ax, p: dict, limit, nets) -> None:
    """Mean ratio over the pairs of each v for every net, with the bounds and the n = ∞ values."""
    depth, s = p["depth"], p["stride"]
    lower, upper = limit["lower"], limit["upper"]
    v = np.arange(depth)
    ax.fill_between(v, np.maximum(lower, 0), upper, color="tab:blue", alpha=0.15)
    ax.plot(v, [limit["ratio_freeze"][0, s**k] for k in v], "_", color="black", ms=10)
    ax.plot(v, [limit["ratio_chaos"][0, s**k] for k in v], "_", color="tab:red", ms=10)
    for name in NETS:
        color, marker = _STYLE[name]
        _, mean, se = by_valuation(nets[name], depth, s)
        ax.errorbar(v, mean, yerr=Z * se, fmt=marker + "-", color=color, ms=4, lw=0.8, capsize=2)
    ax.set_xlabel("v  (s^v divides p − p′)")
    ax.set_ylabel("mean Θ_pp′ / Θ_pp over pairs with that v")
    ax.set_title("by v (bars: 3 SE; dashes: n = ∞)")
    ax.set_ylim(-0.05, 1.05)


def _panels_2d(fig, cell, p: dict, limit, nets) -> None:
    """The centre pixel's NTK row over the 2-D image, one panel per net, and a colour bar."""
    side = p["stride"] ** p["depth_2d"]
    bottom = cell.subgridspec(1, 4, width_ratios=[1, 1, 1, 0.05])
    for col, name in enumerate(NETS):
        ax = fig.add_subplot(bottom[0, col])
        img = nets[name]["maps_2d"].mean(0)
        im = ax.imshow(
            img,
            vmin=0,
            vmax=1,
            cmap="viridis",
            origin="upper",
            extent=(-0.5, side - 0.5, side - 0.5, -0.5),
        )
        cy, cx = nets[name]["centre_2d"]
        ax.plot(cx, cy, "+", color="white", ms=6)
        ax.set_title(f"2-D {_label(name, nets[name], limit)}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    fig.colorbar(
        im,
        cax=fig.add_subplot(bottom[0, 3]),
        label=f"Θ_p0p′ / Θ_p0p0, p0 = + (L = {p['depth_2d']}, {side}×{side})",
    )


def check(p: dict, outputs, *, limit: str, nets: list[str]) -> None:
    limit, nets = _load(limit, nets)
    depth, s = p["depth"], p["stride"]
    rows = [_bounds_row(limit, nets["freeze"], depth, s), *_pattern_rows(limit, nets, depth, s)]
    write_checks(outputs[0], rows)


def _bounds_row(limit, freeze, depth: int, s: int) -> Check:
    """The freeze net's mean ratio of every pixel pair lies between the stride bounds."""
    lower, upper = limit["lower"], limit["upper"]
    c1, r = float(limit["c1"]), float(limit["r_freeze"])
    _, v, off = _pair_table(freeze, depth, s)
    mean = freeze["ratios"].mean(0)
    se = freeze["ratios"].std(0, ddof=1) / math.sqrt(freeze["ratios"].shape[0])
    violation = np.maximum(mean - upper[v], lower[v] - mean)[off]
    n_pairs, inits = int(off.sum()), freeze["ratios"].shape[0]
    width = int(freeze["width"])
    return Check(
        "checkerboard",
        f"freeze (r = {r:.3f}): every pixel pair inside the stride bounds, largest "
        f"violation max(R - upper, lower - R)",
        0.0,
        float(violation.max()),
        Z * float(se[off].max()),
        "at_most",
        note=f"R = Θ_pp'/Θ_pp averaged over {inits} inits (width {width}, L = {depth}, "
        f"s = {s}), {n_pairs} pairs; C1 = {c1:.4f} derived from the n = ∞ "
        f"recursion (largest C(v), v <= {len(limit['c1_curve']) - 1}); tolerance "
        f"3 x the largest per-pair SE over inits; negative = inside",
    )


def _pattern_rows(limit, nets, depth: int, s: int) -> list[Check]:
    """The chaos and BatchNorm nets: the pattern over v is a small share of the freeze one."""
    per_init, _, _ = by_valuation(nets["freeze"], depth, s)
    spread_freeze, spread_freeze_se = spread(per_init)

    ratio_chaos = np.array([limit["ratio_chaos"][0, s**k] for k in range(depth)])
    ratio_freeze = np.array([limit["ratio_freeze"][0, s**k] for k in range(depth)])
    share_limit = float(
        (ratio_chaos.max() - ratio_chaos.min()) / (ratio_freeze.max() - ratio_freeze.min())
    )

    def share_of_freeze(name):
        """Spread of one net as a share of the freeze spread, with its SE (delta method)."""
        per, _, _ = by_valuation(nets[name], depth, s)
        value, value_se = spread(per)
        share = value / spread_freeze
        return share, math.hypot(value_se, share * spread_freeze_se) / spread_freeze

    share_chaos, share_chaos_se = share_of_freeze("chaos")
    share_bn, share_bn_se = share_of_freeze("bn")
    return [
        Check(
            "checkerboard",
            f"chaos (r = {float(limit['r_chaos']):.3f}): pattern absent, spread over v of "
            f"the mean ratio as a share of the freeze spread",
            SPREAD_SHARE,
            share_chaos,
            Z * share_chaos_se,
            "at_most",
            note=f"spread = max_v - min_v of the mean ratio over pairs with that v; freeze "
            f"spread {spread_freeze:.3f}; the n = ∞ share is {share_limit:.3f}, the "
            f"criterion {SPREAD_SHARE} leaves room for O(1/n) finite-width terms; "
            f"tolerance 3 SE over inits (delta method)",
        ),
        Check(
            "checkerboard",
            "BatchNorm: pattern absent, spread over v as a share of the freeze spread",
            SPREAD_SHARE,
            share_bn,
            Z * share_bn_se,
            "at_most",
            note=f"same criterion (no n = ∞ theory for BN here); batch "
            f"{int(nets['bn']['batch'])}, {int(nets['bn']['ratios'].shape[1])} "
            f"reference rows per init; tolerance 3 SE over inits (delta method)",
        ),
    ]


def _nets_mem_mb(p: dict, wildcards) -> int:
    # The BN rows hold one gradient per row: rows x parameters in float64.
    rows = 4 * p["bn_batch"] * p["bn_reference_pixels"] if wildcards["net"] == "bn" else 4
    return 1500 + p["depth"] * p["width"] ** 2 * p["stride"] * 8 * rows // 2**20


EXPERIMENT = Experiment(
    name="checkerboard",
    order=60,
    uses=("seed", "device", "training.dtype"),
    jobs=(
        Job("limit", limit, "limit.npz"),
        Job(
            "nets",
            nets,
            "{net}.npz",
            each=lambda p: [{"net": n} for n in NETS],
            mem_mb=_nets_mem_mb,
            runtime=180,  # the BN net at the paper size: ~80 CPU-min, single-threaded
        ),
    ),
    plot=plot,
    check=check,
    figure_inputs={"limit": "limit", "nets": "nets"},
)
