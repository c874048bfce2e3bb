"""Deconvolution nets: the structured pixel NTK against explicit Jacobians, the infinite-channel
limit against exact special cases and wide nets, the pixel tree, and the derived C₁."""

import math

import numpy as np
import pytest
import torch

from ntk_repro.activations import standard_moments
from ntk_repro.deconv import (
    DeconvNet,
    deconv_ntk,
    deconv_ntk_limit,
    ntk_rows,
    offset_valuation,
    pixel_offsets,
    pixel_tree,
    split_pair_ntk,
)
from ntk_repro.empirical import empirical_ntk
from ntk_repro.experiments.checkerboard import bounds, c1_curve

F64 = torch.float64


def _net(seed=0, **kwargs):
    args = dict(
        in_channels=3, width=5, depth=3, stride=2, dim=1, beta=0.5, activation="scaled_relu"
    )
    args.update(kwargs)
    return DeconvNet(
        args.pop("in_channels"),
        args.pop("width"),
        args.pop("depth"),
        generator=torch.Generator().manual_seed(seed),
        dtype=F64,
        **args,
    )


def _explicit_ntk(model, x):
    """Θ[i, j, o, o'] from the Jacobian built one output at a time by autograd."""
    out = model(x).reshape(x.shape[0], -1)
    params = list(model.parameters())
    rows = []
    for value in out.reshape(-1):
        grads = torch.autograd.grad(value, params, retain_graph=True)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    jac = torch.stack(rows)
    n, q = out.shape
    return (jac @ jac.T).view(n, q, n, q).permute(0, 2, 1, 3)


