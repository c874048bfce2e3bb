"""Border artefacts: edge counts against brute force, padded nets against the plain ones, the
padded infinite-width recursion against exact and wide-net NTKs, and the experiment's
statistics."""

import itertools

import numpy as np
import pytest
import torch

from ntk_repro import data
from ntk_repro.deconv import (
    DeconvNet,
    deconv_ntk,
    deconv_ntk_limit,
    edge_counts,
    layer_ntks,
    layer_shapes,
    ntk_diagonal,
    tap_parents,
)
from ntk_repro.experiments.borders import (
    contrast,
    edge_distance,
    gd_prediction,
    regions,
    symmetric_eigh,
)
from ntk_repro.experiments.layer_lr import balanced_weights, linear_loss

F64 = torch.float64


def _net(seed=0, **kwargs):
    args = dict(in_channels=3, width=5, depth=2, stride=2, dim=2, beta=0.5)
    args.update(kwargs)
    return DeconvNet(
        args.pop("in_channels"),
        args.pop("width"),
        args.pop("depth"),
        generator=torch.Generator().manual_seed(seed),
        dtype=F64,
        **args,
    )


def _image(n0, m, seed=0):
    """(n0, m, m) with every pixel of norm √n0."""
    return data.sphere_points(m * m, n0, seed=seed).T.reshape(n0, m, m)


@pytest.mark.parametrize("m, k, s, p", [(4, 4, 2, 1), (3, 3, 2, 0), (5, 5, 3, 2), (2, 2, 2, 0)])
def test_edge_counts_match_brute_force_enumeration(m, k, s, p):
    out = (m - 1) * s - 2 * p + k
    brute = np.zeros((out, out), dtype=int)
    for i, j, ti, tj in itertools.product(range(m), range(m), range(k), range(k)):
        a, b = i * s + ti - p, j * s + tj - p  # torch's transposed-convolution index
        if 0 <= a < out and 0 <= b < out:
            brute[a, b] += 1
    np.testing.assert_array_equal(edge_counts((m, m), k, s, p), brute)
    # and against torch: an all-ones input through an all-ones kernel
    ones = torch.nn.functional.conv_transpose2d(
        torch.ones(1, 1, m, m), torch.ones(1, 1, k, k), stride=s, padding=p
    )
    np.testing.assert_array_equal(edge_counts((m, m), k, s, p), ones[0, 0].numpy())
    parents = tap_parents(m, k, s, p)
    assert parents.shape == (out, k) and parents.max() < m


def test_default_options_reproduce_the_plain_net_exactly():
    x = torch.as_tensor(_image(3, 2)[None])
    plain = _net()
    for kwargs in (dict(kernel_size=2, padding=0), dict(scaling="graph")):
        other = _net(**kwargs)
        assert torch.equal(plain(x), other(x))
        assert torch.equal(deconv_ntk(plain, x), deconv_ntk(other, x))
    args = dict(stride=2, depth=3, beta=0.3, activation="scaled_relu")
    img = _image(3, 1)
    base = deconv_ntk_limit(img, **args)
    for kwargs in (dict(kernel_size=2, padding=0), dict(scaling="graph")):
        np.testing.assert_array_equal(base, deconv_ntk_limit(img, **args, **kwargs))


def test_padded_forward_shape_and_bad_options():
    net = _net(kernel_size=4, padding=1, depth=3)
    assert net(torch.as_tensor(_image(3, 4)[None])).shape == (1, 1, 32, 32)
    assert net.output_shape((4, 4)) == (32, 32) == layer_shapes((4, 4), 2, 3, 4, 1)[-1]
    with pytest.raises(ValueError, match="scaling"):
        _net(scaling="edges")
    with pytest.raises(ValueError, match="kernel_size"):
        _net(kernel_size=1)
    with pytest.raises(ValueError, match="padding"):
        layer_shapes((1,), 2, 2, 2, 3)
    with pytest.raises(ValueError, match="structured"):
        deconv_ntk(
            _net(kernel_size=4, padding=1), torch.ones(1, 3, 2, 2, dtype=F64), method="structured"
        )


def test_ntk_diagonal_is_the_diagonal_of_the_jacobian_ntk():
    net = _net(kernel_size=4, padding=1, scaling="graph")
    x = torch.as_tensor(np.stack([_image(3, 2, seed=1), _image(3, 2, seed=2)]))
    full = deconv_ntk(net, x)
    diag = ntk_diagonal(net, x, chunk=7)
    for i in range(2):
        torch.testing.assert_close(diag[i], torch.diagonal(full[i, i]))


