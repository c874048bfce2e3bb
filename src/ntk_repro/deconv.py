"""Deconvolution nets (stacks of strided transposed convolutions) and their NTK over pixels.

A net of ``depth`` = L layers maps an input image x of n0 channels and spatial size m0 (1-D or
2-D; m0 = 1 is a latent vector, the generator's case) to an output of size m0·s^L:

    α̃(ℓ) = s_W / √n_{ℓ−1} · W(ℓ) ⊛_s α(ℓ−1) + β · b(ℓ),     α(ℓ) = σ(α̃(ℓ)),     f = α̃(L)

with α(0) = x, every parameter ~ N(0, 1), s_W = 1 (``ntk2018``) or √(1 − β²) (``balanced``),
and ⊛_s the transposed convolution with stride s and kernel size s. The kernel equals the
stride, so every pixel a of layer ℓ has exactly one parent ⌊a/s⌋ in layer ℓ − 1 (per spatial
axis) and is reached through the kernel tap k_ℓ(a) = a mod s: the fan-in of a pre-activation is
n_{ℓ−1} channels, and the pixels form a tree. Output pixel p reaches layer ℓ through the taps
given by its base-s digits, so two pixels p, p' see the same weights in the top v layers
exactly when s^v divides p − p' — the origin of checkerboard artefacts (Freeze & Chaos,
arXiv 1907.05715, docs/design.md §1.8).

``norm="batch"`` puts a BatchNorm without affine parameters or running statistics after every
non-linearity (each channel centred and scaled over the batch and the pixels), as in DCGAN.

NTK over output pixels (and output channels), for a batch x (N, n0, *m0):

    Θ[i, j, o, o'] = Σ_θ ∂f_o(x_i)/∂θ · ∂f_o'(x_j)/∂θ,      o = c·P + p  (channel-major, as
                                                             ``model(x).reshape(N, -1)``)

:func:`deconv_ntk` computes it for ``norm=None`` from the tree structure without a Jacobian
(with δ(ℓ)_o = ∂f_o/∂α̃(ℓ) at the ancestor of p, and [·] the indicator)

    Θ = Σ_ℓ ( s_W²/n_{ℓ−1} ⟨α(ℓ−1)_anc(p), α(ℓ−1)_anc(p')⟩ [k_ℓ(p) = k_ℓ(p')] + β² )
          · ⟨δ(ℓ)_o, δ(ℓ)_o'⟩,

and for ``norm="batch"`` from the Jacobian of the whole batch (the output of one sample depends
on the others). :func:`deconv_ntk_limit` is the infinite-channel limit for one input, by the
same layer map as :mod:`ntk_repro.kernels` applied to every pair of pixels.

Border artefacts (options, off by default): ``kernel_size`` k > s and ``padding`` p give the
transposed convolution of torch (output size (m − 1)s − 2p + k per axis). Pixel a of layer ℓ then
receives e(a) spatial edges (taps t with a parent b = (a + p − t)/s inside the image), fewer near
the border. ``scaling="uniform"`` scales every pre-activation by s_W/√(n·(k/s)^dim) (the interior
fan-in, = s_W/√n for k = s); ``scaling="graph"`` by s_W/√(n·e(a)), its actual number of incoming
edges (:func:`edge_counts`). Without padding and with k = s every e(a) = 1 and all options
reproduce the plain net bit for bit. :func:`deconv_ntk_limit` covers these nets by the same
recursion, the connector summing over taps (pixels are no longer a tree);
:func:`ntk_diagonal` gives the exact empirical diagonal for any net.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ntk_repro.device import resolve_device
from ntk_repro.kernels import check_hyperparameters, layer_step, weight_gain
from ntk_repro.validation import as_real_tensor, check_int

NORMS = (None, "batch")
SCALINGS = ("uniform", "graph")
_BN_EPS = 1e-12  # only guards a division by an exactly constant channel
_TRANSPOSED_CONV = {1: F.conv_transpose1d, 2: F.conv_transpose2d}
_BATCH_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}


def _spatial(shape, dim: int, name: str) -> tuple[int, ...]:
    shape = (shape,) * dim if isinstance(shape, (int, np.integer)) else tuple(shape)
    if len(shape) != dim:
        raise ValueError(f"{name} must have {dim} entries for dim={dim}, got {shape!r}")
    return tuple(check_int(m, name, minimum=1) for m in shape)


class DeconvNet(nn.Module):
    """Stack of ``depth`` transposed convolutions with stride ``stride`` (= kernel size by default).

    Parameters
    ----------
    in_channels : n0.  width : channels n1 = … = n_{L−1}.  depth : L >= 1.
    stride : s >= 2 (and the kernel size by default).  dim : 1 (signals) or 2 (images).
    beta : bias balance in [0, 1].  activation : spec (see :mod:`ntk_repro.activations`).
    parametrization : "balanced" (s_W = √(1 − β²)) or "ntk2018" (s_W = 1).
    out_channels : channels of the output.  norm : None or "batch" (see module notes).
    generator : torch.Generator for the N(0, 1) initialisation (drawn on the CPU, so a seed
        gives the same net on every device).  device, dtype : where the parameters live.
    kernel_size : k >= s (default s), padding : p >= 0 (default 0), scaling : "uniform" or
        "graph" — border artefacts (module notes); the defaults give the plain net bit for bit.

    Forward: x (N, in_channels, *m0) → (N, out_channels, *m_L), m_L = m0·s^L without padding
    (:func:`layer_shapes`).
    Parameters: ``weights[ℓ]`` of shape (n_ℓ, n_{ℓ+1}, k, …) (torch's transposed-convolution
    layout: in, out, taps) and ``biases[ℓ]`` of shape (n_{ℓ+1},), ℓ = 0 … L − 1.
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        depth: int,
        *,
        stride: int = 2,
        dim: int = 1,
        beta: float,
        activation: str = "scaled_relu",
        parametrization: str = "balanced",
        out_channels: int = 1,
        norm: str | None = None,
        generator: torch.Generator | None = None,
        device=None,
        dtype: torch.dtype = torch.float32,
        kernel_size: int | None = None,
        padding: int = 0,
        scaling: str = "uniform",
    ):
        super().__init__()
        self.activation = check_hyperparameters(depth, beta, activation, parametrization)
        for name, value in (
            ("in_channels", in_channels),
            ("width", width),
            ("out_channels", out_channels),
        ):
            check_int(value, name, minimum=1)
        self.stride = check_int(stride, "stride", minimum=2)
        self.kernel_size = (
            self.stride if kernel_size is None else check_int(kernel_size, "kernel_size", minimum=1)
        )
        self.padding = check_int(padding, "padding", minimum=0)
        if self.kernel_size < self.stride:  # some pixels would get no edge at all
            raise ValueError(f"kernel_size must be >= stride {self.stride}, got {kernel_size!r}")
        if scaling not in SCALINGS:
            raise ValueError(f"scaling {scaling!r} is unknown; choose one of {list(SCALINGS)}")
        self.scaling = scaling
        if dim not in _TRANSPOSED_CONV:
            raise ValueError(f"dim must be 1 or 2, got {dim!r}")
        if norm not in NORMS:
            raise ValueError(f"norm {norm!r} is unknown; choose one of {list(NORMS)}")
        dev = resolve_device(device)
        self.in_channels, self.width, self.depth = int(in_channels), int(width), int(depth)
        self.out_channels, self.dim, self.norm = int(out_channels), dim, norm
        self.beta = float(beta)
        self.parametrization = parametrization
        self.weight_scale = math.sqrt(weight_gain(self.beta, parametrization))
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        channels = self.channels
        for n_in, n_out in zip(channels[:-1], channels[1:]):
            w = torch.randn(
                n_in,
                n_out,
                *([self.kernel_size] * dim),
                generator=generator,
                dtype=dtype,
                device="cpu",
            )
            b = torch.randn(n_out, generator=generator, dtype=dtype, device="cpu")
            self.weights.append(nn.Parameter(w.to(dev)))
            self.biases.append(nn.Parameter(b.to(dev)))
        # BatchNorm modules (not a hand-written normalisation) so that the NTK code sees the
        # batch coupling; no affine parameters, always batch statistics.
        self.norms = (
            nn.ModuleList(
                _BATCH_NORM[dim](
                    n, eps=_BN_EPS, affine=False, track_running_stats=False, device=dev, dtype=dtype
                )
                for n in channels[1:-1]
            )
            if norm == "batch"
            else None
        )

    @property
    def channels(self) -> list[int]:
        return [self.in_channels] + [self.width] * (self.depth - 1) + [self.out_channels]

    def output_shape(self, input_shape) -> tuple[int, ...]:
        """Spatial output shape for the spatial input shape m0."""
        m0 = _spatial(input_shape, self.dim, "input_shape")
        return layer_shapes(m0, self.stride, self.depth, self.kernel_size, self.padding)[-1]

    @property
    def plain(self) -> bool:
        """True for kernel = stride and no padding: the pixel tree, one edge per pixel."""
        return self.kernel_size == self.stride and self.padding == 0

    def preactivation(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """α̃(layer+1) from α(layer): s_W/√n · W ⊛_s h + β b (per-pixel scale if "graph")."""
        w, b = self.weights[layer], self.biases[layer]
        if self.plain:  # the original code path, kept bit for bit
            out = _TRANSPOSED_CONV[self.dim](h, w, stride=self.stride)
            scale = self.weight_scale / math.sqrt(w.shape[0])
            return out.mul(scale).add(b.view(-1, *([1] * self.dim)), alpha=self.beta)
        out = _TRANSPOSED_CONV[self.dim](h, w, stride=self.stride, padding=self.padding)
        scale = self.pixel_scale(tuple(h.shape[2:])).to(device=out.device, dtype=out.dtype)
        return out.mul(scale.div(math.sqrt(w.shape[0]))).add(
            b.view(-1, *([1] * self.dim)), alpha=self.beta
        )

    def pixel_scale(self, in_shape: tuple[int, ...]) -> torch.Tensor:
        """s_W/√(e(a)) (graph) or s_W/√((k/s)^dim) (uniform) over the layer's output pixels,
        float64 (*m_out), for a layer input of spatial shape ``in_shape``."""
        edges = edge_counts(in_shape, self.kernel_size, self.stride, self.padding)
        if self.scaling == "graph":
            rel = edges.astype(np.float64)
        else:
            rel = np.full(edges.shape, (self.kernel_size / self.stride) ** self.dim)
        return torch.as_tensor(self.weight_scale / np.sqrt(rel))

    def hidden(self, layer: int, pre: torch.Tensor) -> torch.Tensor:
        """α(layer+1) from α̃(layer+1): the non-linearity and the optional BatchNorm."""
        h = self.activation(pre)
        return self.norms[layer](h) if self.norms is not None else h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.dim + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have shape (N, {self.in_channels}, "
                f"{', '.join(['m'] * self.dim)}), got {tuple(x.shape)}"
            )
        h = x
        for layer in range(self.depth):
            h = self.preactivation(layer, h)
            if layer < self.depth - 1:
                h = self.hidden(layer, h)
        return h

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, stride={self.stride}, dim={self.dim}, "
            f"beta={self.beta}, activation={self.activation.spec!r}, "
            f"parametrization={self.parametrization!r}, norm={self.norm!r}"
            + ("" if self.plain else f", kernel_size={self.kernel_size}, padding={self.padding}")
            + ("" if self.scaling == "uniform" else f", scaling={self.scaling!r}")
        )


