"""KRR and random-feature generalization (ntk_repro.generalization): each formula against an
independent computation — dense enumeration, direct linear solves, Monte Carlo over feature
draws or training sets, held-out points on the sphere."""

from __future__ import annotations

import numpy as np
import pytest

from ntk_repro import generalization as gen
from ntk_repro import spectral


def _spectrum(seed=0, size=20, zeros=3):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.exponential(size=size) ** 2, np.zeros(zeros)])


def _unit_sphere(n, d, seed):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _rbf(t, length=0.7):
    return np.exp(-(1.0 - t) / length**2)


# --- effective ridge ----------------------------------------------------------------------------


def _bisect(d, ridge, n, lo, hi):
    """Plain float64 bisection of h(z) = z − (z/n)Σd/(d+z) − ridge on [lo, hi] (h(lo) < 0)."""
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid - mid * np.sum(d / (d + mid)) / n - ridge < 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("n", [3.0, 17.0, 60.0])
@pytest.mark.parametrize("ridge", [1e-9, 1e-3, 0.5])
def test_effective_ridge_matches_dense_enumeration_and_bisection(n, ridge):
    d = _spectrum()
    z, dz = gen.effective_ridge(d, ridge, n)
    # Dense enumeration: the sign change of h(z) − ridge on a fine log grid.
    grid = np.geomspace(ridge, ridge + d.sum() / n, 200_001)
    h = grid - grid * (d[None, :] / (d[None, :] + grid[:, None])).sum(axis=1) / n - ridge
    first = np.argmax(h >= 0)
    assert grid[first - 1] <= z <= grid[first]
    pos = d[d > 0]
    assert z == pytest.approx(_bisect(pos, ridge, n, ridge, ridge + d.sum() / n), rel=1e-12)
    assert z >= ridge and z == pytest.approx(ridge + z / n * np.sum(d / (d + z)), rel=1e-12)
    # Derivative against a second-order one-sided difference (ridge may be tiny next to z).
    step = 1e-6 * z
    f1, f2 = (gen.effective_ridge(d, ridge + j * step, n)[0] for j in (1, 2))
    assert dz == pytest.approx((-3 * z + 4 * f1 - f2) / (2 * step), rel=1e-5)
    assert dz >= 1.0


def test_effective_ridge_at_zero_ridge():
    d = _spectrum()  # 20 positive eigenvalues and 3 zeros
    z, dz = gen.effective_ridge(d, 0.0, 25)
    assert z == 0.0 and dz == pytest.approx(25 / (25 - 20))
    assert gen.effective_ridge(d, 0.0, 20)[1] == np.inf
    z, dz = gen.effective_ridge(d, 0.0, 7)
    assert z > 0 and np.sum(d / (d + z)) == pytest.approx(7.0, rel=1e-12)
    assert z == pytest.approx(gen.effective_ridge(d, 1e-13, 7)[0], rel=1e-9)
    # No positive eigenvalue: nothing to learn, z = ridge.
    assert gen.effective_ridge(np.zeros(4), 0.3, 2) == (0.3, 1.0)


def test_effective_ridge_properties_and_arrays():
    d = _spectrum(1)
    ridges = np.array([0.0, 1e-4, 1e-2, 1.0])
    values, derivs = gen.effective_ridge(d, ridges, 10)
    assert values.shape == derivs.shape == (4,)
    for r, v, dv in zip(ridges, values, derivs):
        assert (v, dv) == gen.effective_ridge(d, float(r), 10)
    ns = [2, 5, 10, 20, 100, 1000, 100000]
    z = np.array([gen.effective_ridge(d, 1e-2, n)[0] for n in ns])
    assert (z > 1e-2).all() and (np.diff(z) < 0).all()  # above λ, decreasing in n
    assert z[-1] == pytest.approx(1e-2, rel=1e-3)  # → λ
    # λ̃ − λ ≤ λ̃·count/n, so λ̃ ≤ λ/(1 − count/n) for n > count.
    assert z[-2] <= 1e-2 / (1 - 20 / 1000)


