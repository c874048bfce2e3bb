"""Topology optimisation with a network-generated density, and the NTK as its filter.

Density (one value per element, its centre x in element units, origin at the lower left):

    x_e = sigmoid(f_θ(z(x_e)) − f_θ₀(z(x_e)) + logit(V_f) + b*)

f_θ is a fully connected net (:class:`ntk_repro.networks.MLP`, balanced parametrisation) of an
embedding z of the coordinates, θ₀ its initial parameters (so the initial field is the constant
V_f), and b* is found by bisection so that Σ_e x_e = V_f · n exactly. Its implicit gradient:
with ẋ = x(1 − x) and g = ∂C/∂x, ∂C/∂h_j = ẋ_j g_j − ẋ_j (Σ_i ẋ_i g_i)/(Σ_i ẋ_i) for the
pre-sigmoid field h = f_θ − f_θ₀ + logit(V_f).

Embeddings z (``n0`` = dimension of z):

- ``raw``: z = x / max(nelx, nely) (coordinates, origin at the lower-left corner);
- ``torus``: z = √2 (cos δx₁, sin δx₁, cos δx₂, sin δx₂), δ = π / (2 max(nelx, nely)) (a quarter
  turn across the domain: no wrap); z·z'/4 = (cos δΔ₁ + cos δΔ₂)/2 depends on x − x' only;
- ``fourier``: z_k = √2 sin(w_k·x + π/4), w_k ~ N(0, ℓ⁻² I), k = 1..m;
  z·z'/m → exp(−‖x − x'‖²/(2ℓ²)) as m → ∞, up to O(m^−1/2).

Kernel: the first layer of the net sees Σ⁽¹⁾(x, x') = (1 − β²) z·z'/n0 + β², exactly what
:func:`ntk_repro.kernels.kernel_matrices` computes from its inputs, so the analytic Θ∞ of the
embedded net is ``theta_inf(z(x), z(x'))`` (tested against the empirical NTK). Under gradient
descent on the loss L(x(θ)) the pre-sigmoid field moves, in the wide limit, by
Δh = −lr Θ∞ ∂L/∂h: the NTK filters the sensitivities, as the density filter of SIMP does.

Filter radius (our definition, inferred): the distance r at which the normalised line
Θ(x₀, x₀ + r e₁)/Θ(x₀, x₀) first falls to ½, averaged over the two directions.
Translation-invariance defect (ours): the largest spread, over the common offsets, of the
normalised lines at several base points x₀: max_r (max_b − min_b) ℓ_b(r).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import eigsh

from ntk_repro import fem
from ntk_repro.device import resolve_device
from ntk_repro.kernels import kernels_of_cosine, theta_inf
from ntk_repro.networks import MLP
from ntk_repro.validation import check_choice, check_int, check_points, check_real

EMBEDDINGS = ("raw", "torus", "fourier")
OPTIMIZERS = ("gd", "adam")
PARAMETRIZATION = "balanced"


# --- embeddings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Embedding:
    """A fixed map of element coordinates (N, 2) to network inputs (N, n0); see module notes."""

    kind: str
    scale: float  # raw: the divisor; torus: δ; fourier: ℓ
    frequencies: np.ndarray | None = None  # (m, 2), Fourier only

    @property
    def dim(self) -> int:
        return {"raw": 2, "torus": 4}.get(self.kind) or len(self.frequencies)

    def __call__(self, points) -> np.ndarray:
        x = check_points(points, "points", dim=2)
        if self.kind == "raw":
            return x / self.scale
        if self.kind == "torus":
            angle = self.scale * x
            return (
                math.sqrt(2.0) * np.concatenate([np.cos(angle), np.sin(angle)], 1)[:, [0, 2, 1, 3]]
            )
        return math.sqrt(2.0) * np.sin(x @ self.frequencies.T + math.pi / 4)

    def limit_kernel(self, points1, points2) -> np.ndarray:
        """z(x)·z(x')/n0 (N1, N2) in closed form (for Fourier: its m → ∞ limit)."""
        a = check_points(points1, "points1", dim=2)
        b = check_points(points2, "points2", dim=2)
        diff = a[:, None, :] - b[None, :, :]
        if self.kind == "raw":
            return a @ b.T / (2.0 * self.scale**2)
        if self.kind == "torus":
            return 0.5 * np.cos(self.scale * diff).sum(-1)
        return np.exp(-(diff**2).sum(-1) / (2.0 * self.scale**2))


def make_embedding(
    kind: str, nelx: int, nely: int, *, features: int = 0, length_scale: float = 0.0, seed: int = 0
) -> Embedding:
    """The ``raw`` / ``torus`` / ``fourier`` embedding for an ``nelx`` × ``nely`` grid
    (``features`` m, ``length_scale`` ℓ in element units and ``seed`` for Fourier only)."""
    check_choice(kind, "embedding", EMBEDDINGS)
    size = max(check_int(nelx, "nelx", minimum=1), check_int(nely, "nely", minimum=1))
    if kind == "raw":
        return Embedding(kind, float(size))
    if kind == "torus":
        return Embedding(kind, math.pi / (2.0 * size))
    m = check_int(features, "features", minimum=1)
    ell = check_real(length_scale, "length_scale", minimum=0.0, exclusive_minimum=True)
    rng = np.random.default_rng(seed)
    return Embedding(kind, ell, rng.standard_normal((m, 2)) / ell)


# --- the NTK of the embedded net: lines, radius, invariance defect ----------------------------


@dataclass(frozen=True)
class Net:
    """Architecture of the density net: ``depth`` weight layers, bias balance ``beta``."""

    width: int
    depth: int
    beta: float
    activation: str

    def theta(self, z1, z2=None) -> np.ndarray:
        """Analytic Θ∞ of the net on embedded inputs (float64)."""
        return theta_inf(
            z1,
            z2,
            depth=self.depth,
            beta=self.beta,
            activation=self.activation,
            parametrization=PARAMETRIZATION,
        )

    def theta_fourier_limit(self, points1, points2=None, *, length_scale: float) -> np.ndarray:
        """Θ∞ on Fourier features in the limit m → ∞ (float64, (N1, N2)): Σ⁽¹⁾ has the
        cosine exp(−‖x − x'‖²/(2ℓ²)) between inputs with ‖z‖²/m = 1, exactly invariant."""
        a = check_points(points1, "points1", dim=2)
        b = a if points2 is None else check_points(points2, "points2", dim=2)
        ell = check_real(length_scale, "length_scale", minimum=0.0, exclusive_minimum=True)
        sq_dist = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        _, theta = kernels_of_cosine(
            np.exp(-sq_dist / (2.0 * ell**2)),
            depth=self.depth,
            beta=self.beta,
            activation=self.activation,
            parametrization=PARAMETRIZATION,
        )
        return theta

    def build(self, in_dim: int, seed: int, dtype=torch.float64, device=None) -> MLP:
        """A finite net of this architecture, parameters drawn from ``seed`` (on the CPU)."""
        generator = torch.Generator().manual_seed(seed)
        return MLP(
            in_dim,
            self.width,
            self.depth,
            beta=self.beta,
            activation=self.activation,
            parametrization=PARAMETRIZATION,
            generator=generator,
            dtype=dtype,
            device=device,
        )


def ntk_lines(net: Net, embedding: Embedding, base_points, offsets, axis: int = 0) -> np.ndarray:
    """Normalised lines Θ(x₀, x₀ + r e_axis)/Θ(x₀, x₀) (B, R): base points (B, 2), offsets (R,)."""
    base = check_points(base_points, "base_points", dim=2)
    offsets = np.asarray(offsets, dtype=np.float64)
    lines = np.empty((len(base), len(offsets)))
    step = np.zeros(2)
    step[axis] = 1.0
    for b, x0 in enumerate(base):
        z0 = embedding(x0[None])
        row = net.theta(z0, embedding(x0[None] + offsets[:, None] * step))[0]
        lines[b] = row / net.theta(z0)[0, 0]
    return lines


def invariance_defect(lines: np.ndarray) -> float:
    """max over offsets of the spread (max − min) over base points of normalised lines (B, R)."""
    return float(np.ptp(lines, axis=0).max())


def half_radius(offsets, line) -> float:
    """Distance at which a normalised line (R,) over symmetric offsets (R,) first falls to ½,
    linearly interpolated on each side and averaged; NaN if a side never reaches ½."""
    offsets, line = np.asarray(offsets, dtype=np.float64), np.asarray(line, dtype=np.float64)
    sides = []
    for sign in (1.0, -1.0):
        keep = sign * offsets >= 0
        r, v = np.abs(offsets[keep]), line[keep]
        order = np.argsort(r)
        r, v = r[order], v[order]
        below = np.flatnonzero(v <= 0.5)
        if len(below) == 0 or below[0] == 0:
            return math.nan
        k = below[0]
        sides.append(r[k - 1] + (v[k - 1] - 0.5) / (v[k - 1] - v[k]) * (r[k] - r[k - 1]))
    return float(np.mean(sides))


# --- the density and its implicit volume constraint -----------------------------------------------


def volume_bias(h: np.ndarray, volfrac: float, iterations: int = 200) -> float:
    """b* with Σ sigmoid(h + b*) = V_f · n, by bisection down to adjacent floats.

    At b = logit(V_f) − max h every term is ≤ V_f and at logit(V_f) − min h every term is
    ≥ V_f, so the root lies between; the sum is increasing in b.
    """
    h = np.asarray(h, dtype=np.float64)
    target = volfrac * h.size
    centre = math.log(volfrac / (1.0 - volfrac))
    lo, hi = centre - h.max(), centre - h.min()
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if (1.0 / (1.0 + np.exp(-(h + mid)))).sum() > target:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


class _VolumeSigmoid(torch.autograd.Function):
    """x = sigmoid(h + b*(h)) with the implicit gradient of the volume constraint."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, volfrac: float):
        b = volume_bias(h.detach().cpu().numpy(), volfrac)
        x = torch.sigmoid(h + b)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        slope = x * (1.0 - x)
        return slope * grad - slope * (slope * grad).sum() / slope.sum(), None


def volume_sigmoid(h: torch.Tensor, volfrac: float) -> torch.Tensor:
    """Densities (n,) with mean exactly ``volfrac`` from a pre-sigmoid field h (n,)."""
    volfrac = check_real(volfrac, "volfrac", minimum=0.0, exclusive_minimum=True, maximum=1.0)
    if volfrac == 1.0:
        raise ValueError("volfrac must be < 1")
    return _VolumeSigmoid.apply(h, volfrac)


class _Compliance(torch.autograd.Function):
    """c(x) of a load case through the FE solve; backward by the self-adjoint formula."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, case: fem.LoadCase, penal: float):
        c, dc = fem.compliance(case, x.detach().cpu().numpy().astype(np.float64), penal)
        ctx.save_for_backward(torch.as_tensor(dc, dtype=x.dtype, device=x.device))
        return x.new_tensor(c)

    @staticmethod
    def backward(ctx, grad):
        (dc,) = ctx.saved_tensors
        return grad * dc, None, None


def compliance(x: torch.Tensor, case: fem.LoadCase, penal: float = fem.PENAL) -> torch.Tensor:
    """Compliance (a 0-d tensor) of densities x (n_elem,), differentiable in x."""
    return _Compliance.apply(x, case, penal)


# --- training ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkResult:
    """A network design: densities (n_elem,), compliance per step (steps + 1,), |mean x − V_f|."""

    x: np.ndarray
    history: np.ndarray
    volume_error: float

    @property
    def compliance(self) -> float:
        return float(self.history[-1])


def optimise_network(
    case: fem.LoadCase,
    embedding: Embedding,
    net: Net,
    *,
    volfrac: float,
    steps: int,
    lr: float,
    optimizer: str = "gd",
    seed: int = 0,
    penal: float = fem.PENAL,
    device=None,
    dtype: torch.dtype = torch.float64,
) -> NetworkResult:
    """Minimise log c over θ by full-batch gradient descent (``gd``, the NTK-filter picture:
    Δh ≈ −lr Θ ∂log c/∂h) or Adam (``adam``).

    log c rather than c makes the step scale-free (∂ log c = ∂c / c): the compliance falls
    several-fold during a run, and the same lr serves every load case and grid. The net
    computes in ``dtype``; b*, the finite elements and the returned design are float64 (the
    design is the last net's field h cast to float64, so its volume is exact).
    """
    check_choice(optimizer, "optimizer", OPTIMIZERS)
    check_int(steps, "steps", minimum=1)
    check_real(lr, "lr", minimum=0.0, exclusive_minimum=True)
    dev = resolve_device(device)
    z = torch.as_tensor(embedding(case.grid.centres), dtype=dtype, device=dev)
    model = net.build(embedding.dim, seed, dtype=dtype, device=dev)
    with torch.no_grad():
        offset = model(z)[:, 0] - math.log(volfrac / (1.0 - volfrac))
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=lr) if optimizer == "gd" else torch.optim.Adam(params, lr=lr)
    history = []
    for _ in range(steps):
        opt.zero_grad()
        x = volume_sigmoid(model(z)[:, 0] - offset, volfrac)
        c = compliance(x, case, penal)
        history.append(float(c.detach()))
        torch.log(c).backward()
        opt.step()
    with torch.no_grad():
        h = (model(z)[:, 0] - offset).cpu().to(torch.float64)
        x = volume_sigmoid(h, volfrac).numpy()
    history.append(fem.compliance(case, x, penal)[0])
    return NetworkResult(x, np.asarray(history), abs(float(x.mean()) - volfrac))


