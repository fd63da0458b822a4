import math

import numpy as np
import pyro
import pytest
import torch
from scipy import integrate, stats

from pyro_spikes import pack_spikes, unpack_spikes
from pyro_spikes.diagnostics import rescaled_intervals
from pyro_spikes.distributions import SpikingPointProcess


def random_params(d, l, seed, dtype=torch.float64, inhibitory=True):
    g = torch.Generator().manual_seed(seed)
    bias = torch.rand(d, generator=g, dtype=dtype) * 2 - 1
    weight = torch.rand(l, d, d, generator=g, dtype=dtype) * 4 - 2
    if inhibitory:
        weight[:, range(d), range(d)] = -torch.rand(l, d, generator=g, dtype=dtype) * 3 - 0.1
    tau = torch.linspace(0.5, 3.0, l, dtype=dtype)
    return bias, weight, tau


def direct_potential(t, trains, bias, weight, tau):
    """u_d(t) by direct summation over all earlier spikes (no recursion)."""
    u = bias.copy()
    for src, train in enumerate(trains):
        past = train[train < t]
        for l in range(len(tau)):
            u += weight[l, :, src] * np.exp(-(t - past) / tau[l]).sum()
    return u


def direct_loglik(trains, bias, weight, tau, a, T):
    """Independent reference: direct sums and adaptive quadrature between spikes."""
    bias, weight, tau = bias.numpy(), weight.numpy(), tau.numpy()
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    total = 0.0
    for d, train in enumerate(trains):
        for t in train:
            total += np.log(a * sig(direct_potential(t, trains, bias, weight, tau)[d]))
    breaks = np.unique(np.concatenate([[0.0, T]] + list(trains)))
    for lo, hi in zip(breaks[:-1], breaks[1:]):
        for d in range(len(trains)):
            val, _ = integrate.quad(
                lambda s: a * sig(direct_potential(s, trains, bias, weight, tau)[d]),
                lo, hi, epsabs=1e-13, epsrel=1e-12, limit=200,
            )
            total -= val
    return total


@pytest.mark.parametrize("d,l", [(1, 1), (3, 2)])
def test_log_prob_matches_direct_quadrature(d, l):
    bias, weight, tau = random_params(d, l, seed=d + l)
    torch.manual_seed(0)
    p = SpikingPointProcess(bias, weight, tau, duration=8.0, upper_bound=3.0)
    x = p.sample((2,))
    lp = p.log_prob(x)
    for b in range(2):
        trains = [t.numpy() for t in unpack_spikes(x[b])]
        assert sum(len(t) for t in trains) >= 3
        ref = direct_loglik(trains, bias, weight, tau, 3.0, 8.0)
        assert lp[b].item() == pytest.approx(ref, rel=1e-8, abs=1e-8)


def test_compensator_matches_closed_form_linear_regime():
    # L=1 and a tiny weight w: sigma(b + w s(t)) = sigma(b) + sigma'(b) w s(t) + O(w^2), so
    # Lambda(T) = a [sigma(b) T + sigma(b)(1 - sigma(b)) w tau sum_j (1 - e^{-(T - t_j)/tau})]
    # up to a relative O(w^2) ~ 1e-8.
    b, w, tau, a, T = -1.0, 1e-4, 2.0, 10.0, 5.0
    spikes = np.array([0.5, 1.2, 3.3])
    events = pack_spikes([spikes], duration=T, capacity=4, dtype=torch.float64)
    p = SpikingPointProcess(torch.tensor([b], dtype=torch.float64),
                            torch.tensor([[[w]]], dtype=torch.float64),
                            torch.tensor([tau], dtype=torch.float64), T, a, capacity=4)
    comp = p.compensator(events)
    sig = 1 / (1 + np.exp(-b))
    closed = a * (sig * T + sig * (1 - sig) * w * tau * np.sum(1 - np.exp(-(T - spikes) / tau)))
    assert comp[-1, 0].item() == pytest.approx(closed, rel=1e-7)  # padding row: Lambda(T)
    assert comp[0, 0].item() == pytest.approx(a * sig * 0.5, rel=1e-12)  # before any spike


