"""
pyro_spikes.infer.Predictive: posterior predictive spike trains with no capacity to set.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDelta, AutoNormal

from pyro_spikes.distributions import (
    HawkesProcess,
    PoissonProcess,
    default_capacity,
    event_limit,
)
from pyro_spikes.infer import Predictive
from pyro_spikes.spikes import num_spikes, pad_rows, to_index, trim_padding, validate_events

D, T = 3, 60.0


def hawkes_model(data=None):
    """Issue 25's case: priors that allow explosive processes, the spikes observed."""
    mu = pyro.sample("mu", dist.Gamma(torch.ones(D), 1.0).to_event(1))
    alpha = pyro.sample("alpha", dist.Gamma(torch.ones(D, D), 4.0).to_event(2))
    beta = pyro.sample("beta", dist.LogNormal(0.0, 1.0))
    return pyro.sample("spikes", HawkesProcess(mu, alpha, beta[..., None, None], T), obs=data)


@pytest.fixture(scope="module")
def hawkes_data():
    torch.manual_seed(0)
    truth = HawkesProcess(torch.tensor([0.5, 1.0, 0.8]),
                          torch.tensor([[0.1, 0.2, 0.0], [0.0, 0.1, 0.2], [0.2, 0.0, 0.1]]),
                          2.0, T)
    return truth.sample()


@pytest.fixture(scope="module", params=[AutoDelta, AutoNormal])
def fitted(request, hawkes_data):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = request.param(hawkes_model)
    svi = SVI(hawkes_model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(300):
        svi.step(hawkes_data)
    return guide


@pytest.mark.parametrize("parallel", [False, True])
def test_hawkes_posterior_predictive_without_capacity(fitted, hawkes_data, parallel):
    """
    The case of issue 25: Pyro's Predictive fails (a prior draw is simulated, or draws of
    different lengths do not stack); this one returns every draw, padded to one row count,
    from the fitted guide's parameters.
    """
    pyro.set_rng_seed(1)
    with pytest.raises((ValueError, RuntimeError)):
        with event_limit(100_000):
            pyro.infer.Predictive(hawkes_model, guide=fitted, num_samples=20,
                                  parallel=parallel)()
    pyro.set_rng_seed(1)
    out = Predictive(hawkes_model, guide=fitted, num_samples=20, parallel=parallel)()
    spikes = out["spikes"]
    assert spikes.shape[:1] == (20,) and spikes.shape[-1] == 1 + D
    assert out["mu"].shape == (20, D) and out["alpha"].shape == (20, D, D)
    validate_events(spikes, T, D)
    counts = num_spikes(spikes).sum(-1).float()
    # one row count: the longest draw's, or the largest default capacity among the draws
    capacities = [HawkesProcess(out["mu"][s], out["alpha"][s], out["beta"][s], T).capacity
                  for s in range(20)]
    assert spikes.shape[1] == max(capacities + [int(counts.max())])
    # the fitted process reproduces the data's count: within 4 standard errors of the draws
    # (plus the spread of AutoNormal's parameters, included in the draws' own spread)
    observed = float(num_spikes(hawkes_data).sum())
    assert abs(float(counts.mean()) - observed) < 4 * float(counts.std()) / 20 ** 0.5 + 20


def poisson_model(num_sequences, obs=None):
    rate = pyro.sample("rate", dist.Uniform(0.0, 5.0).expand([2]).to_event(1))
    with pyro.plate("sequences", num_sequences):
        return pyro.sample("obs", PoissonProcess(rate, 20.0), obs=obs)


@pytest.mark.parametrize("parallel", [False, True])
def test_each_posterior_draw_sets_its_own_realisations(parallel):
    """Draw s of the rate sets the replicated trains s: mean counts follow it (4 SE)."""
    torch.manual_seed(2)
    rates = torch.tensor([[0.2, 4.0], [4.0, 0.2], [1.0, 1.0]])
    samples = {"rate": rates.unsqueeze(1) if parallel else rates}
    out = Predictive(poisson_model, posterior_samples=samples, parallel=parallel)(200)["obs"]
    assert out.shape[:2] == (3, 200)
    if not parallel:  # each draw's default capacity; padded to the largest
        assert out.shape[2] == max(PoissonProcess(r, 20.0).capacity for r in rates)
    validate_events(out, 20.0, 2)
    se = (rates * 20.0 / 200).sqrt()
    assert ((num_spikes(out).mean(1) - rates * 20.0).abs() < 4 * se).all()


@pytest.mark.parametrize("parallel", [False, True])
def test_same_shapes_as_pyro_under_a_fixed_capacity(parallel):
    """Where Pyro's Predictive works (one fixed capacity), the results have its shapes."""
    rates = torch.tensor([[0.5, 1.0], [2.0, 1.0]])
    samples = {"rate": rates.unsqueeze(1) if parallel else rates}
    with default_capacity(400):  # Pyro's prior draw: up to 5 + 5 Hz for 20 s
        ours = Predictive(poisson_model, posterior_samples=samples, parallel=parallel,
                          return_sites=["obs", "rate", "_RETURN"])(4)
        pyros = pyro.infer.Predictive(poisson_model, posterior_samples=samples,
                                      parallel=parallel,
                                      return_sites=["obs", "rate", "_RETURN"])(4)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in pyros.items()}


