import math

import pytest
import torch

from pyro_spikes.distributions.stochastic_lif import StochasticLIF
from pyro_spikes.spikes import unpack_spikes, validate_events

DT = torch.float64


def _net(escape_noise=False, **kw):
    params = dict(
        input_current=torch.tensor([1.6, 1.3, 1.9], dtype=DT),
        weight=torch.tensor([[0.0, 0.2, -0.3], [0.25, 0.0, 0.1], [-0.1, 0.3, 0.0]], dtype=DT),
        threshold=torch.tensor(1.0, dtype=DT),
        tau=torch.tensor(1.2, dtype=DT),
        noise_scale=torch.tensor(0.3, dtype=DT),
        reset=torch.tensor([0.1, -0.2, 0.0], dtype=DT),
        rest=torch.tensor(-0.1, dtype=DT),
        init=torch.tensor([0.3, 0.0, 0.5], dtype=DT),
    )
    params.update(kw)
    return params, dict(duration=4.0, num_spikes=3, dt=0.04, escape_noise=escape_noise)


def _fd_check(params, settings, names, sample_shape=(3,), eps=1e-6, seed=0):
    """Autograd of a random linear functional of the recorded spike times vs central FD."""
    d0 = StochasticLIF(**params, **settings)
    g = torch.Generator().manual_seed(seed)
    noise = d0.sample_noise(sample_shape, generator=g)
    times0, counts0 = d0.rsample_spike_times(sample_shape, noise=noise)
    assert bool((counts0 >= 1).all()), "test setup: every neuron should spike"
    proj = torch.randn(times0.shape, generator=g, dtype=DT)

    def f(p):
        t, counts = StochasticLIF(**p, **settings).rsample_spike_times(sample_shape, noise=noise)
        assert torch.equal(counts.clamp(max=3), counts0.clamp(max=3))  # same discrete event structure
        return (t * proj).sum()

    leaves = {k: params[k].clone().requires_grad_(True) for k in names}
    f({**params, **leaves}).backward()
    for name in names:
        base = params[name]
        fd = torch.zeros_like(base)
        for i in range(base.numel()):
            e = torch.zeros_like(base).reshape(-1)
            e[i] = eps
            e = e.reshape(base.shape)
            fd.reshape(-1)[i] = (f({**params, name: base + e}) - f({**params, name: base - e})) / (2 * eps)
        assert torch.allclose(leaves[name].grad, fd, rtol=1e-5, atol=1e-7), (name, leaves[name].grad, fd)


@pytest.mark.parametrize("escape_noise", [False, True])
def test_spike_time_gradients_match_finite_differences(escape_noise):
    params, settings = _net(escape_noise)
    if escape_noise:
        params["escape_rate"] = torch.tensor(2.0, dtype=DT)
        params["escape_width"] = torch.tensor(0.3, dtype=DT)
    _fd_check(params, settings, ["input_current", "weight", "noise_scale", "threshold", "tau", "reset", "rest", "init"])


def test_gradient_is_implicit_function_theorem_derivative():
    # sigma = 0, one neuron: dt*/dc from the IFT equals -(dv/dc)/(dv/dt) at t*, in closed form.
    c = torch.tensor([1.5], dtype=DT, requires_grad=True)
    d = StochasticLIF(c, tau=torch.tensor(0.8, dtype=DT), duration=3.0, num_spikes=1, dt=0.05)
    t, _ = d.rsample_spike_times()
    t.sum().backward()
    tau, cc = 0.8, 1.5
    ts = t.item()
    dv_dc = tau * (1 - math.exp(-ts / tau))  # v(t) = c tau (1 - e^{-t/tau}), v0 = rest = 0
    dv_dt = cc - 1.0 / tau  # -(v_th)/tau + c at v = v_th = 1
    assert c.grad.item() == pytest.approx(-dv_dc / dv_dt, rel=1e-9)


