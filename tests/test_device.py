"""Device plumbing on a CPU-only machine: "auto" equals "cpu", a missing CUDA device is a clear
error before any compute, and the hot paths keep tensors on the requested device."""

import numpy as np
import pytest
import torch

from ntk_repro.device import resolve_device
from ntk_repro.empirical import empirical_ntk
from ntk_repro.kernels import theta_inf
from ntk_repro.networks import MLP
from ntk_repro.training import train_ensemble

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device exists here")


def _train(device):
    x = np.random.default_rng(0).standard_normal((6, 2))
    y = x[:, 0] * x[:, 1]
    return train_ensemble(
        x,
        y,
        width=16,
        depth=3,
        beta=0.1,
        seeds=[1, 2],
        steps=5,
        lr=0.5,
        x_eval=x,
        eval_steps=(0, 5),
        ntk_points=x[:3],
        ntk_steps=(5,),
        device=device,
    )


@no_cuda
def test_auto_and_cpu_give_identical_results():
    assert resolve_device("auto") == torch.device("cpu")
    a, b = _train("auto"), _train("cpu")
    for key, value in a.arrays().items():
        assert np.array_equal(value, b.arrays()[key]), key
    x = np.random.default_rng(1).standard_normal((5, 3))
    assert np.array_equal(
        theta_inf(x, depth=3, beta=0.1, device="auto"),
        theta_inf(x, depth=3, beta=0.1, device="cpu"),
    )


@no_cuda
@pytest.mark.parametrize(
    "build",
    [
        lambda: MLP(2, 8, 2, beta=0.1, device="cuda"),
        lambda: _train("cuda"),
        lambda: theta_inf(np.ones((2, 2)), depth=2, beta=0.1, device="cuda"),
    ],
)
def test_missing_cuda_is_a_clear_error(build):
    with pytest.raises(ValueError, match="CUDA"):
        build()


def test_empirical_ntk_stays_on_the_model_device():
    net = MLP(3, 8, 3, beta=0.1, generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 3)
    k = empirical_ntk(net, x)
    assert k.device == next(net.parameters()).device and k.dtype == torch.float32