def test_multiplicities_and_tail():
    mu, mult = np.array([1.0, 0.3, 0.02]), np.array([1, 4, 9])
    expanded = np.repeat(mu, mult)
    for ridge in (0.0, 1e-3, 0.2):
        for n in (5, 14, 30):
            got = gen.effective_ridge(mu, ridge, n, multiplicities=mult)
            want = gen.effective_ridge(expanded, ridge, n)
            np.testing.assert_allclose(got, want, rtol=1e-12)
    # A tail of trace T of eigenvalues far below z counts as T/z: 10⁴ eigenvalues 1e-9.
    tiny = np.full(10_000, 1e-9)
    for ridge in (0.0, 1e-3):
        got = gen.effective_ridge(mu, ridge, 5, multiplicities=mult, tail=1e-5)
        want = gen.effective_ridge(np.concatenate([expanded, tiny]), ridge, 5)
        np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(eigenvalues=[1.0, -0.1], ridge=0.1, n=3), "eigenvalues must be >= 0"),
        (dict(eigenvalues=[1.0, np.nan], ridge=0.1, n=3), "eigenvalues contains NaN"),
        (dict(eigenvalues=[], ridge=0.1, n=3), "eigenvalues must be a non-empty"),
        (dict(eigenvalues=[1.0], ridge=-0.1, n=3), "ridge must be >= 0"),
        (dict(eigenvalues=[1.0], ridge=[0.1, -1.0], n=3), "ridge must be >= 0"),
        (dict(eigenvalues=[1.0], ridge=0.1, n=0), "n must be > 0"),
        (dict(eigenvalues=[1.0], ridge=0.1, n=3, multiplicities=[1, 2]), "multiplicities"),
        (dict(eigenvalues=[1.0], ridge=0.1, n=3, tail=-1.0), "tail must be >= 0"),
    ],
)
def test_effective_ridge_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gen.effective_ridge(**kwargs)


# --- KRR, KARE, GCV -----------------------------------------------------------------------------


def _problem(n=30, m=12, seed=3):
    """RBF kernel on S³: (K(X, X), K(x, X), labels, the joint covariance over X and x)."""
    u = _unit_sphere(n + m, 4, seed)
    k_all = _rbf(np.clip(u @ u.T, -1, 1))
    y = np.sin(3 * u[:n, 0]) + 0.1 * np.random.default_rng(seed).standard_normal(n)
    return k_all[:n, :n], k_all[n:, :n], y, k_all


def test_krr_matches_direct_solve_in_both_conventions():
    k, kx, y, _ = _problem()
    n = len(y)
    ridges = np.array([1e-4, 1e-2, 1.0])
    pred = gen.krr_predict(k, y, ridges, kx, convention="mean")
    for r, row in zip(ridges, pred):
        np.testing.assert_allclose(row, kx @ np.linalg.solve(k + n * r * np.eye(n), y), rtol=1e-8)
    np.testing.assert_allclose(
        gen.krr_predict(k, y, n * ridges, kx, convention="sum"), pred, rtol=1e-12
    )
    # Multi-output labels, one column at a time; the training points by default.
    ys = np.stack([y, y**2], axis=1)
    both = gen.krr_predict(k, ys, 1e-2, convention="sum")
    np.testing.assert_allclose(both[:, 1], gen.krr_predict(k, y**2, 1e-2, convention="sum"))
    # Ridgeless KRR interpolates an invertible Gram.
    np.testing.assert_allclose(gen.krr_predict(k, y, 0.0, convention="mean"), y, atol=1e-6)
    with pytest.raises(ValueError, match="convention"):
        gen.krr_predict(k, y, 1e-2, convention="normalised")


