"""pyro.infer.Predictive with the library's point processes: shapes and per-draw parameters."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoDelta, AutoNormal

from pyro_spikes.distributions import HawkesProcess, PoissonProcess, SpikingPointProcess
from pyro_spikes.spikes import num_spikes, validate_events

T = 20.0


def hawkes_model(num_sequences, capacity, obs=None):
    baseline = pyro.sample("baseline", dist.Uniform(0.0, 1.0).expand([2]).to_event(1))
    adjacency = pyro.sample("adjacency", dist.Uniform(0.0, 0.4).expand([2, 2]).to_event(2))
    process = HawkesProcess(baseline, adjacency, 2.0, T, capacity=capacity)
    with pyro.plate("sequences", num_sequences):
        return pyro.sample("obs", process, obs=obs)


def spiking_model(num_sequences, capacity, obs=None):
    bias = pyro.sample("bias", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    weight = pyro.sample("weight", dist.Normal(0.0, 1.0).expand([1, 2, 2]).to_event(3))
    process = SpikingPointProcess(bias, weight, torch.tensor([1.0]), T, upper_bound=2.0,
                                  capacity=capacity)
    with pyro.plate("sequences", num_sequences):
        return pyro.sample("obs", process, obs=obs)


def poisson_model(num_sequences, capacity, obs=None):
    rate = pyro.sample("rate", dist.Uniform(0.0, 5.0).expand([2]).to_event(1))
    with pyro.plate("sequences", num_sequences):
        return pyro.sample("obs", PoissonProcess(rate, T, capacity=capacity), obs=obs)


def capacity_for(model):
    if model is hawkes_model:  # worst case of the bounded prior
        return HawkesProcess(torch.ones(2), torch.full((2, 2), 0.4), 2.0, T).capacity
    if model is spiking_model:
        return SpikingPointProcess(torch.zeros(2), torch.zeros(1, 2, 2), torch.ones(1), T,
                                   upper_bound=2.0).capacity
    return PoissonProcess(torch.full((2,), 5.0), T).capacity


def fit_guide(model, guide_cls, num_steps=20):
    torch.manual_seed(0)
    obs = pyro.poutine.uncondition(model)(3, capacity_for(model))
    guide = guide_cls(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(num_steps):
        svi.step(3, obs.shape[-2], obs)
    return guide


@pytest.mark.parametrize("model", [hawkes_model, spiking_model, poisson_model])
@pytest.mark.parametrize("guide_cls", [AutoNormal, AutoDelta])
def test_predictive_with_guide_shapes(model, guide_cls):
    guide = fit_guide(model, guide_cls)
    S, num_seq, cap = 5, 3, capacity_for(model)
    out = Predictive(model, guide=guide, num_samples=S)(num_seq, cap)
    assert out["obs"].shape == (S, num_seq, cap, 3)
    validate_events(out["obs"], T, 2)
    # replicated trains differ between draws (fresh randomness per draw)
    assert not torch.equal(out["obs"][0], out["obs"][1])
    latent = [k for k in out if k != "obs"]
    assert latent == [] or all(out[k].shape[0] == S for k in latent)


def test_predictive_sequential_uses_each_posterior_draw():
    """Draw s of the posterior sets the rate of replicated trains s: mean counts follow it."""
    torch.manual_seed(1)
    rates = torch.tensor([[0.2, 4.0], [4.0, 0.2], [1.0, 1.0]])  # (S, D)
    S, num_seq = rates.shape[0], 200
    cap = capacity_for(poisson_model)
    obs = Predictive(poisson_model, posterior_samples={"rate": rates},
                     return_sites=["obs"])(num_seq, cap)["obs"]
    assert obs.shape == (S, num_seq, cap, 3)
    mean = num_spikes(obs).mean(1)  # (S, D)
    se = (rates * T / num_seq).sqrt()
    assert ((mean - rates * T).abs() < 4 * se).all(), (mean, rates * T)


@pytest.mark.parametrize("model,sites", [
    (hawkes_model, {"baseline": (2,), "adjacency": (2, 2)}),
    (spiking_model, {"bias": (2,), "weight": (1, 2, 2)}),
])
def test_predictive_parallel_with_plate_aligned_samples(model, sites):
    """
    ``parallel=True`` vectorises over draws with a plate left of the model's plates: global
    samples need one singleton dim per model plate, ``(S, 1) + event_shape`` (Pyro reshapes
    a guide's ``(S,) + event_shape`` samples only when the guide itself has the plates).
    """
    torch.manual_seed(2)
    S, num_seq, cap = 4, 3, capacity_for(model)
    guide = fit_guide(model, AutoNormal)
    draws = Predictive(guide, num_samples=S)(num_seq, cap)  # guide samples, (S,) + shape
    samples = {k: draws[k].reshape((S, 1) + shape) for k, shape in sites.items()}
    out = Predictive(model, posterior_samples=samples, return_sites=["obs"], parallel=True)(
        num_seq, cap)
    assert out["obs"].shape == (S, num_seq, cap, 3)
    validate_events(out["obs"], T, 2)


def test_predictive_parallel_uses_each_posterior_draw():
    torch.manual_seed(3)
    rates = torch.tensor([[0.5, 3.0], [3.0, 0.5]])
    cap = capacity_for(poisson_model)
    par = Predictive(poisson_model, posterior_samples={"rate": rates.unsqueeze(1)},
                     return_sites=["obs"], parallel=True)(300, cap)["obs"]
    assert par.shape == (2, 300, cap, 3)
    mean = num_spikes(par).mean(1)
    se = (rates * T / 300).sqrt()
    assert ((mean - rates * T).abs() < 4 * se).all()


def test_predictive_prior_draws_that_overflow_raise_quickly():
    """
    Predictive first runs the model with latents drawn from the prior. An explosive prior draw
    of a Hawkes process must give the capacity error (it used to loop until T, i.e. hang).
    """
    def explosive(num_sequences, capacity, obs=None):
        adjacency = pyro.sample("adjacency", dist.Uniform(1.5, 2.0).expand([1, 1]).to_event(2))
        process = HawkesProcess(torch.ones(1), adjacency, 1.0, 50.0, capacity=capacity)
        with pyro.plate("sequences", num_sequences):
            return pyro.sample("obs", process, obs=obs)

    with pytest.raises(ValueError, match="capacity=100 exceeded"):
        Predictive(explosive, posterior_samples={"adjacency": torch.full((2, 1, 1), 0.1)})(2, 100)
