"""Deep linear networks (ntk_repro.deep_linear): the hand-written gradient and the NTK factors
against autograd, the trainer against plain gradient descent, plateau detection on a synthetic
staircase, the step-halving check, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ntk_repro import deep_linear as dl


def _target(d_out=4, d_in=3, seed=0):
    return np.random.default_rng(seed).standard_normal((d_out, d_in))


def _weights(depth, d_out=4, d_in=3, width=5, seeds=(1, 2), sigma=0.7):
    shapes = dl.layer_shapes(d_out, d_in, depth, width)
    return dl.init_weights(shapes, list(seeds), [sigma] * len(seeds), "cpu")


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_product_gradient_matches_autograd(depth):
    weights = [w.requires_grad_() for w in _weights(depth)]
    target = torch.as_tensor(_target(), dtype=torch.float64)
    mask = torch.as_tensor(np.random.default_rng(3).random((4, 3)) < 0.5, dtype=torch.float64)
    product = dl.prefix_products(weights)[-1]
    loss = 0.5 * (mask * (product - target)).square().sum()
    expected = torch.autograd.grad(loss, weights)
    grad_a = (mask * (product - target)).detach()
    mine = dl.product_gradients([w.detach() for w in weights], grad_a)
    for a, b in zip(expected, mine):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("depth", [2, 3])
def test_ntk_factors_match_the_jacobian(depth):
    weights = _weights(depth, seeds=(4,))
    single = [w[0] for w in weights]

    def product(*ws):
        out = ws[0]
        for w in ws[1:]:
            out = w @ out
        return out.reshape(-1)  # row-major vec

    jac = torch.autograd.functional.jacobian(product, tuple(single))
    theta = sum(j.reshape(j.shape[0], -1) @ j.reshape(j.shape[0], -1).T for j in jac)
    np.testing.assert_allclose(dl.ntk_matrix(weights), theta.numpy(), rtol=1e-11, atol=1e-12)


def test_ntk_relative_change_matches_the_dense_kernels():
    w0 = _weights(3, seeds=(5,))
    w1 = [w + 0.3 * torch.randn(w.shape, dtype=torch.float64) for w in w0]
    dense0, dense1 = dl.ntk_matrix(w0), dl.ntk_matrix(w1)
    expected = np.linalg.norm(dense1 - dense0) / np.linalg.norm(dense0)
    got = dl.ntk_relative_change(dl.ntk_factors(w1), dl.ntk_factors(w0))
    assert float(got[0]) == pytest.approx(expected, rel=1e-10)


def test_trainer_is_plain_gradient_descent():
    target, mask = _target(), np.random.default_rng(1).random((4, 3)) < 0.6
    run = dl.train_deep_linear(
        target, depth=3, width=5, gamma=0.5, lr=0.01, steps=7, seed=11, mask=mask
    )
    weights = dl.init_weights(dl.layer_shapes(4, 3, 3, 5), [11], [5**-0.25], "cpu")
    t, m = torch.as_tensor(target), torch.as_tensor(mask, dtype=torch.float64)
    for _ in range(7):
        grads = dl.product_gradients(weights, m * (dl.prefix_products(weights)[-1] - t))
        weights = [w - 0.01 * g for w, g in zip(weights, grads)]
    final = dl.prefix_products(weights)[-1][0].numpy()
    np.testing.assert_allclose(run.product, final, rtol=1e-12, atol=1e-14)
    resid = final - target
    assert run.losses[-1] == pytest.approx(0.5 * (resid[mask] ** 2).sum(), rel=1e-12)
    assert run.test_losses[-1] == pytest.approx(0.5 * (resid[~mask] ** 2).sum(), rel=1e-12)
    np.testing.assert_allclose(run.singular_values[-1], np.linalg.svd(final, compute_uv=False))
    assert run.losses.shape == (8,) and run.singular_values.shape == (8, 3)
    assert run.ntk_change[0] == 0.0 and run.ntk_change[-1] > 0


def test_batch_members_equal_single_runs_and_share_draws():
    target = _target()
    batch = dl.train_deep_linear_batch(
        target,
        depth=3,
        width=6,
        gamma=[1.0, 2.0],
        lr=[0.01, 0.02],
        steps=5,
        seeds=[3, 3],
        record_every=2,
    )
    np.testing.assert_array_equal(batch.steps, [0, 2, 4, 5])
    for k, (gamma, lr) in enumerate([(1.0, 0.01), (2.0, 0.02)]):
        single = dl.train_deep_linear(
            target, depth=3, width=6, gamma=gamma, lr=lr, steps=5, seed=3, record_every=2
        )
        np.testing.assert_allclose(batch.member(k).losses, single.losses, rtol=1e-12)
        np.testing.assert_allclose(batch.times[k], lr * batch.steps)
    # common random numbers: the same seed gives the same normalised draws at every σ
    w1 = dl.init_weights(dl.layer_shapes(4, 3, 2, 6), [3], [1.0], "cpu")
    w2 = dl.init_weights(dl.layer_shapes(4, 3, 2, 6), [3], [0.1], "cpu")
    torch.testing.assert_close(w2[0], 0.1 * w1[0])


def _staircase(times, levels, centres, widths):
    """A loss that drops from levels[k] to levels[k+1] around centres[k] (logistic steps)."""
    loss = np.full_like(times, levels[-1])
    for k, (c, w) in enumerate(zip(centres, widths)):
        loss += (levels[k] - levels[k + 1]) / (1 + np.exp((times - c) / w))
    return loss


def test_plateaus_of_a_synthetic_staircase():
    times = np.linspace(0, 60, 6001)
    levels = [27.5, 15.0, 7.0, 2.5, 0.5, 1e-6]
    loss = _staircase(times, levels, [10, 14, 21, 31, 50], [0.1, 0.12, 0.15, 0.2, 0.3])
    plateaus = dl.find_plateaus(times, loss)
    assert len(plateaus) == 5
    np.testing.assert_allclose([q.level for q in plateaus], levels[:5], rtol=1e-3)
    assert plateaus[0].start == 0 and 10 < plateaus[1].time < 14
    np.testing.assert_allclose(dl.eckart_young_tails([5, 4, 3, 2, 1, 0]), levels[:5])


def test_no_plateau_for_an_exponential_decay_and_merged_steps():
    times = np.linspace(0, 10, 1001)
    assert dl.find_plateaus(times, 10 * np.exp(-2 * times) + 1e-9 * times) == []
    merged = _staircase(times, [27.5, 15.0, 1e-6], [1.0, 1.3], [0.5, 0.5])
    assert len(dl.find_plateaus(times, merged)) <= 1  # only the start can be flat


def test_crossing_and_escape_times_and_effective_rank():
    times = np.linspace(0, 3, 301)
    growth = np.exp(3 * times)[:, None] * np.array([1e-3, 1e-4])
    t = dl.crossing_times(times, growth, [0.5, 10.0])
    assert t[0] == pytest.approx(np.log(500) / 3, rel=1e-12)  # log-linear interpolation
    assert np.isnan(t[1])
    assert dl.escape_times(times, growth, [1.0, 0.0])[0] == pytest.approx(np.log(500) / 3)
    np.testing.assert_array_equal(dl.effective_rank([[5, 1, 0.04], [5, 0.06, 0.0]]), [2, 2])


def test_saddle_to_saddle_and_step_halving():
    """Small init on a rank-2 target: two plateaus at the Eckart–Young tails, one mode after
    the other; halving the step changes the escape times by O(lr)."""
    d = 4
    u, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((d, d)))
    target = (u[:, :2] * [3.0, 1.5]) @ u[:, 2:].T
    runs = [
        dl.train_deep_linear(
            target,
            depth=3,
            width=12,
            gamma=4,
            lr=lr,
            steps=int(40 / lr),
            seed=1,
            record_every=int(0.02 / lr),
        )
        for lr in (0.01, 0.005)
    ]
    tails = dl.eckart_young_tails([3.0, 1.5])
    plateaus = dl.find_plateaus(runs[1].times, runs[1].losses)
    np.testing.assert_allclose([q.level for q in plateaus], tails, rtol=1e-2)
    t_full, t_half = (dl.escape_times(r.times, r.singular_values, [3.0, 1.5]) for r in runs)
    assert t_half[0] < plateaus[1].time < t_half[1]
    assert np.abs(t_full - t_half).max() < 0.01 * t_half.max()  # converged in the step
    assert runs[1].ntk_change[-1] > 1  # far from lazy
    assert runs[1].losses[-1] < 1e-6


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"target": np.zeros(3)}, "target"),
        ({"target": np.array([[1.0, np.nan]])}, "target"),
        ({"depth": 1}, "depth"),
        ({"depth": 2.0}, "depth"),
        ({"width": 0}, "width"),
        ({"gamma": -1}, "gamma"),
        ({"gamma": float("inf")}, "gamma"),
        ({"lr": 0}, "lr"),
        ({"steps": -1}, "steps"),
        ({"seed": -2}, "seed"),
        ({"record_every": 0}, "record_every"),
        ({"mask": np.ones((2, 2))}, "mask"),
        ({"mask": np.full((4, 3), 0.5)}, "mask"),
        ({"mask": np.zeros((4, 3))}, "mask"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_inputs_raise(kwargs, match):
    args = dict(target=_target(), depth=3, width=5, gamma=1.0, lr=0.01, steps=2)
    with pytest.raises(ValueError, match=match):
        dl.train_deep_linear(**(args | kwargs))


def test_bad_batch_inputs_and_divergence():
    target = _target()
    base = dict(depth=2, width=5, gamma=1.0, lr=0.01, steps=2)
    with pytest.raises(ValueError, match="seeds"):
        dl.train_deep_linear_batch(target, seeds=[], **base)
    with pytest.raises(ValueError, match="gamma"):
        dl.train_deep_linear_batch(target, seeds=[1, 2], **(base | {"gamma": [1.0]}))
    with pytest.raises(ValueError, match="identical"):
        dl.train_deep_linear_batch(target, seeds=[1, 1], **base)
    with pytest.raises(ValueError, match="times"):
        dl.find_plateaus([0, 1, 1], [3.0, 2.0, 1.0])
    with pytest.raises(dl.DeepLinearDiverged, match="member 0"):
        dl.train_deep_linear(100 * target, depth=3, width=5, gamma=0.0, lr=1.0, steps=50)


def test_ntk_eigenvalue_bound_is_an_upper_bound():
    weights = _weights(3, seeds=(1, 2, 3), width=8)
    bound = dl.ntk_max_eigenvalue_bound(weights)
    for k in range(3):
        exact = np.linalg.eigvalsh(dl.ntk_matrix([w[k : k + 1] for w in weights]))[-1]
        assert exact <= bound[k] * (1 + 1e-12) and bound[k] < 3 * exact


def test_loss_curve_and_per_member_targets():
    rng = np.random.default_rng(2)
    targets = rng.standard_normal((2, 4, 3))
    masks = rng.random((2, 4, 3)) < 0.7
    batch = dl.train_deep_linear_batch(
        targets,
        depth=2,
        width=6,
        gamma=1.0,
        lr=0.05,
        steps=9,
        seeds=[1, 2],
        mask=masks,
        record_every=3,
        loss_every=2,
    )
    np.testing.assert_array_equal(batch.loss_steps, [0, 2, 4, 6, 8, 9])
    shared = [list(batch.loss_steps).index(s) for s in (0, 6, 9)]
    np.testing.assert_allclose(batch.loss_curve[:, shared], batch.losses[:, [0, 2, 3]])
    for k in range(2):
        single = dl.train_deep_linear(
            targets[k], depth=2, width=6, gamma=1.0, lr=0.05, steps=9, seed=k + 1, mask=masks[k]
        )
        np.testing.assert_allclose(batch.products[k], single.product, rtol=1e-12)
    with pytest.raises(ValueError, match="target"):
        dl.train_deep_linear(targets, depth=2, width=6, gamma=1.0, lr=0.05, steps=2)
    with pytest.raises(ValueError, match="loss_every"):
        dl.train_deep_linear(
            targets[0], depth=2, width=6, gamma=1.0, lr=0.05, steps=2, loss_every=0
        )


def test_escape_slope_cancels_the_constant_and_reads_the_laws():
    from ntk_repro.experiments.saddles import escape_slope, predicted_ntk_slope

    sigmas = 50 ** (-np.array([2.0, 2.5, 3.0, 3.5]) / 2)
    t1 = np.stack([c * sigmas**-1.0 - 0.08 for c in (0.03, 0.04)])  # t₁ = c/σ + c₂
    slopes, drift = escape_slope(sigmas, t1, depth=3)
    np.testing.assert_allclose(slopes, -1.0, rtol=1e-10)
    np.testing.assert_allclose(drift, 0.0, atol=1e-10)
    naive = np.polyfit(np.log(sigmas), np.log(t1[0]), 1)[0]
    assert abs(naive + 1) > 1e-3  # the plain log-log slope is biased by c₂
    slopes, _ = escape_slope(sigmas, np.log(1 / sigmas)[None] / 5 + 0.3, depth=2)
    np.testing.assert_allclose(slopes, 0.2, rtol=1e-10)
    assert predicted_ntk_slope(0.5, 3) == -1.0 and predicted_ntk_slope(0.8, 3) == pytest.approx(
        -0.6
    )
