"""Freeze & Chaos finite-network experiments: the normalisation facts they rest on, and the
normalisation / checkerboard stages run by hand on tiny settings."""

import csv

import numpy as np
import pytest
import torch

from ntk_repro.data import sphere_points
from ntk_repro.empirical import empirical_ntk
from ntk_repro.experiments import checkerboard, gan, normalisation
from ntk_repro.networks import MLP
from ntk_repro.results import load_arrays

F64 = torch.float64


def _mlp(norm, width=24, depth=3, beta=0.4, activation="relu", seed=0):
    return MLP(
        5,
        width,
        depth,
        beta=beta,
        activation=activation,
        parametrization="balanced",
        norm=norm,
        generator=torch.Generator().manual_seed(seed),
        dtype=F64,
    )


@pytest.mark.parametrize("width, depth, beta", [(7, 2, 0.3), (40, 4, 0.5), (16, 3, 0.0)])
def test_batchnorm_after_last_layer_constant_mode_is_beta_squared(width, depth, beta):
    """(1/N²) Σ_ij Θ = β² exactly, at any width: Σ_i f(x_i) = N β b for every θ."""
    x = sphere_points(9, 5, seed=width)
    model = _mlp("batch_last", width, depth, beta, "scaled_relu", seed=width)
    theta = empirical_ntk(model, x)
    assert abs(theta.mean().item() - beta**2) < 1e-13
    # Not a property of every net: without BN the constant mode is far from β².
    plain = empirical_ntk(_mlp(None, width, depth, beta, "scaled_relu", seed=width), x)
    assert plain.mean().item() > beta**2 + 0.1
    # The sum of outputs moves only with the output bias.
    xt = torch.as_tensor(x)
    total = model(xt).sum()
    grads = torch.autograd.grad(total, list(model.parameters()))
    for grad in grads[:-1]:
        assert grad.abs().max().item() < 1e-12
    assert torch.allclose(grads[-1], torch.full_like(grads[-1], 9 * beta))


def test_layernorm_paths_agree_and_hidden_layers_are_standardised():
    x = sphere_points(6, 5, seed=1)
    model = _mlp("layer", width=30, depth=4)
    structured = empirical_ntk(model, x, method="structured")
    generic = empirical_ntk(model, x, method="func")
    assert (structured - generic).abs().max().item() < 1e-10
    h = torch.as_tensor(x)
    for layer in range(model.depth - 1):
        h = model.hidden(layer, model.preactivation(layer, h), layer == model.depth - 2)
        assert torch.allclose(h.mean(-1), torch.zeros(6, dtype=F64), atol=1e-12)
        assert torch.allclose((h * h).mean(-1), torch.ones(6, dtype=F64), atol=1e-9)


NORM_PARAMS = dict(
    seed=3,
    device="cpu",
    depth=3,
    beta=0.5,
    activation="relu",
    bn_activation="scaled_relu",
    parametrization="balanced",
    n_points=6,
    input_dim=4,
    widths=[64, 256, 1024],
    bn_widths=[8, 32],
    seeds=3,
)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _run_normalisation(tmp_path):
    p = NORM_PARAMS
    paths = {"limit": str(tmp_path / "limit.npz"), "layer": [], "batch_last": []}
    normalisation.limit(p, [paths["limit"]])
    for norm, widths in (("layer", p["widths"]), ("batch_last", p["bn_widths"])):
        for w in widths:
            paths[norm].append(str(tmp_path / f"{norm}_w{w}.npz"))
            normalisation.nets(p, [paths[norm][-1]], norm=norm, width=str(w))
    return paths


def test_normalisation_stages(tmp_path):
    paths = _run_normalisation(tmp_path)
    normalisation.plot(NORM_PARAMS, [str(tmp_path / "f.png"), str(tmp_path / "f.pdf")], **paths)
    assert (tmp_path / "f.png").stat().st_size > 10_000
    normalisation.check(NORM_PARAMS, [str(tmp_path / "c.csv")], **paths)
    rows = _rows(tmp_path / "c.csv")
    assert len(rows) == 2
    slope = float(rows[0]["measured"])
    assert -1.0 < slope < -0.2  # the LayerNorm error falls with width
    assert rows[1]["status"] == "pass"
    # The error is measured against σ̄, not σ: against the plain relu limit it stays large.
    limit = load_arrays(paths["limit"])
    run = load_arrays(paths["layer"][2])
    widths, errs = normalisation.relative_errors([run], limit["theta_bar"])
    _, errs_raw = normalisation.relative_errors([run], limit["theta_raw"])
    assert errs.mean() < 0.2 < 0.5 < errs_raw.mean()
    # Same target, same bytes.
    again = tmp_path / "again.npz"
    normalisation.nets(NORM_PARAMS, [str(again)], norm="layer", width="64")
    assert again.read_bytes() == (tmp_path / "layer_w64.npz").read_bytes()


