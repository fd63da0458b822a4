import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch.distributions import RelaxedOneHotCategorical

from pyro_spikes import pack_spikes
from pyro_spikes.diagnostics import rescaled_intervals
from pyro_spikes.distributions import (
    RelaxedPointProcess,
    SpikingPointProcess,
    concrete_log_density,
)

DT = torch.float64


def params(d, l, seed, dtype=DT):
    g = torch.Generator().manual_seed(seed)
    bias = torch.rand(d, generator=g, dtype=dtype) * 2 - 1
    weight = torch.rand(l, d, d, generator=g, dtype=dtype) * 4 - 2
    tau = torch.linspace(0.7, 2.0, l, dtype=dtype)
    return bias, weight, tau


def test_concrete_density_matches_torch():
    torch.manual_seed(0)
    logits = torch.randn(5, 4, dtype=DT)
    d = RelaxedOneHotCategorical(torch.tensor(0.4, dtype=DT), logits=logits)
    y = d.sample()
    log_probs = logits - logits.logsumexp(-1, keepdim=True)
    assert torch.allclose(concrete_log_density(y, log_probs, 0.4), d.log_prob(y), atol=1e-8)


def test_log_prob_matches_direct_computation():
    # soft marks of 2 neurons at 3 candidates; pi_k from direct sums over earlier soft marks
    bias, weight, tau = params(2, 1, seed=1)
    a, T, temp = 2.0, 3.0, 0.5
    value = torch.tensor([[0.4, 0.7, 0.2], [1.1, 0.05, 0.9], [2.5, 0.3, 0.3],
                          [T, 0.0, 0.0]], dtype=DT)
    p = RelaxedPointProcess(SpikingPointProcess(bias, weight, tau, T, a, capacity=4), temp)
    expected = 3 * math.log(2 * a) - 2 * a * T
    for k in range(3):
        u = bias.clone()
        for j in range(k):
            u += weight[0] @ value[j, 1:] * math.exp(-(value[k, 0] - value[j, 0]) / tau[0])
        probs = torch.cat([torch.sigmoid(u) / 2, (1 - torch.sigmoid(u).sum() / 2).reshape(1)])
        y = torch.cat([value[k, 1:], 1 - value[k, 1:].sum().reshape(1)])
        expected += RelaxedOneHotCategorical(torch.tensor(temp, dtype=DT), probs=probs).log_prob(y)
    assert p.log_prob(value).item() == pytest.approx(float(expected), rel=1e-10)


def test_log_prob_integrates_to_one():
    # D = 1, a = 1, T = 0.5: integrate the density over N = 0, 1, 2 candidates (marks in
    # logit coordinates y = sigmoid(z)), compare with 1 - P(N >= 3)
    bias = torch.tensor([0.3], dtype=DT)
    weight = torch.tensor([[[1.5]]], dtype=DT)
    tau = torch.tensor([0.4], dtype=DT)
    a, T, temp = 1.0, 0.5, 0.5
    p = RelaxedPointProcess(SpikingPointProcess(bias, weight, tau, T, a, capacity=2), temp,
                            validate_args=False)
    zn, zw = np.polynomial.legendre.leggauss(120)
    z = torch.tensor(zn * 25, dtype=DT)
    wz = torch.tensor(zw * 25, dtype=DT) * torch.sigmoid(z) * torch.sigmoid(-z)  # dy
    tn, tw = np.polynomial.legendre.leggauss(10)
    tn, tw = torch.tensor((tn + 1) / 2, dtype=DT), torch.tensor(tw / 2, dtype=DT)
    y = torch.sigmoid(z)

    empty = torch.tensor([[T, 0.0], [T, 0.0]], dtype=DT)
    total = p.log_prob(empty).exp().item()
    # N = 1
    t1 = tn * T
    v = torch.zeros(len(t1), len(y), 2, 2, dtype=DT)
    v[..., 0, 0] = t1[:, None]
    v[..., 0, 1] = y[None, :]
    v[..., 1, 0] = T
    dens = p.log_prob(v).exp()
    total += (dens * (tw * T)[:, None] * wz[None, :]).sum().item()
    # N = 2: t1 in [0, T], t2 in [t1, T]
    t1 = (tn * T)[:, None].expand(10, 10)
    t2 = t1 + (T - t1) * tn[None, :]
    wt = (tw * T)[:, None] * (T - t1) * tw[None, :]
    v = torch.zeros(10, 10, len(y), len(y), 2, 2, dtype=DT)
    v[..., 0, 0] = t1[:, :, None, None]
    v[..., 1, 0] = t2[:, :, None, None]
    v[..., 0, 1] = y[:, None]
    v[..., 1, 1] = y[None, :]
    dens = p.log_prob(v).exp()
    total += (dens * wt[:, :, None, None] * wz[:, None] * wz[None, :]).sum().item()
    tail = 1 - stats.poisson(a * T).cdf(2)
    assert total == pytest.approx(1 - tail, abs=2e-4)


