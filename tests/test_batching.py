"""
A batch of different parameters is a batch of independent distributions: for every process,
``log_prob`` (and its gradient) of a batch equals the stack of the members' evaluations one at a
time, and ``sample`` gives each member its own parameters' statistics. Both code paths
(``loop_backend``). A batched evaluation that mixes members (a sum over the whole batch where a
sum over neurons was meant, a broadcast against the wrong axis) fails here, while every test of
one parameter vector would pass. The exact processes are checked in both layouts (``layout``):
the index layout's gathers and scatters must keep the members apart too.
"""

import math

import pytest
import torch

from pyro_spikes.distributions import (FilteredStimulus, HawkesProcess, PoissonProcess,
                                       RelaxedPointProcess, SpikingPointProcess, StochasticLIF)
from pyro_spikes.spikes import pack_spikes, to_dense, to_index

DT = torch.float64
B, D, T = 3, 2, 4.0


def _trains(seed, num_neurons=D, duration=T, rate=1.5):
    """B different realisations (Poisson spike times), as lists for pack_spikes."""
    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(B):
        trains = []
        for _ in range(num_neurons):
            n = int(torch.poisson(torch.tensor(rate * duration), generator=g))
            trains.append(sorted((torch.rand(n, generator=g, dtype=DT) * duration).tolist()))
        batch.append(trains)
    return batch


@pytest.fixture(params=["dense", "index"])
def layout(request):
    """The layout of the values of an exact process (see pyro_spikes.spikes)."""
    return request.param


def _in(layout, events, duration=T):
    """Dense ``events`` in ``layout``."""
    return to_index(events, duration) if layout == "index" else events


def _counts(events, layout, num_neurons):
    """Spike counts per neuron ``(..., D)`` of a sample in ``layout``."""
    if layout == "index":
        events = to_dense(events, num_neurons)
    return events[..., 1:].sum(-2)


def _leaves(*tensors):
    return [t.detach().clone().requires_grad_() for t in tensors]


def _agree(make, params, value, rtol=1e-10, atol=1e-10, member_value=None):
    """log_prob and its gradient: batched == stacked one-at-a-time."""
    params = _leaves(*params)
    batched = make(*params).log_prob(value)
    assert batched.shape == (B,)
    grads = torch.autograd.grad(batched.sum(), params, allow_unused=True)
    for b in range(B):
        member = _leaves(*(p[b] for p in params))
        lp = make(*member).log_prob(value[b] if member_value is None else member_value(b))
        assert lp.shape == ()
        assert torch.allclose(batched[b], lp, rtol=rtol, atol=atol), (b, batched, lp)
        member_grads = torch.autograd.grad(lp, member, allow_unused=True)
        for i, (g_all, g_one) in enumerate(zip(grads, member_grads)):
            if g_one is None:
                assert g_all is None or bool((g_all[b] == 0).all()), (b, i)
                continue
            assert torch.allclose(g_all[b], g_one, rtol=1e-8, atol=1e-10), (b, i, g_all[b], g_one)
    # and the members really differ (else the test could not see a mix-up)
    assert len({round(float(v), 6) for v in batched.detach()}) == B


# ---------------------------------------------------------------- log_prob: exact processes


def test_poisson(loop_backend, layout):
    rate = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.5, 0.5]], dtype=DT)
    value = pack_spikes(_trains(0), T, dtype=DT)
    _agree(lambda r: PoissonProcess(r, T, layout=layout), [rate], _in(layout, value))
    # the closed form, member by member (issue 29's example: T = 2 gave -1.84, 2.01, -3.39)
    counts = value[..., 1:].sum(-2)
    want = (counts * rate.log() - T * rate).sum(-1)
    got = PoissonProcess(rate, T, layout=layout).log_prob(_in(layout, value))
    assert torch.allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("decay", ["per_member", "per_pair"])
def test_hawkes(loop_backend, decay, layout):
    baseline = torch.tensor([[0.5, 0.3], [1.0, 0.2], [0.1, 0.9]], dtype=DT)
    adjacency = torch.tensor([[[0.3, 0.2], [0.1, 0.4]], [[0.0, 0.5], [0.5, 0.0]],
                              [[0.6, 0.0], [0.2, 0.1]]], dtype=DT)
    if decay == "per_member":  # one decay per member: the uniform-decay code path
        beta = torch.tensor([1.0, 2.5, 0.7], dtype=DT)
        make = lambda mu, a, b: HawkesProcess(mu, a, b.unsqueeze(-1).unsqueeze(-1), T,  # noqa: E731
                                              layout=layout)
    else:
        beta = torch.tensor([[[1.0, 2.0], [0.5, 3.0]], [[1.5, 1.5], [0.8, 2.2]],
                             [[0.4, 1.1], [2.0, 0.9]]], dtype=DT)
        make = lambda mu, a, b: HawkesProcess(mu, a, b, T, layout=layout)  # noqa: E731
    value = pack_spikes(_trains(1), T, dtype=DT)
    _agree(make, [baseline, adjacency, beta], _in(layout, value))


