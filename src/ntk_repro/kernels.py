"""Infinite-width kernels of fully connected nets: the NNGP Σ(L) and the NTK Θ∞(L).

Recursion (docs/design.md §1.3), with c = s_W² (``ntk2018``: s_W = 1; ``balanced``: s_W = √(1−β²)):

    Σ(1)(x,y)   = c · xᵀy / n0 + β²
    Σ(ℓ+1)(x,y) = c · E[σ(u)σ(v)] + β²,        (u, v) ~ N(0, Σ(ℓ) on {x, y})
    Σ̇(ℓ+1)(x,y) = c · E[σ'(u)σ'(v)]
    Θ(1) = Σ(1),    Θ(ℓ+1) = Θ(ℓ) · Σ̇(ℓ+1) + Σ(ℓ+1)

``depth`` is L, the number of weight layers. The layer map (:func:`layer_step`) is one small
pure function of the 2×2 covariance (q1, q2, c) of each pair, used by the Gram, the cosine
form, the diagonal variances and the deconvolution pixel tree (:mod:`ntk_repro.deconv`). The
Gram is that map applied tile by tile, so an
N×N output is the only N×N allocation (N = 20000 is 3.2 GB in float64) and no tile ever holds
more than a few of its own temporaries. The expectations come from the activation's closed form
where it exists (``method="auto"`` or ``"closed"``) or from the quadrature core in
:mod:`ntk_repro.gauss` (``method="quadrature"``); both are the same map otherwise.

Inputs are numpy arrays (N, n0); outputs numpy float64. Computation runs in torch float64 on
``device`` (default CPU; ``"cuda"`` when available).

Overflow: the kernels grow like ‖x‖² (ReLU) and are homogeneous only in special cases, so
inputs too large for float64 are not rescaled: a Gram with NaN or inf anywhere raises
ValueError naming the input and its largest norm (as does a NaN or inf from the cosine form
and the deconvolution limit). Complex input is refused, not truncated.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ntk_repro.activations import _RHO_SNAP, Activation, get_activation
from ntk_repro.device import resolve_device  # re-export: other modules import it from here
from ntk_repro.gauss import expect_2d
from ntk_repro.validation import as_real_tensor, check_choice, check_int, check_points, check_real

PARAMETRIZATIONS = ("ntk2018", "balanced")
METHODS = ("auto", "closed", "quadrature")
# Rows/columns per tile of the Gram: temporaries of a 2048² float64 tile are 32 MB each.
_TILE = 2048
# Tile side of the fused CPU path (see _fused_gram). A pass touches up to three 192² float64
# buffers (0.9 MB), which stay in a 1 MB L2 cache, so the ~15 passes per layer run at cache
# speed; measured on a 2-core AVX-512 machine, 256² tiles (1.5 MB per pass) were 4× slower.
_FUSED_TILE = 192


# --- validation (at the edges only) ----------------------------------------------------------


def weight_gain(beta: float, parametrization: str) -> float:
    """s_W² for the given parametrisation."""
    check_choice(parametrization, "parametrization", PARAMETRIZATIONS)
    return 1.0 if parametrization == "ntk2018" else 1.0 - beta * beta


def check_hyperparameters(depth, beta, activation, parametrization) -> Activation:
    """Validate the architecture arguments shared by kernels, networks and training."""
    check_int(depth, "depth", minimum=1)
    check_real(beta, "beta", minimum=0.0, maximum=1.0)
    check_choice(parametrization, "parametrization", PARAMETRIZATIONS)
    return get_activation(activation)


def _largest_norm(x: np.ndarray) -> float:
    """max_i ‖x_i‖ without overflow in the squares (for error messages)."""
    scale = np.abs(x).max(axis=1)
    unit = x / np.where(scale > 0, scale, 1.0)[:, None]
    return float((scale * np.linalg.norm(unit, axis=1)).max())


def _overflow_error(named: dict[str, np.ndarray]) -> ValueError:
    """The ValueError for a non-finite Gram, naming the inputs and their largest norms."""
    norms = ", ".join(f"{name}: {_largest_norm(x):.3g}" for name, x in named.items())
    first = next(iter(named))
    return ValueError(
        f"{first}: the kernel overflows float64 for these inputs (largest "
        f"norm {norms}); rescale the inputs"
    )


# --- the layer map -----------------------------------------------------------------------------


def layer_expectations(act: Activation, q1, q2, cov, method: str):
    """(E[σ(u)σ(v)], E[σ'(u)σ'(v)]) for (u, v) ~ N(0, [[q1, cov], [cov, q2]]), broadcast."""
    if method == "closed" or (method == "auto" and act.has_closed_form):
        if not act.has_closed_form:
            raise ValueError(
                f"activation {act.spec!r} has no closed form; use method='quadrature' or 'auto'"
            )
        return act.closed_form_pair(q1, q2, cov)
    return expect_2d(act, act, q1, q2, cov), expect_2d(act.derivative, act.derivative, q1, q2, cov)


def layer_step(
    sigma: torch.Tensor,
    theta: torch.Tensor | None,
    q1,
    q2,
    *,
    act: Activation,
    gain: float,
    bias_var: float,
    method: str,
    connect: Callable[[torch.Tensor], torch.Tensor] | None = None,
):
    """One layer of the recursion: (Σ(ℓ), Θ(ℓ)) → (Σ(ℓ+1), Θ(ℓ+1)) on pairs of units.

        Σ(ℓ+1) = c · E[σ(u)σ(v)] + β²,    Θ(ℓ+1) = Θ(ℓ) · c · E[σ'(u)σ'(v)] + Σ(ℓ+1)

    with (u, v) ~ N(0, [[q1, Σ(ℓ)], [Σ(ℓ), q2]]), c = ``gain`` and β² = ``bias_var``.
    ``q1`` / ``q2`` broadcast against ``sigma`` (the variances of the two units of each pair);
    ``theta`` is None when only Σ is wanted (then None is returned for Θ). The inputs are not
    modified.

    ``connect`` is for layers that are not fully connected: it maps a quantity on the pairs of
    layer ℓ to the pairs of layer ℓ + 1 (the deconvolution's pixel tree gathers the parents
    and zeroes the pairs reached through different kernel taps). It is applied to E[σσ] and
    to E[σ'σ']·Θ(ℓ); the factor c then multiplies the connected product, in that order.
    """
    cross, dcross = layer_expectations(act, q1, q2, sigma, method)
    carried = None
    if connect is not None:
        cross = connect(cross)
        carried = None if theta is None else connect(dcross * theta)
    sigma_next = cross.mul_(gain).add_(bias_var)
    if theta is None:
        return sigma_next, None
    # The two orders of the products are those the results were computed with (kept bit for
    # bit): Θ·(c·E[σ'σ']) for dense layers, c·connect(E[σ'σ']·Θ) through a pixel tree.
    theta_next = theta * dcross.mul_(gain) if carried is None else carried.mul_(gain)
    return sigma_next, theta_next.add_(sigma_next)


def _diagonal_variances(sq_norm: torch.Tensor, depth, beta, gain, act, method) -> list:
    """q_ℓ = Σ(ℓ)(x, x) for ℓ = 1 … depth, each of the shape of ``sq_norm`` (= ‖x‖²/n0)."""
    q = gain * sq_norm + beta * beta
    out = [q]
    for _ in range(depth - 1):
        q, _ = layer_step(q, None, q, q, act=act, gain=gain, bias_var=beta * beta, method=method)
        out.append(q)
    return out


def _propagate(sigma, q_rows, q_cols, depth, beta, gain, act, method, want_ntk: bool):
    """Run the recursion from Σ(1) and return (Σ(L), Θ(L) or None).

    ``q_rows[ℓ]`` and ``q_cols[ℓ]`` broadcast against ``sigma`` (the diagonal variances of
    the row and column points at layer ℓ + 1).
    """
    theta = sigma.clone() if want_ntk else None
    for layer in range(depth - 1):
        sigma, theta = layer_step(
            sigma,
            theta,
            q_rows[layer],
            q_cols[layer],
            act=act,
            gain=gain,
            bias_var=beta * beta,
            method=method,
        )
    return sigma, theta


def _tiles(
    n1: int, n2: int, symmetric: bool, tile: int | None = None
) -> Iterable[tuple[slice, slice]]:
    """(rows, cols) slices of the tiles of an N1×N2 Gram; only j ≥ i when symmetric."""
    tile = _TILE if tile is None else tile
    for i in range(0, n1, tile):
        for j in range(i if symmetric else 0, n2, tile):
            yield slice(i, min(i + tile, n1)), slice(j, min(j + tile, n2))


# --- fused CPU path for the closed forms ------------------------------------------------------
#
# This path keeps its own in-place loop for speed. It evaluates the same layer map as
# layer_step with the same closed forms as activations._relu_pair / _erf_pair, but in its own
# operation order (fused passes over cache-sized tiles, ρ from per-point factors), so it agrees
# with the torch path to rounding (~1e-13, tested) rather than bit for bit; each path's own
# bits are fixed because result files are computed with them.
#
# For σ = a·relu + b and σ = a·erf + b both expectations are functions of a correlation
# ρ = c · r(q1) · r(q2) times products of per-point factors, so a layer of the recursion is
# a handful of elementwise passes over a tile plus outer products of per-point vectors.
# numpy runs those passes with SIMD kernels (on x86-64 with AVX-512 its arccos/arcsin are
# ~4× faster than torch's float64 ones) and releases the GIL, so tiles run in parallel
# Python threads without any per-operation thread synchronisation. Outer products of the
# same per-point vector on both sides make every diagonal tile exactly symmetric.

_FUSED_BASES = ("relu", "erf")
# Trigger for the ρ snap of activations.correlation: ρ² above this means some |ρ| may exceed
# 1 − _RHO_SNAP (slightly below (1 − _RHO_SNAP)² so that rounding of ρ² cannot hide one).
_SNAP_TRIGGER = (1.0 - _RHO_SNAP) ** 2 - 4 * np.finfo(np.float64).eps


def _fused_applies(act: Activation, method: str, dev: torch.device) -> bool:
    # A gain ≠ 1 goes through layer_step, whose closed forms carry it (Activation.gain);
    # the fused passes below are written for gain 1.
    return (
        dev.type == "cpu"
        and method in ("auto", "closed")
        and act.base.name in _FUSED_BASES
        and act.gain == 1.0
    )


def _fused_point_vectors(act: Activation, q: np.ndarray, gain: float, beta: float, rows: bool):
    """Per-point vectors of one layer of the fused map, for the row or the column points.

    q: (N,) diagonal variances Σ(ℓ)(x, x). Returns (inv, nrm, add): the tile's correlation
    is ρ = Σ · inv_row · inv_col (for ReLU the row factor carries a minus sign, giving −ρ);
    nrm_row · nrm_col scales E[σσ]; add_row + add_col is its additive part (or None).
    """
    a, shift = act.scale, act.shift
    b2 = beta * beta
    if act.base.name == "relu":
        # E[relu relu] = √(q1 q2)/(2π) (sin θ + (π − θ) ρ),  E[relu(u)] = √q / √(2π).
        root = np.sqrt(q)
        with np.errstate(divide="ignore"):
            inv = np.where(q > 0, 1.0 / np.where(q > 0, root, 1.0), 0.0)
        nrm = root * math.sqrt(gain * a * a / (2.0 * math.pi))
        add = None
        if shift != 0.0:
            add = root * (gain * a * shift / math.sqrt(2.0 * math.pi)) + 0.5 * (
                gain * shift * shift + b2
            )
        return (-inv if rows else inv), nrm, add
    # erf: E[erf erf] = 2/π asin(ρ) with ρ = 2c/√((1+2q1)(1+2q2)); E[erf(u)] = 0.
    inv = math.sqrt(2.0) / np.sqrt(1.0 + 2.0 * q)
    return inv, None, None


def _fused_gram(
    a: np.ndarray,
    b: np.ndarray,
    symmetric: bool,
    q_a: list,
    q_b: list,
    depth: int,
    beta: float,
    gain: float,
    act: Activation,
    get: tuple[str, ...],
) -> dict[str, np.ndarray]:
    """Σ(L) and/or Θ(L) Gram matrices (N1, N2) of a ReLU- or erf-family net on the CPU.

    a (N1, n0), b (N2, n0) float64; q_a / q_b: lists of L arrays (N1,) / (N2,), the diagonal
    variances. Same recursion as :func:`_propagate` with the closed forms written as fused
    in-place passes over cache-sized tiles, the tiles spread over torch's thread count.
    """
    n1, n2, n0 = a.shape[0], b.shape[0], a.shape[1]
    tile = max(1, min(_TILE, _FUSED_TILE))
    b2 = beta * beta
    is_relu = act.base.name == "relu"
    # Scalars of the map: Σ̇ = kd · U (ReLU, U = π − θ) or kd · inv1·inv2/√(1−ρ²) (erf);
    # for erf Σ(ℓ+1) = ke · asin ρ + const.
    kd = gain * act.scale**2 / (2.0 * math.pi) if is_relu else gain * act.scale**2 * 2.0 / math.pi
    ke = gain * act.scale**2 * 2.0 / math.pi
    const = b2 + gain * act.shift**2
    # Σ(1) = (s x)(s y)ᵀ + β² with s = √(gain/n0): the scale folded into the inputs.
    scale = math.sqrt(gain / n0)
    a_s = a * scale
    b_s = a_s if symmetric else b * scale
    rows_v = [_fused_point_vectors(act, q, gain, beta, rows=True) for q in q_a[:-1]]
    cols_v = (
        rows_v
        if symmetric and not is_relu
        else [_fused_point_vectors(act, q, gain, beta, rows=False) for q in q_b[:-1]]
    )
    outputs = {g: np.empty((n1, n2), dtype=np.float64) for g in get}
    want_ntk = "ntk" in get
    local = threading.local()
    overflowed = []  # tiles with NaN or inf (checked while they are in cache)

    def run(block: tuple[slice, slice]) -> None:
        rows, cols = block
        h, w = rows.stop - rows.start, cols.stop - cols.start
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = np.empty((5, tile * tile), dtype=np.float64)
        sig, theta, m, s, u = (buf[i, : h * w].reshape(h, w) for i in range(5))
        np.matmul(a_s[rows], b_s[cols].T, out=sig)
        sig += b2
        if symmetric and rows == cols:
            # As in _propagate: exact symmetry, and Σ(1)(x, x) = q_1(x) bit for bit.
            np.copyto(m, sig.T)
            sig += m
            sig *= 0.5
            np.fill_diagonal(sig, q_a[0][rows])
        if want_ntk:
            np.copyto(theta, sig)
        for layer in range(depth - 1):
            inv_r, nrm_r, add_r = rows_v[layer]
            inv_c, nrm_c, add_c = cols_v[layer]
            if is_relu:
                np.multiply.outer(inv_r[rows], inv_c[cols], out=m)
                m *= sig  # m = −ρ
                np.multiply(m, m, out=s)  # ρ²
                if s.max() > _SNAP_TRIGGER:  # rare off the diagonal
                    near = np.abs(m) > 1.0 - _RHO_SNAP
                    np.copysign(1.0, m, out=m, where=near)
                    s[near] = 1.0
                np.arccos(m, out=u)  # u = arccos(−ρ) = π − θ
                np.subtract(1.0, s, out=s)
                np.sqrt(s, out=s)  # sin θ
                m *= u  # −(π − θ) ρ
                s -= m  # sin θ + (π − θ) ρ
                np.multiply.outer(nrm_r[rows], nrm_c[cols], out=m)
                np.multiply(s, m, out=sig)
                if add_r is None:
                    sig += const
                else:
                    np.add.outer(add_r[rows], add_c[cols], out=m)
                    sig += m
                if want_ntk:
                    theta *= u
                    theta *= kd
                    theta += sig
            else:
                np.multiply.outer(inv_r[rows], inv_c[cols], out=u)  # 2/√((1+2q1)(1+2q2))
                np.multiply(sig, u, out=m)  # ρ
                np.multiply(m, m, out=s)
                if s.max() >= 1.0:  # only for absurdly large q
                    np.clip(m, -1.0, 1.0, out=m)
                    np.multiply(m, m, out=s)
                np.arcsin(m, out=sig)
                sig *= ke
                sig += const
                if want_ntk:
                    np.subtract(1.0, s, out=s)
                    np.sqrt(s, out=s)
                    np.divide(u, s, out=s)
                    theta *= s
                    theta *= kd
                    theta += sig
        for name, tile_out in (("nngp", sig), ("ntk", theta)):
            if name in outputs:
                if not np.isfinite(tile_out).all():
                    overflowed.append(block)
                outputs[name][rows, cols] = tile_out
                if symmetric and rows != cols:
                    outputs[name][cols, rows] = tile_out.T

    blocks = list(_tiles(n1, n2, symmetric, tile))
    workers = min(max(1, torch.get_num_threads()), len(blocks))
    if workers == 1:
        for block in blocks:
            run(block)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(run, blocks):  # re-raises a worker's exception
                pass
    if overflowed:
        raise _overflow_error({"x1": a} if symmetric else {"x1": a, "x2": b})
    return outputs


def kernel_matrices(
    x1,
    x2=None,
    *,
    depth: int,
    beta: float,
    activation: str = "relu",
    parametrization: str = "ntk2018",
    device=None,
    method: str = "auto",
    get: tuple[str, ...] = ("nngp", "ntk"),
) -> dict[str, np.ndarray]:
    """Σ(L) and/or Θ∞(L) Gram matrices in one pass.

    Parameters
    ----------
    x1 : array (N1, n0).  x2 : array (N2, n0) or None (then x2 = x1 and symmetry is used).
    depth : L >= 1.  beta : bias balance in [0, 1].
    activation : spec, see :mod:`ntk_repro.activations`.
    parametrization : "ntk2018" or "balanced".
    device : None / "cpu" / "cuda" / "auto".
    method : "auto" (closed form when it exists), "closed" or "quadrature".
    get : subset of ("nngp", "ntk").

    Returns
    -------
    dict mapping each requested name to a float64 array (N1, N2).
    """
    act = check_hyperparameters(depth, beta, activation, parametrization)
    check_choice(method, "method", METHODS)
    get = tuple(get)
    if not get or any(g not in ("nngp", "ntk") for g in get):
        raise ValueError(f"get must name 'nngp' and/or 'ntk', got {get!r}")
    a = check_points(x1, "x1")
    symmetric = x2 is None
    b = a if symmetric else check_points(x2, "x2", dim=a.shape[1])
    named = {"x1": a} if symmetric else {"x1": a, "x2": b}
    dev = resolve_device(device)
    beta = float(beta)
    gain = weight_gain(beta, parametrization)
    n0 = a.shape[1]

    ta = torch.as_tensor(a, device=dev)
    tb = ta if symmetric else torch.as_tensor(b, device=dev)
    q_a = _diagonal_variances((ta * ta).sum(1) / n0, depth, beta, gain, act, method)
    q_b = (
        q_a
        if symmetric
        else _diagonal_variances((tb * tb).sum(1) / n0, depth, beta, gain, act, method)
    )
    if not all(bool(torch.isfinite(q).all()) for q in q_a + q_b):
        raise _overflow_error(named)
    if _fused_applies(act, method, dev):
        return _fused_gram(
            a,
            b,
            symmetric,
            [q.numpy() for q in q_a],
            [q.numpy() for q in q_b],
            depth,
            beta,
            gain,
            act,
            get,
        )

    outputs = {g: np.empty((a.shape[0], b.shape[0]), dtype=np.float64) for g in get}
    want_ntk = "ntk" in get
    for rows, cols in _tiles(a.shape[0], b.shape[0], symmetric):
        sigma = (ta[rows] @ tb[cols].T).mul_(gain / n0).add_(beta * beta)
        if symmetric and rows == cols:
            # BLAS need not return an exactly symmetric x xᵀ; the layer maps are symmetric
            # in (x, y), so symmetrising Σ(1) makes the whole Gram exactly symmetric.
            sigma = sigma.add_(sigma.T.clone()).mul_(0.5)
            # Make Σ(1)(x, x) bitwise equal to q_1(x) so that ρ = 1 exactly on the diagonal:
            # the arc-cosine is ill-conditioned at ρ = 1 and a rounding of 1e-16 would cost 1e-8.
            sigma.diagonal().copy_(q_a[0][rows])
        sigma, theta = _propagate(
            sigma,
            [q[rows].unsqueeze(1) for q in q_a],
            [q[cols].unsqueeze(0) for q in q_b],
            depth,
            beta,
            gain,
            act,
            method,
            want_ntk,
        )
        for name, tile in (("nngp", sigma), ("ntk", theta)):
            if name not in outputs:
                continue
            if not bool(torch.isfinite(tile).all()):
                raise _overflow_error(named)
            block = tile.cpu().numpy()
            outputs[name][rows, cols] = block
            if symmetric and rows != cols:
                outputs[name][cols, rows] = block.T
    return outputs


def nngp(
    x1,
    x2=None,
    *,
    depth,
    beta,
    activation="relu",
    parametrization="ntk2018",
    device=None,
    method="auto",
) -> np.ndarray:
    """Σ(L)(x1, x2): covariance of the output of the infinite-width net at initialisation.

    x1 (N1, n0), x2 (N2, n0) or None → float64 ndarray (N1, N2).
    """
    return kernel_matrices(
        x1,
        x2,
        depth=depth,
        beta=beta,
        activation=activation,
        parametrization=parametrization,
        device=device,
        method=method,
        get=("nngp",),
    )["nngp"]


def theta_inf(
    x1,
    x2=None,
    *,
    depth,
    beta,
    activation="relu",
    parametrization="ntk2018",
    device=None,
    method="auto",
) -> np.ndarray:
    """Θ∞(L)(x1, x2): the limiting neural tangent kernel.

    x1 (N1, n0), x2 (N2, n0) or None → float64 ndarray (N1, N2).
    """
    return kernel_matrices(
        x1,
        x2,
        depth=depth,
        beta=beta,
        activation=activation,
        parametrization=parametrization,
        device=device,
        method=method,
        get=("ntk",),
    )["ntk"]


def kernels_of_cosine(
    cosine,
    *,
    depth: int,
    beta: float,
    activation: str = "relu",
    parametrization: str = "ntk2018",
    sq_norm: float = 1.0,
    method: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Σ(L) and Θ∞(L) as functions of the cosine between two inputs of equal norm.

    For inputs with ‖x‖²/n0 = ‖y‖²/n0 = ``sq_norm`` (e.g. the sphere of radius √n0 with
    sq_norm = 1) both kernels depend on x, y only through t = xᵀy/(‖x‖‖y‖): this evaluates
    them at ``cosine`` (any shape, values in [−1, 1]).

    Returns
    -------
    (nngp, ntk) : float64 arrays of the shape of ``cosine``.
    """
    act = check_hyperparameters(depth, beta, activation, parametrization)
    check_choice(method, "method", METHODS)
    # (reshape: a scalar cosine comes back from the tensor conversion with shape (1,))
    t = as_real_tensor(cosine, "cosine").to(torch.float64).cpu().numpy()
    t = t.reshape(np.shape(cosine))
    if not np.isfinite(t).all() or np.abs(t).max(initial=0.0) > 1.0 + 1e-12:
        raise ValueError("cosine must be finite and lie in [-1, 1]")
    sq_norm = check_real(sq_norm, "sq_norm", minimum=0.0, exclusive_minimum=True)
    beta = float(beta)
    gain = weight_gain(beta, parametrization)
    tt = torch.as_tensor(np.clip(t, -1.0, 1.0))
    q = _diagonal_variances(
        torch.tensor(float(sq_norm), dtype=torch.float64), depth, beta, gain, act, method
    )
    sigma = tt * (gain * sq_norm) + beta * beta
    sigma, theta = _propagate(sigma, q, q, depth, beta, gain, act, method, True)
    if not (bool(torch.isfinite(sigma).all()) and bool(torch.isfinite(theta).all())):
        raise ValueError(
            f"sq_norm: the kernel overflows float64 at sq_norm = {sq_norm:.3g}; rescale the inputs"
        )
    return sigma.numpy(), theta.numpy()


