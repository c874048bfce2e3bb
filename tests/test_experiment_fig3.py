"""Fig3 (kernel PCA, convergence along f(2)): the stage functions on tiny sizes."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from ntk_repro.experiments import fig3
from ntk_repro.results import load_arrays
from ntk_repro.run import main as run_step

TINY = dict(
    n_points=24,
    widths=[16, 512],
    trials=1,
    steps=30,
    record_every=5,
    mnist=None,
    depth=3,
    beta=0.1,
    activation="relu",
    parametrization="ntk2018",
    loss="half_mse",
    lr=1.0,
    dtype="float32",
    device="cpu",
    seed=3,
)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Every stage of fig3 run once on TINY; returns the paths of the results."""
    out = tmp_path_factory.mktemp("fig3")
    paths = {name: str(out / f"{name}.npz") for name in ("data", "kernel", "spectrum")}
    fig3.images(TINY, [paths["data"]])
    fig3.kernel(TINY, [paths["kernel"]], images=paths["data"])
    fig3.spectrum(TINY, [paths["spectrum"]], kernel=paths["kernel"])
    runs = []
    for width in TINY["widths"]:
        runs.append(str(out / f"train_w{width}_t0.npz"))
        fig3.train(
            TINY,
            [runs[-1]],
            images=paths["data"],
            spectrum=paths["spectrum"],
            width=str(width),
            trial="0",
        )
    paths["runs"] = runs
    paths["figure"] = [str(out / "fig3.png"), str(out / "fig3.pdf")]
    fig3.plot(TINY, paths["figure"], spectrum=paths["spectrum"], runs=runs)
    paths["checks"] = str(out / "fig3.csv")
    fig3.check(TINY, [paths["checks"]], spectrum=paths["spectrum"], runs=runs)
    return paths


def test_data_on_the_sphere(pipeline):
    d = load_arrays(pipeline["data"])
    assert d["x"].shape == (24, 64)
    np.testing.assert_allclose((d["x"] ** 2).sum(1), 64.0)
    assert str(d["source"]) == "digits" and d["labels"].min() >= 0


def test_spectrum_is_normalised_kernel_pca(pipeline):
    """Eigenvalues of Θ∞/N decreasing and positive; components orthonormal in (1/N)Σ."""
    s = load_arrays(pipeline["spectrum"])
    lam, f = s["eigenvalues"], s["components"]
    n = len(lam)
    assert np.all(np.diff(lam) <= 0) and lam[-1] > 0
    np.testing.assert_allclose(f.T @ f / n, np.eye(fig3.N_COMPONENTS), atol=1e-10)
    k = load_arrays(pipeline["kernel"])
    np.testing.assert_allclose(k["theta_inf"] @ f / n, f * lam[: fig3.N_COMPONENTS], atol=1e-10)
    assert s["empirical_eigenvalues"].shape == (2, fig3.KERNEL_NETS, fig3.N_EIGENVALUES)
    # The wider nets' eigenvalues are closer to Θ∞'s (1/√n fluctuations).
    rel = s["empirical_eigenvalues"][..., :3] / lam[:3] - 1
    assert np.sqrt((rel[1] ** 2).mean()) < np.sqrt((rel[0] ** 2).mean())


def test_principal_components_of_a_known_gram():
    n = 4
    basis = np.linalg.qr(np.random.default_rng(0).standard_normal((n, n)))[0]
    gram = basis @ np.diag([8.0, 4.0, 2.0, 1.0]) @ basis.T
    values, f = fig3.principal_components(gram, 2)
    np.testing.assert_allclose(values, [2.0, 1.0, 0.5, 0.25])
    np.testing.assert_allclose(np.abs(f), np.abs(basis[:, :2]) * math.sqrt(n))
    assert np.all(f[np.abs(f).argmax(0), [0, 1]] > 0)  # the sign convention


def test_decompose_splits_along_and_orthogonal():
    n = 8
    d = np.ones(n)  # (1/N)Σ d² = 1
    orth = np.array([1.0, -1.0] * 4)
    target = np.zeros(n)
    f_eval = -(0.3 * d + 0.2 * orth)[None, :]  # residual = 0.3 d + 0.2 orth
    g, h = fig3.decompose(f_eval, target, d)
    np.testing.assert_allclose(g, [0.3])
    np.testing.assert_allclose(h, [0.2])


def test_training_starts_on_f2_and_follows_the_kernel_limit(pipeline):
    s = load_arrays(pipeline["spectrum"])
    lam2, f2 = s["eigenvalues"][1], s["components"][:, 1]
    for path in pipeline["runs"]:
        r = load_arrays(path)
        g, h = fig3.decompose(r["f_eval"], r["target"], f2)
        assert r["t"][-1] == TINY["steps"] * TINY["lr"]
        np.testing.assert_allclose(g[0], 0.5, rtol=1e-6)
        assert h[0] < 1e-6
        assert g[-1] < 0.5  # it trained
    wide = load_arrays(pipeline["runs"][-1])
    g, h = fig3.decompose(wide["f_eval"], wide["target"], f2)
    assert np.abs(g - 0.5 * np.exp(-lam2 * wide["t"])).max() < 0.05
    narrow = load_arrays(pipeline["runs"][0])
    assert h.max() < fig3.decompose(narrow["f_eval"], narrow["target"], f2)[1].max()


def test_training_output_is_bitwise_reproducible(pipeline, tmp_path):
    again = tmp_path / "again.npz"
    data, spectrum = pipeline["data"], pipeline["spectrum"]
    fig3.train(
        TINY, [str(again)], images=data, spectrum=spectrum, width=str(TINY["widths"][0]), trial="0"
    )
    with open(pipeline["runs"][0], "rb") as first:
        assert first.read() == again.read_bytes()


def test_figure_and_check_rows(pipeline):
    for path in pipeline["figure"]:
        with open(path, "rb") as fh:
            assert len(fh.read()) > 1000
    with open(pipeline["checks"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 7 and all(r["experiment"] == "fig3" for r in rows)
    assert all(math.isfinite(float(r["tolerance"])) for r in rows)


@pytest.mark.parametrize("content", [None, b"not an idx file at all", b"PK\x03\x04broken"])
def test_bad_mnist_file_is_a_value_error_naming_it(tmp_path, content):
    path = tmp_path / "mnist-images"
    if content is not None:
        path.write_bytes(content)
    params = {**TINY, "mnist": str(path)}
    with pytest.raises(ValueError, match=str(path)):
        fig3.images(params, [str(tmp_path / "out.npz")])
    assert not (tmp_path / "out.npz").exists()


def test_bad_mnist_file_fails_the_stage_with_one_line(tmp_path, capsys):
    import json

    path = tmp_path / "missing.idx"
    code = run_step(
        [
            "fig3",
            "images",
            "--params",
            json.dumps({**TINY, "mnist": str(path)}),
            "--output",
            str(tmp_path / "out.npz"),
        ]
    )
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 1 and len(err) == 1 and str(path) in err[0]


def test_mnist_npz_is_used_with_its_labels(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "mnist.npz"
    np.savez(path, x=rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), y=rng.integers(0, 10, 40))
    out = tmp_path / "out.npz"
    fig3.images({**TINY, "mnist": str(path)}, [str(out)])
    d = load_arrays(out)
    assert d["x"].shape == (24, 784) and str(d["source"]) == "MNIST"
    np.testing.assert_allclose((d["x"] ** 2).sum(1), 784.0)
    assert d["labels"].min() >= 0