def _spiking_params(seed=2, num_neurons=D, num_basis=2):
    g = torch.Generator().manual_seed(seed)
    bias = torch.randn(B, num_neurons, generator=g, dtype=DT) * 0.5
    weight = torch.randn(B, num_basis, num_neurons, num_neurons, generator=g, dtype=DT)
    tau = torch.tensor([[0.5, 1.5], [0.3, 2.0], [0.8, 1.0]], dtype=DT)[:, :num_basis]
    bound = torch.tensor([3.0, 4.0, 5.0], dtype=DT)
    return bias, weight, tau, bound


def test_spiking(loop_backend, layout):
    value = pack_spikes(_trains(3), T, dtype=DT)
    _agree(lambda b, w, tau, a: SpikingPointProcess(b, w, tau, T, upper_bound=a, layout=layout),
           _spiking_params(), _in(layout, value))


def test_spiking_with_stimulus_and_history(loop_backend, layout):
    g = torch.Generator().manual_seed(4)
    times = torch.tensor([-0.5, 0.4, 1.3, 2.2, 3.1], dtype=DT)
    x = torch.randn(B, 5, 2, generator=g, dtype=DT)
    s_weight = torch.randn(B, 2, D, 2, generator=g, dtype=DT)
    s_tau = torch.tensor([[0.3, 1.0], [0.5, 0.8], [0.2, 2.0]], dtype=DT)
    history = pack_spikes(_trains(5, duration=1.0), 1.0, dtype=DT)
    history[..., 0] -= 1.0
    value = pack_spikes(_trains(6), T, dtype=DT)

    def make(b, w, tau, a, x, sw, st, hist):
        return SpikingPointProcess(b, w, tau, T, upper_bound=a, history=hist,
                                   stimulus=FilteredStimulus(x, times, sw, st), layout=layout)

    _agree(make, [*_spiking_params(), x, s_weight, s_tau, history], _in(layout, value))


def test_spiking_subnetwork_with_context(loop_backend, layout):
    # neuron 0 and 2 modelled, neuron 1 the (different per member) context
    trains = _trains(7, num_neurons=3)
    modelled = pack_spikes([[t[0], t[2]] for t in trains], T, dtype=DT)
    context = pack_spikes([[t[1]] for t in trains], T, dtype=DT)

    def make(b, w, tau, a, ctx):
        return SpikingPointProcess(b, w, tau, T, upper_bound=a, neurons=[0, 2], context=ctx,
                                   layout=layout)

    _agree(make, [*_spiking_params(num_neurons=3), context], _in(layout, modelled))


# ---------------------------------------------------------------- log_prob: relaxed


@pytest.mark.parametrize("base", ["spiking", "poisson"])
def test_relaxed(loop_backend, base):
    if base == "spiking":
        params = list(_spiking_params(num_basis=1))

        def make(b, w, tau, a, temp):
            return RelaxedPointProcess(SpikingPointProcess(b, w, tau, T, upper_bound=a), temp)
    else:
        params = [torch.tensor([[1.0, 2.0], [0.3, 0.4], [2.0, 0.5]], dtype=DT)]

        def make(r, temp):
            return RelaxedPointProcess(PoissonProcess(r, T, upper_bound=4.0), temp)
    temperature = torch.tensor(0.4, dtype=DT)  # one scalar shared by the batch
    torch.manual_seed(8)
    with torch.no_grad():
        value = make(*params, temperature).rsample()
    _agree(lambda *p: make(*p, temperature), params, value)


