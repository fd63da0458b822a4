"""
``layout="index"`` on the exact processes (issue 12, item 1): samples come as rows (time, neuron
index) and log_prob takes them, with the same numbers as the dense layout (the recursions are
shared: only a row's input is a gather instead of a product), on both loop backends.
"""

import pyro
import pyro.poutine as poutine
import pytest
import torch

from pyro_spikes import to_dense, to_index, trim_padding
from pyro_spikes.distributions import (FilteredStimulus, HawkesProcess, PoissonProcess,
                                       RelaxedPointProcess, SpikingPointProcess)
from pyro_spikes.spikes import pack_spikes

DT = torch.float64
T = 6.0


def _params(seed=0, d=3):
    g = torch.Generator().manual_seed(seed)
    return {
        "rate": torch.rand(d, generator=g, dtype=DT) + 0.5,
        "mu": torch.rand(d, generator=g, dtype=DT) + 0.2,
        "alpha": 0.15 * torch.rand(d, d, generator=g, dtype=DT),
        "beta": 1.0 + torch.rand(d, d, generator=g, dtype=DT),
        "bias": torch.randn(d, generator=g, dtype=DT) * 0.5,
        "weight": torch.randn(2, d, d, generator=g, dtype=DT),
        "tau": torch.tensor([0.4, 1.5], dtype=DT),
    }


def _context(soft):
    ctx = pack_spikes([[0.5, 2.0, 4.5]], T, dtype=DT)
    if soft:
        ctx[..., 1:] *= 0.6  # a relaxed context: no neuron index, the value's rows go dense
    return ctx


def _stimulus(p):
    g = torch.Generator().manual_seed(5)
    times = torch.tensor([0.0, 1.0, 2.5, 4.0], dtype=DT)
    return FilteredStimulus(torch.randn(4, 1, generator=g, dtype=DT), times,
                            0.5 * torch.randn(1, 3, 1, generator=g, dtype=DT),
                            torch.tensor([0.7], dtype=DT))


def _history():
    hist = pack_spikes([[0.2], [0.5, 0.9], []], 1.0, dtype=DT)
    hist[..., 0] -= 1.0
    return hist


PROCESSES = {
    "poisson": lambda p, **kw: PoissonProcess(p["rate"], T, **kw),
    "hawkes_uniform": lambda p, **kw: HawkesProcess(p["mu"], p["alpha"], 2.0, T, **kw),
    "hawkes_per_pair": lambda p, **kw: HawkesProcess(p["mu"], p["alpha"], p["beta"], T, **kw),
    "spiking": lambda p, **kw: SpikingPointProcess(p["bias"], p["weight"], p["tau"], T, **kw),
    "spiking_context": lambda p, **kw: SpikingPointProcess(
        p["bias"], p["weight"], p["tau"], T, neurons=[0, 2], context=_context(False), **kw),
    "spiking_soft_context": lambda p, **kw: SpikingPointProcess(
        p["bias"], p["weight"], p["tau"], T, neurons=[2, 0], context=_context(True), **kw),
    "spiking_stimulus_history": lambda p, **kw: SpikingPointProcess(
        p["bias"], p["weight"], p["tau"], T, stimulus=_stimulus(p), history=_history(), **kw),
}