def test_the_prior_is_never_simulated():
    """
    A prior whose every draw is explosive: Pyro's Predictive simulates one and stops at the
    event limit; this one finds the plates without simulating, then simulates the posterior
    draws only.
    """
    def model(obs=None):
        adjacency = pyro.sample("adjacency", dist.Uniform(3.0, 4.0).expand([1, 1]).to_event(2))
        return pyro.sample("obs", HawkesProcess(torch.ones(1), adjacency, 1.0, 50.0), obs=obs)

    draws = {"adjacency": torch.tensor([0.1, 0.5]).reshape(2, 1, 1)}
    with event_limit(1000):
        with pytest.raises(ValueError, match="event limit 1000.*from the prior"):
            pyro.infer.Predictive(model, posterior_samples=draws)()
        for parallel in (False, True):
            out = Predictive(model, posterior_samples=draws, parallel=parallel)()["obs"]
            assert out.shape[0] == 2
            validate_events(out, 50.0, 1)


def test_an_explosive_posterior_draw_names_the_event_limit():
    def model(obs=None):
        adjacency = pyro.sample("adjacency", dist.Uniform(0.0, 4.0).expand([1, 1]).to_event(2))
        return pyro.sample("obs", HawkesProcess(torch.ones(1), adjacency, 1.0, 50.0), obs=obs)

    draws = {"adjacency": torch.tensor([0.1, 3.0]).reshape(2, 1, 1)}
    with event_limit(1000), pytest.raises(ValueError, match="event limit 1000 exceeded"):
        Predictive(model, posterior_samples=draws)()


def latent_train_model(obs=None):
    rate = pyro.sample("rate", dist.LogNormal(0.0, 1.0).expand([2]).to_event(1))
    hidden = pyro.sample("hidden", PoissonProcess(rate, 10.0, layout="index"))
    total = 0.1 + (hidden[..., 1] >= 0).sum(-1, keepdim=True).to(rate) / 10.0
    return pyro.sample("obs", PoissonProcess(total, 10.0), obs=obs)


def latent_train_guide(obs=None):
    loc = pyro.param("loc", torch.tensor([0.0, 1.0]))
    rate = pyro.sample("rate", dist.LogNormal(loc, 0.5).to_event(1))
    pyro.sample("hidden", PoissonProcess(rate, 10.0, layout="index"))


@pytest.mark.parametrize("parallel", [False, True])
def test_a_guides_point_process_draws_are_padded_and_used(parallel):
    """
    The guide's own latent spike trains (index layout) differ in length between draws: they are
    padded (index -1 at T), and the model runs on each: its "obs" rate follows the hidden count.
    """
    pyro.clear_param_store()
    torch.manual_seed(3)
    out = Predictive(latent_train_model, guide=latent_train_guide, num_samples=30,
                     parallel=parallel, return_sites=["hidden", "obs", "_RETURN"])()
    hidden = out["hidden"]
    assert hidden.shape[0] == 30 and hidden.shape[-1] == 2
    counts = (hidden[..., 1] >= 0).sum(-1)
    if not parallel:
        assert len(set(counts.tolist())) > 1  # draws of different lengths, padded
    padding = hidden[..., 1] < 0
    assert (hidden[..., 0][padding] == 10.0).all()
    assert torch.equal(out["_RETURN"], out["obs"])
    # E[obs count | hidden] = 10 (0.1 + n_hidden / 10) = 1 + n_hidden: a regression on the draws
    obs_counts = num_spikes(out["obs"]).sum(-1).reshape(-1).float()
    slope = torch.cov(torch.stack([counts.float(), obs_counts]))
    assert abs(float(slope[0, 1] / slope[0, 0]) - 1.0) < 0.35


