"""Stimulus inputs and pre-window history of SpikingPointProcess (issue 12, item 5)."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from pyro_spikes.diagnostics import ks_statistic, rescaled_intervals
from pyro_spikes.distributions import (
    FilteredStimulus,
    RaisedCosineStimulus,
    RelaxedPointProcess,
    SpikingPointProcess,
)
from pyro_spikes.distributions import kernels
from pyro_spikes.spikes import pack_spikes

DT = torch.float64


def _direct_filter(x, g, tau, t):
    """F(t) = int_0^inf e^{-r/tau}/tau x(t - r) dr for zero-order hold x, piece by piece."""
    total = 0.0
    for m in range(len(g)):
        if g[m] >= t:
            break
        end = min(t, g[m + 1]) if m + 1 < len(g) else t
        total += x[m] * (math.exp(-(t - end) / tau) - math.exp(-(t - g[m]) / tau))
    return total


def _problem(seed=0, history=False):
    g = torch.Generator().manual_seed(seed)
    d, l, k, j = 2, 2, 2, 2
    bias = torch.randn(d, generator=g, dtype=DT) * 0.3
    weight = torch.randn(l, d, d, generator=g, dtype=DT) * 0.8
    tau = torch.tensor([0.4, 1.5], dtype=DT)
    times = torch.tensor([-0.7, 0.3, 0.9, 1.35, 2.2, 2.9, 3.6], dtype=DT)
    values = torch.randn(7, j, generator=g, dtype=DT)
    s_weight = torch.randn(k, d, j, generator=g, dtype=DT)
    s_tau = torch.tensor([0.25, 0.9], dtype=DT)
    stim = FilteredStimulus(values, times, s_weight, s_tau)
    events = pack_spikes([[0.2, 1.1, 2.5, 3.0], [0.5, 1.36, 3.3]], 3.5, dtype=DT)
    hist = None
    if history:
        hist = pack_spikes([[0.1, 0.9], [0.5]], 1.0, dtype=DT)
        hist[:, 0] -= 1.0  # times -0.9, -0.5, -0.1
    return bias, weight, tau, stim, events, hist


def _exp_term(stim):
    x, g = stim.values.numpy(), stim.times.numpy()
    sw, stau = stim.weight.numpy(), stim.time_constants.numpy()

    def term(d, t):
        return sum(sw[k, d, c] * _direct_filter(x[:, c], g, stau[k], t)
                   for k in range(len(stau)) for c in range(x.shape[1]))

    return term


def _reference_log_prob(bias, weight, tau, stim, events, hist, duration, upper_bound,
                        stim_term=None, extra_points=()):
    b, w, tau = bias.numpy(), weight.numpy(), tau.numpy()
    g = stim.breakpoints().numpy()
    stim_term = _exp_term(stim) if stim_term is None else stim_term
    rows = [(float(t), int(np.argmax(m))) for t, *m in events.tolist() if any(m)]
    if hist is not None:
        past = [(float(t), int(np.argmax(m))) for t, *m in hist.tolist() if any(m)]
    else:
        past = []

    def potential(d, t):
        u = b[d]
        for ti, di in past + [r for r in rows if r[0] < t]:
            u += sum(w[l, d, di] * math.exp(-(t - ti) / tau[l]) for l in range(len(tau)))
        return u + stim_term(d, t)

    def rate(d, t):
        return upper_bound / (1 + math.exp(-potential(d, t)))

    ll = sum(math.log(rate(di, ti)) for ti, di in rows)
    points = sorted({t for t, _ in rows} | {float(v) for v in g if 0 < v < duration}
                    | set(extra_points))
    for d in range(len(b)):
        ll -= integrate.quad(lambda t: rate(d, t), 0, duration, points=points, limit=500,
                             epsabs=1e-13, epsrel=1e-12)[0]
    return ll


def test_filter_matches_direct_convolution():
    _, _, _, stim, _, _ = _problem()
    t = torch.tensor([-1.0, -0.7, -0.2, 0.3, 0.31, 1.0, 2.2, 3.0, 5.0], dtype=DT)
    got = stim.filtered(t)  # (K, n, J)
    for k in range(2):
        for j in range(2):
            want = [_direct_filter(stim.values[:, j].tolist(), stim.times.tolist(),
                                   float(stim.time_constants[k]), float(s)) for s in t]
            assert torch.allclose(got[k, :, j], torch.tensor(want, dtype=DT), atol=1e-13)


@pytest.mark.parametrize("history", [False, True])
def test_log_prob_matches_direct_quadrature(history):
    bias, weight, tau, stim, events, hist = _problem(history=history)
    p = SpikingPointProcess(bias, weight, tau, 3.5, upper_bound=4.0, stimulus=stim, capacity=7,
                            history=hist)
    want = _reference_log_prob(bias, weight, tau, stim, events, hist, 3.5, 4.0)
    got = float(p.log_prob(events))
    assert abs(got - want) < 1e-8 * max(1.0, abs(want)), (got, want)


def test_breakpoints_are_needed():
    # the same stimulus with a coarse grid but no breakpoint rows would be inexact: check that
    # the breakpoints are rows (integrating across a hold jump with Gauss-Legendre loses ~1e-4)
    bias, weight, tau, stim, events, _ = _problem()
    p = SpikingPointProcess(bias, weight, tau, 3.5, upper_bound=4.0, stimulus=stim)
    times = p._rows(events)[0]
    inside = stim.times[(stim.times > 0) & (stim.times < 3.5)]
    assert all(bool((times == t).any()) for t in inside)


def test_gradcheck_filter_parameters():
    bias, weight, tau, stim, events, hist = _problem(history=True)
    values = stim.values.clone().requires_grad_()
    s_weight = stim.weight.clone().requires_grad_()
    s_tau = stim.time_constants.clone().requires_grad_()
    weight = weight.clone().requires_grad_()
    tau = tau.clone().requires_grad_()
    hist = hist.clone()
    hist_marks = (0.2 + 0.4 * hist[:, 1:]).requires_grad_()  # soft marks: room to perturb

    def f(values, s_weight, s_tau, weight, tau, hist_marks):
        st = FilteredStimulus(values, stim.times, s_weight, s_tau)
        h = torch.cat([hist[:, :1], hist_marks], -1)
        p = SpikingPointProcess(bias, weight, tau, 3.5, upper_bound=4.0, stimulus=st, history=h,
                                capacity=7,
                                validate_args=False)
        return p.log_prob(events)

    assert torch.autograd.gradcheck(f, (values, s_weight, s_tau, weight, tau, hist_marks),
                                    eps=1e-6, atol=1e-7, rtol=1e-5)


def _strong_stimulus(duration=5.0, seed=1):
    g = torch.Generator().manual_seed(seed)
    times = torch.arange(0, duration, 0.25, dtype=DT)
    values = torch.randn(times.shape[0], 1, generator=g, dtype=DT)
    stim = FilteredStimulus(values, times, torch.tensor([[[2.0]], [[-1.0]]], dtype=DT),
                            torch.tensor([0.1, 0.5], dtype=DT))
    bias = torch.tensor([-0.5], dtype=DT)
    weight = torch.tensor([[[-1.5]]], dtype=DT)
    tau = torch.tensor([0.2], dtype=DT)
    return SpikingPointProcess(bias, weight, tau, duration, upper_bound=6.0, stimulus=stim)


def test_sampling_honours_stimulus_time_rescaling_and_counts():
    torch.manual_seed(0)
    p = _strong_stimulus(100.0)
    events = p.sample((40,))
    # time-rescaling: intervals Exp(1) under the true (stimulus-driven) model (long sequences:
    # dropping the censored last interval of each biases the pooled intervals by O(1/count))
    z = rescaled_intervals(p, events)
    pvalue = stats.kstest(z.numpy(), "expon").pvalue
    assert pvalue > 0.01, pvalue
    # counts: E[N(T)] = E[Lambda(T)], tested on the sample mean (CLT, z-score < 4)
    counts = (events[..., 1:] == 1).sum((-2, -1)).to(DT)
    comp = p.compensator(events)[..., -1, 0]
    diff = counts - comp
    assert abs(float(diff.mean())) < 4 * float(diff.std()) / math.sqrt(diff.numel())
    # and the stimulus matters: the process without it fits these samples badly
    q = SpikingPointProcess(p.bias, p.weight, p.time_constants, 100.0, upper_bound=6.0)
    assert ks_statistic(rescaled_intervals(q, events)) > 3 * ks_statistic(z)


def test_relaxed_sampler_honours_stimulus():
    p = _strong_stimulus()
    torch.manual_seed(3)
    stream = p._stream((4,))
    u = torch.rand(stream.times.shape + (2,), dtype=DT)
    gumbel = -torch.log(-torch.log(u))
    base, decay, w, mask = p._loop_inputs(stream)
    pot, marks, _ = kernels.thinning_loop(base, decay, w, mask, kernels.RELAXED, gumbel / 0.3,
                                          1 / 0.3)
    want = p._stream_potentials(stream, marks, p.bias, p.weight, p.time_constants, None)
    assert torch.allclose(pot, want, atol=1e-10)
    no_stim = SpikingPointProcess(p.bias, p.weight, p.time_constants, 5.0, upper_bound=6.0)
    assert not torch.allclose(
        pot, no_stim._stream_potentials(stream, marks, p.bias, p.weight, p.time_constants, None),
        atol=1e-3)


def test_relaxed_gradient_in_filter_parameters():
    base = _strong_stimulus()
    stim = base.stimulus
    probe = torch.randn(64, 2, dtype=DT)

    def f(s_weight, s_tau):
        st = stim.with_params(weight=s_weight, time_constants=s_tau)
        p = SpikingPointProcess(base.bias, base.weight, base.time_constants, 5.0, upper_bound=6.0,
                                stimulus=st, capacity=64)
        torch.manual_seed(11)
        y = RelaxedPointProcess(p, 0.5).rsample()
        return (y[:, 1] * probe[:, 0]).sum()

    sw = stim.weight.clone().requires_grad_()
    st = stim.time_constants.clone().requires_grad_()
    gw, gt = torch.autograd.grad(f(sw, st), (sw, st))
    eps = 1e-6
    for param, grad in ((sw, gw), (st, gt)):
        for i in range(param.numel()):
            plus, minus = param.detach().clone(), param.detach().clone()
            plus.view(-1)[i] += eps
            minus.view(-1)[i] -= eps
            args_p = (plus, st.detach()) if param is sw else (sw.detach(), plus)
            args_m = (minus, st.detach()) if param is sw else (sw.detach(), minus)
            fd = (f(*args_p) - f(*args_m)) / (2 * eps)
            assert abs(float(fd) - float(grad.view(-1)[i])) < 1e-5 * max(1, abs(float(fd)))
    assert float(gw.abs().max()) > 1e-3  # the relaxed marks do depend on the filter


def test_map_recovers_stimulus_filter():
    import pyro
    import pyro.distributions as dist
    from pyro.infer import Trace_ELBO
    from pyro.infer.autoguide import AutoDelta, init_to_median

    g = torch.Generator().manual_seed(5)
    duration = 200.0
    times = torch.arange(0, duration, 0.5, dtype=DT)
    values = torch.randn(times.shape[0], 1, generator=g, dtype=DT)
    s_tau = torch.tensor([0.2, 2.0], dtype=DT)
    true_w = torch.tensor([[[1.5]], [[-1.0]]], dtype=DT)
    bias = torch.tensor([-0.5], dtype=DT)
    weight = torch.tensor([[[-1.0]]], dtype=DT)
    tau = torch.tensor([0.5], dtype=DT)
    torch.manual_seed(0)
    truth = SpikingPointProcess(bias, weight, tau, duration, upper_bound=8.0,
                                stimulus=FilteredStimulus(values, times, true_w, s_tau))
    events = truth.sample()

    def log_lik(w, b):
        st = FilteredStimulus(values, times, w.reshape(2, 1, 1), s_tau)
        return SpikingPointProcess(b, weight, tau, duration, upper_bound=8.0, stimulus=st,
                                   capacity=events.shape[-2]).log_prob(events)

    def model(events):
        w = pyro.sample("w", dist.Normal(torch.zeros(2, dtype=DT), 10.0).to_event(1))
        b = pyro.sample("b", dist.Normal(torch.zeros(1, dtype=DT), 10.0).to_event(1))
        pyro.factor("spikes", log_lik(w, b))

    pyro.clear_param_store()
    guide = AutoDelta(model, init_loc_fn=init_to_median)  # starts from a zero filter
    guide(events)
    params = [pyro.param(name).unconstrained() for name in pyro.get_param_store().keys()]
    # MAP: the ELBO of a Delta guide, minimised by L-BFGS (a few dozen likelihood evaluations)
    optim = torch.optim.LBFGS(params, max_iter=60, line_search_fn="strong_wolfe")
    elbo = Trace_ELBO()

    def closure():
        optim.zero_grad()
        loss = elbo.differentiable_loss(model, guide, events)
        loss.backward()
        return loss

    optim.step(closure)
    fit = guide.median(events)
    theta = torch.cat([fit["w"], fit["b"]]).detach()
    # the MAP is a stationary point, and lies within 3.5 standard errors (observed Fisher
    # information of the log-likelihood; the N(0, 10) prior is negligible) of the truth
    def grad_at(th):
        th = th.clone().requires_grad_()
        return torch.autograd.grad(log_lik(th[:2], th[2:]), th)[0]

    grad = grad_at(theta)
    eye = torch.eye(3, dtype=DT) * 1e-5  # Hessian by central differences of the gradient
    hess = torch.stack([(grad_at(theta + e) - grad_at(theta - e)) / 2e-5 for e in eye])
    hess = (hess + hess.T) / 2
    se = torch.linalg.inv(-hess).diagonal().sqrt()
    assert float((grad * se).abs().max()) < 0.05
    z = (theta - torch.cat([true_w.flatten(), bias])) / se
    assert float(z.abs().max()) < 3.5, z


def test_bad_stimulus_and_history_arguments():
    bias, weight, tau, stim, events, hist = _problem(history=True)
    with pytest.raises(TypeError, match="stimulus"):
        SpikingPointProcess(bias, weight, tau, 3.5, stimulus=object())
    other = FilteredStimulus(stim.values, stim.times, torch.zeros(2, 3, 2, dtype=DT),
                             stim.time_constants)
    with pytest.raises(ValueError, match="stimulus weight"):
        SpikingPointProcess(bias, weight, tau, 3.5, stimulus=other)
    with pytest.raises(ValueError, match="strictly increasing"):
        FilteredStimulus(stim.values, stim.times.flip(0), stim.weight, stim.time_constants)
    with pytest.raises(ValueError, match="time_constants"):
        FilteredStimulus(stim.values, stim.times, stim.weight, -stim.time_constants)
    late = hist.clone()
    late[0, 0] = 0.5
    with pytest.raises(ValueError, match="history times"):
        SpikingPointProcess(bias, weight, tau, 3.5, history=late)
    with pytest.raises(ValueError, match="history must have shape"):
        SpikingPointProcess(bias, weight, tau, 3.5, history=hist[:, :2])


def test_stimulus_with_subnetwork_context_and_expand():
    # the partial likelihood of neurons {0} given neuron 1 as context, with the stimulus, is
    # the full network's per-neuron term; expand keeps the stimulus and the history
    bias, weight, tau, stim, events, hist = _problem(history=True)
    full = SpikingPointProcess(bias, weight, tau, 3.5, upper_bound=4.0, stimulus=stim,
                               history=hist, capacity=7)
    per_neuron = full.log_prob_per_neuron(events)
    from pyro_spikes.spikes import select_neurons
    part = SpikingPointProcess(bias, weight, tau, 3.5, upper_bound=4.0, stimulus=stim,
                               history=hist, neurons=[0], context=select_neurons(events, [1], 3.5),
                               capacity=7)
    got = part.log_prob(select_neurons(events, [0], 3.5))
    assert torch.allclose(got, per_neuron[0], rtol=1e-10)
    big = full.expand((3,))
    assert big.batch_shape == (3,)
    assert torch.allclose(big.log_prob(events), full.log_prob(events).expand(3), rtol=1e-12)
    torch.manual_seed(0)
    sampler = SpikingPointProcess(bias, weight, tau, 3.5, upper_bound=4.0, stimulus=stim,
                                  history=hist, neurons=[0],
                                  context=select_neurons(events, [1], 3.5))
    assert torch.isfinite(sampler.log_prob(sampler.sample((2,)))).all()


def _raised_cosine_problem(seed=0):
    bias, weight, tau, _, events, hist = _problem(seed, history=True)
    g = torch.Generator().manual_seed(seed + 1)
    times = torch.arange(-0.5, 3.0, 0.25, dtype=DT)
    values = torch.randn(times.shape[0], 1, generator=g, dtype=DT)
    stim = RaisedCosineStimulus(values, times, torch.randn(3, 2, 1, generator=g, dtype=DT),
                                [0.0, 0.25, 0.5], 0.5)
    return bias, weight, tau, stim, events, hist


def _direct_raised_cosine(stim, k, t):
    c, w = float(stim.centers[k]), stim.width
    times, x = stim.times.tolist(), stim.values[:, 0].tolist()

    def kappa(r):
        return 0.0 if r < 0 or abs(r - c) > w else (1 + math.cos(math.pi * (r - c) / w)) / (2 * w)

    def held(s):
        if s < times[0]:
            return 0.0
        return x[int(np.searchsorted(times, s, side="right")) - 1]

    pts = sorted({t - v for v in times if 0 < t - v < c + w} | {max(0.0, c - w), c, c + w})
    return integrate.quad(lambda r: kappa(r) * held(t - r), 0, c + w, points=pts, limit=200,
                          epsabs=1e-13)[0]


def test_raised_cosine_filter_matches_direct_convolution():
    _, _, _, stim, _, _ = _raised_cosine_problem()
    t = torch.tensor([-0.7, -0.45, 0.0, 0.33, 1.0, 2.95, 3.3, 4.0], dtype=DT)
    got = stim.filtered(t)
    for k in range(3):
        want = torch.tensor([_direct_raised_cosine(stim, k, float(s)) for s in t], dtype=DT)
        assert torch.allclose(got[k, :, 0], want, atol=1e-10)


@pytest.mark.parametrize("which", ["filtered", "raised_cosine"])
def test_shifted_stimulus_is_the_stimulus_on_a_later_clock(which):
    """``shifted(t0)``: the drive at time t is the original's at t0 + t (per window start when
    t0 is a batch), with the same tensors; and the repr says what it holds."""
    stim = (_problem() if which == "filtered" else _raised_cosine_problem())[3]
    t = torch.tensor([0.0, 0.3, 0.8, 1.7], dtype=DT)
    starts = torch.tensor([0.25, 1.0], dtype=DT)
    shifted = stim.shifted(starts)
    assert type(shifted) is type(stim)
    assert all(a is b for a, b in zip(shifted.tensors(), stim.tensors()))
    got = shifted.drive(t)  # (2, n, D)
    for i, t0 in enumerate(starts):
        assert torch.allclose(got[i], stim.drive(t + t0), atol=1e-12)
    assert shifted.batch_shape == (2,) and stim.batch_shape == ()
    head = "FilteredStimulus" if which == "filtered" else "RaisedCosineStimulus"
    samples = stim.times.shape[0]
    assert repr(shifted).startswith(f"{head}(samples={samples}, channels={stim.num_channels}, "
                                    f"kernels={stim.num_kernels}, ")
    assert repr(shifted).endswith("batch_shape=(2,))")
    if which == "raised_cosine":
        assert f"width={stim.width}, " in repr(stim)


def test_raised_cosine_log_prob_matches_direct_quadrature():
    bias, weight, tau, stim, events, hist = _raised_cosine_problem()
    p = SpikingPointProcess(bias, weight, tau, 3.5, upper_bound=4.0, stimulus=stim,
                            history=hist, capacity=7)
    sw = stim.weight.numpy()

    def term(d, t):
        return sum(sw[k, d, 0] * _direct_raised_cosine(stim, k, t) for k in range(3))

    # the filter's kinks (sample times plus the bumps' ends) are quadrature points too
    kinks = {float(v) + e for v in stim.breakpoints() for e in (0.0, 0.5, 0.75, 1.0)}
    want = _reference_log_prob(bias, weight, tau, stim, events, hist, 3.5, 4.0, stim_term=term,
                               extra_points=[k for k in kinks if 0 < k < 3.5])
    got = float(p.log_prob(events))
    assert abs(got - want) < 1e-8 * max(1.0, abs(want)), (got, want)


def test_raised_cosine_gradcheck_and_sampling():
    bias, weight, tau, stim, events, hist = _raised_cosine_problem()
    values = stim.values.clone().requires_grad_()
    s_weight = stim.weight.clone().requires_grad_()

    def f(values, s_weight):
        st = stim.with_tensors(values, s_weight)
        return SpikingPointProcess(bias, weight, tau, 3.5, upper_bound=4.0, stimulus=st,
                                   history=hist, capacity=7).log_prob(events)

    assert torch.autograd.gradcheck(f, (values, s_weight), eps=1e-6, atol=1e-7, rtol=1e-5)
    p = SpikingPointProcess(bias, weight, tau, 3.5, upper_bound=4.0, stimulus=stim)
    torch.manual_seed(0)
    sample = p.sample((200,))
    counts = (sample[..., 1:] == 1).sum(-2).to(DT)
    diff = counts - p.compensator(sample)[..., -1, :]
    z = diff.mean(0) / (diff.std(0) / diff.shape[0] ** 0.5)
    assert float(z.abs().max()) < 4, z
    with pytest.raises(ValueError, match="multiple"):
        RaisedCosineStimulus(stim.values, stim.times, stim.weight, [0.0, 0.25, 0.5], 0.3)
    with pytest.raises(ValueError, match="uniformly"):
        RaisedCosineStimulus(stim.values, stim.times ** 3, stim.weight, [0.0, 0.25, 0.5], 0.5)
