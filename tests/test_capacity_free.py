"""
Pyro programs over every process without ``capacity`` anywhere: the number of rows of a value
says nothing about a realisation, so scoring (SVI with autoguides) takes data with any number of
rows, and the default capacity is only computed (and only an error) when sampling.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoDelta, AutoMultivariateNormal, AutoNormal

from pyro_spikes.distributions import (
    HawkesProcess,
    PoissonProcess,
    SpikingPointProcess,
    default_capacity,
    event_limit,
)
from pyro_spikes.spikes import num_spikes, validate_events

T = 10.0
NUM_SEQ = 3


def poisson_model(num_sequences, obs=None):
    rate = pyro.sample("rate", dist.LogNormal(0.0, 1.0).expand([2]).to_event(1))
    with pyro.plate("sequences", num_sequences):
        return pyro.sample("obs", PoissonProcess(rate, T), obs=obs)


def hawkes_model(num_sequences, obs=None, max_adjacency=4.0):
    # the prior (and the autoguides' initial values, its medians) are explosive: the default
    # capacity does not exist there, which must not matter for scoring
    baseline = pyro.sample("baseline", dist.LogNormal(-1.0, 0.5).expand([2]).to_event(1))
    adjacency = pyro.sample(
        "adjacency", dist.Uniform(0.0, max_adjacency).expand([2, 2]).to_event(2))
    with pyro.plate("sequences", num_sequences):
        return pyro.sample("obs", HawkesProcess(baseline, adjacency, 2.0, T), obs=obs)


def stable_hawkes_model(num_sequences, obs=None):
    return hawkes_model(num_sequences, obs, max_adjacency=0.4)


def spiking_model(num_sequences, obs=None):
    bias = pyro.sample("bias", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    weight = pyro.sample("weight", dist.Normal(0.0, 1.0).expand([1, 2, 2]).to_event(3))
    process = SpikingPointProcess(bias, weight, torch.tensor([1.0]), T, upper_bound=2.0)
    with pyro.plate("sequences", num_sequences):
        return pyro.sample("obs", process, obs=obs)


def data_for(model):
    """Data with more padding rows than any default capacity would give, and some fewer."""
    torch.manual_seed(0)
    if model is poisson_model:
        x = PoissonProcess(torch.tensor([1.0, 2.0]), T).sample((NUM_SEQ,))
    elif model in (hawkes_model, stable_hawkes_model):
        x = HawkesProcess(torch.tensor([0.4, 0.3]), torch.tensor([[0.2, 0.1], [0.0, 0.3]]),
                          2.0, T).sample((NUM_SEQ,))
    else:
        x = SpikingPointProcess(torch.tensor([0.0, -0.5]), torch.zeros(1, 2, 2), torch.ones(1),
                                T, upper_bound=2.0).sample((NUM_SEQ,))
    x = x[..., : int(num_spikes(x).sum(-1).max()), :]  # no padding row at all
    return torch.cat([x, torch.tensor([T, 0.0, 0.0]).expand(NUM_SEQ, 500, 3)], -2)


@pytest.mark.parametrize("model", [poisson_model, hawkes_model, spiking_model])
def test_log_prob_any_number_of_rows(model):
    x = data_for(model)
    trace = pyro.poutine.trace(model).get_trace(NUM_SEQ, x)
    fn = trace.nodes["obs"]["fn"]
    lp = [fn.log_prob(x[..., :r, :]) for r in (int(num_spikes(x).sum(-1).max()), 40, 503)]
    assert torch.allclose(lp[0], lp[1]) and torch.allclose(lp[0], lp[2])


@pytest.mark.parametrize("model", [poisson_model, hawkes_model, spiking_model])
@pytest.mark.parametrize("guide_cls", [AutoNormal, AutoDelta, AutoMultivariateNormal])
def test_svi_with_autoguides(model, guide_cls):
    pyro.clear_param_store()
    x = data_for(model)
    torch.manual_seed(1)
    guide = guide_cls(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    losses = [svi.step(NUM_SEQ, x)]
    before = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    losses += [svi.step(NUM_SEQ, x) for _ in range(4)]
    assert all(torch.isfinite(torch.tensor(losses))), losses
    after = dict(pyro.get_param_store().items())
    assert before and all(not torch.equal(before[k], after[k].detach()) for k in before)


def fitted_guide(model, guide_cls):
    pyro.clear_param_store()
    x = data_for(model)
    torch.manual_seed(2)
    guide = guide_cls(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(3):
        svi.step(NUM_SEQ, x)
    return guide


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("model", [poisson_model, stable_hawkes_model, spiking_model])
@pytest.mark.parametrize("guide_cls", [AutoNormal, AutoDelta, AutoMultivariateNormal])
def test_predictive_under_default_capacity(model, guide_cls, parallel):
    """
    Predictive reshapes every draw to the shape of one prior draw: with a default capacity
    that depends on sampled parameters, the documented way is a fixed default_capacity.
    """
    guide = fitted_guide(model, guide_cls)
    S = 4
    with default_capacity(150):
        if parallel:
            # Pyro's parallel Predictive needs global draws aligned with the model's plates:
            # (S, 1) + event shape (AutoNormal's draws from Predictive(guide) are (S,) + shape)
            draws = Predictive(guide, num_samples=S)(NUM_SEQ)
            draws = {k: v.unsqueeze(1) for k, v in draws.items() if k != "obs"}
            out = Predictive(model, posterior_samples=draws, parallel=True)(NUM_SEQ)
        else:
            out = Predictive(model, guide=guide, num_samples=S)(NUM_SEQ)
    assert out["obs"].shape == (4, NUM_SEQ, 150, 3)
    validate_events(out["obs"], T, 2)
    assert not torch.equal(out["obs"][0], out["obs"][1])
    assert parallel or set(out) > {"obs"}  # and the guide's latent draws


def poisson_bounded_model(num_sequences, obs=None):
    # with upper_bound the default capacity depends on it only, not on the sampled rate
    rate = pyro.sample("rate", dist.Uniform(0.0, 5.0).expand([2]).to_event(1))
    with pyro.plate("sequences", num_sequences):
        return pyro.sample("obs", PoissonProcess(rate, T, upper_bound=10.0), obs=obs)


def hawkes_decay_model(num_sequences, obs=None):
    # the default capacity does not depend on the decay
    decay = pyro.sample("decay", dist.LogNormal(0.0, 0.5))
    process = HawkesProcess(torch.tensor([0.4, 0.3]), torch.tensor([[0.2, 0.1], [0.0, 0.3]]),
                            decay[..., None, None], T)  # a batched number: batch + (1, 1)
    with pyro.plate("sequences", num_sequences):
        return pyro.sample("obs", process, obs=obs)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("model", [poisson_bounded_model, hawkes_decay_model, spiking_model])
def test_predictive_without_capacity(model, parallel):
    """Without default_capacity when the default capacity does not depend on sampled values."""
    torch.manual_seed(3)
    latent = {poisson_bounded_model: "rate", hawkes_decay_model: "decay",
              spiking_model: "bias"}[model]
    prior = Predictive(model, num_samples=5, return_sites=[latent])(NUM_SEQ)[latent]
    assert prior.shape[:2] == (5, 1)  # prior draws come aligned with the model's plate
    out = Predictive(model, posterior_samples={latent: prior}, parallel=parallel)(NUM_SEQ)
    assert out["obs"].shape[:2] == (5, NUM_SEQ)
    validate_events(out["obs"], T, 2)


def test_predictive_uses_each_draw_under_default_capacity():
    """Draw s of the rate sets replicated trains s: their mean counts follow it."""
    torch.manual_seed(4)
    rates = torch.tensor([[0.2, 4.0], [4.0, 0.2], [1.0, 1.0]])
    num_seq = 200
    se = (rates * T / num_seq).sqrt()
    with default_capacity(400):
        seq = Predictive(poisson_model, posterior_samples={"rate": rates})(num_seq)["obs"]
        par = Predictive(poisson_model, posterior_samples={"rate": rates.unsqueeze(1)},
                         parallel=True)(num_seq)["obs"]
    for out in (seq, par):
        assert out.shape == (3, num_seq, 400, 3)
        assert ((num_spikes(out).mean(1) - rates * T).abs() < 4 * se).all()


def test_explosive_hawkes_samples_up_to_the_event_limit():
    """
    An explosive process has no default capacity (its event_shape is an error naming the
    spectral radius) but samples: the draw grows as long as it needs, and a realisation past
    the event limit is an error naming the limit.
    """
    torch.manual_seed(0)
    process = HawkesProcess(torch.tensor([0.5]), torch.tensor([[2.0]]), 1.0, T)
    assert torch.isfinite(process.log_prob(torch.tensor([[1.0, 1.0], [2.0, 1.0]]))).all()
    assert "capacity=None" in repr(process)
    with pytest.raises(ValueError, match="spectral radius .* pass capacity"):
        process.event_shape
    x = process.sample((3,))  # the branching ratio 2 over 10 decay times: thousands of events
    counts = num_spikes(x).sum(-1)
    assert x.shape[-2] == int(counts.max()) > 100  # no padding beyond the longest draw
    validate_events(x, T, 1)
    with pytest.raises(ValueError, match="event limit 50 exceeded.*event_limit"):
        with event_limit(50):
            process.sample()
    with pytest.raises(ValueError, match="capacity=30 exceeded.*default_capacity"):
        with default_capacity(30):
            process.sample()
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        with event_limit(0):
            pass


@pytest.mark.parametrize("layout", ["dense", "index"])
def test_draws_past_the_default_capacity_get_the_rows_they_need(layout):
    """
    Without a capacity the default (a count exceeded with negligible probability) shapes a
    sample; a realisation that needs more rows gets them instead of an error. Forced here by a
    default made small on purpose.
    """
    torch.manual_seed(1)
    process = PoissonProcess(torch.tensor([3.0, 2.0]), T, layout=layout)
    assert process.sample((2,)).shape[-2] == process.capacity
    process._computed_capacity = 5  # as if the default were 5
    x = process.sample((4,))
    counts = (x[..., 1] >= 0).sum(-1) if layout == "index" else num_spikes(x).sum(-1)
    assert x.shape == (4, int(counts.max()), x.shape[-1]) and int(counts.max()) > 5
    assert torch.allclose(process.log_prob(x), PoissonProcess(
        torch.tensor([3.0, 2.0]), T, layout=layout).log_prob(x))


def test_pyro_predictive_prior_draw_error_says_it_came_from_the_prior():
    """
    Pyro's Predictive simulates the model once with latents drawn from the prior; an explosive
    prior draw stops at the event limit with an error that says where the draw came from.
    """
    def model(obs=None):
        adjacency = pyro.sample("adjacency", dist.Uniform(3.0, 4.0).expand([1, 1]).to_event(2))
        return pyro.sample("obs", HawkesProcess(torch.ones(1), adjacency, 1.0, 50.0), obs=obs)

    draws = {"adjacency": torch.full((2, 1, 1), 0.1)}
    with event_limit(1000), pytest.raises(ValueError, match="event limit 1000.*from the prior"):
        Predictive(model, posterior_samples=draws)()


def test_a_fixed_capacity_bounds_the_spikes_not_the_thinning_candidates(loop_backend):
    """
    Exact thinning draws many more candidates than it keeps: a capacity that holds the spikes
    but not the candidates is enough for ``sample`` (it used to raise, calling the candidates
    "events"); a relaxed sample keeps every candidate, so there the capacity must hold them.
    """
    from pyro_spikes.distributions import RelaxedPointProcess

    torch.manual_seed(0)
    # sigmoid(-4) = 0.018 of a = 5 Hz for 2 neurons over 10 s: ~100 candidates, ~1.8 spikes
    p = SpikingPointProcess(torch.full((2,), -4.0), torch.zeros(1, 2, 2), torch.ones(1), 10.0,
                            upper_bound=5.0, capacity=20)
    x = p.sample((50,))
    assert x.shape == (50, 20, 3)
    validate_events(x, 10.0, 2)
    assert float(num_spikes(x).sum(-1).mean()) == pytest.approx(100 * 0.018, abs=0.6)
    with pytest.raises(ValueError, match="capacity=20 exceeded: a relaxed realisation has"):
        RelaxedPointProcess(p, 0.5).rsample()
    q = PoissonProcess(torch.tensor([0.05, 0.05]), 10.0, capacity=20, upper_bound=10.0)
    assert q.sample((50,)).shape == (50, 20, 3)
    with pytest.raises(ValueError, match="capacity=20 exceeded: a relaxed realisation has"):
        RelaxedPointProcess(q, 0.5).rsample()