@pytest.mark.parametrize("name", list(PROCESSES))
def test_index_log_prob_intensity_and_compensator_equal_dense(loop_backend, name):
    p = {k: v.clone().requires_grad_() for k, v in _params().items()}
    dense, index = PROCESSES[name](p), PROCESSES[name](p, layout="index")
    assert index.layout == "index" and index.event_shape[-1] == 2
    torch.manual_seed(1)
    value = dense.sample((4,))
    assert int(value[..., 1:].sum()) > 20  # enough spikes that a wrong gather would show
    rows = to_index(value, T)
    lp_d, lp_i = dense.log_prob(value), index.log_prob(rows)
    assert lp_i.shape == (4,)
    assert torch.allclose(lp_d, lp_i, rtol=1e-12, atol=1e-11)
    assert torch.allclose(dense.log_prob_per_neuron(value), index.log_prob_per_neuron(rows),
                          rtol=1e-12, atol=1e-11)
    leaves = [v for v in p.values()]
    g_d = torch.autograd.grad(lp_d.sum(), leaves, allow_unused=True)
    g_i = torch.autograd.grad(lp_i.sum(), leaves, allow_unused=True)
    for a, b in zip(g_d, g_i):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-11)
    t = torch.linspace(0.0, T, 13, dtype=DT)
    with torch.no_grad():
        assert torch.allclose(dense.intensity(value, t), index.intensity(rows, t), rtol=1e-12)
        assert torch.allclose(dense.compensator(value), index.compensator(rows), rtol=1e-12,
                              atol=1e-12)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_index_samples_are_the_dense_samples_rewritten(loop_backend, name):
    # the same random stream gives the same realisation, only written as (time, index) rows
    p = _params(2)
    dense, index = PROCESSES[name](p, capacity=300), PROCESSES[name](p, capacity=300,
                                                                      layout="index")
    torch.manual_seed(3)
    want = dense.sample((2,))
    torch.manual_seed(3)
    got = index.sample((2,))
    assert got.shape == (2, 300, 2) and got.dtype == DT
    assert bool(index.support.check(got).all())
    assert torch.equal(got, to_index(want, T))
    assert torch.equal(to_dense(got, dense.num_neurons), want)


def test_index_values_are_checked_whatever_validate_args():
    proc = HawkesProcess(torch.ones(3, dtype=DT), 0.1 * torch.ones(3, 3, dtype=DT), 1.0, T,
                         layout="index", validate_args=False)
    good = torch.tensor([[0.5, 0.0], [1.0, 2.0], [T, -1.0]], dtype=DT)
    assert torch.isfinite(proc.log_prob(good))
    with pytest.raises(ValueError, match=r"neuron indices \(column 1\) must be integers in \[0, 3\)"):
        proc.log_prob(torch.tensor([[0.5, 3.0], [T, -1.0]], dtype=DT))
    with pytest.raises(ValueError, match="to_index"):  # a dense value: say how to convert it
        proc.log_prob(to_dense(good, 3))
    with pytest.raises(ValueError, match="layout='index'"):
        HawkesProcess(torch.ones(3, dtype=DT), torch.zeros(3, 3, dtype=DT), 1.0, T).log_prob(good)
    checked = HawkesProcess(torch.ones(3, dtype=DT), torch.zeros(3, 3, dtype=DT), 1.0, T,
                            layout="index", validate_args=True)
    with pytest.raises(ValueError, match="sorted"):
        checked.log_prob(good.flip(0))
    with pytest.raises(ValueError, match="padding rows"):
        checked.log_prob(torch.tensor([[0.5, -1.0], [T, -1.0]], dtype=DT))
    with pytest.raises(ValueError, match="layout must be one of"):
        PoissonProcess(torch.ones(2), T, layout="sparse")


def test_index_layout_is_exact_only_and_survives_expand():
    proc = SpikingPointProcess(torch.zeros(2), torch.zeros(1, 2, 2), torch.ones(1), T,
                               layout="index")
    with pytest.raises(ValueError, match="layout='dense'"):
        RelaxedPointProcess(proc, 0.5)
    wide = proc.expand((5,))
    assert wide.layout == "index" and wide.event_shape[-1] == 2 and "layout='index'" in repr(wide)
    dense = PoissonProcess(torch.ones(5, 2), T)
    assert repr(dense) == (f"PoissonProcess(num_neurons=2, duration={T}, capacity=None, "
                           "batch_shape=(5,))")  # the dense layout is the default: not shown
    assert PoissonProcess(torch.ones(5, 2), T, layout="index").expand((3, 5)).layout == "index"