def optimise_kernel(
    case: fem.LoadCase,
    theta,
    *,
    volfrac: float,
    steps: int,
    lr: float,
    penal: float = fem.PENAL,
) -> NetworkResult:
    """The infinite-width limit of :func:`optimise_network` with ``gd``: kernel gradient
    descent h ← h − lr Θ ∂log c/∂h on the element centres, from h = logit(V_f).

    theta: the Gram Θ∞ (n_elem, n_elem) of the embedded net on the element centres (float64).
    """
    check_int(steps, "steps", minimum=1)
    check_real(lr, "lr", minimum=0.0, exclusive_minimum=True)
    theta = torch.as_tensor(np.asarray(theta, dtype=np.float64))
    n = case.grid.n_elem
    if theta.shape != (n, n):
        raise ValueError(f"theta must have shape ({n}, {n}), got {tuple(theta.shape)}")
    h = torch.full((n,), math.log(volfrac / (1.0 - volfrac)), dtype=torch.float64)
    history = []
    for _ in range(steps):
        h.requires_grad_(True)
        c = compliance(volume_sigmoid(h, volfrac), case, penal)
        history.append(float(c.detach()))
        (grad,) = torch.autograd.grad(torch.log(c), h)
        h = h.detach() - lr * (theta @ grad)
    x = volume_sigmoid(h, volfrac).numpy()
    history.append(fem.compliance(case, x, penal)[0])
    return NetworkResult(x, np.asarray(history), abs(float(x.mean()) - volfrac))