@pytest.mark.parametrize("dt", [0.1, 0.013])
def test_deterministic_limit_matches_closed_form(dt):
    # sigma = 0: v(t) = v_inf + (v0 - v_inf) e^{-t/tau}, v_inf = v_rest + tau c, so
    # t_1 = tau log((v_inf - v_init)/(v_inf - v_th)) and every ISI = tau log((v_inf - v_reset)/(v_inf - v_th)).
    # The solver's in-step flow is exact, so the tolerance is round-off (1e-9), independent of dt.
    c = torch.tensor([[1.5, 2.5, 0.9], [3.0, 1.2, 4.0]], dtype=DT)
    tau, rest, th, reset, init = 0.7, 0.2, 1.0, -0.1, 0.4
    d = StochasticLIF(c, tau=tau, rest=rest, threshold=th, reset=reset, init=init,
                      duration=4.0, num_spikes=4, dt=dt)
    times, counts = d.rsample_spike_times()
    v_inf = rest + tau * c
    fires = v_inf > th
    t1 = tau * torch.log((v_inf - init) / (v_inf - th).clamp(min=1e-12))
    isi = tau * torch.log((v_inf - reset) / (v_inf - th).clamp(min=1e-12))
    expected = t1.unsqueeze(-1) + isi.unsqueeze(-1) * torch.arange(4, dtype=DT)
    expected = torch.where(fires.unsqueeze(-1) & (expected <= 4.0), expected, torch.full_like(expected, 4.0))
    assert torch.allclose(times, expected, atol=1e-9, rtol=0)
    assert bool((counts[~fires] == 0).all())


def test_small_noise_approaches_deterministic_limit():
    c = torch.tensor([1.5], dtype=DT)
    exact = math.log(3.0)  # tau = 1, rest = reset = 0, th = 1
    d = StochasticLIF(c, noise_scale=1e-3, duration=3.0, num_spikes=1, dt=0.01)
    t, _ = d.rsample_spike_times((50,), noise=d.sample_noise((50,), generator=torch.Generator().manual_seed(1)))
    assert (t - exact).abs().max() < 0.02


def test_escape_noise_constant_intensity_is_poisson():
    # c = 0 and v_init = v_rest = v_reset = v_th: the membrane stays at threshold, the intensity is
    # the constant lambda_0, so inter-spike intervals are Exp(lambda_0). Mean within 4 standard errors.
    torch.manual_seed(0)
    lam0, n, K = 2.0, 2000, 3
    d = StochasticLIF(torch.zeros(1, dtype=DT), threshold=0.0, escape_noise=True, escape_rate=lam0,
                      duration=20.0, num_spikes=K, dt=0.05)
    times, counts = d.rsample_spike_times((n,))
    assert bool((counts >= K).all())
    isi = torch.diff(torch.cat([torch.zeros(n, 1, 1, dtype=DT), times], -1), dim=-1).reshape(-1)
    se = (1 / lam0) / math.sqrt(isi.numel())
    assert abs(isi.mean().item() - 1 / lam0) < 4 * se


def test_shapes_expand_and_events_layout():
    c = torch.rand(4, 1, 2) + 1.2
    w = torch.zeros(3, 2, 2)
    d = StochasticLIF(c, weight=w, noise_scale=torch.full((2,), 0.5), duration=2.0, num_spikes=2, dt=0.02)
    assert d.batch_shape == (4, 3) and d.event_shape == (4, 3)
    x = d.rsample((5,))
    assert x.shape == (5, 4, 3, 4, 3) and x.dtype == torch.float32
    validate_events(x, 2.0, 2)
    e = d.expand((6, 4, 3))
    assert e.batch_shape == (6, 4, 3) and e.event_shape == d.event_shape
    for v in (False, True):  # expand keeps validate_args
        assert StochasticLIF(c, weight=w, duration=2.0, num_spikes=2, dt=0.02,
                             validate_args=v).expand((2, 4, 3))._validate_args is v
    y = e.rsample()
    assert y.shape == (6, 4, 3, 4, 3)
    validate_events(y, 2.0, 2)
    # each neuron contributes at most K spikes, matching rsample_spike_times
    times, counts = d.rsample_spike_times((2,))
    assert times.shape == (2, 4, 3, 2, 2) and counts.shape == (2, 4, 3, 2)
    assert d.sample().shape == (4, 3, 4, 3)


