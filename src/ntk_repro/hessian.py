"""The Hessian of the MSE loss of a network: H = I + S, its moments, eigenpairs and limits.

For a model f with scalar output, points x_1 … x_N, targets y and the loss
C(θ) = 1/(2N) Σᵢ (f(xᵢ) − yᵢ)², the Hessian in the parameters splits into

    I = JᵀJ / N                              (Gauss–Newton part, J = ∂f(X)/∂θ, N × P)
    S = (1/N) Σᵢ (f(xᵢ) − yᵢ) ∇²_θ f(xᵢ)     (the rest, weighted by the residuals)

and H = I + S. Since JJᵀ = Θ̂ (the empirical NTK Gram), the non-zero eigenvalues of I are
those of Θ̂/N at every width, so every Tr Iᵏ is exact from an N × N matrix. The terms with S
come from one of three back-ends (``method``):

``dense`` (any module, small P)
    J by ``torch.func.jacrev`` and ∇²(rᵀf/N) by ``torch.func.hessian``: P × P matrices, any
    order k, exact.
``blocks`` (:class:`~ntk_repro.networks.MLP` with one hidden layer, smooth σ)
    ∇²f(x) is block-diagonal over the hidden units: unit j owns (W⁽⁰⁾_j, b⁽⁰⁾_j, W⁽¹⁾_j), and
    with u(x) = (s_W x/√n₀, β) and c = s_W/√n₁ its block is
    c·[[W⁽¹⁾_j σ''(h_j) u uᵀ, σ'(h_j) u], [σ'(h_j) uᵀ, 0]]. So Tr Sᵏ is a sum over n₁ blocks of
    size n₀ + 2, exact in O(n₁ N n₀²) (plus the block eigenvalues), and S times a vector costs
    O(n₁ N n₀). The cross terms of Tr Hᵏ (k ≤ 4) come from SJᵀ (N products with S) through
    the N × N matrices A = Θ̂/N, Q = JSJᵀ/N, R = JS²Jᵀ/N: exact at any width.
``stochastic`` (any module, any P)
    Tr Iᵏ exact from Θ̂; Tr Sᵏ and Tr Hᵏ − Tr Iᵏ by Hutchinson's estimator with Rademacher
    probes z (zᵀMᵏz = ⟨M^⌊k/2⌋z, M^⌈k/2⌉z⟩), the same probes for H and I, so the large I part
    cancels probe by probe and only the S-terms carry noise. The standard error is the sample
    standard deviation over probes / √probes.

Products with I, S and H of a generic module go through ``torch.func`` (forward-over-reverse
for S: ``jvp(grad(rᵀf/N))``); top eigenpairs come from Lanczos (``scipy.sparse.linalg.eigsh``)
on a :class:`~scipy.sparse.linalg.LinearOperator` of those products.

The limiting kernels of the theory (Jacot et al., ICLR 2020; docs/hessian.md) are computed
from the Gaussian-expectation core :func:`ntk_repro.gauss.expect_2d` for any smooth σ: Θ̃, Σ̃,
Υ (Tr S² → ∇Cᵀ Υ̃ ∇C) and, for one hidden layer, Φ (E[g(x) f(x')], g = Tr ∇²_θ f) and Λ
(∇_θ g · ∇_θ f, the drift of g). :func:`corollary` turns them into the expected moments along
gradient flow θ̇ = −∇C, in the time convention Ẏ = −(Θ̃/N)(Y − Y*) (no 1/N absorbed in t), or
along gradient descent at a step lr; :func:`propagators` gives E_t = e^{−tΘ̃/N} (or its
gradient-descent version). :func:`digits_problem` is the data of the three experiments.

Inputs are numpy arrays or tensors; outputs numpy float64. Models may be float32 or float64;
products run in the model's dtype (the block formulas in float64).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ntk_repro import data
from ntk_repro.empirical import empirical_ntk
from ntk_repro.gauss import expect_2d
from ntk_repro.kernels import check_hyperparameters, linearised_flow, weight_gain
from ntk_repro.networks import MLP
from ntk_repro.validation import (
    as_real_tensor,
    check_choice,
    check_int,
    check_points,
    check_real,
    check_tensor,
)

Tensor = torch.Tensor
PARTS = ("H", "I", "S")
METHODS = ("auto", "dense", "blocks", "stochastic")
# Largest parameter count for which method="auto" builds dense P × P matrices (128 MB).
DENSE_MAX_PARAMS = 4096
# Probes per vmap chunk of the stochastic estimator (bounds memory to a few P-vectors each).
_PROBE_CHUNK = 8
# Hidden units per chunk of the block eigenvalues ((n0 + 2)² float64 each).
_UNIT_CHUNK = 512
# Entries of the (rows of J) × n1 × N temporaries of the cross terms (128 MB in float64).
_CROSS_CHUNK = 2**24


# --- validation ------------------------------------------------------------------------------


def _check_model(model) -> tuple[torch.dtype, torch.device]:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = [p for p in model.parameters() if p.is_floating_point()]
    if not params:
        raise ValueError("model has no floating-point parameters")
    return params[0].dtype, params[0].device


def _check_data(model, x, y) -> tuple[Tensor, Tensor]:
    dtype, device = _check_model(model)
    t = as_real_tensor(x, "x")
    if t.ndim < 2 or t.shape[0] == 0:
        raise ValueError(f"x must have shape (N, ...) with N >= 1, got {tuple(t.shape)}")
    if isinstance(model, MLP) and (t.ndim != 2 or t.shape[1] != model.in_dim):
        raise ValueError(
            f"x must have shape (N, {model.in_dim}) for this MLP, got {tuple(t.shape)}"
        )
    xt = check_tensor(t, "x", dtype=dtype, device=device, ndims=(t.ndim,))
    yt = check_tensor(
        as_real_tensor(y, "y").reshape(-1), "y", dtype=dtype, device=device, ndims=(1,)
    )
    if yt.shape[0] != xt.shape[0]:
        raise ValueError(f"y must have one target per point: {yt.shape[0]} for {xt.shape[0]}")
    with torch.no_grad():
        out = model(xt)
    if out.numel() != xt.shape[0]:
        raise ValueError(
            f"model must have a scalar output per point, got output shape {tuple(out.shape)}"
        )
    return xt, yt


def _check_orders(orders) -> tuple[int, ...]:
    try:
        orders = tuple(orders)
    except TypeError:
        raise ValueError(
            f"orders must be a sequence of positive integers, got {orders!r}"
        ) from None
    if not orders:
        raise ValueError("orders must not be empty")
    return tuple(check_int(k, "orders", minimum=1) for k in orders)


def _is_one_hidden_layer(model) -> bool:
    return (
        isinstance(model, MLP)
        and model.depth == 2
        and model.norm is None
        and model.out_dim == 1
        and model.activation.is_smooth
    )


def _to_numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


# --- matrix-free products through torch.func -----------------------------------------------------


class LossHessian:
    """Matrix-free I, S and H of C = 1/(2N) Σ (f(xᵢ) − yᵢ)² at the model's current parameters.

    Vectors live in the flat parameter space (``model.parameters()`` order, each flattened):
    numpy (P,) or (P, m) float64 in, the same shape float64 out. A one-hidden-layer smooth
    :class:`MLP` uses the block formulas (``blocks`` attribute, exact and fast); any other
    module uses ``torch.func``. The model is not modified.
    """

    def __init__(self, model: nn.Module, x, y, *, structured: bool = True):
        self.model = model
        self.x, self.y = _check_data(model, x, y)
        self.dtype, self.device = self.x.dtype, self.x.device
        self.names = [name for name, _ in model.named_parameters()]
        self.shapes = [p.shape for _, p in model.named_parameters()]
        self.sizes = [p.numel() for _, p in model.named_parameters()]
        self.theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        self.n = self.x.shape[0]
        self.n_params = int(self.theta.numel())
        with torch.no_grad():
            self.f = self._f(self.theta)
        self.residual = (self.f - self.y).detach()
        self.blocks = (
            OneHiddenLayer(model, self.x, self.y)
            if (structured and _is_one_hidden_layer(model))
            else None
        )

    # -- the function and its derivatives --
    def _unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        parts = torch.split(theta, self.sizes)
        return {n: t.view(s) for n, t, s in zip(self.names, parts, self.shapes)}

    def _f(self, theta: Tensor) -> Tensor:
        out = torch.func.functional_call(self.model, self._unflatten(theta), (self.x,))
        return out.reshape(-1)

    def _weighted(self, theta: Tensor) -> Tensor:
        # rᵀ f(θ) / N with the residual held fixed: its Hessian is S.
        return torch.dot(self.residual, self._f(theta)) / self.n

    def _loss(self, theta: Tensor) -> Tensor:
        return 0.5 * ((self._f(theta) - self.y) ** 2).mean()

    def _s_product(self, v: Tensor) -> Tensor:
        return torch.func.jvp(torch.func.grad(self._weighted), (self.theta,), (v,))[1]

    def _h_product(self, v: Tensor) -> Tensor:
        # One forward-over-reverse pass of C itself (measured ~30% faster than I v + S v).
        return torch.func.jvp(torch.func.grad(self._loss), (self.theta,), (v,))[1]

    def _i_product(self, v: Tensor) -> Tensor:
        jv = torch.func.jvp(self._f, (self.theta,), (v,))[1]
        _, pullback = torch.func.vjp(self._f, self.theta)
        return pullback(jv / self.n)[0]

    def jacobian_product(self, v) -> np.ndarray:
        """J v: (P,) → (N,) (or (P, m) → (N, m)), float64."""
        t = self._as_tensor(v, self.n_params, "v")
        if self.blocks is not None:
            cols = t[:, None] if t.ndim == 1 else t
            out = self.blocks.j_units(*self.blocks.to_units(cols.double())).T
            return _to_numpy(out[:, 0] if t.ndim == 1 else out)
        return _to_numpy(
            self._columns(lambda c: torch.func.jvp(self._f, (self.theta,), (c,))[1], t)
        )

    def jacobian_transpose_product(self, u) -> np.ndarray:
        """Jᵀ u: (N,) → (P,) (or (N, m) → (P, m)), float64."""
        t = self._as_tensor(u, self.n, "u")
        if self.blocks is not None:
            cols = t[:, None] if t.ndim == 1 else t
            out = self.blocks.from_units(*self.blocks.jt_units(cols.double().T))
            return _to_numpy(out[:, 0] if t.ndim == 1 else out)
        _, pullback = torch.func.vjp(self._f, self.theta)
        return _to_numpy(self._columns(lambda c: pullback(c)[0], t))

    def _as_tensor(self, v, rows: int, name: str) -> Tensor:
        t = torch.as_tensor(np.asarray(v, dtype=np.float64)).to(self.dtype).to(self.device)
        if t.ndim not in (1, 2) or t.shape[0] != rows:
            raise ValueError(
                f"{name} must have shape ({rows},) or ({rows}, m), got {tuple(t.shape)}"
            )
        return t

    @staticmethod
    def _columns(fn, t: Tensor) -> Tensor:
        """fn on a vector, or on every column of a matrix (a loop: vmap over torch.func's
        reverse mode was measured slower here)."""
        if t.ndim == 1:
            return fn(t)
        return torch.stack([fn(t[:, j]) for j in range(t.shape[1])], 1)

    def tensor_product(self, part: str, v: Tensor) -> Tensor:
        """M v for M in {"H", "I", "S"} on a tensor (P,) or (P, m) of the model's dtype."""
        if self.blocks is not None:
            return self.blocks.product(part, v)
        fn = {"H": self._h_product, "I": self._i_product, "S": self._s_product}[part]
        return fn(v) if v.ndim == 1 else torch.func.vmap(fn, in_dims=1, out_dims=1)(v)

    def product(self, part: str, v) -> np.ndarray:
        """M v for M in {"H", "I", "S"}: numpy (P,) or (P, m) → float64 of the same shape."""
        check_choice(part, "part", PARTS)
        return _to_numpy(self.tensor_product(part, self._as_tensor(v, self.n_params, "v")))

    def operator(self, part: str):
        """M as a scipy LinearOperator (P × P, float64)."""
        from scipy.sparse.linalg import LinearOperator

        check_choice(part, "part", PARTS)
        return LinearOperator(
            (self.n_params, self.n_params),
            matvec=lambda v: self.product(part, np.ravel(v)),
            matmat=lambda v: self.product(part, v),
            dtype=np.float64,
        )

    def ntk(self) -> np.ndarray:
        """Θ̂ = JJᵀ (N, N), float64."""
        if self.blocks is not None:
            return self.blocks.ntk().cpu().double().numpy()
        return empirical_ntk(self.model, self.x).detach().cpu().double().numpy()

    # -- dense matrices (small P only) --
    def dense(self) -> dict[str, np.ndarray]:
        """{"I", "S", "H"} as dense (P, P) float64 arrays (P² memory)."""
        jac = torch.func.jacrev(self._f)(self.theta).double()
        s = torch.func.hessian(self._weighted)(self.theta).double()
        i = jac.T @ jac / self.n
        s = 0.5 * (s + s.T)
        return {"I": i.cpu().numpy(), "S": s.cpu().numpy(), "H": (i + s).cpu().numpy()}


