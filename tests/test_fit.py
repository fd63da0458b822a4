"""
``pyro_spikes.infer.fit_map``: maximum likelihood and MAP by L-BFGS against closed forms, the
standard errors against the inverse observed information in closed form, recovery of a
simulated network within its standard errors, the convergence report, and bad input.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints

from pyro_spikes import pack_spikes
from pyro_spikes.distributions import PoissonProcess, SpikingPointProcess
from pyro_spikes.infer import fit_map

DT = torch.float64
T = 10.0
COUNTS = torch.tensor([3.0, 5.0, 1.0], dtype=DT)


@pytest.fixture(autouse=True)
def clean_store():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)  # AutoDelta's start: the median of prior draws
    yield
    pyro.clear_param_store()


def _poisson_data():
    return pack_spikes([[1.0, 2.0, 3.5], [0.5, 4.0, 6.0, 7.0, 9.9], [2.2]], T, dtype=DT)


def test_poisson_maximum_likelihood_and_standard_errors_are_the_closed_forms():
    # log L = sum_d n_d log r_d - T r_d: r = n / T; information n / r^2, so se = sqrt(n) / T
    def model(data):
        rate = pyro.param("rate", torch.ones(3, dtype=DT), constraint=constraints.positive)
        pyro.sample("obs", PoissonProcess(rate, T), obs=data)

    fit = fit_map(model, _poisson_data(), progress=False)
    assert fit.converged and fit.grad_max <= 1e-6, fit
    # max |gradient| 1e-6 in log rate: rate off by about 1e-6 / n relative
    assert torch.allclose(fit.params["rate"], COUNTS / T, rtol=1e-6)
    assert torch.allclose(fit.standard_errors["rate"], COUNTS.sqrt() / T, rtol=1e-6)
    expected = float((COUNTS * torch.log(COUNTS / T) - COUNTS).sum())
    assert fit.log_joint == pytest.approx(expected, rel=1e-10)
    # the history holds the log joint of every evaluation, the best of them the estimate's
    assert len(fit.history) == fit.evaluations and max(fit.history) == pytest.approx(
        fit.log_joint, rel=1e-12)
    # the fitted value is left in the param store
    assert torch.allclose(pyro.param("rate"), COUNTS / T, rtol=1e-6)


def test_poisson_map_with_a_gamma_prior_is_the_posterior_mode():
    # Gamma(a, b) prior (in the constrained space, as AutoDelta): the mode is
    # (a - 1 + n) / (b + T); the information in r is (a - 1 + n) / r^2
    a, b = 2.0, 1.0

    def model(data):
        rate = pyro.sample("rate", dist.Gamma(torch.full((3,), a, dtype=DT), b).to_event(1))
        pyro.sample("obs", PoissonProcess(rate, T), obs=data)

    fit = fit_map(model, _poisson_data(), progress=False)
    mode = (a - 1 + COUNTS) / (b + T)
    assert fit.converged, fit
    assert set(fit.params) == {"rate"}  # named after the site, not AutoDelta's parameter
    assert torch.allclose(fit.params["rate"], mode, rtol=1e-6)
    assert torch.allclose(fit.standard_errors["rate"], mode / (a - 1 + COUNTS).sqrt(), rtol=1e-5)
    # the guide gives the estimate back, and Predictive draws spike trains from it
    assert torch.allclose(fit.guide()["rate"], mode, rtol=1e-6)
    from pyro_spikes.infer import Predictive

    draws = Predictive(model, guide=fit.guide, num_samples=200)(None)
    assert torch.allclose(draws["rate"], mode.expand(200, 3), rtol=1e-6)
    counts = (draws["obs"][..., 1:] > 0).sum(-2).double().mean(0)  # spikes per neuron
    # Poisson(rate T) counts: 20% is at least 3.7 standard errors of a mean of 200
    assert torch.allclose(counts, mode * T, rtol=0.2), (counts, mode * T)


def _network():
    return (torch.tensor([-0.5, 0.3], dtype=DT),
            torch.tensor([[[0.0, 0.8], [-1.0, 0.4]]], dtype=DT),
            torch.tensor([0.5], dtype=DT))


def _spiking_model(data, duration):
    bias = pyro.param("bias", torch.zeros(2, dtype=DT))
    weight = pyro.param("weight", torch.zeros(1, 2, 2, dtype=DT))
    pyro.sample("obs", SpikingPointProcess(bias, weight, _network()[2], duration,
                                           upper_bound=6.0), obs=data)


def test_a_simulated_network_is_recovered_within_its_standard_errors():
    # 400 s of a 2-neuron network (~1,900 spikes), seed fixed: every fitted entry lies within
    # 4 standard errors of the truth, and the standard errors shrink like 1 / sqrt(T)
    bias, weight, tau = _network()
    torch.manual_seed(3)
    data = SpikingPointProcess(bias, weight, tau, 400.0, upper_bound=6.0).sample()
    fit = fit_map(_spiking_model, data, 400.0, progress=False)
    assert fit.converged, fit
    for name, truth in (("bias", bias), ("weight", weight)):
        z = (fit.params[name] - truth) / fit.standard_errors[name]
        assert bool((z.abs() < 4).all()), (name, z)
    assert bool((fit.standard_errors["weight"] < 0.2).all()), fit.standard_errors
    # a quarter of the data: about twice the standard errors
    pyro.clear_param_store()
    torch.manual_seed(4)
    data100 = SpikingPointProcess(bias, weight, tau, 100.0, upper_bound=6.0).sample()
    fit100 = fit_map(_spiking_model, data100, 100.0, progress=False)
    ratio = fit100.standard_errors["bias"] / fit.standard_errors["bias"]
    assert bool(((ratio > 1.5) & (ratio < 2.7)).all()), ratio


def test_the_gradient_at_the_estimate_is_zero_and_matches_lbfgs_by_hand():
    # the fit equals torch.optim.LBFGS run by hand on the negative log-likelihood to 1e-6
    bias, weight, tau = _network()
    torch.manual_seed(5)
    data = SpikingPointProcess(bias, weight, tau, 100.0, upper_bound=6.0).sample()
    fit = fit_map(_spiking_model, data, 100.0, standard_errors=False, progress=False)
    assert fit.standard_errors is None
    b = torch.zeros(2, dtype=DT, requires_grad=True)
    w = torch.zeros(1, 2, 2, dtype=DT, requires_grad=True)
    opt = torch.optim.LBFGS([b, w], max_iter=500, tolerance_grad=1e-9, tolerance_change=0,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -SpikingPointProcess(b, w, tau, 100.0, upper_bound=6.0).log_prob(data)
        loss.backward()
        return loss

    opt.step(closure)
    assert torch.allclose(fit.params["bias"], b.detach(), atol=1e-6)
    assert torch.allclose(fit.params["weight"], w.detach(), atol=1e-6)


def test_a_fit_that_stops_early_says_so():
    bias, weight, tau = _network()
    torch.manual_seed(5)
    data = SpikingPointProcess(bias, weight, tau, 100.0, upper_bound=6.0).sample()
    fit = fit_map(_spiking_model, data, 100.0, max_iter=2, max_eval=100,
                  standard_errors=False, progress=False)
    assert not fit.converged and "max_iter" in fit.message and fit.iterations == 2
    assert "NOT converged" in repr(fit)


def test_standard_errors_are_skipped_above_max_se_params():
    def model(data):
        rate = pyro.param("rate", torch.ones(3, dtype=DT), constraint=constraints.positive)
        pyro.sample("obs", PoissonProcess(rate, T), obs=data)

    fit = fit_map(model, _poisson_data(), max_se_params=2, progress=False)
    assert fit.standard_errors is None and "max_se_params" in fit.message


def test_a_flat_direction_gives_nan_standard_errors_and_says_why():
    # two rates whose product alone is identified: the information is singular
    def model(data):
        a = pyro.param("a", torch.tensor(1.0, dtype=DT), constraint=constraints.positive)
        b = pyro.param("b", torch.tensor(2.0, dtype=DT), constraint=constraints.positive)
        pyro.sample("obs", PoissonProcess((a * b).expand(3) * torch.ones(3, dtype=DT), T),
                    obs=data)

    fit = fit_map(model, _poisson_data(), progress=False)
    assert fit.params["a"] * fit.params["b"] == pytest.approx(float(COUNTS.sum()) / (3 * T),
                                                              rel=1e-6)
    assert math.isnan(float(fit.standard_errors["a"])) and "not positive definite" in fit.message


def test_models_a_point_estimate_cannot_fit_are_refused_by_site():
    def discrete(data):
        k = pyro.sample("k", dist.Categorical(torch.ones(3) / 3))
        pyro.sample("obs", PoissonProcess(torch.ones(3, dtype=DT) * (1 + k), T), obs=data)

    with pytest.raises(ValueError, match="'k' is discrete"):
        fit_map(discrete, _poisson_data(), progress=False)

    def hidden(data):
        pyro.sample("hidden", PoissonProcess(torch.ones(2, dtype=DT), T))
        pyro.sample("obs", PoissonProcess(torch.ones(3, dtype=DT), T), obs=data)

    with pytest.raises(ValueError, match="'hidden' is a point process"):
        fit_map(hidden, _poisson_data(), progress=False)

    def nothing(data):
        pyro.sample("obs", PoissonProcess(torch.ones(3, dtype=DT), T), obs=data)

    with pytest.raises(ValueError, match="nothing to fit"):
        fit_map(nothing, _poisson_data(), progress=False)


@pytest.mark.parametrize("kwargs, name", [
    ({"max_iter": 0}, "max_iter"), ({"max_eval": 1.5}, "max_eval"),
    ({"tolerance_grad": -1.0}, "tolerance_grad"), ({"tolerance_change": math.nan},
                                                   "tolerance_change"),
    ({"history_size": True}, "history_size"), ({"max_se_params": 0}, "max_se_params"),
])
def test_bad_settings_are_named(kwargs, name):
    def model(data):
        pyro.param("rate", torch.ones(3, dtype=DT), constraint=constraints.positive)

    with pytest.raises(ValueError, match=name):
        fit_map(model, _poisson_data(), progress=False, **kwargs)


def test_a_start_outside_the_support_is_an_error_not_nan():
    def model(data):
        rate = pyro.param("rate", torch.tensor([1.0, 1.0, 0.0], dtype=DT))  # unconstrained
        pyro.sample("obs", PoissonProcess(rate.abs(), T), obs=data)

    with pytest.raises(ValueError, match=r"log joint density is (-?inf|nan)"):
        fit_map(model, _poisson_data(), progress=False)
