import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDelta, AutoNormal
from pyro.nn import PyroSample

from pyro_spikes.nn.smooth_gate import SmoothGateSNN, _qif_step, crossings_to_events
from pyro_spikes.spikes import unpack_spikes, validate_events

PARAMS = ["input_weight", "recurrent_weight", "bias", "readout_weight", "readout_bias"]


def _net(neuron, gate_width, seed=0, **kw):
    torch.manual_seed(seed)
    return SmoothGateSNN(2, 3, 2, gate_width=gate_width, neuron=neuron, **kw).double()


def _drive(seed, batch, steps, size=2, scale=1.0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    return offset + scale * torch.rand(batch, steps, size, generator=g, dtype=torch.float64)


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize(
    "neuron,dt,steps,kw,offset",
    [
        # the gated LIF reset is stiff inside a zone: dt must resolve the zone passage
        ("lif", 0.05, 200, dict(tau_mem=5.0, tau_syn=4.0, input_scale=2.0, bias_init=0.8), 0.5),
        ("qif", 0.5, 60, dict(tau_mem=5.0, tau_syn=4.0, input_scale=1.0, bias_init=0.1), 0.3),
    ],
)
def test_gradient_matches_finite_differences(neuron, dt, steps, kw, offset):
    net = _net(neuron, 0.3, seed=4, recurrent_scale=1.0, **kw)
    x = _drive(1, 2, steps, offset=offset)
    w = torch.randn(2, steps, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def loss():
        return (net(x, dt) * w).sum()

    _, traj = net(x, dt, return_trajectories=True)
    # the test is only meaningful if several neurons actually pass through active zones
    assert (traj.raster.sum((0, 1)) > 0).sum() >= 2
    net.zero_grad()
    loss().backward()
    eps = 1e-6
    for name in PARAMS:
        p = getattr(net, name)
        grad = p.grad.clone()
        fd = torch.zeros_like(p)
        with torch.no_grad():
            for idx in range(p.numel()):
                flat = p.view(-1)
                old = flat[idx].item()
                flat[idx] = old + eps
                lp = loss().item()
                flat[idx] = old - eps
                lm = loss().item()
                flat[idx] = old
                fd.view(-1)[idx] = (lp - lm) / (2 * eps)
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(grad, fd, rtol=1e-5, atol=1e-7, msg=name)


# ----------------------------------------------------------------------- hard-gate limit
def _reference_lif(x, W_in, W_rec, b, dt, tau_mem, tau_syn, threshold, reset):
    """Plain LIF network, Euler steps, reset by subtraction, loops over time and neurons."""
    B, S, N = len(x), len(x[0]), len(b)
    decay = math.exp(-dt / tau_syn)
    times = [[[] for _ in range(N)] for _ in range(B)]
    for bb in range(B):
        v = [0.0] * N
        s = [0.0] * N
        for n in range(S):
            new_v, spikes = [], []
            for i in range(N):
                cur = b[i] + sum(W_in[i][k] * x[bb][n][k] for k in range(len(W_in[i])))
                cur += sum(W_rec[i][j] * s[j] for j in range(N))
                vi = v[i] + dt * (cur - v[i]) / tau_mem
                spk = 0
                while vi >= threshold:  # threshold crossing within this step
                    frac = (threshold - v[i]) / (vi - v[i])
                    times[bb][i].append((n + frac) * dt)
                    vi -= threshold - reset
                    spk += 1
                new_v.append(vi)
                spikes.append(spk)
            v = new_v
            s = [decay * s[i] + spikes[i] / tau_syn for i in range(N)]
    return times


def _max_spike_time_error(model_trains, ref_trains):
    """Largest spike-time difference; infinite if any spike count differs."""
    err = 0.0
    for mb, rb in zip(model_trains, ref_trains):
        for m, r in zip(mb, rb):
            if len(m) != len(r):
                return math.inf
            if len(r):
                err = max(err, (m - torch.tensor(r, dtype=torch.float64)).abs().max().item())
    return err


@pytest.fixture(scope="module")
def lif_limit_setup():
    torch.manual_seed(3)
    N, dt, steps = 4, 0.05, 800
    net = SmoothGateSNN(2, N, 1, neuron="lif", gate_width=0.2, tau_mem=10.0, tau_syn=5.0,
                        input_scale=2.0, recurrent_scale=2.0, bias_init=1.3).double()
    x = _drive(4, 2, steps, scale=1.0)
    ref = _reference_lif(x.tolist(), net.input_weight.tolist(), net.recurrent_weight.tolist(),
                         net.bias.tolist(), dt, 10.0, 5.0, 1.0, 0.0)
    assert sum(len(t) for tb in ref for t in tb) >= 20  # enough spikes to be a real comparison
    return net, x, dt, ref


def _limit_error(net, x, dt, ref):
    with torch.no_grad():
        _, traj = net(x, dt, return_trajectories=True)
    events = traj.events()
    validate_events(events, traj.duration, net.hidden_size)
    return _max_spike_time_error(unpack_spikes(events), ref)


def test_hard_gate_reproduces_lif_exactly(lif_limit_setup):
    # gate_width = 0: Heaviside gate, identical to the LIF loop up to rounding
    net, x, dt, ref = lif_limit_setup
    assert _limit_error(net.hard_gate(), x, dt, ref) <= 1e-9


@pytest.mark.filterwarnings("ignore:dt=.*under-resolves:RuntimeWarning")
def test_narrow_gate_converges_to_lif(lif_limit_setup):
    # A zone of width D shifts each spike by about D / (dV/dt) and errors add up over a train:
    # the spike-time error is O(D). Same spike counts, and all spike times within 0.01 (a fifth
    # of a step) for D = 1e-4, shrinking at least 5-fold per 10-fold narrower gate.
    net, x, dt, ref = lif_limit_setup
    errs = [_limit_error(net.with_gate_width(w), x, dt, ref) for w in (1e-3, 1e-4, 1e-5)]
    assert errs[1] <= 0.01, errs
    assert errs[1] < errs[0] / 5 and errs[2] < errs[1] / 5, errs


@pytest.mark.filterwarnings("ignore:dt=.*under-resolves:RuntimeWarning")
def test_narrow_gate_synaptic_current_approaches_spike_train():
    """As the gate narrows, s(t) approaches the hard-gate (Heaviside) current."""
    net = _net("lif", 0.2, tau_mem=10.0, tau_syn=5.0, input_scale=2.0, bias_init=1.3)
    x = _drive(5, 2, 800)
    with torch.no_grad():
        _, hard = net.hard_gate()(x, 0.05, return_trajectories=True)
        errs = []
        for w in [0.1, 0.01, 0.001]:
            _, tr = net.with_gate_width(w)(x, 0.05, return_trajectories=True)
            errs.append((tr.current - hard.current).abs().mean().item())
    assert hard.raster.sum() > 5
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.1 * errs[0]


@pytest.mark.parametrize("neuron", ["lif", "qif"])
def test_spike_count_is_smooth_in_the_input(neuron):
    """The smooth spike count G(T) moves continuously as a spike enters the window (the gate
    is what makes spike creation differentiable); the hard-gate count jumps by whole spikes."""
    torch.manual_seed(0)
    net = SmoothGateSNN(1, 1, 1, neuron=neuron, gate_width=0.3, tau_mem=2.0, tau_syn=2.0,
                        bias_init=0.0).double()
    with torch.no_grad():
        net.input_weight.fill_(1.0)
        net.recurrent_weight.zero_()
    # LIF: dt resolves the zone passage (dt <= 0.2 gate_width / spike_drive = 0.024)
    lo, hi, dt, steps = (1.1, 1.8, 0.02, 300) if neuron == "lif" else (0.0, 0.6, 0.1, 60)
    drive = torch.linspace(lo, hi, 2000, dtype=torch.float64).requires_grad_()
    x = drive.view(-1, 1, 1).expand(-1, steps, 1)
    _, smooth = net(x, dt, return_trajectories=True)
    with torch.no_grad():
        _, hard = net.hard_gate()(x, dt, return_trajectories=True)
    G = smooth.gate[:, -1, 0]
    G.sum().backward()
    count = hard.gate[:, -1, 0]
    assert count[-1] - count[0] >= 1  # spikes appear across the range
    assert (count.diff().abs().max() >= 1).item()  # the hard count jumps
    assert (G.diff() >= -1e-12).all()  # more drive, more (smooth) spikes
    # G is differentiable along the whole range: its increments match the trapezoid integral of
    # its autograd derivative (a jump, as in the hard count, would break this)
    grad = drive.grad
    assert (grad >= -1e-9).all() and grad.max() > 0
    step = (hi - lo) / (len(drive) - 1)
    trapezoid = 0.5 * (grad[1:] + grad[:-1]) * step
    assert (G.diff() - trapezoid).abs().max() < 0.02


def test_spike_charge_is_one():
    """A full passage through the active zone delivers unit charge: int s dt = #spikes."""
    net = _net("qif", 0.4, tau_mem=5.0, tau_syn=2.0, recurrent_scale=0.0, bias_init=0.2)
    x = torch.zeros(1, 4000, 2, dtype=torch.float64)
    with torch.no_grad():
        _, tr = net(x, 0.05, return_trajectories=True)
    G_end = tr.gate[0, -1]  # total gate integral = smooth spike count
    # total charge of the discretised current: sum_n s_n (1 - a) tau_s, plus the charge still
    # to come from the current left at the end, a s_M tau_s, with a = exp(-dt / tau_s)
    decay = math.exp(-0.05 / 2.0)
    charge = 2.0 * ((1 - decay) * tr.current[0].sum(0) + decay * tr.current[0, -1])
    count = tr.raster[0].sum(0)
    assert count.min() >= 5
    torch.testing.assert_close(charge, G_end, rtol=1e-9, atol=1e-9)
    # spikes are counted at G = k + 1/2, so the smooth count is within 1/2 of the raster count
    assert bool(((G_end - count).abs() <= 0.5).all())
    # and the continuous-time charge int s dt = dt * sum_n s_n agrees to O(dt / tau_s)
    torch.testing.assert_close(0.05 * tr.current[0].sum(0), G_end, rtol=0.02, atol=0.02)
    # QIF theta neuron with constant current I > 0 has period pi * tau / sqrt(I)
    ev = unpack_spikes(tr.events()[0])
    isi = torch.diff(ev[0]).mean().item()
    assert abs(isi - math.pi * 5.0 / math.sqrt(0.2)) < 0.05 * 35


def test_qif_step_is_exact_for_held_current():
    """The Moebius QIF step agrees with a fine RK4 solution of the theta ODE, including strong
    inhibition (where Euler is unstable), near-zero currents and several spikes per step."""
    g = torch.Generator().manual_seed(0)
    u = torch.rand(300, generator=g, dtype=torch.float64) * 3 - 1
    I = torch.cat([5 * torch.randn(100, generator=g, dtype=torch.float64),
                   1e-3 * torch.randn(100, generator=g, dtype=torch.float64),
                   -400 + 1400 * torch.rand(100, generator=g, dtype=torch.float64)])
    h = 0.3

    I_np = I.numpy()

    def f(v):
        c = np.cos(2 * np.pi * v)
        return ((1 - c) + (1 + c) * I_np) / (2 * np.pi)

    x, n = u.numpy().copy(), 4000  # reference: RK4 with 4000 substeps, in numpy
    d = h / n
    for _ in range(n):
        k1 = f(x)
        k2 = f(x + d / 2 * k1)
        k3 = f(x + d / 2 * k2)
        k4 = f(x + d * k3)
        x = x + d / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    x = torch.from_numpy(x)
    y = _qif_step(u, I, h)
    assert (y - u).max() > 2  # some neurons fire several spikes within the step
    torch.testing.assert_close(y, x, rtol=0, atol=1e-6)
    uu, II = u.clone().requires_grad_(), I.clone().requires_grad_()
    _qif_step(uu, II, h).sum().backward()
    assert bool(torch.isfinite(uu.grad).all() and torch.isfinite(II.grad).all())


# ------------------------------------------------------------------- shapes, dtypes, errors
@pytest.mark.parametrize("neuron", ["qif", "lif"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_and_dtype(neuron, dtype):
    torch.manual_seed(0)
    net = SmoothGateSNN(3, 5, 2, neuron=neuron, gate_width=0.5).to(dtype)
    x = torch.randn(4, 7, 3, dtype=dtype)
    out, tr = net(x, 0.2, return_trajectories=True)
    assert out.shape == (4, 7, 2) and out.dtype == dtype
    for t in (tr.voltage, tr.current, tr.gate, tr.raster):
        assert t.shape == (4, 7, 5) and t.dtype == dtype
    assert tr.state.shape == (4, 8, 5)
    ev = tr.events(capacity=50)
    assert ev.shape == (4, 50, 6) and ev.dtype == dtype
    validate_events(ev, tr.duration, 5)


def test_float64_inputs_promote_float32_module():
    torch.manual_seed(0)
    net = SmoothGateSNN(3, 5, 2)
    out = net(torch.randn(2, 4, 3, dtype=torch.float64), 0.5)
    assert out.dtype == torch.float64


def test_events_match_raster_and_pack_layout():
    net = _net("lif", 0.5, tau_mem=5.0, input_scale=3.0, bias_init=0.5)
    with torch.no_grad():
        _, tr = net(_drive(7, 3, 300), 0.1, return_trajectories=True)
    ev = tr.events()
    validate_events(ev, tr.duration, 3)
    assert tr.raster.sum() >= 10
    torch.testing.assert_close(ev[..., 1:].sum(-2), tr.raster.sum(1))
    # every spike time lies inside the step flagged in the raster
    for b, trains in enumerate(unpack_spikes(ev)):
        for i, t in enumerate(trains):
            steps = torch.floor(t / 0.1 - 1e-9).long()
            assert bool((tr.raster[b, steps, i] > 0).all())
    with pytest.raises(ValueError, match="capacity"):
        tr.events(capacity=1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(gate_width=-0.1), "gate_width"),
        (dict(gate_width=1.0), "gate_width"),
        (dict(gate_width=float("nan")), "gate_width"),
        (dict(neuron="izh"), "neuron"),
        (dict(tau_mem=0.0), "tau_mem"),
        (dict(tau_syn=-1.0), "tau_syn"),
        (dict(neuron="lif", threshold=0.0, reset=0.5), "reset"),
        (dict(hidden_size=0), "hidden_size"),
    ],
)
def test_constructor_validation(kwargs, match):
    args = dict(input_size=2, hidden_size=3, output_size=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        SmoothGateSNN(**args)


def test_forward_validation():
    net = SmoothGateSNN(2, 3, 1, neuron="lif", tau_mem=5.0, gate_width=0.5)
    x = torch.zeros(2, 4, 2)
    with pytest.raises(ValueError, match="inputs"):
        net(torch.zeros(4, 2), 0.1)
    with pytest.raises(ValueError, match="inputs"):
        net(torch.zeros(2, 4, 3), 0.1)
    with pytest.raises(ValueError, match="inputs"):
        net(torch.full((2, 4, 2), float("nan")), 0.1)
    with pytest.raises(ValueError, match="inputs"):
        net(torch.zeros(2, 4, 2, dtype=torch.long), 0.1)
    with pytest.raises(ValueError, match="dt"):
        net(x, 0.0)
    with pytest.raises(ValueError, match="dt"):
        net(x, 10.0)
    with pytest.raises(ValueError, match="initial_state"):
        net(x, 0.1, initial_state=(torch.zeros(3, 3), torch.zeros(2, 3)))
    with pytest.raises(ValueError, match="gate_width"):
        net.with_gate_width(-1.0)
    with pytest.warns(RuntimeWarning, match="under-resolves"):
        net(x, 0.5)
    with pytest.raises(ValueError, match=r"\bu\b"):
        crossings_to_events(torch.zeros(2, 1, 3), 0.1, 0.5, 1.0)
    with pytest.raises(ValueError, match=r"\bu\b"):
        crossings_to_events(torch.full((2, 3, 3), float("nan")), 0.1, 0.5, 1.0)
    with torch.no_grad():
        net.recurrent_weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="recurrent_weight"):
        net(x, 0.1)


# ----------------------------------------------------------------------------- Pyro / SVI
def _toy_regression(seed=0):
    torch.manual_seed(seed)
    t = torch.arange(40) * 0.5
    x = torch.stack([torch.sin(t / 3), torch.cos(t / 5)], -1).expand(8, 40, 2).clone()
    x = x + 0.1 * torch.randn(8, 40, 2)
    y = torch.sin(t / 4).view(1, 40, 1).expand(8, 40, 1).clone()
    return x, y


@pytest.mark.parametrize("guide_cls", [AutoNormal, AutoDelta])
def test_svi_decreases_loss(guide_cls):
    x, y = _toy_regression()
    torch.manual_seed(1)
    net = SmoothGateSNN(2, 8, 1, gate_width=0.3, tau_mem=3.0, tau_syn=3.0, bias_init=0.1)
    net.readout_weight = PyroSample(dist.Normal(0.0, 1.0).expand([1, 8]).to_event(2))
    net.readout_bias = PyroSample(dist.Normal(0.0, 1.0).expand([1]).to_event(1))
    net.bias = PyroSample(dist.Normal(0.1, 0.1).expand([8]).to_event(1))  # a neuron parameter

    def model(x, y=None):
        out = net(x, 0.5)
        with pyro.plate("sequences", x.shape[0]):
            pyro.sample("y", dist.Normal(out, 0.3).to_event(2), obs=y)
        return out

    guide = guide_cls(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.03}), Trace_ELBO())
    losses = [svi.step(x, y) for _ in range(60)]
    assert all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    # network weights (nn.Parameters) are learned as pyro params alongside the guide
    names = set(pyro.get_param_store().keys())
    assert "input_weight" in names and "recurrent_weight" in names


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_follows_parameters():
    net = SmoothGateSNN(2, 4, 1).cuda().double()
    out, tr = net(torch.rand(2, 10, 2, dtype=torch.float64, device="cuda"), 0.5,
                  return_trajectories=True)
    assert out.device.type == "cuda" and out.dtype == torch.float64
    assert tr.events().device.type == "cuda"
    with pytest.raises(ValueError, match="inputs"):
        net(torch.rand(2, 10, 2), 0.5)