def asymmetry(grid: fem.Grid, x) -> float:
    """Left/right asymmetry of a design: Σ|x − mirror(x)| / Σ|x − mean x|, the share of the
    design's contrast that is not mirror-symmetric (0 for a symmetric design). Relative to the
    contrast so that a blurred (greyer) version of the same design scores the same."""
    x = np.asarray(x, dtype=np.float64)
    contrast = np.abs(x - x.mean()).sum()
    if contrast == 0.0:
        raise ValueError("x is uniform: its asymmetry is undefined")
    return float(np.abs(x - grid.mirror(x)).sum() / contrast)


def mirror_defect(grid: fem.Grid, theta) -> float:
    """‖Θ − MΘM‖_F / ‖Θ‖_F for a Gram on the element centres (n_elem, n_elem), M the
    left/right mirror permutation: 0 iff the kernel is symmetric under x₁ → nelx − x₁."""
    theta = np.asarray(theta, dtype=np.float64)
    perm = grid.mirror(np.arange(grid.n_elem))
    return float(np.linalg.norm(theta - theta[np.ix_(perm, perm)]) / np.linalg.norm(theta))


def centred_top_eigenvalue(theta) -> float:
    """λmax(PΘP), P = I − 11ᵀ/n: the largest eigenvalue the density dynamics see (b* absorbs
    any uniform shift of h and the implicit gradient sums to 0, so only PΘP acts)."""
    theta = np.asarray(theta, dtype=np.float64)
    centred = theta - theta.mean(0)[None] - theta.mean(1)[:, None] + theta.mean()
    # Lanczos: a few dozen products with the Gram instead of an O(n³) eigendecomposition.
    v0 = np.ones(len(centred)) + np.linspace(0.0, 1.0, len(centred))  # deterministic start
    return float(eigsh(centred, k=1, which="LA", v0=v0, tol=1e-10)[0][0])


__all__ = [
    "EMBEDDINGS",
    "Embedding",
    "Net",
    "NetworkResult",
    "OPTIMIZERS",
    "asymmetry",
    "centred_top_eigenvalue",
    "compliance",
    "half_radius",
    "invariance_defect",
    "make_embedding",
    "mirror_defect",
    "ntk_lines",
    "optimise_kernel",
    "optimise_network",
    "volume_bias",
    "volume_sigmoid",
]