def test_kare_is_gcv_and_the_empirical_threshold_is_a_trace():
    k, _, y, _ = _problem()
    n = len(y)
    ridges = np.geomspace(1e-5, 10, 13)
    np.testing.assert_allclose(gen.kare(k, y, ridges), gen.gcv(k, y, ridges), rtol=1e-10)
    assert gen.kare(k, y, 0.1) == pytest.approx(gen.gcv(k, y, 0.1), rel=1e-10)
    inv_trace = np.trace(np.linalg.inv(k / n + 0.1 * np.eye(n))) / n
    assert gen.empirical_threshold(k, 0.1) == pytest.approx(1.0 / inv_trace, rel=1e-12)
    with pytest.raises(ValueError, match="ridge must be > 0"):
        gen.kare(k, y, 0.0)
    with pytest.raises(ValueError, match="square"):
        gen.kare(k[:, :5], y, 0.1)
    with pytest.raises(ValueError, match="y must have shape"):
        gen.kare(k, y[:5], 0.1)


def test_loo_risk_matches_refitting_without_each_point():
    k, _, y, _ = _problem(n=15)
    n, lam = 15, 1e-2
    errors = []
    for i in range(n):
        keep = np.arange(n) != i
        # Refit on N − 1 points with the same added ridge Nλ (the LOO of the fitted model).
        alpha = np.linalg.solve(k[np.ix_(keep, keep)] + n * lam * np.eye(n - 1), y[keep])
        errors.append((k[i, keep] @ alpha - y[i]) ** 2)
    assert gen.loo_risk(k, y, lam) == pytest.approx(np.mean(errors), rel=1e-9)


# --- random features ----------------------------------------------------------------------------


@pytest.mark.parametrize("p", [7, 30, 80])
def test_rf_predict_matches_the_formula(p):
    k, kx, y, _ = _problem()
    n, m = len(y), kx.shape[0]
    cov = np.block([[k, kx.T], [kx, np.eye(m)]])
    f = gen.gaussian_features(cov, p, draws=2, seed=0)
    out = gen.rf_predict(f[:, :n], y, np.array([0.0, 1e-3]), f[:, n:], convention="sum")
    assert out.shape == (2, 2, m)
    for draw in range(2):
        ft, fx = f[draw, :n] / np.sqrt(p), f[draw, n:] / np.sqrt(p)
        g = ft @ ft.T
        direct = fx @ ft.T @ np.linalg.solve(g + 1e-3 * np.eye(n), y)
        np.testing.assert_allclose(out[draw, 1], direct, rtol=1e-7, atol=1e-9)
        ridgeless = fx @ np.linalg.lstsq(ft, y, rcond=None)[0]  # minimum-norm least squares
        np.testing.assert_allclose(out[draw, 0], ridgeless, rtol=1e-6, atol=1e-8)
    single = gen.rf_predict(f[0, :n], y, 1e-3 / n, f[0, n:], convention="mean")
    np.testing.assert_allclose(single, out[0, 1], rtol=1e-10)


def test_gaussian_features_have_covariance_k():
    k, _, _, _ = _problem(n=6)
    f = gen.gaussian_features(k, 50, draws=400, seed=1)
    emp = np.einsum("dip,djp->ij", f, f) / (50 * 400)
    # Each entry is a mean of 20000 products with variance K_ii K_jj + K_ij² <= 2.
    assert np.abs(emp - k).max() < 4 * np.sqrt(2 / 20000)


def test_mean_rf_predictor_is_krr_with_the_effective_ridge_and_variance_law():
    """Monte Carlo over 20000 feature draws at N = 20: E f^RF is KRR(λ̃), not KRR(λ); the
    variance follows the ∂λ̃/∂λ law away from P = N (a first-order law: it under-predicts by
    a few percent, 5% at P = N/4, 1% at P = 4N here)."""
    k, kx, y, joint = _problem(n=20, m=6, seed=5)
    n, lam = 20, 1e-2
    evals = np.clip(np.linalg.eigvalsh(k), 0, None)
    for p in (5, 80):
        f = gen.gaussian_features(joint, p, draws=20_000, seed=p)
        pred = gen.rf_predict(f[:, :n], y, lam, f[:, n:], convention="sum")
        mean, var = pred.mean(axis=0), pred.var(axis=0, ddof=1)
        lt, _ = gen.effective_ridge(evals, lam, p)
        krr_lt = gen.krr_predict(k, y, lt, kx, convention="sum")
        krr_l = gen.krr_predict(k, y, lam, kx, convention="sum")
        noise = np.sqrt(var.sum() / len(pred))  # norm of the Monte Carlo error of the mean
        assert np.linalg.norm(mean - krr_lt) < 4 * noise
        assert np.linalg.norm(mean - krr_l) > 4 * np.linalg.norm(mean - krr_lt)
        law = gen.rf_variance(k, kx, np.diag(joint)[n:], y, lam, p)
        assert law.mean() == pytest.approx(var.mean(), rel=0.08)