@dataclass(frozen=True)
class LinearisedFlow:
    """Gradient flow ∂t f = η Θ (y − f) on the training points with Θ held fixed, solved in
    the eigenbasis Θ = U diag(λ) Uᵀ.

    The one guard: Θ is positive semi-definite, so a negative eigenvalue is rounding of a zero
    one; ``eigenvalues`` are clipped at 0 (no growing mode, and the λ → 0 limit of the
    fitted factor).
    """

    eigenvalues: np.ndarray  # (N,), >= 0
    eigenvectors: np.ndarray  # (N, N), columns
    rate: float  # η

    def decay(self, times) -> np.ndarray:
        """e^{−η t λ_i}, the spectrum of e^{−ηtΘ}: (T, N) for times (T,)."""
        return np.exp(-self.rate * np.outer(times, self.eigenvalues))

    def fitted(self, t: float) -> np.ndarray:
        """(1 − e^{−η t λ_i}) / λ_i, the spectrum of Θ⁻¹(I − e^{−ηtΘ}); η t where λ_i = 0.
        (N,) for a time t; expm1 keeps it accurate for tiny λ_i."""
        ev = self.eigenvalues
        return np.where(
            ev > 0, -np.expm1(-self.rate * t * ev) / np.where(ev > 0, ev, 1.0), self.rate * t
        )


