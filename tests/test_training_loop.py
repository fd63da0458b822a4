"""
``pyro_spikes.models.training``'s loop on a model whose every step is known in closed form
(surviving mutants of the mutation run: the annealing schedule, the temperature each step
gets, the default learning rate, the progress callback, a parameter without a gradient), and
the shared input checks the same run left untested.
"""

import pyro
import pytest
import torch
from pyro.nn import PyroModule, PyroParam, pyro_method

from pyro_spikes.distributions._checks import check_num_neurons, max_candidates
from pyro_spikes.models import temperature_schedule
from pyro_spikes.models.training import elbo_gradients, train


class Quadratic(PyroModule):
    """Loss (theta - 1)^2 (a factor, no latent site); records the temperature of each run."""

    def __init__(self):
        super().__init__()
        self.theta = PyroParam(torch.tensor(0.0))
        self.unused = PyroParam(torch.tensor([1.0, 2.0]))  # never reaches the loss
        self.temperatures, self.kwargs = [], []

    @pyro_method
    def model(self, observed, temperature=None, **kwargs):
        self.temperatures.append(temperature)
        self.kwargs.append(kwargs)
        pyro.factor("f", -(self.theta - 1.0) ** 2)

    @pyro_method
    def guide(self, observed, temperature=None, **kwargs):
        pass


@pytest.fixture(autouse=True)
def clean_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


@pytest.mark.parametrize("anneal_from", [None, 2.0])
def test_every_step_gets_its_temperature(anneal_from):
    q = Quadratic()
    train(q, None, "pathwise", 6, temperature=0.2, anneal_from=anneal_from)
    expected = [0.2 if anneal_from is None else temperature_schedule(s, 6, start=2.0, end=0.2)
                for s in range(6)]
    assert q.temperatures == pytest.approx(expected, rel=1e-12)
    if anneal_from is not None:  # geometric from 2 to 0.2: from the start, strictly down
        assert expected[0] == pytest.approx(2.0)
        assert all(a > b for a, b in zip(expected, expected[1:]))


@pytest.mark.parametrize("estimator", ["pathwise", "reinforce", "reinforce_baseline"])
def test_every_step_gets_its_estimators_arguments(estimator):
    from pyro_spikes.models.training import ESTIMATORS

    q = Quadratic()
    train(q, None, estimator, 2)
    assert q.kwargs == [ESTIMATORS[estimator][1]] * 2 and q.kwargs[0]  # e.g. relaxed=True


def test_the_defaults_are_the_documented_ones():
    # temperature 0.3, and Adam's first step moves each parameter by the learning rate 0.05
    q = Quadratic()
    train(q, None, "pathwise", 1)
    assert q.temperatures == [0.3]
    assert float(q.theta.detach()) == pytest.approx(0.05, rel=1e-6)


def test_progress_gets_each_step_and_its_loss():
    q = Quadratic()
    calls = []
    losses = train(q, None, "pathwise", 4, progress=lambda step, loss: calls.append((step, loss)))
    assert [c[0] for c in calls] == [0, 1, 2, 3]
    assert [c[1] for c in calls] == pytest.approx(losses, rel=1e-12)
    assert losses[0] == pytest.approx(1.0, rel=1e-12)  # (0 - 1)^2 at the start


def test_elbo_gradients_of_a_parameter_off_the_loss_are_zeros():
    q = Quadratic()
    grads = elbo_gradients(q, None, "pathwise", 3)
    assert torch.equal(grads["unused"], torch.zeros(3, 2))
    assert torch.allclose(grads["theta"], torch.full((3,), -2.0))  # d(theta - 1)^2 at 0
    assert q.theta_unconstrained.grad is None  # cleared after the last estimate


def test_check_num_neurons_names_a_tensor_with_too_few_dimensions():
    with pytest.raises(ValueError, match="rate must have at least 1 dimensions"):
        check_num_neurons("rate", torch.Size([]))
    with pytest.raises(ValueError, match="weight must have at least 3 dimensions"):
        check_num_neurons("weight", torch.Size([2, 2]), dim=-3)
    assert check_num_neurons("weight", torch.Size([1, 4, 4]), dim=-3) == 1


def test_the_candidate_cap_is_the_documented_formula():
    # the Guarantees page: a Hawkes thinning loop stops after 64 (capacity + 16) candidates
    for capacity in (0, 1, 100, 12345):
        assert max_candidates(capacity) == 64 * (capacity + 16)