def test_index_support_rejects_what_the_index_layout_forbids():
    support = PoissonProcess(torch.ones(3, dtype=DT), T, layout="index").support
    good = torch.tensor([[0.0, 0.0], [1.0, 2.0], [T, -1.0]], dtype=DT)  # a spike at 0
    assert bool(support.check(good))
    bad = good.clone()
    bad[1, 1] = -2.0
    assert support.check(torch.stack([good, bad])).tolist() == [True, False]
    for bad in ([[1.0, 0.0], [0.5, 2.0], [T, -1.0]],  # unsorted
                [[0.5, 0.0], [1.0, 3.0], [T, -1.0]],  # index out of range
                [[0.5, 0.0], [1.0, 1.5], [T, -1.0]],  # not an integer
                [[0.5, -1.0], [1.0, 2.0], [T, -1.0]],  # padding before T
                [[0.5, 0.0], [1.0, 2.0], [T + 1, -1.0]]):  # outside [0, T]
        assert not bool(support.check(torch.tensor(bad, dtype=DT))), bad


def test_events_support_rejects_what_the_events_layout_forbids():
    support = PoissonProcess(torch.ones(2, dtype=DT), T).support
    assert repr(support) == f"SpikeTrains(duration={T}, num_neurons=2, relaxed=False)"
    good = torch.tensor([[0.0, 1, 0], [1.0, 0, 1], [1.0, 1, 0], [T, 0, 1], [T, 0, 0]], dtype=DT)
    assert bool(support.check(good)) and bool(support.check(good[:1]))
    nan = float("nan")
    for bad in ([[1.0, 1, 0], [0.5, 0, 1], [T, 0, 0]],  # unsorted
                [[0.5, 1, 0], [2.0, 0, 1], [1.0, 0, 1], [T, 0, 0]],  # unsorted after the first
                [[-0.1, 1, 0], [T, 0, 0]],  # before 0
                [[0.5, 1, 0], [T + 0.1, 0, 0]],  # after T
                [[nan, 1, 0], [T, 0, 0]],  # not finite
                [[0.5, 1, nan], [T, 0, 0]],
                [[0.5, 1, 1], [T, 0, 0]],  # two marks
                [[0.5, 2, 0], [T, 0, 0]],  # not one-hot
                [[0.5, 0.5, 0], [T, 0, 0]]):
        assert not bool(support.check(torch.tensor(bad, dtype=DT))), bad
    # a batch is checked sequence by sequence: one bad row fails its sequence only
    batch = torch.stack([good[:3]] * 4)
    batch[1, 1, 0] = float("nan")
    batch[2, 2, 1:] = torch.tensor([1.0, 1.0], dtype=DT)
    batch[3, :2] = batch[3, [1, 0]]
    assert support.check(batch).tolist() == [True, False, False, False]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_relaxed_support_is_the_sub_simplex(dtype, tol):
    exact = PoissonProcess(torch.ones(2, dtype=dtype), T, upper_bound=4.0)
    support = RelaxedPointProcess(exact, temperature=0.5).support
    assert repr(support) == f"SpikeTrains(duration={T}, num_neurons=2, relaxed=True)"

    def ok(*marks, time=0.5):  # three rows: not as many as neurons
        rows = [[0.25, 0.5, 0.5], [time, *marks], [T, 0, 0]]
        return bool(support.check(torch.tensor(rows, dtype=dtype)))

    assert ok(0.3, 0.7) and ok(0.0, 0.0) and ok(0.25, 0.5) and ok(0.5, 0.5 + tol / 4)
    assert not ok(0.5, 0.5 + 4 * tol) and not ok(-0.01, 0.5) and not ok(0.5, -0.01)
    assert not ok(1.5, 0.0) and not ok(0.3, 0.3, time=-0.5) and not ok(0.3, 0.3, time=0.1)
    batch = torch.tensor([[[0.5, 0.3, 0.3], [T, 0, 0]], [[0.5, -0.1, 0.3], [T, 0, 0]],
                          [[0.5, 0.6, 0.6], [T, 0, 0]]], dtype=dtype)
    assert support.check(batch).tolist() == [True, False, False]


