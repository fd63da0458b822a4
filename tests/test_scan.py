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


needs_compiled = pytest.mark.skipif(
    not __import__("pyro_spikes.distributions.kernels", fromlist=["x"]).has_compiled_loops(),
    reason="_kernels not built",
)


@needs_compiled
@pytest.mark.parametrize("shapes", [
    ((4, 60), (4, 3, 60, 5), (4, 3)),  # one batch dimension
    ((60,), (2, 3, 2, 60, 1), (2,)),  # times and rates broadcast over the batch
    ((3, 1, 60), (1, 2, 1, 60, 4), (1,)),  # broadcast on both sides
])
def test_compiled_scan_values_and_gradients(shapes):
    # the compiled recursion (default on the CPU) and its reverse-recursion gradient equal the
    # blocked PyTorch scan, including gradients reduced over broadcast dimensions
    from pyro_spikes.distributions.kernels import compiled_loops

    torch.manual_seed(2)
    ts, xs, rs = shapes
    times = (torch.rand(ts, dtype=torch.float64) * 20).sort(-1).values
    times[..., 7] = times[..., 6]  # a tie
    inputs = torch.randn(xs, dtype=torch.float64)
    rates = torch.rand(rs, dtype=torch.float64) + 0.2
    args = [v.clone().requires_grad_() for v in (times, inputs, rates)]
    out = exp_decay_scan(*args)
    weights = torch.randn(out.shape, dtype=torch.float64)
    grads = torch.autograd.grad((out * weights).sum(), args)
    ref_args = [v.clone().requires_grad_() for v in (times, inputs, rates)]
    with compiled_loops(False):
        ref = exp_decay_scan(*ref_args)
    ref_grads = torch.autograd.grad((ref * weights).sum(), ref_args)
    assert torch.allclose(out, ref, atol=1e-12, rtol=1e-10)
    for a, b in zip(grads, ref_grads):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-10, rtol=1e-8)


@needs_compiled
def test_compiled_scan_gradcheck_and_second_derivatives():
    torch.manual_seed(3)
    times = (torch.rand(2, 12, dtype=torch.float64) * 5).sort(-1).values.requires_grad_()
    inputs = torch.randn(2, 2, 12, 3, dtype=torch.float64, requires_grad=True)
    rates = (torch.rand(2, dtype=torch.float64) + 0.3).requires_grad_()
    assert torch.autograd.gradcheck(exp_decay_scan, (times, inputs, rates))
    # second derivatives (e.g. a Laplace approximation's Hessian) go through the PyTorch scan
    assert torch.autograd.gradgradcheck(exp_decay_scan, (times, inputs, rates))


def test_scan_keeps_provenance_and_graph():
    # Pyro's TraceGraph_ELBO feeds ProvenanceTensor values: the result keeps their provenance
    # and its autograd graph (on the compiled path too)
    from pyro.ops.provenance import ProvenanceTensor, get_provenance

    torch.manual_seed(4)
    times = (torch.rand(2, 20, dtype=torch.float64) * 5).sort(-1).values
    marks = ProvenanceTensor(torch.randn(2, 20, 3, dtype=torch.float64), frozenset({"z"}))
    weight = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    rates = torch.tensor([1.0, 0.5], dtype=torch.float64)
    out = exp_decay_scan(times, torch.matmul(marks.unsqueeze(-3), weight.transpose(-1, -2)),
                         rates)
    assert get_provenance(out) == frozenset({"z"})
    grad = torch.autograd.grad(out.sum(), weight)[0]
    plain = exp_decay_scan(times, torch.matmul(marks._t.unsqueeze(-3),
                                               weight.transpose(-1, -2)), rates)
    assert torch.allclose(grad, torch.autograd.grad(plain.sum(), weight)[0])


@pytest.mark.parametrize("block_size", [None, 4])
def test_initial_state_is_a_row_before_the_first(loop_backend, block_size):
    # a state h0 carried into the rows equals an extra first row at t0 holding h0 (rows at the
    # same time see the earlier ones): the chunks of a streamed likelihood rely on it
    g = torch.Generator().manual_seed(3)
    times = (torch.rand(2, 11, generator=g, dtype=torch.float64) * 3).sort(-1).values
    x = torch.randn(2, 3, 11, 4, generator=g, dtype=torch.float64)
    rates = torch.rand(2, 3, generator=g, dtype=torch.float64) + 0.2
    h0 = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    got = exp_decay_scan(times, x, rates, block_size=block_size, initial=h0)
    longer = exp_decay_scan(torch.cat([times[:, :1], times], -1),
                            torch.cat([h0.unsqueeze(-2), x], -2), rates, block_size=block_size)
    assert torch.allclose(got, longer[..., 1:, :], rtol=1e-12, atol=1e-12)
    assert torch.allclose(got[..., 0, :], h0)  # the left limit at the first row