def test_loglog_slope_recovers_a_known_power_law():
    widths = np.array([100, 200, 400, 800])
    rng = np.random.default_rng(0)
    errs = 3.0 * widths[:, None] ** -0.5 * np.exp(0.05 * rng.standard_normal((4, 6)))
    slope, se, intercept = normalisation.loglog_slope(widths, errs)
    assert abs(slope + 0.5) < 4 * se and se < 0.05 and abs(intercept - np.log(3.0)) < 0.2


CB_PARAMS = dict(
    seed=3,
    device="cpu",
    dtype="float32",
    activation="normalized:erf",
    parametrization="balanced",
    beta_freeze=0.7,
    beta_chaos=0.1,
    stride=2,
    depth=4,
    width=128,
    in_channels=8,
    inits=6,
    depth_2d=3,
    width_2d=16,
    inits_2d=2,
    bn_batch=4,
    bn_reference_pixels=2,
)


def test_checkerboard_stages(tmp_path):
    p = CB_PARAMS
    paths = [str(tmp_path / "limit.npz")]
    checkerboard.limit(p, paths)
    for net in checkerboard.NETS:
        paths.append(str(tmp_path / f"{net}.npz"))
        checkerboard.nets(p, [paths[-1]], net=net)
    checkerboard.plot(p, [str(tmp_path / "f.png")], limit=paths[0], nets=paths[1:])
    assert (tmp_path / "f.png").stat().st_size > 10_000
    checkerboard.check(p, [str(tmp_path / "c.csv")], limit=paths[0], nets=paths[1:])
    rows = _rows(tmp_path / "c.csv")
    assert len(rows) == 3
    assert rows[0]["status"] == "pass" and float(rows[0]["measured"]) < 0  # inside the bounds
    assert rows[1]["status"] == "pass"  # chaos: no pattern
    assert float(rows[1]["measured"]) < 0.2  # the freeze itself has share 1
    limit = load_arrays(paths[0])
    assert limit["r_freeze"] < 1 < limit["r_chaos"]
    freeze = load_arrays(paths[1])
    _, by_v, _ = checkerboard.by_valuation(freeze, p["depth"], p["stride"])
    assert np.all(np.diff(by_v) > 0)  # the checkerboard: more shared taps, larger ratio
    assert freeze["maps_2d"].shape == (2, 8, 8)


def test_checkerboard_refuses_a_non_standardised_sigma_and_wrong_regimes(tmp_path):
    with pytest.raises(ValueError, match="standardised"):
        checkerboard.limit({**CB_PARAMS, "activation": "relu"}, [str(tmp_path / "l.npz")])
    with pytest.raises(ValueError, match="freeze"):
        checkerboard.limit({**CB_PARAMS, "beta_freeze": 0.1}, [str(tmp_path / "l.npz")])
    with pytest.raises(ValueError, match="net"):
        checkerboard.nets(CB_PARAMS, [str(tmp_path / "x.npz")], net="other")


GAN_PARAMS = dict(
    seed=3,
    device="cpu",
    activation="normalized:erf",
    parametrization="balanced",
    beta_freeze=0.7,
    beta_chaos=0.1,
    latent_dim=4,
    generator_width=16,
    generator_depth=3,
    discriminator_width=16,
    steps=30,
    batch_size=32,
    lr_generator=0.5,
    lr_discriminator=1e-3,
    seeds=2,
    eval_every=10,
    eval_samples=200,
    kernel_codes=24,
    plot_samples=50,
    modes=8,
    radius=2.0,
    std=0.05,
    cover_share=0.02,
)