def test_trim_padding_in_the_index_layout():
    rows = torch.tensor([[[0.5, 1.0], [T, -1.0], [T, -1.0]],
                         [[0.2, 0.0], [T, 1.0], [T, -1.0]]], dtype=DT)
    # a spike at T (neuron 1) is not padding; the last row is padding in both sequences
    assert trim_padding(rows, T, "index").shape == (2, 2, 2)


def test_an_index_layout_observation_in_a_pyro_model():
    # the same model scores the same data in either layout
    rows = pack_spikes([[0.5, 1.5, 4.0], [2.0], [3.3, 5.9]], T, dtype=DT, layout="index")

    def model(data, layout):
        rate = pyro.sample("rate", pyro.distributions.Gamma(
            torch.full((3,), 2.0, dtype=DT), torch.ones(3, dtype=DT)).to_event(1))
        pyro.sample("obs", PoissonProcess(rate, T, layout=layout), obs=data)

    traced = {}
    for layout, data in [("index", rows), ("dense", to_dense(rows, 3))]:
        with poutine.trace() as tr, poutine.condition(
                data={"rate": torch.tensor([0.5, 1.0, 2.0], dtype=DT)}):
            model(data, layout)
        traced[layout] = tr.trace.log_prob_sum()
    assert torch.allclose(traced["index"], traced["dense"], rtol=1e-14)


# ------------------------------------------------------------------ streamed likelihood


@pytest.mark.parametrize("name", ["spiking", "spiking_context"])
def test_streamed_backward_runs_on_the_loops_of_its_forward(name, monkeypatch):
    # the PyTorch loops' chunks are checkpointed and recomputed in the backward pass: a
    # log_prob taken under compiled_loops(False) and differentiated after the block (a user's
    # loss.backward() outside it) recomputes them on the PyTorch loops too (it raised
    # torch.utils.checkpoint's CheckpointError: the recomputation took the compiled path)
    from pyro_spikes.distributions import point_process
    from pyro_spikes.distributions.kernels import compiled_loops

    monkeypatch.setattr(point_process, "CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(point_process, "MIN_CHUNK_ROWS", 3)
    p = {k: v.clone().requires_grad_() for k, v in _params(4).items()}
    torch.manual_seed(5)
    value = PROCESSES[name](p).sample((2,)).detach()
    leaves = [p["bias"], p["weight"], p["tau"]]
    with compiled_loops(False):
        lp = PROCESSES[name](p).log_prob(value).sum()
        inside = torch.autograd.grad(lp, leaves)
        lp = PROCESSES[name](p).log_prob(value).sum()
    outside = torch.autograd.grad(lp, leaves)
    for a, b in zip(inside, outside):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", ["dense", "index"])
@pytest.mark.parametrize("name", [n for n in PROCESSES if n != "poisson"])
def test_streamed_chunks_equal_one_pass(loop_backend, name, layout, monkeypatch):
    # log_prob and its gradient (parameters and, dense, the value's times) in chunks of 3 rows,
    # carrying the history's state, equal one pass over all rows
    from pyro_spikes.distributions import point_process

    p = {k: v.clone().requires_grad_() for k, v in _params(4).items()}
    torch.manual_seed(5)
    value = PROCESSES[name](p).sample((2,)).detach()
    if layout == "index":
        value = to_index(value, T)
    value = value.requires_grad_(layout == "dense")
    leaves = list(p.values()) + ([value] if layout == "dense" else [])

    def run():
        lp = PROCESSES[name](p, layout=layout).log_prob(value)
        return lp, torch.autograd.grad(lp.sum(), leaves, allow_unused=True)

    whole, g_whole = run()
    monkeypatch.setattr(point_process, "CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(point_process, "MIN_CHUNK_ROWS", 3)
    chunked, g_chunked = run()
    assert torch.allclose(chunked, whole, rtol=1e-12, atol=1e-10)
    for a, b in zip(g_whole, g_chunked):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-10)


def test_loops_enabled_reports_the_compiled_loops_setting():
    from pyro_spikes.distributions.kernels import compiled_loops, loops_enabled

    with compiled_loops(False):
        assert loops_enabled() is False
        with compiled_loops(True):
            assert loops_enabled() is True
        assert loops_enabled() is False
