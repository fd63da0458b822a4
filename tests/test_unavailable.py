"""Members a distribution over spike trains does not have raise errors that say what to do."""

import pytest
import torch

from pyro_spikes.distributions import (
    HawkesProcess,
    PoissonProcess,
    RelaxedPointProcess,
    SpikingPointProcess,
    StochasticLIF,
)

T = 5.0


def processes():
    poisson = PoissonProcess(torch.tensor([1.0, 2.0]), T, upper_bound=4.0)
    return [
        poisson,
        HawkesProcess(torch.tensor([0.5]), torch.tensor([[0.2]]), 1.0, T),
        SpikingPointProcess(torch.zeros(2), torch.zeros(1, 2, 2), torch.ones(1), T),
        RelaxedPointProcess(poisson, 0.5),
    ]


@pytest.mark.parametrize("process", processes(), ids=lambda p: type(p).__name__)
@pytest.mark.parametrize("member,hint", [
    ("mean", "num_spikes"), ("mode", "sample"), ("variance", "num_spikes"),
    ("stddev", "num_spikes"), ("entropy", "Monte Carlo"), ("cdf", "compensator"),
    ("icdf", "sample"), ("enumerate_support", "infinite"), ("rsample", "RelaxedPointProcess"),
])
def test_unavailable_members_say_what_to_use(process, member, hint):
    if member == "rsample" and isinstance(process, RelaxedPointProcess):
        assert process.rsample().shape[-1] == 3  # available there
        return
    call = {"cdf": lambda: process.cdf(torch.zeros(1)), "icdf": lambda: process.icdf(0.5),
            "entropy": process.entropy, "enumerate_support": process.enumerate_support,
            "rsample": process.rsample}.get(member, lambda: getattr(process, member))
    with pytest.raises(NotImplementedError, match=rf"{type(process).__name__}\.{member}: .*{hint}"):
        call()


def test_stochastic_lif_entropy_points_to_scoring_rules():
    d = StochasticLIF(torch.full((2,), 1.5), duration=T, num_spikes=2)
    with pytest.raises(NotImplementedError, match="StochasticLIF.entropy: .*scoring"):
        d.entropy()
    with pytest.raises(NotImplementedError, match=r"StochasticLIF.mean: .*rsample\(\(n,\)\)"):
        d.mean
    assert d.rsample().shape == d.event_shape


def test_a_class_overrides_any_hint():
    from pyro_spikes.distributions.unavailable import NoMoments

    names = ["mean", "mode", "variance", "stddev", "entropy", "cdf", "icdf", "enumerate_support"]

    class Custom(NoMoments):
        _unavailable_hints = {name: (f"no {name} here", f"try {name}-thing") for name in names}

    c = Custom()
    calls = {"entropy": c.entropy, "cdf": lambda: c.cdf(0.0), "icdf": lambda: c.icdf(0.5),
             "enumerate_support": c.enumerate_support}
    for name in names:
        with pytest.raises(NotImplementedError,
                           match=rf"^Custom\.{name}: no {name} here; try {name}-thing$"):
            calls.get(name, lambda: getattr(c, name))()