# --- padding and edge counts -------------------------------------------------------------------


def layer_shapes(input_shape, stride: int, depth: int, kernel_size=None, padding: int = 0):
    """Spatial shapes of layers 0 … L: m_{ℓ+1} = (m_ℓ − 1)s − 2p + k per axis (k = s, p = 0:
    m0·s^ℓ). Raises ValueError if a layer would be empty."""
    k = stride if kernel_size is None else kernel_size
    shapes = [tuple(int(m) for m in input_shape)]
    for _ in range(depth):
        nxt = tuple((m - 1) * stride - 2 * padding + k for m in shapes[-1])
        if min(nxt) < 1:
            raise ValueError(
                f"padding {padding} is too large for kernel_size {k}, stride {stride} and "
                f"input shape {shapes[0]}: a layer would be empty"
            )
        shapes.append(nxt)
    return shapes


def tap_parents(in_size: int, kernel_size: int, stride: int, padding: int) -> np.ndarray:
    """Parent of every output pixel through every tap along one axis: int (m_out, k), the input
    pixel b with a = b·s + t − p, or −1 where that b lies outside 0 … in_size − 1."""
    m_out = (in_size - 1) * stride - 2 * padding + kernel_size
    a = np.arange(m_out)[:, None] + padding - np.arange(kernel_size)[None, :]
    b = a // stride
    ok = (a % stride == 0) & (b >= 0) & (b < in_size)
    return np.where(ok, b, -1)