def test_returned_tensors_of_different_shapes_that_are_no_site_are_refused():
    # a return value that is not a point-process site's cannot be padded: the error names it
    def model():
        rate = pyro.sample("rate", dist.LogNormal(0.0, 1.0).expand([1]).to_event(1))
        spikes = pyro.sample("spikes", PoissonProcess(rate, 10.0))
        return trim_padding(spikes, 10.0)

    draws = {"rate": torch.tensor([[0.1], [5.0]])}
    torch.manual_seed(5)
    with pytest.raises(ValueError, match="draws of site '_RETURN' have different shapes"):
        Predictive(model, posterior_samples=draws, return_sites=["_RETURN"])()


def test_the_vectorized_trace_scores_each_draw_as_one_at_a_time():
    """``get_vectorized_trace``: one trace of all draws (as in Pyro), whose point-process
    site scores draw s under the parameters of draw s."""
    rates = torch.tensor([[0.5, 1.0], [2.0, 1.0], [1.0, 3.0]])
    torch.manual_seed(6)
    predictive = Predictive(poisson_model, posterior_samples={"rate": rates[:, None]},
                            parallel=True)
    trace = predictive.get_vectorized_trace(2)
    obs = trace.nodes["obs"]
    assert obs["value"].shape[:2] == (3, 2) and obs["value"].shape[-1] == 3
    got = obs["fn"].log_prob(obs["value"])
    want = torch.stack([PoissonProcess(r, 20.0).log_prob(obs["value"][i])
                        for i, r in enumerate(rates)])
    assert torch.allclose(got, want, rtol=1e-6)
    # with a guide, its draws are the parameters
    pyro.clear_param_store()
    trace = Predictive(latent_train_model, guide=latent_train_guide, num_samples=4,
                       parallel=True).get_vectorized_trace()
    assert trace.nodes["rate"]["value"].shape == (4, 2)  # no plate in the model
    assert trace.nodes["hidden"]["value"].shape[0] == 4


def test_stack_pads_rows_in_the_sites_layout_and_nothing_else():
    from pyro_spikes.infer.predictive import _stack

    index = PoissonProcess(torch.ones(2), 4.0, layout="index")
    a = torch.tensor([[0.5, 1.0], [4.0, -1.0]])
    b = torch.tensor([[0.5, 1.0], [1.0, 0.0], [2.0, 1.0]])
    got = _stack([a, b], index, "x")
    assert got.tolist() == [[[0.5, 1.0], [4.0, -1.0], [4.0, -1.0]], b.tolist()]
    dense = PoissonProcess(torch.ones(2), 4.0)
    got = _stack([torch.tensor([[0.5, 1, 0]]), torch.zeros(2, 3)], dense, "x")
    assert got[0, 1].tolist() == [4.0, 0, 0]
    # draws that differ in more than their rows (a batch, the width) are not padded
    for other in (torch.zeros(2, 2, 2), torch.zeros(3, 3)):
        with pytest.raises(ValueError, match="draws of site 'x' have different shapes"):
            _stack([a, b, other], index, "x")


def test_the_vectorized_trace_passes_the_arguments_to_the_guide():
    def model(duration, capacity=None):
        rate = pyro.sample("rate", dist.LogNormal(0.0, 1.0).expand([2]).to_event(1))
        return pyro.sample("obs", PoissonProcess(rate, duration, capacity=capacity))

    def guide(duration, capacity=None):  # needs the model's arguments
        assert duration == 5.0 and capacity == 40
        loc = pyro.param("loc2", torch.tensor([0.0, 1.0]))
        pyro.sample("rate", dist.LogNormal(loc, 0.1).to_event(1))

    pyro.clear_param_store()
    trace = Predictive(model, guide=guide, num_samples=3,
                       parallel=True).get_vectorized_trace(5.0, capacity=40)
    assert trace.nodes["obs"]["value"].shape == (3, 40, 3)
    assert trace.nodes["rate"]["value"].shape == (3, 2)