@pytest.mark.parametrize(
    "kwargs, input_shape",
    [
        (dict(), (1,)),
        (dict(out_channels=2, stride=3), (2,)),
        (dict(dim=2, activation="normalized:erf"), (1, 1)),
        (dict(dim=2, stride=2, depth=2, activation="tanh", out_channels=2), (2, 1)),
        (dict(depth=1), (3,)),
        (dict(norm="batch"), (1,)),
        (dict(dim=2, norm="batch", depth=2), (1, 2)),
    ],
)
def test_ntk_matches_explicit_jacobian(kwargs, input_shape):
    model = _net(seed=1, **kwargs)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 3, *input_shape, generator=g, dtype=F64)
    explicit = _explicit_ntk(model, x)
    theta = deconv_ntk(model, x)
    assert theta.shape == explicit.shape
    scale = explicit.abs().max().item()
    assert (theta - explicit).abs().max().item() <= 1e-10 * max(scale, 1.0)
    # The generic NTK of the library agrees too (per-sample or whole-batch path).
    generic = empirical_ntk(model, x)
    assert (generic.reshape(theta.shape) - explicit).abs().max().item() <= 1e-10 * max(scale, 1)
    rows = [(0, 0), (2, theta.shape[2] - 1), (1, theta.shape[2] // 2)]
    got = ntk_rows(model, x, rows)
    for r, (i, o) in enumerate(rows):
        assert (got[r] - explicit[i, :, o, :]).abs().max().item() <= 1e-10 * max(scale, 1.0)


def test_structured_path_refuses_batchnorm_and_bad_inputs():
    with pytest.raises(ValueError, match="structured"):
        deconv_ntk(_net(norm="batch"), torch.zeros(2, 3, 1, dtype=F64), method="structured")
    with pytest.raises(ValueError, match="x must have shape"):
        deconv_ntk(_net(), torch.zeros(2, 4, 1, dtype=F64))
    with pytest.raises(ValueError, match="NaN"):
        deconv_ntk(_net(), torch.full((1, 3, 1), float("nan"), dtype=F64))
    for bad in (dict(stride=1), dict(dim=3), dict(norm="layer"), dict(width=0), dict(beta=1.5)):
        with pytest.raises(ValueError):
            _net(**bad)


def test_init_is_deterministic_and_forward_shape():
    a, b = _net(seed=5, dim=2), _net(seed=5, dim=2)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert not torch.equal(a.weights[0], _net(seed=6, dim=2).weights[0])
    x = torch.randn(2, 3, 1, 2, dtype=F64)
    assert a(x).shape == (2, 1, 8, 16) and a.output_shape((1, 2)) == (8, 16)


def test_pixel_tree_and_valuation():
    ancestors, taps = pixel_tree((1,), 2, 3)
    p = torch.arange(8)
    assert torch.equal(ancestors[1], p // 4) and torch.equal(taps[3], p % 2)
    assert torch.equal(taps[1], (p // 4) % 2)
    # v of an offset: the largest v < L with s^v dividing it (every component in 2-D).
    assert offset_valuation(np.array([[1], [2], [4], [12], [0], [8]]), 2, 3).tolist() == [
        0,
        1,
        2,
        2,
        2,
        2,
    ]
    assert offset_valuation(np.array([[2, 4], [4, 8], [3, 8]]), 2, 4).tolist() == [1, 2, 0]
    off = pixel_offsets((1, 1), 3, 1)
    assert off.shape == (9, 9, 2) and off[0, 4].tolist() == [1, 1]


def test_limit_of_a_linear_net_is_the_exact_mean_of_the_finite_ntk():
    """For σ = identity, E[Θ_n] = Θ∞ at every width (layers are independent and every
    factor of the layer sum is linear in the previous one): a sharp test of the recursion,
    taps included."""
    depth, stride, n0 = 3, 2, 4
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, n0, 2, generator=g, dtype=F64)
    limit = deconv_ntk_limit(
        x[0].numpy(), stride=stride, depth=depth, beta=0.6, activation="identity"
    )
    samples = []
    for seed in range(400):
        model = DeconvNet(
            n0,
            6,
            depth,
            stride=stride,
            beta=0.6,
            activation="identity",
            generator=torch.Generator().manual_seed(seed),
            dtype=F64,
        )
        samples.append(deconv_ntk(model, x)[0, 0].numpy())
    samples = np.stack(samples)
    mean, se = samples.mean(0), samples.std(0, ddof=1) / math.sqrt(len(samples))
    z = np.abs(mean - limit) / se
    assert z.max() < 4.5, z.max()  # 256 entries; a wrong tap rule is off by many SE


def test_wide_nets_approach_the_limit():
    depth, stride, n0, width = 4, 2, 8, 512
    x = np.ones((n0, 1))
    limit = deconv_ntk_limit(x, stride=stride, depth=depth, beta=0.7, activation="normalized:erf")
    thetas = []
    for seed in range(4):
        model = DeconvNet(
            n0,
            width,
            depth,
            stride=stride,
            beta=0.7,
            activation="normalized:erf",
            generator=torch.Generator().manual_seed(seed),
            dtype=F64,
        )
        thetas.append(deconv_ntk(model, torch.as_tensor(x[None]))[0, 0].numpy())
    rel = np.linalg.norm(np.mean(thetas, 0) - limit) / np.linalg.norm(limit)
    assert rel < 0.05  # fluctuations ~ 1/sqrt(width · inits) ≈ 0.02


def test_limit_ratio_depends_on_v_only_and_matches_the_split_pair():
    depth, stride = 5, 2
    beta, act = 0.7, "normalized:erf"
    r = (1 - beta**2) * standard_moments(act)["grad_second"]
    theta = deconv_ntk_limit(np.ones((3, 1)), stride=stride, depth=depth, beta=beta, activation=act)
    # Standardised σ, balanced: Θ_pp = Σ_{k<L} r^k on the diagonal.
    assert np.allclose(np.diag(theta), (1 - r**depth) / (1 - r), rtol=1e-12)
    v = offset_valuation(pixel_offsets((1,), stride, depth), stride, depth)
    diag, cross = split_pair_ntk(depth - 1, beta=beta, activation=act)
    assert np.allclose(diag, [(1 - r ** (k + 1)) / (1 - r) for k in range(depth)], rtol=1e-12)
    off = ~np.eye(theta.shape[0], dtype=bool)
    assert np.allclose(theta[off], cross[v[off]], rtol=1e-12)


def test_derived_c1_makes_the_bounds_hold_and_fails_for_relu():
    beta, act = 0.7, "normalized:erf"
    r = (1 - beta**2) * standard_moments(act)["grad_second"]
    curve = c1_curve(r, beta, act, "balanced")
    c1 = curve.max()
    _, cross = split_pair_ntk(10, beta=beta, activation=act)
    for depth in (1, 3, 6, 11):
        lower, upper = bounds(r, c1, depth)
        ratio = cross[:depth] / ((1 - r**depth) / (1 - r))
        assert np.all(ratio <= upper + 1e-12) and np.all(ratio >= lower - 1e-12)
        # A slightly smaller C₁ breaks the lower bound at the depth L = v + 1 where C(v) peaks.
    v_star = int(curve.argmax())
    lower, _ = bounds(r, 0.99 * c1, v_star + 1)
    _, cross = split_pair_ntk(v_star, beta=beta, activation=act)
    assert cross[v_star] / ((1 - r ** (v_star + 1)) / (1 - r)) < lower[v_star]
    # ReLU: the slope kernel converges like sqrt(1 - ρ), so C(v) keeps growing.
    beta_relu = 0.7
    r_relu = 1 - beta_relu**2
    relu = c1_curve(r_relu, beta_relu, "scaled_relu", "balanced")
    assert relu[-1] > 10 * relu[:6].max() and np.all(np.diff(relu[-10:]) > 0)
    assert curve[-1] < 2 * curve[:6].max()


def test_limit_refuses_complex_and_overflowing_inputs():
    x = np.ones((2, 2))
    kw = dict(stride=2, depth=2, beta=0.1, activation="scaled_relu")
    with pytest.raises(ValueError, match="x must be real"):
        deconv_ntk_limit(x + 1j, **kw)
    with pytest.raises(ValueError, match="x: the kernel overflows.*1e\\+200"):
        deconv_ntk_limit(x * 1e200 / np.sqrt(2), **kw)
    with pytest.raises(ValueError, match="stride"):
        deconv_ntk_limit(x, **(kw | dict(stride=1)))


def test_limit_of_a_zero_input_without_bias_is_zero():
    theta = deconv_ntk_limit(np.zeros((2, 1)), stride=2, depth=4, beta=0.0, activation="relu")
    assert np.isfinite(theta).all() and not theta.any()