def test_average_hat_matrix_has_eigenvalues_d_over_d_plus_effective_ridge():
    k, _, _, _ = _problem(n=10, m=6, seed=5)
    n, lam, p = 10, 1e-2, 5
    evals, evecs = np.linalg.eigh(k)
    f = gen.gaussian_features(k, p, draws=20_000, seed=9)
    hats = gen.rf_predict(f, np.eye(n), lam, convention="sum")  # (D, N, N)
    proj = np.einsum("in,dij,jn->dn", evecs, hats, evecs)  # uᵢᵀ A uᵢ per draw
    lt, _ = gen.effective_ridge(np.clip(evals, 0, None), lam, p)
    se = proj.std(axis=0, ddof=1) / np.sqrt(len(proj))
    predicted = np.clip(evals, 0, None) / (np.clip(evals, 0, None) + lt)
    assert (np.abs(proj.mean(axis=0) - predicted) < 4 * se + 0.02).all()


def test_rf_predict_rejects_bad_input():
    with pytest.raises(ValueError, match="features_train"):
        gen.rf_predict(np.ones(3), np.ones(3), 0.1, convention="sum")
    with pytest.raises(ValueError, match="features_test"):
        gen.rf_predict(np.ones((3, 2)), np.ones(3), 0.1, np.ones((4, 5)), convention="sum")
    with pytest.raises(ValueError, match="y must have shape"):
        gen.rf_predict(np.ones((3, 2)), np.ones(4), 0.1, convention="sum")


# --- the SCT prediction -------------------------------------------------------------------------


def test_predicted_risk_matches_an_exact_average_over_gaussian_designs():
    """Features φₖ(x) i.i.d. N(0, 1), K(x, x') = Σ dₖφₖ(x)φₖ(x'): the risk of each fit is
    exact in coefficient space, averaged over 3000 training sets of N = 80."""
    rng = np.random.default_rng(11)
    dims, n, noise = 60, 80, 0.3
    d = 1.0 / np.arange(1, dims + 1) ** 1.5
    c = rng.standard_normal(dims) / np.arange(1, dims + 1)
    ridges = np.array([1e-3, 1e-2, 1e-1])
    # Independent of the library: batched linear solves α = (K + NλI)⁻¹y per training set.
    phi = rng.standard_normal((3000, n, dims))
    y = phi @ c + noise * rng.standard_normal((3000, n))
    gram = (phi * d) @ phi.transpose(0, 2, 1)
    risks, coefs = [], []
    for lam in ridges:
        alpha = np.linalg.solve(gram + n * lam * np.eye(n), y[..., None])[..., 0]
        beta = np.einsum("sn,snk->sk", alpha, phi) * d  # f̂ = Σ βₖ φₖ
        risks.append(((beta - c) ** 2).sum(axis=1) + noise**2)
        coefs.append(beta)
    risks, coefs = np.array(risks).T, np.array(coefs).transpose(1, 0, 2)
    pred = gen.predicted_risk(d, c, ridges, n, noise)
    se = risks.std(axis=0, ddof=1) / np.sqrt(len(risks))
    # The SCT is exact as N → ∞; for Gaussian designs at N = 80 it is within the Monte Carlo
    # error already (measured: 0.1-0.25%, about one standard error of ~0.2%).
    assert (np.abs(pred.risk - risks.mean(axis=0)) < 4 * se).all()
    err = np.linalg.norm(coefs.mean(axis=0) - pred.coefficients, axis=1) / np.linalg.norm(c)
    assert (err < 0.01).all()
    # λ → ∞ learns nothing (risk ‖c‖² + ε²); scalar ridges give scalars.
    big = gen.predicted_risk(d, c, 1e8, n, noise)
    assert big.risk == pytest.approx(c @ c + noise**2, rel=1e-6)
    assert big.coefficients.shape == (dims,)


