"""
``PoissonProcess`` behaviour that the mutation run found untested (surviving mutants of
``distributions/poisson.py``): the argument its errors name, the upper bound's dtype and its
boundary case, ``expand`` on a subclass and without validation, and the sampler's memory
check.
"""

import pytest
import torch

from pyro_spikes import PoissonProcess
from pyro_spikes.distributions import event_limit

T = 5.0


def test_an_empty_rate_is_named():
    with pytest.raises(ValueError, match=r"^rate must describe at least one neuron"):
        PoissonProcess(torch.ones(0), T)


def test_upper_bound_follows_the_rate_and_may_equal_the_total_rate():
    rate = torch.tensor([1.0, 2.0], dtype=torch.float64)
    p = PoissonProcess(rate, T, upper_bound=3.0)  # equal to rate.sum(): allowed
    assert p.upper_bound.dtype == torch.float64 and float(p.upper_bound) == 3.0
    with pytest.raises(ValueError, match="upper_bound must be at least the total rate"):
        PoissonProcess(rate, T, upper_bound=2.999)


class Tagged(PoissonProcess):
    """A user's subclass: ``expand`` must keep the class (Pyro's ``_get_checked_instance``)."""


class WithExtra(PoissonProcess):
    """A subclass with its own ``__init__`` expands through the parent with ``_instance``."""

    def __init__(self, rate, duration, extra=1.0, **kwargs):
        self.extra = extra
        super().__init__(rate, duration, **kwargs)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(WithExtra, _instance)
        new.extra = self.extra
        return super().expand(batch_shape, _instance=new)


def test_expand_keeps_a_subclass_and_skips_validation_of_valid_parents():
    p = Tagged(torch.tensor([1.0, 2.0]), T)
    q = p.expand((3,))
    assert type(q) is Tagged and q.batch_shape == (3,)
    w = WithExtra(torch.tensor([1.0, 2.0]), T, extra=7.0).expand((2,))
    assert type(w) is WithExtra and w.extra == 7.0 and w.rate.shape == (2, 2)
    # a process built without validation expands without validating (its rates are invalid)
    bad = PoissonProcess(torch.tensor([-1.0, 2.0]), T, validate_args=False)
    expanded = bad.expand((2,))
    assert expanded.batch_shape == (2,) and expanded._validate_args is False


def test_a_sample_too_large_for_memory_names_the_rate():
    # 5e11 events fit the capacity and the event limit given, not the memory of any machine
    with event_limit(10**13), pytest.raises(ValueError, match=r"^rate: the \d+ event times"):
        PoissonProcess(torch.tensor([5e8]), 1e3, capacity=10**12).sample()