def linearised_flow(theta_train, rate: float) -> LinearisedFlow:
    """The eigen-solve of the linearised dynamics for a training Gram Θ (N, N) and rate η."""
    evals, evecs = np.linalg.eigh(theta_train)
    return LinearisedFlow(np.maximum(evals, 0.0), evecs, rate)


def kernel_ode_prediction(
    theta_test_train,
    theta_train,
    y_train,
    f0_train,
    f0_test,
    t,
    *,
    n_train: int | None = None,
    loss: str = "mse",
) -> np.ndarray:
    """Mean prediction of a net trained by gradient flow with the NTK held fixed.

    With C = (1/N)‖f − y‖² (``loss="mse"``) the train outputs obey
    ∂t f = (2/N) Θ (y − f); with C = 1/(2N)‖f − y‖² (``loss="half_mse"``, the NTK paper's
    convention) the rate is 1/N. Then

        f_t(x) = f_0(x) + Θ(x, X) Θ(X, X)⁻¹ (I − e^{−η t Θ(X,X)}) (y − f_0(X)),  η = 2/N or 1/N.

    Shapes: theta_test_train (M, N), theta_train (N, N), y/f0_train (N,) or (N, k),
    f0_test (M,) or (M, k); t a float. Returns (M,) or (M, k).
    """
    n = theta_train.shape[0] if n_train is None else n_train
    flow = linearised_flow(theta_train, loss_rate(loss, n))
    evecs = flow.eigenvectors
    resid = np.asarray(y_train, dtype=np.float64) - np.asarray(f0_train, dtype=np.float64)
    coef = evecs.T @ resid
    scale = flow.fitted(t)
    weights = evecs @ ((scale.reshape(-1, *([1] * (coef.ndim - 1)))) * coef)
    return np.asarray(f0_test, dtype=np.float64) + theta_test_train @ weights