def test_bernoulli_likelihood_gradients_flow():
    x, y = _toy_regression()
    net = SmoothGateSNN(2, 6, 1, gate_width=0.3, tau_mem=3.0, tau_syn=3.0, bias_init=0.1)

    def model(x, y):
        logits = net(x, 0.5)
        with pyro.plate("sequences", x.shape[0]):
            pyro.sample("y", dist.Bernoulli(logits=logits).to_event(2), obs=(y > 0).float())

    guide = AutoDelta(model)
    elbo = Trace_ELBO()
    loss = elbo.differentiable_loss(model, guide, x, y)
    loss.backward()
    assert net.input_weight.grad is not None and net.input_weight.grad.abs().sum() > 0
    assert net.recurrent_weight.grad.abs().sum() > 0


# ------------------------------------------------------------- the compiled (fused) LIF loop
def _fused_available():
    from pyro_spikes.nn.smooth_gate import _fused_lif_module

    return _fused_lif_module(torch.zeros(1, dtype=torch.float64)) is not None


needs_fused = pytest.mark.skipif(not _fused_available(), reason="compiled loops not built or off")


@needs_fused
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-4)])
@pytest.mark.parametrize("gate_width", [0.5, 0.05])
def test_fused_lif_loop_matches_pytorch_step(dtype, tol, gate_width):
    # outputs, trajectories and all parameter / initial-state gradients of the compiled step
    # against the PyTorch step (the same arithmetic), with spikes in the run
    from pyro_spikes.distributions.kernels import compiled_loops

    torch.manual_seed(3)
    net = SmoothGateSNN(3, 7, 2, gate_width=gate_width, neuron="lif", tau_mem=10.0, tau_syn=5.0,
                        input_scale=3.0, spike_drive=0.2 * gate_width / 0.05).to(dtype)
    x = _drive(4, 4, 80, size=3, scale=1.5).to(dtype)
    u0 = (0.3 * torch.randn(4, 7, dtype=torch.float64)).to(dtype)
    s0 = (0.1 * torch.rand(4, 7, dtype=torch.float64)).to(dtype)
    res = []
    for compiled in (True, False):
        net.zero_grad()
        a, b = u0.clone().requires_grad_(), s0.clone().requires_grad_()
        with compiled_loops(compiled):
            out, tr = net(x, 0.05, return_trajectories=True, initial_state=(a, b))
        (out.pow(2).mean() + tr.gate.pow(2).mean() + tr.voltage.mean()).backward()
        res.append([out, tr.state, tr.gate] + [getattr(net, p).grad for p in PARAMS] + [a.grad, b.grad])
    assert float(res[0][1].max()) > net.threshold + net.gate_width  # a full passage of a zone
    for c, t in zip(*res):
        assert c.dtype == dtype
        assert (c - t).abs().max() <= tol * max(t.abs().max(), 1e-3)