# --- one hidden layer: the block-diagonal structure -----------------------------------------


class OneHiddenLayer:
    """Exact S, I and their traces for a smooth one-hidden-layer :class:`MLP` (float64 math).

    f(x) = c Σ_j W1_j σ(h_j(x)) + β b1, h_j = W0_j · (s x/√n0) + β b0_j, c = s/√n1, s = s_W.
    Per-unit coordinates of a parameter vector: (W0_j (n0), b0_j, W1_j) → an (n1, n0 + 2)
    array, plus b1 (its rows and columns of S are 0).

    x (N, n0) and y (N,) are tensors on the model's device (:class:`LossHessian` validates
    them; a caller that builds this directly passes them as the model expects).
    """

    def __init__(self, model: MLP, x: Tensor, y: Tensor):
        if not _is_one_hidden_layer(model):
            raise ValueError(
                "model must be an ntk_repro MLP with one hidden layer, scalar output, no "
                "normalisation and a smooth activation"
            )
        self.model = model
        self.dtype = x.dtype
        w0, w1 = model.weights[0].detach(), model.weights[1].detach()
        self.n, self.n0 = x.shape
        self.n1 = w0.shape[0]
        s, beta = model.weight_scale, model.beta
        self.c = s / math.sqrt(self.n1)
        self.beta = beta
        f64 = torch.float64
        xd = x.to(f64)
        # u_i = (s x_i/√n0, β): ∂h_j(x_i)/∂(W0_j, b0_j); K = UUᵀ = Σ₁ on the points.
        self.u = torch.cat(
            [
                xd * (s / math.sqrt(self.n0)),
                torch.full((self.n, 1), beta, dtype=f64, device=x.device),
            ],
            1,
        )
        self.k = self.u @ self.u.T
        pre = model.preactivation(0, x).detach().to(f64)  # (N, n1)
        act = model.activation
        self.s0, self.s1 = act(pre), act.derivative(pre)
        self.s2 = act.second_derivative(pre)
        self.w1 = w1.reshape(-1).to(f64)
        with torch.no_grad():
            self.f = model(x).reshape(-1).to(f64)
        self.residual = self.f - y.to(f64)
        # Weights of the two kinds of S-block entries: (n1, N).
        self.d2 = (self.residual[:, None] * self.s2 * self.w1[None, :]).T
        self.d1 = (self.residual[:, None] * self.s1).T
        spans, start = {}, 0
        for param in model.parameters():
            spans[id(param)] = slice(start, start + param.numel())
            start += param.numel()
        self.n_params = start
        self._slices = {
            "w0": spans[id(model.weights[0])],
            "b0": spans[id(model.biases[0])],
            "w1": spans[id(model.weights[1])],
            "b1": spans[id(model.biases[1])],
        }

    # -- coordinates --
    def to_units(self, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(P, m) → (W0 part (m, n1, n0 + 1) incl. b0, W1 part (m, n1), b1 part (m,))."""
        sl = self._slices
        m = v.shape[1]
        w0 = v[sl["w0"]].T.reshape(m, self.n1, self.n0)
        b0 = v[sl["b0"]].T.reshape(m, self.n1, 1)
        return torch.cat([w0, b0], 2), v[sl["w1"]].T, v[sl["b1"]].T.reshape(m)

    def from_units(self, vw: Tensor, va: Tensor, vb: Tensor) -> Tensor:
        sl = self._slices
        m = vw.shape[0]
        out = torch.empty(self.n_params, m, dtype=vw.dtype, device=vw.device)
        out[sl["w0"]] = vw[:, :, : self.n0].reshape(m, -1).T
        out[sl["b0"]] = vw[:, :, self.n0].T
        out[sl["w1"]] = va.T
        out[sl["b1"]] = vb.reshape(1, m)
        return out

    # -- products in unit coordinates (float64) --
    def s_units(self, vw: Tensor, va: Tensor) -> tuple[Tensor, Tensor]:
        """S in unit coordinates: (m, n1, n0+1), (m, n1) → the same (b1 part of S v is 0)."""
        t = vw @ self.u.T  # (m, n1, N): u_i · v_j
        scale = self.c / self.n
        out_w = (self.d2 * t + self.d1 * va[:, :, None]) @ self.u
        out_a = (self.d1 * t).sum(-1)
        return out_w * scale, out_a * scale

    def j_units(self, vw: Tensor, va: Tensor, vb: Tensor) -> Tensor:
        """J v: (m, N)."""
        t = vw @ self.u.T  # (m, n1, N)
        jw = torch.einsum("mji,ij,j->mi", t, self.s1, self.w1)
        ja = va @ self.s0.T
        return self.c * (jw + ja) + self.beta * vb[:, None]

    def jt_units(self, r: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Jᵀ r for r (m, N): unit coordinates."""
        weighted = r[:, :, None] * self.s1[None]  # (m, N, n1)
        vw = self.c * self.w1[None, :, None] * (weighted.transpose(1, 2) @ self.u)
        va = self.c * (r @ self.s0)
        vb = self.beta * r.sum(1)
        return vw, va, vb

    def product(self, part: str, v: Tensor) -> Tensor:
        """M v for M in {"H", "I", "S"} on a flat tensor (P,) or (P, m)."""
        single = v.ndim == 1
        v64 = (v[:, None] if single else v).to(torch.float64)
        vw, va, vb = self.to_units(v64)
        out = torch.zeros_like(v64)
        if part in ("I", "H"):
            rw, ra, rb = self.jt_units(self.j_units(vw, va, vb) / self.n)
            out += self.from_units(rw, ra, rb)
        if part in ("S", "H"):
            sw, sa = self.s_units(vw, va)
            out += self.from_units(sw, sa, torch.zeros_like(vb))
        out = out.to(v.dtype)
        return out[:, 0] if single else out

    # -- exact quantities --
    def ntk(self) -> Tensor:
        """Θ̂ = c²[(σ'(h) diag(W1²) σ'(h)ᵀ) ⊙ K + σ(h)σ(h)ᵀ] + β², (N, N) float64."""
        sens = (self.s1 * self.w1) @ (self.s1 * self.w1).T
        return self.c**2 * (sens * self.k + self.s0 @ self.s0.T) + self.beta**2

    def upsilon(self) -> Tensor:
        """Υ̂ with Tr S² = rᵀΥ̂r/N² exactly: c²[(σ''diag(W1²)σ''ᵀ) ⊙ K² + 2(σ'σ'ᵀ) ⊙ K]."""
        curv = (self.s2 * self.w1) @ (self.s2 * self.w1).T
        return self.c**2 * (curv * self.k**2 + 2.0 * (self.s1 @ self.s1.T) * self.k)

    def output_hessian_trace(self) -> Tensor:
        """g(xᵢ) = Tr ∇²_θ f(xᵢ) = c Σ₁(xᵢ, xᵢ) Σ_j W1_j σ''(h_j(xᵢ)), (N,) float64."""
        return self.c * torch.diagonal(self.k) * (self.s2 @ self.w1)

    def _blocks(self, units: slice) -> Tensor:
        """The S-blocks of the hidden units in ``units``: (n, n0 + 2, n0 + 2) float64."""
        d2, d1 = self.d2[units], self.d1[units]
        out = d2.new_zeros(d2.shape[0], self.n0 + 2, self.n0 + 2)
        # M_j = Uᵀ diag(d2_j) U and v_j = Uᵀ d1_j, scaled by c/N.
        out[:, :-1, :-1] = (d2[:, :, None] * self.u).transpose(1, 2) @ self.u
        out[:, :-1, -1] = d1 @ self.u
        out[:, -1, :-1] = out[:, :-1, -1]
        return out.mul_(self.c / self.n)

    def _kernel_blocks(self, units: slice) -> Tensor:
        """X_j = C_j G with B_j = Pᵀ C_j P: the blocks in the N + 1 coordinates of the points.

        B_j = (c/N) Pᵀ [[diag(d2_j), d1_j], [d1_jᵀ, 0]] P with P = diag(Uᵀ, 1), so
        Tr B_jᵏ = Tr (C_j G)ᵏ with G = P Pᵀ = diag(K, 1): cheaper when N + 1 < n0 + 2.
        """
        d2, d1 = self.d2[units], self.d1[units]
        out = d2.new_zeros(d2.shape[0], self.n + 1, self.n + 1)
        out[:, :-1, :-1] = d2[:, :, None] * self.k
        out[:, :-1, -1] = d1
        out[:, -1, :-1] = d1 @ self.k
        return out.mul_(self.c / self.n)

    def s_power_traces(self, orders: Sequence[int]) -> np.ndarray:
        """Tr Sᵏ for each k in ``orders`` (float64): sums over the blocks, by products of the
        blocks (in the smaller of the two coordinate systems) for k ≤ 4, else by eigenvalues."""
        totals = np.zeros(len(orders))
        small = self.n + 1 < self.n0 + 2
        for start in range(0, self.n1, _UNIT_CHUNK):
            units = slice(start, start + _UNIT_CHUNK)
            if max(orders) > 4:
                b = torch.linalg.eigvalsh(self._blocks(units))
                totals += _power_traces(b.cpu().numpy().ravel(), orders)
                continue
            # Tr(XY) = Σ X ⊙ Yᵀ; X is symmetric in the parameter coordinates only.
            x = self._kernel_blocks(units) if small else self._blocks(units)
            xt = x.transpose(1, 2)
            x2 = x @ x
            by_k = {
                1: torch.diagonal(x, dim1=1, dim2=2).sum(),
                2: (x * xt).sum(),
                3: (x2 * xt).sum(),
                4: (x2 * x2.transpose(1, 2)).sum(),
            }
            totals += np.array([float(by_k[k]) for k in orders])
        return totals

    def s_block_eigenvalues(self) -> Tensor:
        """Eigenvalues of the n1 blocks of S, (n1, n0 + 2) float64 (S's spectrum = their union)."""
        return torch.cat(
            [
                torch.linalg.eigvalsh(self._blocks(slice(start, start + _UNIT_CHUNK)))
                for start in range(0, self.n1, _UNIT_CHUNK)
            ]
        )

    def s_block_eigenpairs(self, k: int, which: str) -> tuple[np.ndarray, np.ndarray]:
        """Top-k eigenpairs of S from its blocks (exact); vectors (P, k) in flat coordinates."""
        vals, vecs = torch.linalg.eigh(self._blocks(slice(None)))
        flat = vals.reshape(-1)
        order = _select(flat.cpu().numpy(), k, which)
        units, idx = order // (self.n0 + 2), order % (self.n0 + 2)
        out_w = self.u.new_zeros(k, self.n1, self.n0 + 1)
        out_a = self.u.new_zeros(k, self.n1)
        for col, (j, e) in enumerate(zip(units, idx)):
            out_w[col, j] = vecs[j, :-1, e]
            out_a[col, j] = vecs[j, -1, e]
        vectors = self.from_units(out_w, out_a, self.u.new_zeros(k))
        return flat[order].cpu().numpy(), vectors.cpu().numpy()

    def moments(self, orders: Sequence[int] = (1, 2, 3, 4)) -> dict[str, np.ndarray]:
        """Tr Mᵏ of M ∈ {H, I, S} for each k ≤ 4 in ``orders`` (exact): float64 arrays
        (len(orders),), as :func:`hessian_moments` with ``method="blocks"`` returns them."""
        orders = _check_orders(orders)
        if max(orders) > 4:
            raise ValueError("orders: method='blocks' gives Tr H^k for k <= 4; use method='dense'")
        tr_i = _power_traces(np.linalg.eigvalsh(self.ntk().cpu().numpy() / self.n), orders)
        tr_s = self.s_power_traces(orders)
        tr_h = _h_traces_from_cross(tr_i, tr_s, self.cross_terms(), orders)
        return {"H": tr_h, "I": tr_i, "S": tr_s}

    def trace_is(self) -> float:
        """Tr(IS) = (1/N²) Σ_{b,i} rᵢ J_b ∇²f(xᵢ) J_bᵀ in O(N² n1) (no block is formed)."""
        jw = self.c * self.s1 * self.w1  # (N, n1): unit part of J_b along its u_b
        ja = self.c * self.s0
        # J_b B_ij J_bᵀ summed with rᵢ: the three entries of the block, weighted by K_bi.
        k = self.k
        quad = torch.einsum("bj,bi,ji->", jw * jw, k * k, self.d2)
        mixed = torch.einsum("bj,bj,bi,ji->", jw, ja, k, self.d1)
        return float((quad + 2.0 * mixed) * self.c / self.n**2)

    def cross_terms(self) -> dict[str, Tensor]:
        """A = Θ̂/N, Q = JSJᵀ/N, R = JS²Jᵀ/N (N, N) and Tr(IS³) = (1/N) Σ_b ⟨SJ_b, S·SJ_b⟩.

        Row b of J in unit coordinates is (c W1_j σ'(h_bj) u_b, c σ(h_bj)), so uᵢ · its W0
        part is c W1_j σ'(h_bj) K_bi: an outer product. The W0 part of SJ_b is
        Σᵢ coef_b,ji uᵢ, so every product with it goes through K = UUᵀ. Rows b run in chunks
        (temporaries of chunk × n1 × N entries).
        """
        scale = self.c / self.n
        jw = self.c * self.s1 * self.w1  # (N, n1)
        ja = self.c * self.s0  # (N, n1)
        q = self.u.new_empty(self.n, self.n)
        sw = self.u.new_empty(self.n, self.n1, self.n0 + 1)
        sa = self.u.new_empty(self.n, self.n1)
        is3 = self.u.new_zeros(())
        chunk = max(1, _CROSS_CHUNK // (self.n1 * self.n))
        for start in range(0, self.n, chunk):
            rows = slice(start, start + chunk)
            t = jw[rows, :, None] * self.k[rows, None, :]  # (b, n1, N_i): uᵢ · (J_b)_j
            coef = (self.d2 * t + self.d1 * ja[rows, :, None]) * scale
            sa[rows] = (self.d1 * t).sum(-1) * scale  # W1 part of SJ_b
            sw[rows] = coef @ self.u  # W0/b0 part of SJ_b
            ck = coef @ self.k  # (b, n1, N_i): uᵢ · (SJ_b)_j
            # Q[a, b] = J_a · SJ_b / N.
            q[:, rows] = (torch.einsum("aj,bja->ab", jw, ck) + ja @ sa[rows].T) / self.n
            # ⟨w, S w⟩ for w = SJ_b: (c/N) Σ_j Σᵢ [d2_ji (uᵢ·w_j)² + 2 d1_ji (uᵢ·w_j) a_j].
            is3 += (self.d2 * ck * ck + 2.0 * self.d1 * ck * sa[rows, :, None]).sum() * scale
        flat = torch.cat([sw.reshape(self.n, -1), sa], 1)
        r = flat @ flat.T / self.n
        return {"A": self.ntk() / self.n, "Q": 0.5 * (q + q.T), "R": r, "IS3": is3 / self.n}


def _select(values: np.ndarray, k: int, which: str) -> np.ndarray:
    """Indices of the k values first by ``which`` (LM: |λ| descending, LA: descending,
    SA: ascending)."""
    key = {"LM": -np.abs(values), "LA": -values, "SA": values}[which]
    return np.argsort(key, kind="stable")[:k]


# --- traces ------------------------------------------------------------------------------------


def _power_traces(eigenvalues: np.ndarray, orders: Sequence[int]) -> np.ndarray:
    return np.array([float(np.sum(eigenvalues**k)) for k in orders])


def _h_traces_from_cross(tr_i, tr_s, cross: dict[str, Tensor], orders) -> np.ndarray:
    """Tr Hᵏ (k ≤ 4) = Σ over words in I and S, each reduced to N × N matrices (module doc)."""
    a, q, r = (cross[key].cpu().numpy() for key in ("A", "Q", "R"))
    aq, ar = a @ q, a @ r
    cross_k = {
        1: 0.0,
        2: 2.0 * np.trace(q),
        3: 3.0 * np.trace(aq) + 3.0 * np.trace(r),
        4: 4.0 * np.trace(a @ aq)
        + 4.0 * np.trace(ar)
        + 2.0 * np.sum(q * q.T)
        + 4.0 * float(cross["IS3"]),
    }
    return np.array([tr_i[n] + tr_s[n] + cross_k[k] for n, k in enumerate(orders)])


def _exact_dense(op: LossHessian, orders) -> dict[str, np.ndarray]:
    mats = op.dense()
    return {part: _power_traces(np.linalg.eigvalsh(mats[part]), orders) for part in PARTS}


def _rademacher(n: int, m: int, generator: torch.Generator) -> Tensor:
    return torch.randint(0, 2, (n, m), generator=generator, dtype=torch.int8).double() * 2 - 1


def _chain(op: LossHessian, part: str, z: Tensor, length: int) -> list[Tensor]:
    out = [z]
    for _ in range(length):
        out.append(op.tensor_product(part, out[-1]))
    return out


def _quadratic_forms(chain: list[Tensor], orders) -> Tensor:
    """zᵀMᵏz = ⟨M^⌊k/2⌋z, M^⌈k/2⌉z⟩ per probe: (len(orders), m) float64."""
    return torch.stack(
        [(chain[k // 2].double() * chain[k - k // 2].double()).sum(0) for k in orders]
    )


def _stochastic(op: LossHessian, orders, probes: int, seed: int):
    tr_i = _power_traces(np.linalg.eigvalsh(op.ntk() / op.n), orders)
    half = (max(orders) + 1) // 2
    generator = torch.Generator().manual_seed(seed)
    h_minus_i, s_forms = [], []
    for start in range(0, probes, _PROBE_CHUNK):
        m = min(_PROBE_CHUNK, probes - start)
        z = _rademacher(op.n_params, m, generator).to(op.dtype).to(op.device)
        chains = {part: _chain(op, part, z, half) for part in PARTS}
        forms = {part: _quadratic_forms(chains[part], orders) for part in PARTS}
        h_minus_i.append(forms["H"] - forms["I"])  # the I part cancels probe by probe
        s_forms.append(forms["S"])
    h_minus_i = torch.cat(h_minus_i, 1).cpu().numpy()
    s_forms = torch.cat(s_forms, 1).cpu().numpy()

    def mean_se(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        se = (
            samples.std(1, ddof=1) / math.sqrt(probes)
            if probes > 1
            else np.full(len(orders), np.inf)
        )
        return samples.mean(1), se

    d_mean, d_se = mean_se(h_minus_i)
    s_mean, s_se = mean_se(s_forms)
    moments = {"H": tr_i + d_mean, "I": tr_i, "S": s_mean}
    return moments, {"H": d_se, "I": np.zeros(len(orders)), "S": s_se}


def _resolve_method(method: str, op: LossHessian) -> str:
    check_choice(method, "method", METHODS)
    if method == "blocks" and op.blocks is None:
        raise ValueError(
            "method='blocks' needs an ntk_repro MLP with one hidden layer, scalar output, no "
            "normalisation and a smooth activation"
        )
    if method != "auto":
        return method
    if op.blocks is not None:
        return "blocks"
    return "dense" if op.n_params <= DENSE_MAX_PARAMS else "stochastic"


def hessian_moments(
    model: nn.Module,
    x,
    y,
    *,
    orders=(1, 2, 3, 4),
    method: str = "auto",
    probes: int = 64,
    seed: int = 0,
    stderr: bool = False,
):
    """Tr Mᵏ of M ∈ {H, I, S} for the MSE loss C = 1/(2N) Σ (f(xᵢ) − yᵢ)² at the model's θ.

    Parameters
    ----------
    model : nn.Module with one scalar output per point ((N,) or (N, 1)), float32 or float64.
    x : (N, ...) inputs as the model expects.  y : (N,) targets.
    orders : positive integers k (any for ``dense``, k ≤ 4 for ``blocks``).
    method : "auto" (``blocks`` for a smooth one-hidden-layer MLP, ``dense`` up to
        DENSE_MAX_PARAMS parameters, else ``stochastic``), "dense", "blocks", "stochastic";
        see the module docstring.
    probes, seed : Rademacher probes of the ``stochastic`` method and their seed.
    stderr : also return the standard errors (0 for exact entries).

    Returns
    -------
    dict {"H", "I", "S"} of float64 arrays (len(orders),) in the order of ``orders``; with
    ``stderr=True`` a pair (moments, standard errors) of such dicts. A caller that also needs
    other block quantities (f, g) builds :class:`OneHiddenLayer` once and calls its
    ``moments`` (the same numbers).
    """
    orders = _check_orders(orders)
    check_int(probes, "probes", minimum=2)
    check_int(seed, "seed", minimum=0)
    op = LossHessian(model, x, y)
    method = _resolve_method(method, op)
    if method == "stochastic":
        moments, se = _stochastic(op, orders, probes, seed)
    else:
        moments = op.blocks.moments(orders) if method == "blocks" else _exact_dense(op, orders)
        se = {part: np.zeros(len(orders)) for part in PARTS}
    return (moments, se) if stderr else moments


def orthogonality(model: nn.Module, x, y, *, method: str = "auto") -> dict[str, float]:
    """‖IS‖_F, ‖I‖_F, ‖S‖_F and the ratio ‖IS‖_F / (‖I‖_F ‖S‖_F) (exact: blocks or dense).

    ‖IS‖_F² = Tr(I²S²) = Tr(A R) with A = Θ̂/N and R = JS²Jᵀ/N for the block method.
    """
    op = LossHessian(model, x, y)
    method = _resolve_method(method, op)
    if method == "stochastic":
        raise ValueError("method: orthogonality is exact only ('blocks' or 'dense')")
    if method == "blocks":
        cross = op.blocks.cross_terms()
        a, r = cross["A"].cpu().numpy(), cross["R"].cpu().numpy()
        is_sq = float(np.trace(a @ r))
        i_sq = float(np.sum(np.linalg.eigvalsh(a) ** 2))
        s_sq = float(op.blocks.s_power_traces((2,))[0])
    else:
        mats = op.dense()
        is_sq = float(np.sum((mats["I"] @ mats["S"]) ** 2))
        i_sq, s_sq = float(np.sum(mats["I"] ** 2)), float(np.sum(mats["S"] ** 2))
    norms = {"IS": math.sqrt(max(is_sq, 0.0)), "I": math.sqrt(i_sq), "S": math.sqrt(s_sq)}
    norms["ratio"] = norms["IS"] / (norms["I"] * norms["S"])
    return norms


def top_eigenpairs(
    model: nn.Module,
    x,
    y,
    *,
    part: str = "H",
    k: int = 20,
    which: str = "LM",
    method: str = "lanczos",
    seed: int = 0,
    tol: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The k eigenpairs of M ∈ {H, I, S} first by ``which``.

    which : "LM" (largest |λ|), "LA" (largest λ) or "SA" (smallest λ).
    method : "lanczos" (``scipy.sparse.linalg.eigsh`` on the matrix-free operator, start
        vector from ``seed``, tolerance ``tol``; 0 = machine precision), "exact" (I from the
        eigenvectors of Θ̂: v = Jᵀu/√μ; S from its blocks for a one-hidden-layer MLP) or
        "dense" (P × P ``eigh``).

    Returns
    -------
    (eigenvalues (k,), eigenvectors (P, k)) float64, ordered by ``which``.
    """
    check_choice(part, "part", PARTS)
    check_choice(which, "which", ("LM", "LA", "SA"))
    check_choice(method, "method", ("lanczos", "exact", "dense"))
    check_real(tol, "tol", minimum=0.0)
    op = LossHessian(model, x, y)
    k = check_int(k, "k", minimum=1, maximum=op.n_params - 1)
    if method == "dense":
        vals, vecs = np.linalg.eigh(op.dense()[part])
        order = _select(vals, k, which)
        return vals[order], vecs[:, order]
    if method == "exact":
        return _exact_eigenpairs(op, part, k, which)
    from scipy.sparse.linalg import eigsh

    v0 = np.random.default_rng(check_int(seed, "seed", minimum=0)).standard_normal(op.n_params)
    vals, vecs = eigsh(op.operator(part), k=k, which=which, v0=v0, tol=tol)
    order = _select(vals, k, which)
    return vals[order], vecs[:, order]


def _exact_eigenpairs(op: LossHessian, part: str, k: int, which: str):
    if part == "I":
        if which == "SA":
            raise ValueError("which: method='exact' gives the top eigenpairs of I only")
        mu, u = np.linalg.eigh(op.ntk())
        order = np.argsort(-mu)[: min(k, op.n)]
        if k > op.n:
            raise ValueError(f"k: I has rank at most N = {op.n}")
        mu, u = mu[order], u[:, order]
        vecs = op.jacobian_transpose_product(u) / np.sqrt(np.maximum(mu, 1e-300))
        return mu / op.n, vecs
    if part == "S" and op.blocks is not None:
        return op.blocks.s_block_eigenpairs(k, which)
    raise ValueError(
        "part: method='exact' covers I, and S of a one-hidden-layer MLP; use 'lanczos'"
    )


# --- the experiments' data -------------------------------------------------------------------


def digits_problem(n_points: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """N digits on the sphere ‖x‖² = 64 — the points of :func:`ntk_repro.data.digits_inputs`
    for this seed — and targets +1 (digit < 5) / −1: x (N, 64), y (N,) float64."""
    n_points = check_int(n_points, "n_points", minimum=1)
    x, labels = data.digits_inputs(n_points, seed=seed)
    return x, np.where(labels < 5, 1.0, -1.0)


# --- the limiting kernels ------------------------------------------------------------------------


# Quadrature nodes of expect_2d for smooth σ: the core splits its angular range at the kinks of
# ReLU-like functions, which smooth integrands do not need; 16 nodes per arc and 8 per radial
# panel agree with the default rule to ~1e-10 relative (tests/test_hessian.py) at 1/4 the cost.
_SMOOTH_NODES = {"n_per_arc": 16, "n_per_panel": 8}


def _expect_symmetric(f, g, q: Tensor, cov: Tensor) -> Tensor:
    """E[f(u)g(v)] on every pair of points for f = g (symmetric in the pair): the upper triangle
    of the (N, N) matrix through the quadrature core, mirrored."""
    rows, cols = torch.triu_indices(len(q), len(q))
    upper = expect_2d(f, g, q[rows], q[cols], cov[rows, cols], **_SMOOTH_NODES)
    out = torch.empty_like(cov)
    out[rows, cols] = upper
    out[cols, rows] = upper
    return out


def limiting_kernels(
    x, *, depth: int, beta: float, activation: str, parametrization: str = "ntk2018"
) -> dict[str, np.ndarray]:
    """Limiting kernels of the loss Hessian's theory on the points x (N, n0), float64 (N, N).

    Keys: "ntk" Θ̃, "nngp" Σ̃ (covariance of the outputs at initialisation) and "upsilon"
    Υ (Tr S² → (1/N²) rᵀΥ̃r for residuals r), by the recursion over layers ℓ = 1 … L − 1

        Υ⁽ℓ⁺¹⁾ = Υ⁽ℓ⁾ · s²𝔼[σ'σ'] + s²(Θ⁽ℓ⁾² 𝔼[σ''σ''] + 2 Θ⁽ℓ⁾ 𝔼[σ'σ']),  Υ⁽¹⁾ = 0,

    expectations under N(0, Σ⁽ℓ⁾) (s² = s_W²). For depth 2 also "phi" Φ(x, x') =
    s²Σ₁(x, x) 𝔼[σ''(u)σ(v)] (= E[g(x) f(x')], g = Tr ∇²_θ f) and "lambda" Λ(x, x') =
    s²Σ₁(x, x)(𝔼[σ''(u)σ(v)] + Σ₁(x, x') 𝔼[σ'''(u)σ'(v)]) (= ∇_θ g(x) · ∇_θ f(x')).

    σ must be smooth (σ'' and σ''' exist): plain ReLU is outside the theory.
    """
    act = check_hyperparameters(depth, beta, activation, parametrization)
    check_int(depth, "depth", minimum=2)
    if not act.is_smooth:
        raise ValueError(f"activation {activation!r} is not smooth; the theory needs σ''")
    a = check_points(x, "x")
    gain = weight_gain(float(beta), parametrization)
    b2 = float(beta) ** 2
    t = torch.as_tensor(a, dtype=torch.float64)
    sigma = gain * (t @ t.T) / a.shape[1] + b2
    sigma = 0.5 * (sigma + sigma.T)
    theta, upsilon = sigma.clone(), torch.zeros_like(sigma)
    first = sigma.clone()
    extra = {}
    for _ in range(depth - 1):
        q = torch.diagonal(sigma).clone()
        e_ss = _expect_symmetric(act, act, q, sigma)
        e_dd = _expect_symmetric(act.derivative, act.derivative, q, sigma)
        e_22 = _expect_symmetric(act.second_derivative, act.second_derivative, q, sigma)
        if depth == 2:
            q1, q2 = q[:, None], q[None, :]
            e_2s = expect_2d(act.second_derivative, act, q1, q2, sigma, **_SMOOTH_NODES)
            e_31 = expect_2d(act.third_derivative, act.derivative, q1, q2, sigma, **_SMOOTH_NODES)
            extra["phi"] = gain * q1 * e_2s
            extra["lambda"] = gain * q1 * (e_2s + first * e_31)
        upsilon = upsilon * (gain * e_dd) + gain * (theta**2 * e_22 + 2.0 * theta * e_dd)
        sigma = gain * e_ss + b2
        theta = theta * (gain * e_dd) + sigma
    out = {"ntk": theta, "nngp": sigma, "upsilon": upsilon, **extra}
    return {key: value.numpy() for key, value in out.items()}


def _time_maps(theta: np.ndarray, times: np.ndarray, lr: float | None):
    """Eigenbasis U, decays d (T, N) of E_t and factors (T, N) of A_t = ∫₀ᵗ E_s ds.

    Gradient flow: d = e^{−tμ/N}. Gradient descent with step ``lr`` (t = lr · steps):
    d = (1 − lr μ/N)^{t/lr}, the discrete propagator, and A_t = lr Σ_{s<t/lr} E_s; in both
    cases A_t = N(1 − d)/μ (= t where μ = 0).
    """
    n = theta.shape[0]
    flow = linearised_flow(theta, 1.0 / n)
    mu = flow.eigenvalues
    if lr is None:
        decay = flow.decay(times)
    else:
        steps = np.round(np.asarray(times) / lr)
        decay = np.power(1.0 - lr * mu[None, :] / n, steps[:, None])
    with np.errstate(divide="ignore", invalid="ignore"):
        integral = np.where(mu > 0, n * (1.0 - decay) / np.where(mu > 0, mu, 1.0), times[:, None])
    return flow.eigenvectors, mu, decay, integral


def propagators(theta, times, *, lr: float | None = None) -> np.ndarray:
    """E_t = e^{−tΘ̃/N} (gradient flow) or D_t = (Id − lr Θ̃/N)^{t/lr} (gradient descent with
    step ``lr``) at each time: (T, N, N) float64. Y(t) − Y(0) = (Id − E_t)(Y* − Y(0)) for the
    linearised dynamics."""
    theta = check_points(theta, "theta")
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    if not np.isfinite(times).all() or (times < 0).any():
        raise ValueError("times must be finite and >= 0")
    evecs, _, decay, _ = _time_maps(theta, times, lr)
    return np.einsum("ij,tj,kj->tik", evecs, decay, evecs)


def corollary(kernels: dict, y, times, *, lr: float | None = None) -> dict[str, np.ndarray]:
    """Expected moments of H along training by the corrected corollary (docs/hessian.md).

    Gradient flow θ̇ = −∇C on C = 1/(2N)‖Y − Y*‖² (time t, no 1/N absorbed in t); with
    ``lr`` the same for gradient descent at that step, t = lr · steps. With E_t = e^{−tΘ̃/N}
    and A_t = ∫₀ᵗ E_s ds (their discrete versions for gradient descent):

    - Tr Iᵏ → Tr (Θ̃/N)ᵏ at every t;
    - E Tr S(t) = (1/N) Tr(E_t Φ̃ᵀ) − (1/N²)[Tr(A_tΛ̃ᵀE_tΣ̃) + Y*ᵀA_tΛ̃ᵀE_tY*]  (depth 2: the
      second term is the drift ∂_t g = −Λ∇C of g = Tr ∇²f);
    - E Tr S(t)² = (1/N²) Tr(E_t Υ̃ E_t (Σ̃ + Y*Y*ᵀ));
    - E Tr H = Tr I + E Tr S, E Tr H² = Tr I² + E Tr S², E Tr Hᵏ = Tr Iᵏ for k ≥ 3.

    kernels : the dict of :func:`limiting_kernels`.  y : targets (N,).  times : (T,) ≥ 0.

    Returns
    -------
    dict of float64 arrays: "I" (4,) Tr(Θ̃/N)ᵏ for k = 1…4; "H" (T, 4); "S2" (T,);
    "S" (T,) and "S_no_drift" (T,) when Φ and Λ are given (depth 2); "mean_output" (T, N)
    E Y(t) = Y* − E_t Y*.
    """
    theta = np.asarray(kernels["ntk"], dtype=np.float64)
    n = theta.shape[0]
    target = check_points(np.asarray(y, dtype=np.float64).reshape(-1, 1), "y")[:, 0]
    if target.shape[0] != n:
        raise ValueError(f"y must have {n} entries, got {target.shape[0]}")
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    if not np.isfinite(times).all() or (times < 0).any():
        raise ValueError("times must be finite and >= 0")
    if lr is not None:
        check_real(lr, "lr", minimum=0.0, exclusive_minimum=True)
    evecs, mu, decay, integral = _time_maps(theta, times, lr)
    tr_i = np.array([np.sum((mu / n) ** k) for k in range(1, 5)])
    # Everything in the eigenbasis of Θ̃: M ↦ UᵀMU.
    rot = {key: evecs.T @ np.asarray(kernels[key]) @ evecs for key in kernels if key != "ntk"}
    yy = evecs.T @ target
    cov = rot["nngp"] + np.outer(yy, yy)
    s2 = np.einsum("ti,ij,tj,ji->t", decay, rot["upsilon"], decay, cov) / n**2
    out = {"I": tr_i, "S2": s2, "mean_output": target - (evecs * decay[:, None, :]) @ yy}
    h = np.tile(tr_i, (len(times), 1))
    h[:, 1] += s2
    if "phi" in rot and "lambda" in rot:
        no_drift = np.einsum("ti,ii->t", decay, rot["phi"]) / n
        lam_t = rot["lambda"].T
        drift = (
            -(
                np.einsum("ti,ij,tj,ji->t", integral, lam_t, decay, rot["nngp"])
                + np.einsum("i,ti,ij,tj,j->t", yy, integral, lam_t, decay, yy)
            )
            / n**2
        )
        out["S_no_drift"], out["S"] = no_drift, no_drift + drift
        h[:, 0] += out["S"]
    out["H"] = h
    return out


__all__ = [
    "DENSE_MAX_PARAMS",
    "LossHessian",
    "METHODS",
    "OneHiddenLayer",
    "PARTS",
    "corollary",
    "digits_problem",
    "hessian_moments",
    "limiting_kernels",
    "orthogonality",
    "propagators",
    "top_eigenpairs",
]