def test_gan_mode_coverage_counts_modes():
    p = GAN_PARAMS
    centres = gan.mode_centres(p)
    assert gan.coverage(p, np.repeat(centres, 10, axis=0)) == (8, 1.0)
    assert gan.coverage(p, np.repeat(centres[:3], 10, axis=0)) == (3, 1.0)
    far = np.zeros((40, 2))  # the origin is 2 away from every mode
    assert gan.coverage(p, far) == (0, 0.0)
    samples = gan.sample_ring(p, 4000, torch.Generator().manual_seed(0)).numpy()
    covered, good = gan.coverage(p, samples)
    assert covered == 8 and good > 0.99


def test_gan_stages(tmp_path):
    paths = []
    for net in gan.NETS:
        paths.append(str(tmp_path / f"{net}.npz"))
        gan.train(GAN_PARAMS, [paths[-1]], net=net)
    run = load_arrays(paths[0])
    assert run["covered"].shape == (2, 4) and run["final_samples"].shape == (2, 50, 2)
    assert run["variance"].shape == (2, 4) and run["kernels_init"].shape == (2, len(gan.SHARES))
    # Without BatchNorm the limit exists; with it, not (NaN, drawn without a marker).
    assert np.isfinite(run["kernels_limit"]).all()
    assert np.isnan(load_arrays(paths[-1])["kernels_limit"]).all()
    gan.plot(GAN_PARAMS, [str(tmp_path / "f.png")], runs=paths)
    gan.check(GAN_PARAMS, [str(tmp_path / "c.csv")], runs=paths)
    rows = _rows(tmp_path / "c.csv")
    assert len(rows) == 12
    # The BN identity is exact at any size: evaluated and passing even here.
    identity = [r for r in rows if "only the output bias" in r["claim"]]
    assert [r["status"] for r in identity] == ["pass"]
    again = tmp_path / "again.npz"
    gan.train(GAN_PARAMS, [str(again)], net="freeze")
    assert again.read_bytes() == (tmp_path / "freeze.npz").read_bytes()


@pytest.mark.parametrize("net", ["chaos", "bn_all"])
def test_gan_seeds_trained_together_train_as_alone(tmp_path, net):
    # Stacked seeds share a summed loss: seed 0 must follow the same path as when trained alone.
    together, alone = tmp_path / "together.npz", tmp_path / "alone.npz"
    gan.train({**GAN_PARAMS, "steps": 10, "eval_every": 5}, [str(together)], net=net)
    gan.train({**GAN_PARAMS, "steps": 10, "eval_every": 5, "seeds": 1}, [str(alone)], net=net)
    a, b = load_arrays(together), load_arrays(alone)
    np.testing.assert_allclose(a["final_samples"][0], b["final_samples"][0], atol=1e-5)
    np.testing.assert_allclose(a["variance"][0], b["variance"][0], rtol=1e-5)
    assert not np.allclose(a["final_samples"][0], a["final_samples"][1])


def test_gan_kernel_shares_of_known_grams():
    rng = np.random.default_rng(0)
    n, d = 40, 3
    z = rng.standard_normal((n, d))
    # Θ ∝ I (the chaos limit): constant share 1/N, N − 1 centred directions, d of them linear.
    shares = gan.kernel_shares(2.0 * np.eye(n), z)
    assert shares["constant"] == pytest.approx(1.0 / n)
    assert shares["participation"] == pytest.approx(n - 1)
    assert shares["linear"] == pytest.approx(d / (n - 1))
    # A linear kernel plus a constant: the centred part lies in span(z), rank d.
    zc = z - z.mean(0)
    a = rng.standard_normal((d, d))
    lin = zc @ a @ a.T @ zc.T
    shares = gan.kernel_shares(lin + 5.0, z)
    assert shares["linear"] == pytest.approx(1.0)
    ev = np.linalg.eigvalsh(lin)
    assert shares["participation"] == pytest.approx(ev.sum() ** 2 / (ev**2).sum())
    assert shares["constant"] == pytest.approx(5.0 * n / (np.trace(lin) + 5.0 * n))


def test_gan_rejects_unknown_net(tmp_path):
    with pytest.raises(ValueError, match="net"):
        gan.train(GAN_PARAMS, [str(tmp_path / "x.npz")], net="other")


def test_gan_rejects_too_few_kernel_codes(tmp_path):
    with pytest.raises(ValueError, match="gan.kernel_codes"):
        gan.train({**GAN_PARAMS, "kernel_codes": 5}, [str(tmp_path / "x.npz")], net="freeze")