def edge_counts(in_shape, kernel_size: int, stride: int, padding: int) -> np.ndarray:
    """e(a): the number of spatial edges into every output pixel of one transposed convolution
    (an all-ones input convolved with an all-ones kernel). int array of the output shape."""
    counts = [(tap_parents(m, kernel_size, stride, padding) >= 0).sum(1) for m in in_shape]
    out = counts[0]
    for c in counts[1:]:
        out = np.multiply.outer(out, c)
    return out


# --- the pixel tree ----------------------------------------------------------------------------


def pixel_tree(input_shape, stride: int, depth: int, device=None):
    """Ancestors and kernel taps of every output pixel.

    Parameters
    ----------
    input_shape : spatial size m0 (tuple of 1 or 2 ints).  stride : s.  depth : L.

    Returns
    -------
    ancestors : long tensor (L + 1, P): ancestors[ℓ, p] = flat index of the layer-ℓ pixel above
        output pixel p (row-major over that layer's shape m0·s^ℓ); ancestors[L] = arange(P).
    taps : long tensor (L + 1, P): taps[ℓ, p] = flat kernel tap (row-major over s × …) through
        which layer ℓ reaches that pixel, ℓ = 1 … L (taps[0] is unused and −1).
    """
    m0 = tuple(int(m) for m in input_shape)
    dim = len(m0)
    out_shape = [m * stride**depth for m in m0]
    coords = torch.stack(
        torch.meshgrid(*[torch.arange(m, device=device) for m in out_shape], indexing="ij")
    ).reshape(dim, -1)  # (dim, P)
    ancestors, taps = [], []
    for layer in range(depth + 1):
        factor = stride ** (depth - layer)
        c = torch.div(coords, factor, rounding_mode="floor")
        shape = [m * stride**layer for m in m0]
        flat = torch.zeros_like(c[0])
        tap = torch.zeros_like(c[0])
        for axis in range(dim):
            flat = flat * shape[axis] + c[axis]
            tap = tap * stride + c[axis] % stride
        ancestors.append(flat)
        taps.append(tap if layer > 0 else torch.full_like(tap, -1))
    return torch.stack(ancestors), torch.stack(taps)