def test_quadrature_order_convergence():
    bias, weight, tau = random_params(2, 2, seed=11)
    torch.manual_seed(1)
    x = SpikingPointProcess(bias, weight, tau, 10.0, 4.0).sample()
    values = [
        SpikingPointProcess(bias, weight, tau, 10.0, 4.0, capacity=x.shape[-2],
                            quadrature_order=q, max_step=s).log_prob(x).item()
        for q, s in [(1, 2.0), (2, 1.0), (8, None), (16, 0.1)]
    ]
    assert abs(values[2] - values[3]) < 1e-9
    assert abs(values[0] - values[3]) > abs(values[1] - values[3]) > abs(values[2] - values[3])


def test_gradients_finite_difference():
    bias, weight, tau = random_params(3, 2, seed=5)
    torch.manual_seed(2)
    x = SpikingPointProcess(bias, weight, tau, 6.0, 3.0).sample((2,))
    a = torch.tensor(3.0, dtype=torch.float64)
    params = [p.clone().requires_grad_() for p in (bias, weight, tau, a)]

    def f(b, w, t, ub):
        return SpikingPointProcess(b, w, t, 6.0, ub, capacity=x.shape[-2]).log_prob(x)

    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-6)


def test_gradient_soft_marks_and_times():
    bias, weight, tau = random_params(2, 1, seed=3)
    events = pack_spikes([[0.4, 1.5], [0.9]], duration=3.0, dtype=torch.float64)
    events[0, 1:] = torch.tensor([0.6, 0.3], dtype=torch.float64)
    p = SpikingPointProcess(bias, weight, tau, 3.0, 2.0, capacity=events.shape[-2])
    p.log_prob(events)  # soft marks pass validation
    # finite differences step off the simplex, so switch validation off for the check
    p = SpikingPointProcess(bias, weight, tau, 3.0, 2.0, capacity=events.shape[-2],
                            validate_args=False)
    x = events.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda v: p.log_prob(v), [x], eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed,inhibitory", [(0, True), (1, False), (2, True)])
def test_time_rescaling(seed, inhibitory, loop_backend):
    bias, weight, tau = random_params(4, 2, seed=seed, dtype=torch.float32,
                                      inhibitory=inhibitory)
    torch.manual_seed(seed)
    # long windows: the completed intervals of a finite window are biased short by O(1/count)
    p = SpikingPointProcess(bias, weight, tau, duration=200.0, upper_bound=4.0)
    x = p.sample((3,))
    z = rescaled_intervals(p, x)
    assert z.numel() > 500
    assert stats.kstest(z.double().numpy(), "expon").pvalue > 0.01


def test_counts_match_compensator_martingale():
    # N_d(T) - Lambda_d(T) is a martingale: mean zero, variance E[Lambda_d(T)]
    bias, weight, tau = random_params(4, 2, seed=6, dtype=torch.float32)
    torch.manual_seed(6)
    p = SpikingPointProcess(bias, weight, tau, duration=10.0, upper_bound=4.0)
    x = p.sample((400,))
    resid = (x[..., 1:].sum(-2) - p.compensator(x)[..., -1, :]).double()
    z = resid.sum(0) / p.compensator(x)[..., -1, :].double().sum(0).sqrt()
    assert (z.abs() < 3.5).all(), z


def test_time_rescaling_rejects_wrong_model():
    bias, weight, tau = random_params(3, 1, seed=4, dtype=torch.float32)
    torch.manual_seed(4)
    x = SpikingPointProcess(bias, weight, tau, 200.0, 4.0).sample((3,))
    wrong = SpikingPointProcess(bias, torch.zeros_like(weight), tau, 200.0, 4.0,
                                capacity=x.shape[-2])
    assert stats.kstest(rescaled_intervals(wrong, x).double().numpy(), "expon").pvalue < 1e-4