@pytest.mark.parametrize("subnetwork", [False, True])
def test_rsample_gradient_finite_differences(subnetwork, loop_backend):
    bias, weight, tau = params(4 if subnetwork else 3, 2, seed=2)
    context = pack_spikes([[[0.3, 1.1]], [[0.5, 2.2]]], 3.0, dtype=DT)
    proj = torch.randn(len(bias) - subnetwork, dtype=DT, generator=torch.Generator().manual_seed(0))

    def f(b, w, t, c_marks):
        # rsample differentiates through context marks; context times are constants
        torch.manual_seed(5)
        c = torch.cat([context[..., :1], c_marks], -1)
        kw = dict(neurons=[0, 1, 3], context=c) if subnetwork else {}
        proc = SpikingPointProcess(b, w, t, 3.0, 2.0, validate_args=False, **kw)
        x = RelaxedPointProcess(proc, 0.5).rsample(() if subnetwork else (2,))
        marks = x[..., 1:]
        return ((marks * proj).sum(-1) ** 2).sum() + (marks.sum(-2) ** 2).sum()

    inputs = [x.clone().requires_grad_() for x in (bias, weight, tau)]
    inputs.append(context[..., 1:].clone().requires_grad_(subnetwork))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_rsample_shapes_and_layout():
    bias, weight, tau = params(3, 2, seed=3, dtype=torch.float32)
    proc = SpikingPointProcess(bias.expand(2, 3), weight, tau, 5.0, 3.0)
    r = RelaxedPointProcess(proc, 0.3)
    x = r.rsample((4,))
    assert x.shape == (4, 2) + proc.event_shape and x.dtype == torch.float32
    assert r.log_prob(x).shape == (4, 2)
    assert torch.isfinite(r.log_prob(x)).all()
    marks = x[..., 1:]
    assert (marks >= 0).all() and (marks.sum(-1) <= 1 + 1e-5).all()
    assert (x[..., 1:, 0] >= x[..., :-1, 0]).all()
    e = r.expand((3, 2))
    assert e.rsample().shape == (3, 2) + proc.event_shape
    assert r.sample().requires_grad is False


def test_errors():
    bias, weight, tau = params(2, 1, seed=4)
    proc = SpikingPointProcess(bias, weight, tau, 5.0, 3.0)
    with pytest.raises(ValueError, match="temperature"):
        RelaxedPointProcess(proc, 0.0)
    with pytest.raises(ValueError, match="temperature"):
        RelaxedPointProcess(proc, torch.tensor([0.1, 0.2]))
    with pytest.raises(TypeError, match="process"):
        RelaxedPointProcess(torch.distributions.Normal(0.0, 1.0), 0.5)
    r = RelaxedPointProcess(proc, 0.5, validate_args=True)
    bad = r.sample()
    bad[0, 1:] = torch.tensor([0.9, 0.9], dtype=DT)
    with pytest.raises(ValueError, match="sum <= 1"):
        r.log_prob(bad)


def test_zero_temperature_limit_is_exact_thinning(loop_backend):
    # at small temperature the argmax marks are an exact sample of the process
    bias, weight, tau = params(3, 2, seed=6, dtype=torch.float32)
    proc = SpikingPointProcess(bias, weight, tau, 150.0, 3.0)
    torch.manual_seed(6)
    relaxed = RelaxedPointProcess(proc, 0.01)
    hard = relaxed.hard_marks(relaxed.sample((4,)))
    z = rescaled_intervals(proc, hard)
    assert z.numel() > 500
    assert stats.kstest(z.double().numpy(), "expon").pvalue > 0.01
    exact = proc.sample((4,))
    for d in range(3):
        ours = hard[..., 1 + d].sum(-1)
        ref = exact[..., 1 + d].sum(-1)
        se = math.sqrt(ours.var().item() / 4 + ref.var().item() / 4) + 1.0
        assert abs(ours.mean().item() - ref.mean().item()) < 5 * se