def test_predicted_risk_rejects_bad_input():
    with pytest.raises(ValueError, match="coefficients"):
        gen.predicted_risk([1.0, 0.5], [1.0], 0.1, 10)
    with pytest.raises(ValueError, match="noise"):
        gen.predicted_risk([1.0], [1.0], 0.1, 10, noise=-1.0)


# --- the sphere: exact targets and risks --------------------------------------------------------


def test_zonal_sum_and_harmonic_target():
    t = np.linspace(-1, 1, 41)
    w = np.array([0.5, -1.0, 2.0, 0.3, 0.7])
    for d in (2, 3, 5):
        want = w @ spectral.sphere_polynomials(4, d, t)
        np.testing.assert_allclose(gen.zonal_sum(w, d, t), want, atol=1e-12)
    # E Yₖ Yₗ = δₖₗ under the uniform measure: exact by quadrature in t = x₁ (its law is
    # the cosine law), so ‖f*‖² = Σ aₖ².
    d, amps = 5, np.array([0.2, 1.0, -0.7, 0.5])
    t, weights = spectral.cosine_quadrature(d, 64)
    points = np.column_stack([t, np.sqrt(1 - t**2), np.zeros((64, d - 2))])
    values = gen.harmonic_target(points, amps)
    assert weights @ values**2 == pytest.approx(amps @ amps, rel=1e-12)
    for k in range(4):
        e = np.eye(4)[k]
        assert weights @ (gen.harmonic_target(points, e) * values) == pytest.approx(amps[k])


def test_sphere_risk_matches_held_out_points_and_the_sct():
    """Exact risk on S⁴ against 40000 held-out points; then the SCT prediction from the
    Funk–Hecke spectrum against the exact risk averaged over 4 draws of N = 300."""
    d, amps, noise = 5, np.array([0.0, 1.0, 0.7, 0.5]), 0.3
    fh = spectral.funk_hecke(_rbf, d, 40, nodes=512)
    mu = np.clip(fh.eigenvalues, 0, None)
    ridges = np.geomspace(1e-4, 1e-1, 4)
    u = _unit_sphere(300, d, 0)
    y = gen.harmonic_target(u, amps)
    alpha = gen.krr_coefficients(_rbf(np.clip(u @ u.T, -1, 1)), y, ridges, convention="mean")
    exact = gen.sphere_risk(u, alpha, mu, amps)
    test = _unit_sphere(40_000, d, 1)
    sq = (alpha @ _rbf(np.clip(u @ test.T, -1, 1)) - gen.harmonic_target(test, amps)) ** 2
    se = sq.std(axis=1) / np.sqrt(test.shape[0])
    assert (np.abs(exact - sq.mean(axis=1)) < 4 * se).all()

    risks = []
    for seed in range(4):
        u = _unit_sphere(300, d, 10 + seed)
        y = gen.harmonic_target(u, amps) + noise * np.random.default_rng(seed).standard_normal(300)
        gram = _rbf(np.clip(u @ u.T, -1, 1))
        alpha = gen.krr_coefficients(gram, y, ridges, convention="mean")
        risks.append(gen.sphere_risk(u, alpha, mu, amps) + noise**2)
    c = np.zeros_like(mu)
    c[: amps.size] = amps
    pred = gen.predicted_risk(mu, c, ridges, 300, noise, multiplicities=fh.multiplicities)
    np.testing.assert_allclose(pred.risk, np.mean(risks, axis=0), rtol=0.08)