def _scaled_model(duration, scale=1.0, capacity=None):
    rate = pyro.sample("rate", dist.LogNormal(0.0, 1.0).expand([2]).to_event(1))
    with pyro.plate("sequences", 2):
        return pyro.sample("obs", PoissonProcess(scale * rate, duration, capacity=capacity))


@pytest.mark.parametrize("parallel", [False, True])
def test_arguments_reach_model_and_guide(parallel):
    def guide(duration, scale=1.0, capacity=None):
        assert duration == 4.0 and scale == 2.0 and capacity == 30
        pyro.sample("rate", dist.LogNormal(torch.zeros(2), 0.1).to_event(1))

    pyro.clear_param_store()
    if parallel:  # (a guide's draws of "rate" would lack the plate's dim, as in Pyro)
        predictive = Predictive(_scaled_model, posterior_samples={"rate": torch.ones(3, 1, 2)},
                                parallel=True)
    else:
        predictive = Predictive(_scaled_model, guide=guide, num_samples=3)
    out = predictive(4.0, scale=2.0, capacity=30)
    assert out["obs"].shape == (3, 2, 30, 3)
    validate_events(out["obs"], 4.0, 2)


def test_the_draws_are_the_models_own_from_the_same_seed():
    """Predictive consumes no random numbers of its own: its draws equal those of running the
    model conditioned on each posterior draw in turn (the run that finds the sites simulates
    no point process)."""
    rates = torch.tensor([[0.5, 1.0], [2.0, 1.0], [1.0, 3.0]])
    torch.manual_seed(7)
    out = Predictive(_scaled_model, posterior_samples={"rate": rates})(5.0)["obs"]
    torch.manual_seed(7)
    for i, r in enumerate(rates):
        own = pyro.condition(_scaled_model, {"rate": r})(5.0)
        assert torch.equal(out[i, :, :own.shape[-2]], own)
        assert (out[i, :, own.shape[-2]:, 0] == 5.0).all()  # then padding


def test_wrapped_point_process_sites_and_plate_shapes():
    # a point process under .mask() / .to_event() is still padded as one
    def model():
        rate = pyro.sample("rate", dist.LogNormal(0.0, 1.0).expand([1]).to_event(1))
        return pyro.sample("obs", PoissonProcess(rate, 10.0).mask(True))

    draws = {"rate": torch.tensor([[0.1], [5.0]])}
    torch.manual_seed(8)
    out = Predictive(model, posterior_samples=draws)()["obs"]
    assert out.shape[0] == 2
    validate_events(out, 10.0, 1)
    # one posterior draw; a scalar latent site outside a plate, drawn in parallel
    def scalar_model(obs=None):
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with pyro.plate("sequences", 3):
            return pyro.sample("obs", PoissonProcess(scale[..., None] * torch.ones(2), 5.0),
                               obs=obs)

    one = Predictive(scalar_model, posterior_samples={"scale": torch.tensor([2.0])},
                     parallel=True)()
    assert one["obs"].shape[:2] == (1, 3)
    # an observed site asked for in parallel mode is its data, repeated for every draw
    data = PoissonProcess(torch.ones(3, 2), 5.0).sample()
    both = Predictive(scalar_model, posterior_samples={"scale": torch.tensor([2.0, 3.0])},
                      parallel=True, return_sites=["obs"])(data)
    assert torch.equal(both["obs"], data.expand(2, *data.shape))


def test_pad_rows_inverts_trim_padding():
    torch.manual_seed(4)
    x = PoissonProcess(torch.tensor([1.0, 2.0]), 5.0).sample((3,))
    for layout, value in (("dense", x), ("index", to_index(x, 5.0))):
        trimmed = trim_padding(value, 5.0, layout)
        padded = pad_rows(trimmed, value.shape[-2], 5.0, layout)
        assert torch.equal(padded, value)
        with pytest.raises(ValueError, match="rows=1"):
            pad_rows(trimmed, 1, 5.0, layout)
