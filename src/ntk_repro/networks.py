"""Finite-width fully connected nets in the NTK parametrisation (docs/design.md §1.1).

    α̃(ℓ+1) = s_W / √n_ℓ · W(ℓ) α(ℓ) + β · b(ℓ),   α(ℓ+1) = σ(α̃(ℓ+1)),   f = α̃(L)

with every parameter ~ N(0, 1), s_W = 1 (``ntk2018``) or √(1 − β²) (``balanced``). As width → ∞
the empirical NTK of this module converges to :func:`ntk_repro.kernels.theta_inf`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ntk_repro.device import resolve_device
from ntk_repro.kernels import check_hyperparameters, weight_gain
from ntk_repro.validation import check_choice, check_int

NORMS = (None, "layer", "batch_last", "batch")
# Norms that couple the samples of a batch (their statistics are over the batch).
BATCH_NORMS = ("batch_last", "batch")
NORM_EPS = 1e-12


def _normalize(h: torch.Tensor, dim: int) -> torch.Tensor:
    """Centre and scale to unit (biased) variance along ``dim``; no affine parameters."""
    mean = h.mean(dim=dim, keepdim=True)
    centred = h - mean
    var = (centred * centred).mean(dim=dim, keepdim=True)
    return centred / torch.sqrt(var + NORM_EPS)


class MLP(nn.Module):
    """Fully connected net with ``depth`` weight layers (depth − 1 hidden layers of ``width``).

    Parameters
    ----------
    in_dim : n0.  width : n1 = … = n_{L−1}.  depth : L >= 1 (1 = a linear model).
    beta : bias balance in [0, 1].  activation : spec (see :mod:`ntk_repro.activations`).
    parametrization : "ntk2018" or "balanced".  out_dim : n_L.
    norm : None, "layer" (LayerNorm without affine parameters after every non-linearity) or
        "batch_last" (BatchNorm over the batch, without running statistics or affine
        parameters, after the last non-linearity only) or "batch" (the same BatchNorm after
        every non-linearity, as DCGAN generators use it in every hidden layer).
    generator : torch.Generator for the N(0, 1) initialisation (determinism).
    device, dtype : where the parameters live.

    Forward: x (N, in_dim) → (N, out_dim).
    """

    def __init__(
        self,
        in_dim: int,
        width: int,
        depth: int,
        *,
        beta: float,
        activation: str = "relu",
        parametrization: str = "ntk2018",
        out_dim: int = 1,
        norm: str | None = None,
        generator: torch.Generator | None = None,
        device=None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.activation = check_hyperparameters(depth, beta, activation, parametrization)
        in_dim = check_int(in_dim, "in_dim", minimum=1)
        width = check_int(width, "width", minimum=1)
        out_dim = check_int(out_dim, "out_dim", minimum=1)
        check_choice(norm, "norm", NORMS)
        dev = resolve_device(device)
        self.in_dim, self.width, self.depth, self.out_dim = in_dim, width, depth, out_dim
        self.beta = float(beta)
        self.parametrization = parametrization
        self.norm = norm
        self.weight_scale = math.sqrt(weight_gain(self.beta, parametrization))
        dims = [in_dim] + [width] * (depth - 1) + [out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for n_in, n_out in zip(dims[:-1], dims[1:]):
            w = torch.randn(n_out, n_in, generator=generator, dtype=dtype, device="cpu")
            b = torch.randn(n_out, generator=generator, dtype=dtype, device="cpu")
            # Drawn on the CPU so that a seed gives the same net on every device.
            self.weights.append(nn.Parameter(w.to(dev)))
            self.biases.append(nn.Parameter(b.to(dev)))

    @property
    def dims(self) -> list[int]:
        return [self.in_dim] + [self.width] * (self.depth - 1) + [self.out_dim]

    def preactivation(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """α̃(layer+1) from α(layer): s_W/√n · h Wᵀ + β b."""
        w, b = self.weights[layer], self.biases[layer]
        scale = self.weight_scale / math.sqrt(w.shape[1])
        return torch.addmm(b * self.beta, h, w.T, alpha=scale)

    def hidden(self, layer: int, pre: torch.Tensor, is_last_hidden: bool) -> torch.Tensor:
        """α(layer) from α̃(layer): the non-linearity and the optional normalisation."""
        h = self.activation(pre)
        if self.norm == "layer":
            h = _normalize(h, dim=-1)
        elif self.norm == "batch" or (self.norm == "batch_last" and is_last_hidden):
            h = _normalize(h, dim=0)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in range(self.depth):
            h = self.preactivation(layer, h)
            if layer < self.depth - 1:
                h = self.hidden(layer, h, is_last_hidden=layer == self.depth - 2)
        return h

    def extra_repr(self) -> str:
        return (
            f"dims={self.dims}, beta={self.beta}, activation={self.activation.spec!r}, "
            f"parametrization={self.parametrization!r}, norm={self.norm!r}"
        )
