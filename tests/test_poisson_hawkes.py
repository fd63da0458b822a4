import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDelta
from scipy import linalg, stats

from pyro_spikes import pack_spikes, unpack_spikes
from pyro_spikes.diagnostics import rescaled_intervals
from pyro_spikes.distributions import HawkesProcess, PoissonProcess, event_limit

# ---------------------------------------------------------------------------- Poisson


def test_poisson_counts_and_shapes():
    torch.manual_seed(0)
    rate = torch.tensor([[0.5, 2.0], [1.0, 0.0]])
    p = PoissonProcess(rate, duration=10.0)
    x = p.sample((2000,))
    assert x.shape == (2000, 2, p.capacity, 3)
    counts = x[..., 1:].sum(-2)
    expected = rate * 10.0
    se = torch.sqrt(expected / 2000).clamp(min=1e-3)
    assert ((counts.mean(0) - expected).abs() <= 4 * se).all()
    # within-sequence times are uniform on [0, T]: KS
    times = x[..., 0][x[..., 1:].sum(-1) > 0].numpy()
    assert stats.kstest(times / 10.0, "uniform").pvalue > 0.01


def test_poisson_log_prob_closed_form_and_rows():
    rate = torch.tensor([0.7, 1.3], dtype=torch.float64, requires_grad=True)
    events = pack_spikes([[0.5, 2.0, 3.1], [1.0]], duration=4.0, dtype=torch.float64)
    p = PoissonProcess(rate, 4.0, capacity=events.shape[-2])
    expected = 3 * math.log(0.7) + math.log(1.3) - 4.0 * 2.0
    assert p.log_prob(events).item() == pytest.approx(expected)
    # the generic row machinery (used by compensator/intensity) agrees
    assert p.compensator(events)[0].tolist() == pytest.approx([0.35, 0.65])
    lam = p.intensity(events, torch.tensor([0.0, 3.9], dtype=torch.float64))
    assert torch.allclose(lam, torch.tensor([[0.7, 1.3], [0.7, 1.3]], dtype=torch.float64))
    p.log_prob(events).backward()
    assert rate.grad.tolist() == pytest.approx([3 / 0.7 - 4, 1 / 1.3 - 4])


def test_poisson_time_rescaling():
    torch.manual_seed(1)
    p = PoissonProcess(torch.tensor([0.5, 3.0]), duration=400.0)
    x = p.sample((5,))
    z = rescaled_intervals(p, x)
    assert stats.kstest(z.numpy(), "expon").pvalue > 0.01


def test_poisson_errors():
    with pytest.raises(ValueError, match="rate"):
        PoissonProcess(torch.tensor([-1.0]), 1.0, validate_args=True)
    with pytest.raises(ValueError, match="duration"):
        PoissonProcess(torch.tensor([1.0]), 0.0)
    # capacity only shapes samples: a value with any number of rows scores the same
    p = PoissonProcess(torch.tensor([1.0, 1.0]), 1.0, capacity=3, validate_args=True)
    lp = [p.log_prob(pack_spikes([[0.1], [0.2]], 1.0, capacity=c)) for c in (2, 3, 9)]
    assert torch.allclose(lp[0], lp[1]) and torch.allclose(lp[0], lp[2])
    with pytest.raises(ValueError, match="capacity=2 exceeded"):
        PoissonProcess(torch.tensor([50.0]), 1.0, capacity=2).sample()


# ---------------------------------------------------------------------------- Hawkes

MU = torch.tensor([0.4, 0.2, 0.3], dtype=torch.float64)
ALPHA = torch.tensor([[0.3, 0.0, 0.2], [0.1, 0.4, 0.0], [0.0, 0.2, 0.3]], dtype=torch.float64)
BETA = torch.tensor([[1.5, 2.0, 1.0], [3.0, 1.2, 2.0], [1.0, 0.8, 2.5]], dtype=torch.float64)