@pytest.mark.parametrize("scaling", ["uniform", "graph"])
def test_one_layer_limit_is_exact_at_any_width(scaling):
    # Depth 1: Θ = Σ̃(1) = c·g(a)g(a')·Σ_t ⟨x_b, x_b'⟩/n0 + β² exactly, whatever the width.
    img = _image(4, 3, seed=3)
    args = dict(stride=2, kernel_size=4, padding=1, beta=0.4, activation="scaled_relu")
    net = _net(in_channels=4, depth=1, scaling=scaling, **args)
    emp = deconv_ntk(net, torch.as_tensor(img[None]))[0, 0].numpy()
    np.testing.assert_allclose(
        deconv_ntk_limit(img, depth=1, scaling=scaling, **args), emp, rtol=1e-12, atol=1e-12
    )


def test_wide_padded_nets_approach_the_limit_and_graph_diagonal_is_flat():
    img = _image(4, 2, seed=4)
    args = dict(stride=2, kernel_size=4, padding=1, beta=0.5, activation="scaled_relu")
    for scaling in ("uniform", "graph"):
        lim = deconv_ntk_limit(img, depth=2, scaling=scaling, **args)
        emp = np.mean(
            [
                deconv_ntk(
                    _net(seed=s, in_channels=4, width=200, scaling=scaling, **args),
                    torch.as_tensor(img[None]),
                )[0, 0].numpy()
                for s in range(4)
            ],
            axis=0,
        )
        assert np.abs(emp - lim).max() < 0.1 * np.abs(lim).max()
        d = np.diag(lim)
        if scaling == "graph":
            assert d.max() / d.min() - 1 < 1e-12
        else:
            assert d.max() / d.min() > 1.5


def test_statistics():
    ring, interior = regions(8, 1, 3)
    assert ring.sum() == 28 and interior.sum() == 4
    assert edge_distance(5)[2, 2] == 2
    maps = np.ones((2, 8, 8))
    maps[:, ring] = 0.5
    np.testing.assert_allclose(contrast(maps, ring, interior), [0.5, 0.5])
    with pytest.raises(ValueError, match="margin"):
        regions(8, 1, 4)
    # GD on a linear model with Θ = I: residual shrinks by (1 − lr/P) per step.
    theta = np.eye(4)
    y = np.arange(4.0)
    np.testing.assert_allclose(gd_prediction(theta, y, 2.0, 3), y - (1 - 0.5) ** 3 * y)


# --- layer-dependent learning rate -------------------------------------------------------------


def test_layer_contributions_sum_to_the_ntk():
    net = _net(kernel_size=4, padding=1, depth=3)
    x = torch.as_tensor(np.stack([_image(3, 1, seed=5), _image(3, 1, seed=6)]))
    parts = layer_ntks(net, x)
    full = deconv_ntk(net, x)  # (N, N, Q, Q)
    n, q = full.shape[0], full.shape[2]
    torch.testing.assert_close(parts.sum(0), full.permute(0, 2, 1, 3).reshape(n * q, n * q))
    assert parts.shape[0] == 3 and all(torch.linalg.eigvalsh(t).min() > -1e-10 for t in parts)


def test_balanced_weights_equalise_the_traces():
    traces = np.array([0.5, 2.0, 4.0])
    w = balanced_weights(traces)
    np.testing.assert_allclose(w * traces, np.full(3, traces.mean()))
    with pytest.raises(ValueError, match="traces"):
        balanced_weights(np.array([1.0, 0.0]))


def test_linear_loss_matches_explicit_iteration():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 5))
    kernel = a @ a.T
    r0 = rng.standard_normal(5)
    evals, evecs = symmetric_eigh(kernel)
    np.testing.assert_allclose(evecs @ np.diag(evals) @ evecs.T, kernel, atol=1e-12)
    lr = 0.9 * 2 * 5 / evals[-1]
    r, expected = r0.copy(), []
    for _ in range(4):
        expected.append(0.5 * np.mean(r**2))
        r = r - lr / 5 * kernel @ r
    np.testing.assert_allclose(linear_loss(evals, evecs, r0, lr, np.arange(4)), expected)