def test_relaxed_poisson_process():
    from pyro_spikes.distributions import PoissonProcess

    rate = torch.tensor([1.0, 2.0], dtype=DT)
    with pytest.raises(ValueError, match="upper_bound"):
        RelaxedPointProcess(PoissonProcess(rate, 5.0), 0.3)
    with pytest.raises(ValueError, match="upper_bound"):
        PoissonProcess(rate, 5.0, upper_bound=2.0)
    proc = PoissonProcess(rate, 5.0, upper_bound=6.0)
    r = RelaxedPointProcess(proc, 0.5)
    # known answer: Poisson candidates at rate 6 and i.i.d. concrete marks with pi = (1, 2, 3)/6
    value = torch.tensor([[0.5, 0.2, 0.5], [3.0, 0.05, 0.05], [5.0, 0.0, 0.0]], dtype=DT)
    probs = torch.tensor([1.0, 2.0, 3.0], dtype=DT) / 6
    concrete = RelaxedOneHotCategorical(torch.tensor(0.5, dtype=DT), probs=probs)
    y = torch.cat([value[:2, 1:], 1 - value[:2, 1:].sum(-1, keepdim=True)], -1)
    expected = 2 * math.log(6.0) - 6.0 * 5.0 + concrete.log_prob(y).sum()
    big = PoissonProcess(rate, 5.0, upper_bound=6.0, capacity=3)
    assert RelaxedPointProcess(big, 0.5).log_prob(value).item() == pytest.approx(expected.item())
    # low temperature: hard marks are Poisson counts with means rate * T
    torch.manual_seed(0)
    hard = RelaxedPointProcess(proc, 0.01).sample((2000,))[..., 1:].round().sum(-2)
    assert torch.allclose(hard.mean(0), rate * 5.0, atol=4 * math.sqrt(10.0 / 2000))
    # path-wise gradient of the expected soft count: d E[N_d] / d rate_d = T at tau -> 0
    rate_p = rate.clone().requires_grad_()
    r = RelaxedPointProcess(PoissonProcess(rate_p, 5.0, upper_bound=6.0), 0.05)
    r.rsample((4000,))[..., 1:].sum((0, 1)).div(4000).sum().backward()
    assert torch.allclose(rate_p.grad, torch.full((2,), 5.0, dtype=DT), rtol=0.15)


def test_relaxed_poisson_candidates_broadcast_and_named_errors():
    from pyro_spikes.distributions import PoissonProcess

    rate = torch.tensor([[1.0, 2.0, 0.5], [0.5, 0.5, 0.5]], dtype=DT)  # batch (2,), D = 3
    want = torch.cat([torch.log(rate / 8.0), torch.log1p(-rate.sum(-1, keepdim=True) / 8.0)], -1)
    proc = PoissonProcess(rate, 5.0, upper_bound=8.0)
    # the thinning log probabilities of each row: broadcast batch of value and process
    got = proc.candidate_log_probs(torch.zeros(4, 1, 6, 4, dtype=DT))
    assert got.shape == (4, 2, 6, 4)
    assert torch.equal(got, want[:, None, :].expand(4, 2, 6, 4))
    one = PoissonProcess(rate[0], 5.0, upper_bound=8.0).candidate_log_probs(
        torch.zeros(3, 6, 4, dtype=DT))
    assert one.shape == (3, 6, 4) and torch.equal(one, want[0].expand(3, 6, 4))
    # invalid parameters are named when sampling, also without validation
    bad_rate = PoissonProcess(torch.tensor([-1.0, 1.0]), 5.0, upper_bound=5.0,
                              validate_args=False)
    with pytest.raises(ValueError, match="^rate must be nonnegative and finite"):
        RelaxedPointProcess(bad_rate, 0.5).rsample()
    for bound in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="^upper_bound must be finite"):
            PoissonProcess(torch.ones(2), 5.0, upper_bound=bound)
    # an allocation that cannot succeed names the argument that sets the candidate count
    huge = PoissonProcess(torch.tensor([1.0]), 1e12, upper_bound=1e3, capacity=10)
    with pytest.raises(ValueError, match="^upper_bound: the .* event times per sequence"):
        RelaxedPointProcess(huge, 0.5).rsample()


def test_rsample_gradient_batched_weights(loop_backend):
    # parameters with a batch dimension take the batched-matrix branch of both loops
    bias, weight, tau = params(3, 2, seed=7)
    weight = torch.stack([weight, 0.5 * weight.flip(-1)])  # (2, L, D, D)
    proj = torch.randn(2, dtype=DT, generator=torch.Generator().manual_seed(1))

    def f(b, w, t):
        torch.manual_seed(3)
        proc = SpikingPointProcess(b, w, t, 3.0, 2.0, neurons=[0, 2],
                                   context=pack_spikes([[0.4, 1.9]], 3.0, dtype=DT),
                                   validate_args=False)
        x = RelaxedPointProcess(proc, 0.5).rsample()
        return ((x[..., 1:] * proj).sum(-1) ** 2).sum()

    inputs = [x.clone().requires_grad_() for x in (bias, weight, tau)]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)
    # and the exact sampler with batched weights gives one realisation per batch element
    proc = SpikingPointProcess(bias, weight, tau, 3.0, 2.0, neurons=[0, 2],
                               context=pack_spikes([[0.4, 1.9]], 3.0, dtype=DT))
    assert proc.batch_shape == (2,) and proc.sample().shape == (2,) + proc.event_shape
