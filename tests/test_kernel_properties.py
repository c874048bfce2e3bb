"""Property-based tests of the analytic kernels (hypothesis, fixed budget, derandomised).

Properties every Gram of a positive-definite kernel must have (symmetry, positive
semi-definiteness, Cauchy–Schwarz), the positive homogeneity of ReLU kernels without bias, and
agreement of every closed form with the quadrature core on random covariances.
"""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ntk_repro.activations import get_activation
from ntk_repro.gauss import expect_2d
from ntk_repro.kernels import kernel_matrices, kernels_of_cosine

# Deterministic in CI and well under a minute for the whole module.
BUDGET = settings(max_examples=30, deadline=None, derandomize=True)
CLOSED = ["relu", "scaled_relu", "erf", "normalized:relu", "normalized:erf", "identity"]

points = st.integers(2, 10).flatmap(
    lambda n: st.integers(1, 5).flatmap(
        lambda n0: hnp.arrays(np.float64, (n, n0), elements=st.floats(-4.0, 4.0, width=64))
    )
)
architectures = st.fixed_dictionaries(
    {
        "depth": st.integers(1, 5),
        "beta": st.floats(0.0, 1.0),
        "activation": st.sampled_from(CLOSED),
        "parametrization": st.sampled_from(["ntk2018", "balanced"]),
    }
)


@BUDGET
@given(x=points, arch=architectures)
def test_grams_are_symmetric_psd_and_cauchy_schwarz(x, arch):
    grams = kernel_matrices(x, **arch)
    for key, k in grams.items():
        assert np.isfinite(k).all(), key
        assert np.array_equal(k, k.T), key
        scale = max(np.abs(k).max(), 1e-300)
        assert np.linalg.eigvalsh(k).min() >= -1e-10 * scale, key
        diag = np.diag(k)
        assert (diag >= 0).all(), key
        # K(x, y)² <= K(x, x) K(y, y), up to rounding relative to the scale.
        excess = k * k - np.outer(diag, diag)
        assert excess.max() <= 1e-10 * scale * scale, key


@BUDGET
@given(
    x=points,
    depth=st.integers(1, 6),
    factor=st.floats(0.05, 20.0),
    activation=st.sampled_from(["relu", "scaled_relu"]),
    parametrization=st.sampled_from(["ntk2018", "balanced"]),
)
def test_relu_kernels_without_bias_are_homogeneous_of_degree_one(
    x, depth, factor, activation, parametrization
):
    """With β = 0, Σ(1) = xᵀy/n0 has degree 1 in x; each layer keeps that degree for Σ
    (√(q1 q2) J1(ρ), ρ unchanged) and degree 0 for Σ̇ (a function of ρ), so
    Θ(ℓ+1) = Θ(ℓ) Σ̇ + Σ has degree 1 too: K(a x, y) = a K(x, y) for every depth L."""
    kw = dict(depth=depth, beta=0.0, activation=activation, parametrization=parametrization)
    y = x[::-1] + 0.5
    base = kernel_matrices(x, y, **kw)
    scaled = kernel_matrices(factor * x, y, **kw)
    both = kernel_matrices(factor * x, factor * y, **kw)
    for key in ("nngp", "ntk"):
        scale = max(np.abs(base[key]).max(), 1e-300)
        assert np.abs(scaled[key] - factor * base[key]).max() <= 1e-12 * factor * scale
        assert np.abs(both[key] - factor**2 * base[key]).max() <= 1e-12 * factor**2 * scale


@BUDGET
@given(
    activation=st.sampled_from(["relu", "erf", "normalized:relu", "normalized:erf"]),
    q1=st.floats(0.02, 6.0),
    q2=st.floats(0.02, 6.0),
    rho=st.one_of(st.floats(-1.0, 1.0), st.sampled_from([-1.0, 1.0, 1 - 1e-9, -1 + 1e-9])),
)
def test_closed_form_matches_quadrature_on_random_covariances(activation, q1, q2, rho):
    act = get_activation(activation)
    t = [torch.tensor(v, dtype=torch.float64) for v in (q1, q2, rho * np.sqrt(q1 * q2))]
    cross, dcross = act.closed_form_pair(*t)
    for closed, f in ((cross, act), (dcross, act.derivative)):
        quad = expect_2d(f, f, *t)
        # Relative to the Cauchy–Schwarz scale √(E f(u)² E f(v)²).
        self_u = expect_2d(f, f, t[0], t[0], t[0])
        self_v = expect_2d(f, f, t[1], t[1], t[1])
        scale = float(torch.sqrt(self_u * self_v))
        assert abs(float(closed) - float(quad)) <= 1e-8 * scale, (activation, q1, q2, rho)


@BUDGET
@given(
    cosine=hnp.arrays(np.float64, st.integers(1, 20), elements=st.floats(-1.0, 1.0)),
    arch=architectures,
)
def test_cosine_form_is_bounded_by_its_diagonal(cosine, arch):
    """On the sphere K(x, y) = κ(t) and Cauchy–Schwarz reads |κ(t)| <= κ(1)."""
    s, t = kernels_of_cosine(cosine, **arch)
    s1, t1 = kernels_of_cosine(1.0, **arch)
    assert np.isfinite(s).all() and np.isfinite(t).all()
    assert (np.abs(s) <= s1 * (1 + 1e-12) + 1e-300).all()
    assert (np.abs(t) <= t1 * (1 + 1e-12) + 1e-300).all()