def offset_valuation(offsets, stride: int, depth: int) -> np.ndarray:
    """v(d): the largest v in {0, …, L−1} with s^v dividing every component of the offset d.

    offsets : int array (..., dim). Returns an int array of the leading shape (...).
    The offset 0 gets L − 1 (the same pixel)."""
    d = np.abs(np.asarray(offsets, dtype=np.int64))
    if d.ndim == 0:
        raise ValueError("offsets must have a trailing axis of spatial components (..., dim)")
    v = np.zeros(d.shape[:-1], dtype=np.int64)
    for k in range(1, depth):
        v = np.where((d % stride**k == 0).all(-1), k, v)
    return v


def pixel_offsets(input_shape, stride: int, depth: int) -> np.ndarray:
    """Offsets p' − p of every pair of output pixels: int array (P, P, dim)."""
    m0 = tuple(int(m) for m in input_shape)
    out_shape = [m * stride**depth for m in m0]
    coords = np.stack(
        np.meshgrid(*[np.arange(m) for m in out_shape], indexing="ij"), axis=-1
    ).reshape(-1, len(m0))
    return coords[None, :, :] - coords[:, None, :]


# --- empirical NTK -----------------------------------------------------------------------------


def _as_batch(model: DeconvNet, x) -> torch.Tensor:
    p = next(model.parameters())
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim != model.dim + 2 or t.shape[0] == 0 or t.shape[1] != model.in_channels:
        raise ValueError(
            f"x must have shape (N, {model.in_channels}, {'m, ' * model.dim}"
            f") with N >= 1, got {tuple(t.shape)}"
        )
    t = t.to(device=p.device, dtype=p.dtype)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("x contains NaN or inf")
    return t


