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
    gan.plot(GAN_PARAMS, [str(tmp_path / "f.png")], runs=paths)
    gan.check(GAN_PARAMS, [str(tmp_path / "c.csv")], runs=paths)
    assert len(_rows(tmp_path / "c.csv")) == 2
    again = tmp_path / "again.npz"
    gan.train(GAN_PARAMS, [str(again)], net="freeze")
    assert again.read_bytes() == (tmp_path / "freeze.npz").read_bytes()
