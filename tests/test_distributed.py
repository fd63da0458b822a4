"""
The parts of pyro_spikes.distributed that need only torch and Pyro (seeding, subsampled
programs, the per-sequence baseline, the differentiable TraceGraph ELBO); the Lightning module
is tested in test_distributed_lightning.py.
"""

import os

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceGraph_ELBO

from pyro_spikes.distributed import (DifferentiableTraceGraph_ELBO, SequenceBaseline,
                                     SubsampledGuide, SubsampledModel,
                                     mix_seed, seeded)
from pyro_spikes.distributions import HawkesProcess
from pyro_spikes.models import SNN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_SEQ = 8


@pytest.fixture(autouse=True)
def _module_local_params():
    # parameters live in the modules, not Pyro's global store (Pyro's setting for
    # PyTorch-native training): the one- and two-process runs each build a fresh program
    # with the same parameter names
    with pyro.settings.context(module_local_params=True):
        yield


def _snn_data(num_sequences=NUM_SEQ, duration=5.0):
    pyro.set_rng_seed(0)
    truth = SNN(2, 2, duration=duration, init_scale=1.0)
    observed, _ = truth.simulate(num_sequences)
    return observed


def _hawkes_data(num_sequences=NUM_SEQ, duration=20.0):
    pyro.set_rng_seed(0)
    truth = HawkesProcess(torch.tensor([0.5, 0.3]), torch.tensor([[0.3, 0.2], [0.1, 0.4]]),
                          1.0, duration)
    return truth.sample((num_sequences,))


def _snn_loss(estimator, size, duration=5.0, seed=1):
    pyro.set_rng_seed(seed)
    snn = SNN(2, 2, duration=duration)
    model, guide = SubsampledModel(snn, size), SubsampledGuide(snn, size)
    if estimator == "pathwise":
        return Trace_ELBO()(model, guide), {}
    if estimator == "reinforce":
        return Trace_ELBO()(model, guide), {"program_kwargs": {"relaxed": False}}
    return DifferentiableTraceGraph_ELBO()(model, guide), {
        "program_kwargs": {"relaxed": False}, "baseline": SequenceBaseline(size, 0.8)}


# ---------------------------------------------------------------- lightning-free parts
def test_mix_seed():
    seeds = {mix_seed(0, s, i) for s in range(4) for i in range(-3, 50)}
    assert len(seeds) == 4 * 53 and all(0 <= s < 2 ** 63 for s in seeds)
    assert mix_seed(3, 4) == mix_seed(3, 4) != mix_seed(4, 3)
    with pytest.raises(TypeError, match="integers"):
        mix_seed(0.5)


def test_seeded_draws_repeat_and_leave_global_state():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with seeded(11):
        a = torch.rand(4)
    with seeded(11):
        b = torch.rand(4)
    assert torch.equal(a, b)
    assert torch.equal(torch.rand(3), expected)  # the global stream did not move


def test_sequence_baseline_closed_form():
    base = SequenceBaseline(5, beta=0.75)
    assert torch.equal(base(torch.tensor([0, 4])), torch.zeros(2, dtype=torch.float64))
    base.update(torch.tensor([1, 3]), torch.tensor([2.0, -4.0]))
    base.update(torch.tensor([3, 0]), torch.tensor([8.0, 1.0]))
    expected = torch.tensor([1.0, 2.0, 0.0, 0.75 * -4.0 + 0.25 * 8.0, 0.0], dtype=torch.float64)
    assert torch.allclose(base.average, expected)
    assert base.visits.tolist() == [1, 1, 0, 2, 0]
    with pytest.raises(ValueError, match="index"):
        base(torch.tensor([5]))
    with pytest.raises(ValueError, match="cost"):
        base.update(torch.tensor([1]), torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="beta"):
        SequenceBaseline(3, beta=1.0)


def test_subsampled_loss_is_scaled_to_the_data_set():
    # an SNN without hidden neurons: the loss is -(N/B) sum_batch log p, exactly
    pyro.set_rng_seed(0)
    data = SNN(2, 0, duration=5.0, init_scale=1.0).simulate(6)[0]
    snn = SNN(2, 0, duration=5.0)
    loss_fn = Trace_ELBO()(SubsampledModel(snn, 6), SubsampledGuide(snn, 6))
    index = torch.tensor([1, 4])
    expected = -3.0 * snn.network(capacity=data.shape[-2]).log_prob(data[index]).sum()
    assert torch.allclose(loss_fn(index, data[index]), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="index must lie"):
        loss_fn(torch.tensor([0, 6]), data[:2])
    with pytest.raises(ValueError, match="one row per index"):
        loss_fn(torch.tensor([0]), data[:2])


@pytest.mark.parametrize("relaxed", [True, False])
def test_per_sequence_seeds_make_samples_independent_of_the_batch(relaxed):
    data = _snn_data()
    snn = SNN(2, 2, duration=5.0)
    guide = SubsampledGuide(snn, NUM_SEQ)

    def hidden(index, seeds):
        tr = pyro.poutine.trace(guide).get_trace(index, data[index], seeds=seeds,
                                                  relaxed=relaxed, temperature=0.5)
        assert tr.nodes["hidden"]["scale"] == NUM_SEQ / len(index)
        return tr.nodes["hidden"]["value"]

    a = hidden(torch.tensor([2, 5, 7]), [10, 11, 12])
    b = hidden(torch.tensor([5, 0]), [11, 99])
    assert torch.equal(a[1], b[0])  # sequence 5, seed 11: the same sample in both batches
    assert not torch.equal(a[0], a[2])


def test_differentiable_tracegraph_matches_tracegraph_and_records_costs():
    data = _snn_data()
    snn = SNN(2, 2, duration=5.0)
    model, guide = SubsampledModel(snn, NUM_SEQ), SubsampledGuide(snn, NUM_SEQ)
    index = torch.tensor([0, 3, 6])
    kwargs = dict(relaxed=False, baseline_value=torch.tensor([-3.0, -1.0, -2.0]))
    params = list(snn.parameters())

    elbo = DifferentiableTraceGraph_ELBO()
    with seeded(3):
        loss = elbo(model, guide)(index, data[index], **kwargs)
    grads = torch.autograd.grad(loss, params)
    with seeded(3):
        ref_loss = TraceGraph_ELBO().loss_and_grads(model, guide, index, data[index], **kwargs)
    for g, p in zip(grads, params):
        assert torch.allclose(g, p.grad, rtol=1e-5, atol=1e-6)
    assert loss.item() == pytest.approx(ref_loss, rel=1e-6)
    # the recorded cost of "hidden" is log p_O(J_O | J_H) per sequence (prior guide:
    # log p_H - log q = 0), unscaled
    with seeded(3):
        tr = pyro.poutine.trace(guide).get_trace(index, data[index], relaxed=False)
    log_p = snn.observed_process(tr.nodes["hidden"]["value"], data.shape[-2]).log_prob(
        data[index])
    assert torch.allclose(elbo.site_costs["hidden"], log_p.detach(), rtol=1e-5)