@torch.no_grad()
def _structured_ntk(model: DeconvNet, x: torch.Tensor) -> torch.Tensor:
    """The layer-sum formula of the module docstring; no Jacobian is formed."""
    n, depth, k = x.shape[0], model.depth, model.out_channels
    ancestors, taps = pixel_tree(x.shape[2:], model.stride, depth, device=x.device)
    n_pix = ancestors.shape[1]
    # Forward pass, keeping every layer input α(ℓ) and the slopes σ'(α̃(ℓ)), flattened over
    # pixels: (N, n_ℓ, P_ℓ).
    inputs, slopes = [x.reshape(n, x.shape[1], -1)], []
    h = x
    for layer in range(depth - 1):
        pre = model.preactivation(layer, h)
        h = model.hidden(layer, pre)
        slopes.append(model.activation.derivative(pre).reshape(n, pre.shape[1], -1))
        inputs.append(h.reshape(n, h.shape[1], -1))

    scales = [model.weight_scale / math.sqrt(w.shape[0]) for w in model.weights]
    taps_flat = [None] + [taps[layer] for layer in range(1, depth + 1)]
    n_taps = model.stride**model.dim
    beta2 = model.beta**2
    out_rows = n * k * n_pix  # rows ordered (sample, channel, pixel), as model(x).reshape(N, -1)

    def same_tap(layer: int) -> torch.Tensor:
        t = taps_flat[layer]
        return (t[:, None] == t[None, :]).to(x.dtype)  # (P, P)

    def input_gram(layer: int) -> torch.Tensor:
        """s_W²/n ⟨α(ℓ−1)_anc(p), α(ℓ−1)_anc(p')⟩ [same tap] + β², over (sample, pixel)."""
        a = inputs[layer - 1][:, :, ancestors[layer - 1]]  # (N, n, P)
        a = a.permute(0, 2, 1).reshape(n * n_pix, -1)
        gram = (a @ a.T).mul_(scales[layer - 1] ** 2).view(n, n_pix, n, n_pix)
        return gram.mul_(same_tap(layer)[None, :, None, :]).add_(beta2)

    # Output layer: δ(L) is the identity on the output channels.
    theta = torch.zeros(n, k, n_pix, n, k, n_pix, dtype=x.dtype, device=x.device)
    top = input_gram(depth)
    for c in range(k):
        theta[:, c, :, :, c, :] = top
    # δ(ℓ) for ℓ = L − 1 … 1 as (N, k, P, n_ℓ): sensitivity of output (c, p) of sample i to
    # α̃(ℓ) at the ancestor of p.
    delta = None
    for layer in range(depth - 1, 0, -1):
        w = model.weights[layer]  # (n_ℓ, n_{ℓ+1}, taps...), maps layer ℓ to ℓ + 1
        w_taps = w.reshape(w.shape[0], w.shape[1], n_taps)
        tap = taps_flat[layer + 1]
        grad_h = torch.empty(n, k, n_pix, w.shape[0], dtype=x.dtype, device=x.device)
        for t in range(n_taps):
            cols = (tap == t).nonzero().squeeze(1)
            if cols.numel() == 0:
                continue
            if delta is None:  # ∂f_c/∂α(L−1) = scale · W[:, c, tap]
                grad_h[:, :, cols, :] = w_taps[:, :, t].T[None, :, None, :]
            else:
                grad_h[:, :, cols, :] = delta[:, :, cols, :] @ w_taps[:, :, t].T
        slope = slopes[layer - 1][:, :, ancestors[layer]].permute(0, 2, 1)  # (N, P, n_ℓ)
        delta = grad_h.mul_(scales[layer]).mul_(slope[:, None])
        flat = delta.reshape(out_rows, -1)
        sens = (flat @ flat.T).view(n, k, n_pix, n, k, n_pix)
        theta.addcmul_(sens, input_gram(layer)[:, None, :, :, None, :])
    return theta.reshape(n, k * n_pix, n, k * n_pix).permute(0, 2, 1, 3).contiguous()