def test_padding_for_silent_neuron_and_unpack():
    d = StochasticLIF(torch.tensor([2.0, 0.5], dtype=DT), duration=3.0, num_spikes=3, dt=0.01)
    x = d.rsample()
    validate_events(x, 3.0, 2)
    trains = unpack_spikes(x)
    assert len(trains[1]) == 0 and len(trains[0]) == 3
    assert bool((x[-3:, 0] == 3.0).all()) and bool((x[-3:, 1:] == 0).all())


def test_noise_is_reused_exactly():
    d = StochasticLIF(torch.tensor([1.4, 1.6]), noise_scale=0.5, duration=3.0, num_spikes=2, dt=0.01)
    noise = d.sample_noise((7,))
    assert torch.equal(d.rsample((7,), noise=noise), d.rsample((7,), noise=noise))


def test_synaptic_jump_triggers_spike():
    # neuron 1 has no drive (c = 0) but W[1, 0] = 1.5 > threshold: it spikes exactly with neuron 0.
    d = StochasticLIF(torch.tensor([1.5, 0.0], dtype=DT), weight=torch.tensor([[0.0, 0.0], [1.5, 0.0]], dtype=DT),
                      duration=2.0, num_spikes=1, dt=0.1)
    times, _ = d.rsample_spike_times()
    assert times[0, 0].item() == pytest.approx(math.log(3.0), abs=1e-12)
    assert times[1, 0].item() == pytest.approx(math.log(3.0), abs=1e-12)


def test_log_prob_not_implemented():
    d = StochasticLIF(torch.tensor([1.5]))
    with pytest.raises(NotImplementedError, match="signature_kernel_score"):
        d.log_prob(d.sample())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(noise_scale=-0.1), "noise_scale"),
        (dict(dt=0.0), "dt"),
        (dict(dt=-1.0), "dt"),
        (dict(num_spikes=0), "num_spikes"),
        (dict(num_spikes=1.5), "num_spikes"),
        (dict(duration=0.0), "duration"),
        (dict(tau=0.0), "tau"),
        (dict(threshold=0.0, reset=0.5), "reset"),
        (dict(weight=torch.zeros(3, 3)), "shape"),
        (dict(weight=torch.zeros(2, 3)), "weight"),
        (dict(threshold=torch.ones(3)), "threshold"),
        (dict(input_current=torch.tensor([float("nan"), 1.0])), "input_current"),
        (dict(escape_noise=True, escape_width=0.0), "escape_width"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = dict(input_current=torch.tensor([1.5, 1.2]))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        StochasticLIF(**args)


def test_bad_noise_and_runaway_raise():
    d = StochasticLIF(torch.tensor([1.5, 1.2]), duration=1.0, dt=0.1)
    with pytest.raises(ValueError, match="brownian"):
        d.rsample((2,), noise={"brownian": torch.zeros(2, 5, 2)})
    with pytest.raises(ValueError, match="brownian"):
        d.rsample((2,), noise=torch.zeros(2, 10, 2))
    runaway = StochasticLIF(torch.tensor([1.5, 0.0]), weight=torch.tensor([[0.0, 2.0], [2.0, 0.0]]),
                            duration=2.0, num_spikes=5, dt=0.1)
    with pytest.raises(ValueError, match="max_events_per_step"):
        runaway.rsample()
    esc = StochasticLIF(torch.tensor([5.0]), escape_noise=True, escape_rate=50.0, duration=2.0, num_spikes=3, dt=0.1)
    noise = esc.sample_noise(num_exponential=2)
    with pytest.raises(ValueError, match="exponential"):
        esc.rsample(noise=noise)
