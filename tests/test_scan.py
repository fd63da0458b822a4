import pytest
import torch

from pyro_spikes.distributions import exp_decay_scan


def naive_scan(times, inputs, rates):
    # h(t_i^-) = sum_{j<i} exp(-r (t_i - t_j)) x_j, by the sequential recursion
    g, r_rows, f = inputs.shape[-3:]
    out = torch.zeros_like(inputs)
    h = torch.zeros(inputs.shape[:-2] + (f,), dtype=inputs.dtype)
    for i in range(1, r_rows):
        dt = (times[..., i] - times[..., i - 1]).unsqueeze(-1).unsqueeze(-1)
        h = (h + inputs[..., i - 1, :]) * torch.exp(-rates.unsqueeze(-1) * dt)
        out[..., i, :] = h
    return out


@pytest.mark.parametrize("block_size", [None, 2, 3, 8, 1000])
def test_scan_matches_recursion(block_size):
    torch.manual_seed(0)
    times = (torch.rand(4, 50, dtype=torch.float64) * 30).sort(-1).values
    inputs = torch.randn(4, 3, 50, 5, dtype=torch.float64)
    rates = torch.rand(4, 3, dtype=torch.float64) + 0.1
    expected = naive_scan(times, inputs, rates)
    actual = exp_decay_scan(times, inputs, rates, block_size=block_size)
    assert torch.allclose(actual, expected, atol=1e-12, rtol=1e-10)


def test_scan_long_horizon_float32_is_stable():
    # times up to 1e4 with fast decay: no overflow, and agreement with float64 recursion
    torch.manual_seed(1)
    times = (torch.rand(2, 300) * 1e4).sort(-1).values
    inputs = torch.randn(2, 1, 300, 2)
    rates = torch.tensor([5.0])
    actual = exp_decay_scan(times, inputs, rates)
    expected = naive_scan(times.double(), inputs.double(), rates.double())
    assert torch.isfinite(actual).all()
    assert torch.allclose(actual.double(), expected, atol=1e-5)


def test_scan_ties_and_broadcast():
    times = torch.tensor([0.0, 1.0, 1.0, 2.0], dtype=torch.float64)
    inputs = torch.ones(2, 4, 1, dtype=torch.float64)
    rates = torch.tensor([1.0, 2.0], dtype=torch.float64)
    out = exp_decay_scan(times, inputs, rates)
    # row 2 sees rows 0 and 1 (the tie at t=1 counts with zero decay)
    assert out[0, 2, 0].item() == pytest.approx(torch.exp(torch.tensor(-1.0)).item() + 1.0)
    assert out[1, 3, 0].item() == pytest.approx(
        sum(torch.exp(-2 * torch.tensor(2.0 - t)).item() for t in [0.0, 1.0, 1.0])
    )