def test_sampler_matches_sequential_reference(loop_backend):
    # an independent per-event Ogata simulation with a direct (non-recursive) potential
    bias, weight, tau = random_params(2, 2, seed=7)
    a, T = 3.0, 5.0
    rng = np.random.default_rng(0)
    bn, wn, tn = bias.numpy(), weight.numpy(), tau.numpy()

    def simulate():
        trains, t = [np.array([]), np.array([])], 0.0
        while True:
            t += rng.exponential(1 / (2 * a))
            if t > T:
                return [len(tr) for tr in trains]
            lam = a / (1 + np.exp(-direct_potential(t, trains, bn, wn, tn)))
            u = rng.uniform() * 2 * a
            if u < lam.sum():
                d = int(u >= lam[0])
                trains[d] = np.append(trains[d], t)

    ref = np.array([simulate() for _ in range(1500)])
    torch.manual_seed(7)
    ours = SpikingPointProcess(bias, weight, tau, T, a).sample((1500,))[..., 1:].sum(-2).numpy()
    for d in range(2):
        assert stats.ks_2samp(ref[:, d], ours[:, d]).pvalue > 0.01


def test_intensity_path():
    bias, weight, tau = random_params(2, 1, seed=8)
    events = pack_spikes([[1.0], [2.0]], duration=4.0, dtype=torch.float64)
    p = SpikingPointProcess(bias, weight, tau, 4.0, 2.0, capacity=2)
    t = torch.tensor([0.5, 1.0, 1.5, 3.0], dtype=torch.float64)
    lam = p.intensity(events, t)
    for i, s in enumerate(t.tolist()):
        u = direct_potential(s, [np.array([1.0]), np.array([2.0])], bias.numpy(),
                             weight.numpy(), tau.numpy())
        assert lam[i].numpy() == pytest.approx(2.0 / (1 + np.exp(-u)))
    # left-continuous: at t = 1.0 the spike at 1.0 is not yet in the history
    assert lam[1].numpy() == pytest.approx(lam[0].numpy())


def test_shapes_expand_dtype():
    bias, weight, tau = random_params(3, 2, seed=9, dtype=torch.float32)
    p = SpikingPointProcess(bias.expand(4, 3), weight, tau, 5.0, torch.tensor([1.0, 2, 3, 4]))
    assert p.batch_shape == (4,) and p.event_shape == (p.capacity, 4)
    x = p.sample((2,))
    assert x.shape == (2, 4, p.capacity, 4) and x.dtype == torch.float32
    assert p.log_prob(x).shape == (2, 4)
    e = p.expand((5, 4))
    assert e.sample().shape == (5, 4, p.capacity, 4)
    assert e.log_prob(x[0]).shape == (5, 4)
    p64 = SpikingPointProcess(*random_params(3, 2, seed=9), 5.0, 2.0)
    assert p64.sample().dtype == torch.float64


def test_capacity_and_validation_errors():
    bias, weight, tau = random_params(2, 1, seed=10, dtype=torch.float32)
    with pytest.raises(ValueError, match="capacity=3 exceeded"):
        SpikingPointProcess(torch.full((2,), 5.0), weight, tau, 10.0, 5.0, capacity=3).sample()
    with pytest.raises(ValueError, match="weight"):
        SpikingPointProcess(bias, weight[0], tau, 10.0)
    with pytest.raises(ValueError, match="upper_bound"):
        SpikingPointProcess(bias, weight, tau, 10.0, -1.0)
    with pytest.raises(ValueError, match="time_constants"):
        SpikingPointProcess(bias, weight, -tau, 10.0, capacity=5, validate_args=True)
    p = SpikingPointProcess(bias, weight, tau, 1.0, 1.0, capacity=4, validate_args=True)
    bad = pack_spikes([[0.5], [0.2]], 1.0, capacity=4)
    bad[0, 0] = 0.9
    with pytest.raises(ValueError, match="sorted"):
        p.log_prob(bad)
    bad = pack_spikes([[0.5], [0.2]], 1.0, capacity=4)
    bad[1, 0] = 1.5
    with pytest.raises(ValueError, match="outside"):
        p.log_prob(bad)