def _jacobian_ntk(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Θ from the Jacobian of the whole batch output (any module, batch-coupled or not)."""
    from torch.func import functional_call, jacrev

    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    n = x.shape[0]

    def batch_output(p):
        return functional_call(model, (p, buffers), (x,)).reshape(-1)

    jac = jacrev(batch_output)(params)
    rows = None
    for block in jac.values():
        flat = block.reshape(block.shape[0], -1)
        rows = flat @ flat.T if rows is None else rows.add_(flat @ flat.T)
    q = rows.shape[0] // n
    return rows.view(n, q, n, q).permute(0, 2, 1, 3).contiguous().detach()


def deconv_ntk(model: DeconvNet, x, *, method: str = "auto") -> torch.Tensor:
    """Exact empirical NTK of a :class:`DeconvNet` over samples and output coordinates.

    Parameters
    ----------
    model : DeconvNet at its current parameters.
    x : tensor or array (N, n0, *m0); cast to the model's dtype and device.
    method : "auto" (structured formula for ``norm=None`` on the pixel tree, else the batch
        Jacobian),
        "structured" or "jacobian".

    Returns
    -------
    Tensor (N, N, Q, Q), Q = out_channels · P, entry [i, j, o, o'] = Σ_θ ∂f_o(x_i) ∂f_o'(x_j),
    outputs o in the order of ``model(x).reshape(N, -1)``. With ``norm="batch"`` the kernel
    depends on the whole batch x.
    """
    if not isinstance(model, DeconvNet):
        raise ValueError(f"model must be a DeconvNet, got {type(model).__name__}")
    if method not in ("auto", "structured", "jacobian"):
        raise ValueError(f"method {method!r} is unknown; choose auto, structured or jacobian")
    if method == "structured" and model.norm is not None:
        raise ValueError("the structured formula needs norm=None (BatchNorm couples the batch)")
    if method == "structured" and not model.plain:
        raise ValueError("the structured formula needs kernel_size = stride and padding = 0")
    t = _as_batch(model, x)
    if method == "jacobian" or model.norm is not None or not model.plain:
        return _jacobian_ntk(model, t)
    return _structured_ntk(model, t)


def ntk_rows(model: nn.Module, x, rows) -> torch.Tensor:
    """Selected rows of the NTK: out[r, j, o'] = Θ[i_r, j, o_r, o'] for rows = [(i_r, o_r), …].

    Two passes per row — a vector–Jacobian product for the gradient g_r of output o_r of
    sample i_r, then a Jacobian–vector product J g_r (both batched over rows with vmap) — so
    it serves batch-coupled nets (BatchNorm) whose full Jacobian would not fit in memory.
    x : (N, ...) batch as the model expects. Returns a tensor (R, N, Q).
    """
    from torch.func import functional_call, jvp, vjp, vmap

    t = _as_batch(model, x) if isinstance(model, DeconvNet) else x
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    n = t.shape[0]

    def batch_output(p):
        return functional_call(model, (p, buffers), (t,)).reshape(n, -1)

    out, pullback = vjp(batch_output, params)
    index = torch.as_tensor(rows, dtype=torch.long, device=out.device).reshape(-1, 2)
    cotangents = torch.zeros(index.shape[0], *out.shape, dtype=out.dtype, device=out.device)
    cotangents[torch.arange(index.shape[0], device=out.device), index[:, 0], index[:, 1]] = 1.0
    grads = vmap(pullback)(cotangents)[0]  # name -> (R, *parameter shape)

    def push(tangent):
        return jvp(batch_output, (params,), (tangent,))[1]

    return vmap(push)(grads).detach()


def ntk_diagonal(model: nn.Module, x, *, chunk: int = 64) -> torch.Tensor:
    """Exact empirical NTK diagonal Θ[i, i, o, o] = ‖∂f_o(x_i)/∂θ‖² of every sample and output,
    by vector–Jacobian products batched over ``chunk`` outputs (no full Jacobian is held).

    x : (N, ...) batch as the model expects. Returns a tensor (N, Q) in the model's dtype.
    """
    from torch.func import functional_call, vjp, vmap

    chunk = check_int(chunk, "chunk", minimum=1)
    t = _as_batch(model, x) if isinstance(model, DeconvNet) else x
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}

    def batch_output(p):
        return functional_call(model, (p, buffers), (t,)).reshape(-1)

    out, pullback = vjp(batch_output, params)
    diag = torch.zeros_like(out)
    for start in range(0, out.shape[0], chunk):
        idx = torch.arange(start, min(start + chunk, out.shape[0]), device=out.device)
        cot = torch.zeros(idx.shape[0], out.shape[0], dtype=out.dtype, device=out.device)
        cot[torch.arange(idx.shape[0], device=out.device), idx] = 1.0
        grads = vmap(pullback)(cot)[0]
        diag[idx] = sum(g.reshape(idx.shape[0], -1).pow(2).sum(1) for g in grads.values())
    return diag.view(t.shape[0], -1).detach()


def layer_ntks(model: DeconvNet, x) -> torch.Tensor:
    """Each layer's contribution to the NTK: Θ_ℓ = J_ℓ J_ℓᵀ with J_ℓ the Jacobian of the whole
    batch output in the weights and bias of layer ℓ, so that Θ = Σ_ℓ Θ_ℓ.

    x : (N, n0, *m0). Returns a tensor (L, N·Q, N·Q), rows in the order of
    ``model(x).reshape(-1)``. Memory: one layer's Jacobian (N·Q × its parameters) at a time.
    """
    from torch.func import functional_call, jacrev

    if not isinstance(model, DeconvNet):
        raise ValueError(f"model must be a DeconvNet, got {type(model).__name__}")
    t = _as_batch(model, x)
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    out = []
    for layer in range(model.depth):
        names = (f"weights.{layer}", f"biases.{layer}")

        def batch_output(sub):
            return functional_call(model, ({**params, **sub}, buffers), (t,)).reshape(-1)

        jac = jacrev(batch_output)({n: params[n] for n in names})
        flat = [j.reshape(j.shape[0], -1) for j in jac.values()]
        out.append(sum(f @ f.T for f in flat))
    return torch.stack(out).detach()


# --- infinite-channel limit --------------------------------------------------------------------


def deconv_ntk_limit(
    x,
    *,
    stride: int,
    depth: int,
    beta: float,
    activation: str,
    parametrization: str = "balanced",
    device=None,
    method: str = "auto",
    kernel_size: int | None = None,
    padding: int = 0,
    scaling: str = "uniform",
) -> np.ndarray:
    """Θ∞ over the output pixels of one input image, as the number of channels → ∞.

    With K(ℓ)(a, a') = E[σ(u_a)σ(u_a')] and K̇(ℓ) = E[σ'(u_a)σ'(u_a')] under the
    pre-activation covariance Σ̃(ℓ) of layer ℓ (K(0) = the input Gram xᵀx/n0 over pixels), and
    [·] the indicator that pixels a, a' are reached through the same kernel tap:

        Σ̃(ℓ)(a, a') = c · K(ℓ−1)(⌊a/s⌋, ⌊a'/s⌋) [k(a) = k(a')] + β²,       c = s_W²
        Θ(ℓ)(a, a') = Σ̃(ℓ)(a, a') + c · [k(a) = k(a')] · (K̇(ℓ−1) Θ(ℓ−1))(⌊a/s⌋, ⌊a'/s⌋)

    with Θ(0) = 0. Parameters: x (n0, *m0) one input (1 or 2 spatial axes); the rest as
    :class:`DeconvNet`. Returns float64 (P, P), P = ∏ m0·s^L. Memory O(P²).

    With ``kernel_size`` > s or ``padding`` (border artefacts) a pixel has up to (k/s)^dim
    parents b_t(a), one per tap t, and with g(a) the pixel's scale over s_W (module notes)

        Σ̃(ℓ)(a, a') = c · g(a) g(a') Σ_t K(ℓ−1)(b_t(a), b_t(a')) + β²     (both parents exist)

    (the same tap t: different taps have independent weights), and likewise for Θ(ℓ).
    """
    act = check_hyperparameters(depth, beta, activation, parametrization)
    xs = as_real_tensor(x, "x").to(torch.float64).cpu().numpy()
    if xs.ndim not in (2, 3) or not np.isfinite(xs).all():
        raise ValueError(
            f"x must be a finite array (n0, *m0) with 1 or 2 spatial axes, got shape {xs.shape}"
        )
    stride = check_int(stride, "stride", minimum=2)
    k = stride if kernel_size is None else check_int(kernel_size, "kernel_size", minimum=stride)
    padding = check_int(padding, "padding", minimum=0)
    if scaling not in SCALINGS:
        raise ValueError(f"scaling {scaling!r} is unknown; choose one of {list(SCALINGS)}")
    dev = resolve_device(device)
    if k == stride and padding == 0:  # the pixel tree (original path, bit for bit)

        def connector(layer):
            return _tree_connector(xs.shape[1:], stride, layer, dev)
    else:
        shapes = layer_shapes(xs.shape[1:], stride, depth, k, padding)

        def connector(layer):
            return _padded_connector(shapes[layer - 1], k, stride, padding, scaling, dev)

    gain, b2 = weight_gain(float(beta), parametrization), float(beta) ** 2
    flat = torch.as_tensor(xs.reshape(xs.shape[0], -1), device=dev)
    k_input = flat.T @ flat / xs.shape[0]  # K(0): the input Gram over pixels
    # Layer 1 has no activation below it and Θ(1) = Σ̃(1) (no parameters below layer 1).
    sigma = connector(1)(k_input).mul_(gain).add_(b2)
    theta = sigma.clone()
    for layer in range(2, depth + 1):
        q = torch.diagonal(sigma)
        sigma, theta = layer_step(
            sigma,
            theta,
            q[:, None],
            q[None, :],
            act=act,
            gain=gain,
            bias_var=b2,
            method=method,
            connect=connector(layer),
        )
    if not bool(torch.isfinite(theta).all()):
        scale = float(np.abs(xs).max())  # the norm without overflow in its squares
        norm = scale * float(np.sqrt(((xs / scale) ** 2).sum(0)).max())
        raise ValueError(
            f"x: the kernel overflows float64 for this input (largest pixel "
            f"norm {norm:.3g}); rescale the input"
        )
    return theta.cpu().numpy()


def _tree_connector(input_shape, stride: int, layer: int, device):
    """The map from pairs of pixels of layer ℓ − 1 to pairs of layer ℓ: gather the parents'
    values, zero the pairs reached through different kernel taps (their weights differ)."""
    ancestors, taps = pixel_tree(input_shape, stride, layer, device=device)
    par, tap = ancestors[layer - 1], taps[layer]
    same = (tap[:, None] == tap[None, :]).to(torch.float64)

    def connect(values: torch.Tensor) -> torch.Tensor:
        return values[par][:, par] * same

    return connect


def _padded_connector(in_shape, kernel_size, stride, padding, scaling, device):
    """Pairs of layer ℓ − 1 to pairs of layer ℓ for a padded transposed convolution:
    g(a) g(a') Σ_t V(b_t(a), b_t(a')) over the taps t where both parents exist."""
    dim = len(in_shape)
    per_axis = [tap_parents(m, kernel_size, stride, padding) for m in in_shape]  # (m_out, k)
    edges = edge_counts(in_shape, kernel_size, stride, padding).reshape(-1)
    rel = edges if scaling == "graph" else np.full(edges.shape, (kernel_size / stride) ** dim)
    g = torch.as_tensor(1.0 / np.sqrt(rel), dtype=torch.float64, device=device)
    taps = []
    for tap in np.ndindex(*([kernel_size] * dim)):
        parent = np.zeros(1, dtype=np.int64)
        valid = np.ones(1, dtype=bool)
        for axis in range(dim):  # row-major flat index over the input shape
            col = per_axis[axis][:, tap[axis]]
            parent = (parent[:, None] * in_shape[axis] + col[None, :]).reshape(-1)
            valid = (valid[:, None] & (col >= 0)[None, :]).reshape(-1)
        if valid.any():
            par = torch.as_tensor(np.where(valid, parent, 0), device=device)
            taps.append((par, torch.as_tensor(valid, dtype=torch.float64, device=device) * g))

    def connect(values: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(g.shape[0], g.shape[0], dtype=values.dtype, device=values.device)
        for par, weight in taps:
            out.add_(values[par][:, par] * weight[:, None] * weight[None, :])
        return out

    return connect


def split_pair_ntk(
    v_max: int,
    *,
    beta: float,
    activation: str,
    parametrization: str = "balanced",
    method: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Θ∞_pp and Θ∞_pp' for two output pixels whose taps agree in the top v layers and differ in
    layer L − v, for v = 0 … v_max, for an input pixel with ‖x‖² = n0.

    At the layer where the taps differ the two pre-activations share only the bias, so their
    covariance is β² whatever happened below; above it they follow the layer map. Hence
    Θ∞_pp' depends on the pair only through v (the s-adic valuation of p − p'), and neither
    value depends on the layers below the split: Θ∞_pp is returned for L = v + 1 (a deeper net
    only adds c·r^{v+1}·… to it). Returns float64 arrays (v_max + 1,) (diag, cross).
    """
    act = check_hyperparameters(1, beta, activation, parametrization)
    v_max = check_int(v_max, "v_max", minimum=0)
    gain, b2 = weight_gain(float(beta), parametrization), float(beta) ** 2
    # Layer L − v: variance c·‖x‖²/n0 + β² (= c·E[σ²] + β² higher up), covariance β² only.
    q = torch.tensor(gain + b2, dtype=torch.float64)
    cov = torch.tensor(b2, dtype=torch.float64)
    diag, cross = [float(q)], [float(cov)]
    theta_diag, theta_cross = q.clone(), cov.clone()
    step = dict(act=act, gain=gain, bias_var=b2, method=method)
    for _ in range(v_max):
        # Both pixels have variance q at every layer; only their covariance differs.
        q_next, theta_diag = layer_step(q, theta_diag, q, q, **step)
        cov, theta_cross = layer_step(cov, theta_cross, q, q, **step)
        q = q_next
        diag.append(float(theta_diag))
        cross.append(float(theta_cross))
    return np.array(diag), np.array(cross)


__all__ = [
    "DeconvNet",
    "NORMS",
    "SCALINGS",
    "deconv_ntk",
    "deconv_ntk_limit",
    "edge_counts",
    "layer_ntks",
    "layer_shapes",
    "ntk_diagonal",
    "ntk_rows",
    "offset_valuation",
    "pixel_offsets",
    "pixel_tree",
    "split_pair_ntk",
    "tap_parents",
]