def direct_hawkes_loglik(trains, mu, alpha, beta, T):
    """O(n^2) textbook log-likelihood with the closed-form compensator."""
    mu, alpha, beta = mu.numpy(), alpha.numpy(), beta.numpy()
    total = 0.0
    d = len(trains)
    for i in range(d):
        for t in trains[i]:
            lam = mu[i]
            for j in range(d):
                past = trains[j][trains[j] < t]
                lam += np.sum(alpha[i, j] * beta[i, j] * np.exp(-beta[i, j] * (t - past)))
            total += np.log(lam)
        comp = mu[i] * T
        for j in range(d):
            comp += alpha[i, j] * np.sum(1 - np.exp(-beta[i, j] * (T - trains[j])))
        total -= comp
    return total


@pytest.mark.parametrize("beta", [BETA, torch.tensor(1.7, dtype=torch.float64)])
def test_hawkes_log_prob_matches_direct(beta):
    torch.manual_seed(2)
    h = HawkesProcess(MU, ALPHA, beta, duration=30.0)
    x = h.sample((3,))
    lp = h.log_prob(x)
    beta_full = beta.expand(3, 3)
    for b in range(3):
        trains = [t.numpy() for t in unpack_spikes(x[b])]
        assert sum(len(t) for t in trains) > 5
        ref = direct_hawkes_loglik(trains, MU, ALPHA, beta_full, 30.0)
        assert lp[b].item() == pytest.approx(ref, rel=1e-10, abs=1e-9)


def test_hawkes_gradients_finite_difference():
    torch.manual_seed(3)
    x = HawkesProcess(MU, ALPHA, BETA, duration=20.0).sample()
    params = [MU.clone().requires_grad_(), (ALPHA + 0.05).requires_grad_(),
              BETA.clone().requires_grad_()]

    def f(mu, alpha, beta):
        return HawkesProcess(mu, alpha, beta, 20.0, capacity=x.shape[-2]).log_prob(x)

    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-5)
    # a single shared decay takes the projected (one decay group) path
    params[2] = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)

    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-5)


def expected_hawkes_counts(mu, alpha, beta, T):
    """E[N(T)] from the empty history, scalar decay: y' = beta (alpha - I) y + beta alpha mu."""
    mu, alpha = mu.numpy(), alpha.numpy()
    d = len(mu)
    # augmented linear ODE for (y, integral of y): exact by the matrix exponential
    a = np.zeros((2 * d + 1, 2 * d + 1))
    a[:d, :d] = beta * (alpha - np.eye(d))
    a[:d, -1] = beta * alpha @ mu
    a[d:2 * d, :d] = np.eye(d)
    z = linalg.expm(a * T) @ np.concatenate([np.zeros(2 * d), [1.0]])
    return mu * T + z[d:2 * d]


def test_hawkes_mean_counts(loop_backend):
    torch.manual_seed(4)
    T, beta = 15.0, 2.0
    h = HawkesProcess(MU.float(), ALPHA.float(), beta, duration=T)
    counts = h.sample((4000,))[..., 1:].sum(-2).double()
    expected = expected_hawkes_counts(MU, ALPHA, beta, T)
    se = counts.std(0) / math.sqrt(4000)
    assert (counts.mean(0).numpy() - expected < 4 * se.numpy()).all()
    assert (expected - counts.mean(0).numpy() < 4 * se.numpy()).all()
    # and the stationary mean rate is approached for long windows
    stationary = np.linalg.solve(np.eye(3) - ALPHA.numpy(), MU.numpy())
    assert np.allclose(expected_hawkes_counts(MU, ALPHA, beta, 400.0) / 400.0, stationary,
                       rtol=0.02)


@pytest.mark.parametrize("beta", [BETA, 2.0])
def test_hawkes_time_rescaling(beta, loop_backend):
    torch.manual_seed(5)
    h = HawkesProcess(MU, ALPHA, beta, duration=400.0)  # long windows: see test_spiking
    x = h.sample((5,))
    z = rescaled_intervals(h, x)
    assert z.numel() > 1000
    assert stats.kstest(z.numpy(), "expon").pvalue > 0.01
    # a wrong model is rejected by the same test
    wrong = HawkesProcess(MU, ALPHA * 0.2, beta, duration=400.0, capacity=x.shape[-2])
    assert stats.kstest(rescaled_intervals(wrong, x).numpy(), "expon").pvalue < 1e-4