def test_pyro_sample_site_and_ml_fit():
    torch.manual_seed(3)
    true_bias = torch.tensor([0.5, -1.0])
    true_weight = torch.tensor([[[-2.0, 1.5], [2.0, -1.0]]])
    tau = torch.tensor([1.0])
    data = SpikingPointProcess(true_bias, true_weight, tau, 100.0, 3.0).sample((10,))

    def model(data):
        b = pyro.param("bias", torch.zeros(2))
        w = pyro.param("weight", torch.zeros(1, 2, 2))
        with pyro.plate("seq", data.shape[0]):
            return pyro.sample("x", SpikingPointProcess(b, w, tau, 100.0, 3.0,
                                                        capacity=data.shape[-2]), obs=data)

    trace = pyro.poutine.trace(model).get_trace(data)
    assert trace.nodes["x"]["fn"].batch_shape == (10,)
    params = [pyro.param("bias").unconstrained(), pyro.param("weight").unconstrained()]
    opt = torch.optim.LBFGS(params, max_iter=60, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -pyro.poutine.trace(model).get_trace(data).log_prob_sum() / 10
        loss.backward()
        return loss

    opt.step(closure)
    assert torch.allclose(pyro.param("bias").detach(), true_bias, atol=0.3)
    assert torch.allclose(pyro.param("weight").detach(), true_weight, atol=0.5)


@pytest.mark.parametrize("neurons", [[1, 3], [1]])
def test_subnetwork_with_context_time_rescaling(neurons, loop_backend):
    # the modelled neurons driven by fixed exogenous context spikes: their compensator (with
    # the context in the history) rescales the sampled spikes to Exp(1) intervals
    from pyro_spikes.distributions import PoissonProcess

    bias, weight, tau = random_params(4, 2, seed=12, dtype=torch.float32)
    weight = weight * 1.5
    others = [d for d in range(4) if d not in neurons]
    torch.manual_seed(12)
    context = PoissonProcess(torch.full((len(others),), 1.5), 150.0).sample((3,))
    p = SpikingPointProcess(bias, weight, tau, 150.0, 4.0, neurons=neurons, context=context)
    assert p.batch_shape == (3,) and p.event_shape[-1] == 1 + len(neurons)
    x = p.sample()
    z = rescaled_intervals(p, x)
    assert z.numel() > 300
    assert stats.kstest(z.double().numpy(), "expon").pvalue > 0.01
    # the context matters: ignoring it is rejected
    alone = SpikingPointProcess(bias, weight, tau, 150.0, 4.0, neurons=neurons,
                                context=torch.full_like(context[:, :1], 150.0) * torch.tensor(
                                    [1.0] + [0.0] * len(others)), capacity=x.shape[-2])
    assert stats.kstest(rescaled_intervals(alone, x).double().numpy(), "expon").pvalue < 1e-3


def test_subnetwork_log_prob_splits_the_full_likelihood():
    # log p(J) of the full network = sum over neuron groups of the partial likelihoods
    from pyro_spikes import select_neurons

    bias, weight, tau = random_params(4, 2, seed=13)
    full = SpikingPointProcess(bias, weight, tau, 10.0, 3.0)
    torch.manual_seed(13)
    x = full.sample((2,))
    obs, hid = select_neurons(x, [0, 2], 10.0), select_neurons(x, [1, 3], 10.0)
    p_obs = SpikingPointProcess(bias, weight, tau, 10.0, 3.0, neurons=[0, 2], context=hid,
                                capacity=obs.shape[-2])
    p_hid = SpikingPointProcess(bias, weight, tau, 10.0, 3.0, neurons=[1, 3], context=obs,
                                capacity=hid.shape[-2])
    total = p_obs.log_prob(obs) + p_hid.log_prob(hid)
    assert torch.allclose(total, full.log_prob(x), rtol=1e-10)


def test_batched_weights_sample_each_own_network(loop_backend):
    # a batch of two networks (strong excitation vs none) sampled together: each element's
    # counts match the same network sampled alone
    bias = torch.tensor([-1.0, -1.0])
    strong = torch.tensor([[[0.0, 2.5], [2.5, 0.0]]])
    weight = torch.stack([strong, torch.zeros_like(strong)])  # (2, 1, 2, 2)
    tau = torch.tensor([1.0])
    torch.manual_seed(14)
    together = SpikingPointProcess(bias, weight, tau, 20.0, 3.0).sample((300,))[..., 1:].sum(
        (-1, -2))
    for b in range(2):
        alone = SpikingPointProcess(bias, weight[b], tau, 20.0, 3.0).sample((300,))[..., 1:].sum(
            (-1, -2))
        se = math.sqrt(together[:, b].var().item() / 300 + alone.var().item() / 300)
        assert abs(together[:, b].mean().item() - alone.mean().item()) < 4 * se
    assert together[:, 0].mean() > together[:, 1].mean() + 10  # the excitation matters