@needs_fused
def test_fused_lif_loop_gradcheck():
    from pyro_spikes.nn.smooth_gate import _FusedLifLoop, _fused_lif_module

    module = _fused_lif_module(torch.zeros(1, dtype=torch.float64))
    g = torch.Generator().manual_seed(5)
    # initial states below, inside and above the first zones (theta = 1, P = 1.2, width 0.2)
    u0 = torch.linspace(-0.5, 3.5, 12, dtype=torch.float64).reshape(2, 6) + 0.01
    s0 = torch.rand(2, 6, generator=g, dtype=torch.float64)
    drive = 2 * torch.rand(5, 2, 6, generator=g, dtype=torch.float64)
    W = 0.5 * torch.randn(6, 6, generator=g, dtype=torch.float64)
    consts = (1.0, 1.2, 1 / 0.2, 1 / 10.0, 1 / 5.0, 0.5, 0.05, math.exp(-0.05 / 5.0))
    inputs = tuple(t.requires_grad_() for t in (drive, W, u0, s0))
    assert torch.autograd.gradcheck(lambda *a: _FusedLifLoop.apply(*a, consts, module), inputs)
    # only some outputs used (the others' gradients arrive as None)
    assert torch.autograd.gradcheck(lambda *a: _FusedLifLoop.apply(*a, consts, module)[1], inputs)