def test_hawkes_matches_independent_simulator(loop_backend):
    # our Ogata sampler vs a plain sequential (per-event, numpy) Ogata simulation: counts agree
    rng = np.random.default_rng(6)
    mu, alpha, beta, T = MU.numpy(), ALPHA.numpy(), BETA.numpy(), 10.0

    def simulate():
        t, state, counts = 0.0, np.zeros((3, 3)), np.zeros(3)
        while True:
            bound = mu.sum() + state.sum()
            gap = rng.exponential(1 / bound)
            t += gap
            if t > T:
                return counts
            state *= np.exp(-beta * gap)
            lam = mu + state.sum(1)
            u = rng.uniform() * bound
            if u < lam.sum():
                d = int(np.searchsorted(np.cumsum(lam), u))
                counts[d] += 1
                state[:, d] += alpha[:, d] * beta[:, d]

    ref = np.array([simulate() for _ in range(2000)])
    torch.manual_seed(6)
    ours = HawkesProcess(MU, ALPHA, BETA, T).sample((2000,))[..., 1:].sum(-2).numpy()
    for d in range(3):
        assert stats.ks_2samp(ref[:, d], ours[:, d]).pvalue > 0.01


def test_hawkes_batched_parameters_and_overflow(loop_backend):
    # per-element baselines, adjacencies and decays (the per-sequence tables of the samplers)
    torch.manual_seed(8)
    mu = torch.stack([MU, 2 * MU])
    alpha = torch.stack([ALPHA, 0.5 * ALPHA.t()])
    T, num = 8.0, 1500
    # one decay per element (the projected path): mean counts match each element's closed form
    beta = torch.tensor([1.5, 2.0], dtype=MU.dtype).view(2, 1, 1).expand(2, 3, 3)
    counts = HawkesProcess(mu, alpha, beta, T).sample((num,))[..., 1:].sum(-2)
    for b in range(2):
        expected = expected_hawkes_counts(mu[b], alpha[b], float(beta[b, 0, 0]), T)
        se = counts[:, b].std(0) / math.sqrt(num)
        assert (np.abs(counts[:, b].mean(0).numpy() - expected) < 4 * se.numpy()).all()
    # matrix decays per element: each element's counts match the same process sampled alone
    beta = torch.stack([BETA, BETA.t() * 2])
    together = HawkesProcess(mu, alpha, beta, T).sample((num,))[..., 1:].sum(-2)
    for b in range(2):
        alone = HawkesProcess(mu[b], alpha[b], beta[b], T).sample((num,))[..., 1:].sum(-2)
        se = (together[:, b].var(0) / num + alone.var(0) / num).sqrt()
        assert ((together[:, b].mean(0) - alone.mean(0)).abs() < 4 * se).all()
    # an empty sample shape gives an empty batch of realisations
    assert HawkesProcess(MU, ALPHA, BETA, T).sample((0,)).shape[0] == 0
    # an explosive process overflows its capacity with a clear error, not a truncation
    with pytest.raises(ValueError, match="capacity=50 exceeded"):
        HawkesProcess(MU, ALPHA * 4, 1.0, duration=20.0, capacity=50).sample((2,))