def test_stochastic_lif_rsample(loop_backend):
    # intractable likelihood: the batch agreement is that of the path-wise samples, same noise
    current = torch.tensor([[1.5, 2.5], [3.0, 1.2], [2.0, 2.0]], dtype=DT)
    weight = torch.tensor([[[0.0, 0.3], [-0.2, 0.0]], [[0.0, 0.0], [0.5, 0.0]],
                           [[0.0, -0.4], [0.1, 0.0]]], dtype=DT)
    tau = torch.tensor([1.0, 0.5, 2.0], dtype=DT)

    def make(c, w, t):
        return StochasticLIF(c, weight=w, tau=t.unsqueeze(-1), noise_scale=0.3, duration=2.0,
                             num_spikes=2, dt=0.01)

    params = _leaves(current, weight, tau)
    dist = make(*params)
    noise = dist.sample_noise(generator=torch.Generator().manual_seed(9))
    batched = dist.rsample(noise=noise)
    grads = torch.autograd.grad(batched[..., 0].sum(), params)
    for b in range(B):
        member = _leaves(current[b], weight[b], tau[b])
        one = make(*member).rsample(noise={k: v[b] for k, v in noise.items()})
        assert torch.allclose(batched[b], one, atol=1e-12)
        for g_all, g_one in zip(grads, torch.autograd.grad(one[..., 0].sum(), member)):
            assert torch.allclose(g_all[b], g_one, atol=1e-10)
    assert len({round(float(v), 6) for v in batched.detach()[..., 0].sum(-1)}) == B


# ---------------------------------------------------------------- sample: each its own law


def _mean_counts(events, layout, num_neurons):
    return _counts(events, layout, num_neurons).mean(0)


def test_poisson_sample_members_have_their_own_rates(loop_backend, layout):
    rate = torch.tensor([[0.5], [2.0], [8.0]], dtype=DT)
    n, duration = 400, 10.0
    torch.manual_seed(10)
    counts = _mean_counts(PoissonProcess(rate, duration, layout=layout).sample((n,)), layout, 1)[:, 0]
    want = rate[:, 0] * duration
    # the mean of n Poisson counts: standard error sqrt(rate T / n); 5 of them
    assert torch.all((counts - want).abs() < 5 * (want / n).sqrt()), (counts, want)


def test_hawkes_sample_members_have_their_own_parameters(loop_backend, layout):
    baseline = torch.tensor([[0.5, 0.2], [2.0, 1.0], [0.2, 3.0]], dtype=DT)
    adjacency = torch.tensor([[[0.3, 0.0], [0.0, 0.3]], [[0.0, 0.0], [0.0, 0.0]],
                              [[0.0, 0.5], [0.2, 0.0]]], dtype=DT)
    n, duration = 300, 40.0
    torch.manual_seed(11)
    events = HawkesProcess(baseline, adjacency, 5.0, duration, layout=layout).sample((n,))
    counts = _counts(events, layout, 2)  # (n, B, D)
    # stationary mean (I - alpha)^{-1} mu T; decay 5 makes the start-up transient ~0.2 time units
    want = torch.linalg.solve(torch.eye(2, dtype=DT) - adjacency, baseline) * duration
    se = counts.std(0) / math.sqrt(n)
    assert torch.all((counts.mean(0) - want).abs() < 5 * se + 0.01 * want), (counts.mean(0), want)


def test_spiking_sample_members_have_their_own_parameters(loop_backend, layout):
    # no coupling: Poisson with rate a sigma(b); the members' rates differ 20-fold
    bias = torch.tensor([[-3.0, 0.0], [0.0, 2.0], [2.0, -1.0]], dtype=DT)
    weight = torch.zeros(B, 1, 2, 2, dtype=DT)
    bound = torch.tensor([2.0, 3.0, 1.0], dtype=DT)
    n, duration = 300, 10.0
    torch.manual_seed(12)
    counts = _mean_counts(SpikingPointProcess(bias, weight, torch.ones(1, dtype=DT), duration,
                                              upper_bound=bound, layout=layout).sample((n,)),
                          layout, 2)
    want = bound.unsqueeze(-1) * torch.sigmoid(bias) * duration
    assert torch.all((counts - want).abs() < 5 * (want / n).sqrt()), (counts, want)


def test_spiking_sample_batched_weights_equal_members_sampled_alone(loop_backend):
    # with coupling there is no closed form: the batch's mean counts against each member
    # sampled on its own (a two-sample z-test per member and neuron, 5 standard errors)
    bias, weight, tau, bound = _spiking_params(seed=13)
    weight = weight * torch.tensor([0.0, 1.0, 2.0], dtype=DT).view(B, 1, 1, 1)
    n, duration = 300, 10.0
    torch.manual_seed(14)
    together = SpikingPointProcess(bias, weight, tau, duration, upper_bound=bound).sample((n,))
    c_all = together[..., 1:].sum(-2)  # (n, B, D)
    for b in range(B):
        alone = SpikingPointProcess(bias[b], weight[b], tau[b], duration,
                                    upper_bound=bound[b]).sample((n,))
        c_one = alone[..., 1:].sum(-2)
        se = ((c_all[:, b].var(0) + c_one.var(0)) / n).sqrt()
        assert torch.all((c_all[:, b].mean(0) - c_one.mean(0)).abs() < 5 * se + 1e-9), b