def kernel_ode_gaussian(
    theta_test_train,
    theta_train,
    sigma_test_diag,
    sigma_test_train,
    sigma_train,
    y_train,
    t,
    *,
    loss: str = "mse",
):
    """Mean and variance of f_t(x) for an infinitely wide net trained for time t.

    At initialisation f_0 is a centred GP with covariance Σ = Σ(L); training with the NTK
    held fixed maps it linearly: f_t(x) = A(x) y + f_0(x) − A(x) f_0(X) with
    A(x) = Θ(x, X) Θ(X, X)⁻¹ (I − e^{−ηtΘ(X,X)}). So f_t(x) is Gaussian with

        mean = A(x) y,   var = Σ(x, x) − 2 A(x) Σ(X, x) + A(x) Σ(X, X) A(x)ᵀ.

    Shapes: theta_test_train, sigma_test_train (M, N); theta_train, sigma_train (N, N);
    sigma_test_diag (M,); y_train (N,). Returns (mean (M,), var (M,)), float64.
    """
    theta_train = np.asarray(theta_train, dtype=np.float64)
    flow = linearised_flow(theta_train, loss_rate(loss, theta_train.shape[0]))
    evecs = flow.eigenvectors
    a = np.asarray(theta_test_train) @ (evecs * flow.fitted(t)) @ evecs.T  # A(x), (M, N)
    mean = a @ np.asarray(y_train, dtype=np.float64)
    var = (
        np.asarray(sigma_test_diag)
        - 2.0 * np.einsum("mn,mn->m", a, sigma_test_train)
        + np.einsum("mn,nk,mk->m", a, sigma_train, a)
    )
    return mean, np.maximum(var, 0.0)


def loss_rate(loss: str, n: int) -> float:
    """Rate η of the linearised dynamics ∂t f = η Θ (y − f) for the given loss convention."""
    if loss == "mse":
        return 2.0 / n
    if loss == "half_mse":
        return 1.0 / n
    raise ValueError(f"loss {loss!r} is unknown; choose 'mse' (1/N·Σ) or 'half_mse' (1/(2N)·Σ)")


__all__ = [
    "LinearisedFlow",
    "PARAMETRIZATIONS",
    "kernel_matrices",
    "kernel_ode_gaussian",
    "kernel_ode_prediction",
    "kernels_of_cosine",
    "layer_expectations",
    "layer_step",
    "linearised_flow",
    "loss_rate",
    "nngp",
    "resolve_device",
    "theta_inf",
    "weight_gain",
]