def test_hawkes_shapes_expand_and_errors():
    h = HawkesProcess(MU.float(), ALPHA.float(), 1.0, duration=5.0)
    e = h.expand((4, 2))
    assert e.batch_shape == (4, 2) and e.event_shape == h.event_shape
    x = e.sample((3,))
    assert x.shape == (3, 4, 2) + h.event_shape
    assert e.log_prob(x).shape == (3, 4, 2)
    batched = HawkesProcess(MU.float().expand(5, 3), ALPHA.float(), 1.0, duration=5.0)
    assert batched.sample().shape == (5,) + batched.event_shape
    # an explosive process has no default capacity: its event_shape is an error, and a draw
    # grows as long as it needs, up to the event limit
    explosive = HawkesProcess(MU, ALPHA * 4, 1.0, duration=5.0)
    assert torch.isfinite(explosive.log_prob(h.sample().to(MU.dtype)))
    with pytest.raises(ValueError, match="spectral radius"):
        explosive.event_shape
    with pytest.raises(ValueError, match="event limit 20 exceeded"):
        with event_limit(20):  # at T = 20 a draw passes millions of events
            HawkesProcess(MU, ALPHA * 4, 1.0, duration=20.0).sample((4,))
    HawkesProcess(MU, ALPHA * 4, 1.0, duration=1.0, capacity=500)
    with pytest.raises(ValueError, match="adjacency"):
        HawkesProcess(MU, ALPHA[:2], 1.0, duration=5.0)
    with pytest.raises(ValueError, match="adjacency"):
        HawkesProcess(MU, -ALPHA, 1.0, duration=5.0, capacity=10, validate_args=True)
    with pytest.raises(ValueError, match="decay"):
        HawkesProcess(MU, ALPHA, -1.0, duration=5.0, capacity=10, validate_args=True)


def test_hawkes_svi_delta_recovers_parameters():
    torch.manual_seed(7)
    mu = torch.tensor([0.5, 0.3])
    alpha = torch.tensor([[0.4, 0.2], [0.0, 0.5]])
    beta = 2.0
    data = HawkesProcess(mu, alpha, beta, duration=100.0).sample((40,))

    def model(data):
        m = pyro.sample("mu", dist.LogNormal(torch.zeros(2), 2.0).to_event(1))
        a = pyro.sample("alpha", dist.LogNormal(torch.full((2, 2), -1.0), 2.0).to_event(2))
        with pyro.plate("seq", data.shape[0]):
            pyro.sample("x", HawkesProcess(m, a, beta, 100.0, capacity=data.shape[-2]), obs=data)

    guide = AutoDelta(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(300):
        svi.step(data)
    est = guide.median()
    assert torch.allclose(est["mu"], mu, atol=0.1)
    assert torch.allclose(est["alpha"], alpha, atol=0.1)


@pytest.mark.parametrize("duration", [float("nan"), -1.0, 0.0, "x", float("inf")])
def test_bad_duration_is_named(duration):
    from pyro_spikes.distributions import SpikingPointProcess

    for make in [
        lambda: PoissonProcess(torch.ones(2), duration),
        lambda: HawkesProcess(MU, ALPHA, 1.0, duration),
        lambda: SpikingPointProcess(torch.zeros(2), torch.zeros(1, 2, 2), torch.ones(1), duration),
    ]:
        with pytest.raises(ValueError, match="duration"):
            make()


def test_poisson_edge_cases_of_log_prob_relaxed_sampling_and_expand():
    from pyro_spikes.distributions import RelaxedPointProcess

    # a neuron of rate zero that never fires: 0 log 0 counts as 0, so the density is finite
    rate = torch.tensor([0.0, 2.0], dtype=torch.float64)
    events = torch.tensor([[0.5, 0, 1], [1.5, 0, 1], [3.0, 0, 0]], dtype=torch.float64)
    got = PoissonProcess(rate, 3.0).log_prob(events)
    assert got.item() == pytest.approx(2 * math.log(2.0) - 3.0 * 2.0, rel=1e-15)
    # relaxed draws: an empty batch, and a bound so low that one row holds every candidate
    proc = PoissonProcess(torch.tensor([1e-9, 1e-9]), 3.0, upper_bound=1e-6, capacity=1)
    assert RelaxedPointProcess(proc, 0.5).rsample((0,)).shape == (0, 1, 3)
    assert RelaxedPointProcess(proc, 0.5).rsample((5,)).shape == (5, 1, 3)

    # expand keeps validate_args, and a subclass that follows torch's expand pattern keeps its
    # type through PoissonProcess.expand
    class Sub(PoissonProcess):
        def expand(self, batch_shape, _instance=None):
            return super().expand(batch_shape, self._get_checked_instance(Sub, _instance))

    for v in (False, True):
        e = Sub(torch.ones(2), 3.0, validate_args=v).expand((4,))
        assert type(e) is Sub and e.batch_shape == (4,) and e._validate_args is v
