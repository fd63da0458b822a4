"""
The compiled one-pass scan of index-layout values (``kernels.index_rows``) against the PyTorch
checks it replaces on the CPU (``validate_index_events``, the labels, ``trim_padding``): the
same labels, the same rows kept and the same error for every problem, in float32 and float64,
batched, and through ``log_prob`` on both loop backends.
"""

import math

import pytest
import torch

from pyro_spikes import pack_spikes, trim_padding, validate_index_events
from pyro_spikes.distributions import HawkesProcess, PoissonProcess, SpikingPointProcess, kernels
from pyro_spikes.spikes import _index_labels, raise_index_problems

pytestmark = pytest.mark.skipif(not kernels.has_compiled_loops(),
                                reason="pyro_spikes._kernels was not built")



@pytest.fixture(autouse=True)
def _compiled():
    """The compiled path on (the PyTorch one is asked for by name where compared)."""
    with kernels.compiled_loops(True):
        yield


T = 1.0
EDITS = {
    "unsorted": lambda e: e.__setitem__((0, 1, 0), 0.05),
    "index_too_large": lambda e: e.__setitem__((0, 0, 1), 3.0),
    "index_below_minus_one": lambda e: e.__setitem__((1, 0, 1), -2.0),
    "fractional_index": lambda e: e.__setitem__((0, 0, 1), 0.5),
    "negative_fractional_index": lambda e: e.__setitem__((0, 0, 1), -0.5),
    "early_padding": lambda e: e.__setitem__((0, 0, 1), -1.0),
    "negative_time": lambda e: e.__setitem__((0, 0, 0), -0.1),
    "time_after_duration": lambda e: e.__setitem__((1, 2, 0), 1.5),
    "nan_time": lambda e: e.__setitem__((0, 0, 0), math.nan),
    "inf_time": lambda e: e.__setitem__((1, 3, 0), math.inf),
    "nan_index": lambda e: e.__setitem__((1, 0, 1), math.nan),
    "inf_index": lambda e: e.__setitem__((0, 0, 1), math.inf),
    "nan_time_and_bad_index": lambda e: (e.__setitem__((0, 0, 0), math.nan),
                                         e.__setitem__((1, 0, 1), 7.0)),
    "unsorted_and_early_padding": lambda e: (e.__setitem__((0, 1, 0), 0.05),
                                             e.__setitem__((1, 0, 1), -1.0)),
}


def _events(dtype):
    # two sequences; the second's first time (0.3) is below the first's last (0.5): the order
    # is checked within a sequence only. Row 1 of the second is a spike at T, not padding.
    return pack_spikes([[[0.1, 0.5], [], [0.2]], [[0.3], [1.0], []]], T, capacity=5,
                       dtype=dtype, layout="index")


def _error(fn):
    try:
        fn()
    except ValueError as e:
        return str(e)
    return None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_valid_values_give_the_labels_and_the_rows_trim_padding_keeps(dtype):
    events = _events(dtype)
    flags, labels, keep = kernels.index_rows(events, T, 3)
    assert flags == 0
    assert torch.equal(labels, _index_labels(events, 3, "events"))
    assert keep == trim_padding(events, T, "index").shape[-2] == 3
    # all padding, and no rows at all: trim_padding keeps one row (or none of none)
    pad = pack_spikes([[], []], T, capacity=4, dtype=dtype, layout="index")
    assert kernels.index_rows(pad, T, 2)[0::2] == (0, 1)
    assert trim_padding(pad, T, "index").shape[-2] == 1
    flags, labels, keep = kernels.index_rows(torch.zeros(3, 0, 2, dtype=dtype), T, 2)
    assert (flags, labels.shape) == (0, (3, 0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("edit", list(EDITS))
def test_every_problem_raises_the_pytorch_checks_error(edit, dtype):
    events = _events(dtype)
    EDITS[edit](events)
    want = _error(lambda: validate_index_events(events, T, 3, name="value"))
    assert want is not None
    flags = kernels.index_rows(events, T, 3)[0]
    assert _error(lambda: raise_index_problems(flags, "value", T, 3)) == want
    # the labels' own check (what every use of the labels needs) agrees too
    want_labels = _error(lambda: _index_labels(events, 3, "value"))
    got_labels = _error(lambda: kernels.checked_index_labels(events, T, 3))
    assert got_labels == want_labels
    # and a process says the same on both loop backends
    proc = PoissonProcess(torch.ones(3, dtype=dtype), T, layout="index", validate_args=True)
    with kernels.compiled_loops(False):
        torch_error = _error(lambda: proc.log_prob(events))
    assert _error(lambda: proc.log_prob(events)) == torch_error == want


@pytest.mark.parametrize("name", ["hawkes", "spiking"])
def test_log_prob_of_a_padded_batch_is_the_same_on_both_backends(name):
    events = _events(torch.float64)
    events = torch.cat([events, pack_spikes([[], [], []], T, capacity=4, dtype=torch.float64,
                                            layout="index").expand(2, 4, 2)], -2)  # more padding
    d = torch.float64
    if name == "hawkes":
        proc = HawkesProcess(torch.ones(3, dtype=d), 0.2 * torch.ones(3, 3, dtype=d), 2.0, T,
                             layout="index")
    else:
        proc = SpikingPointProcess(torch.zeros(3, dtype=d), 0.3 * torch.ones(1, 3, 3, dtype=d),
                                   torch.ones(1, dtype=d), T, layout="index")
    got = proc.log_prob(events)
    with kernels.compiled_loops(False):
        want = proc.log_prob(events)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)


def test_index_rows_refuses_what_it_cannot_scan():
    with pytest.raises(ValueError, match=r"\(\.\.\., K, 2\)"):
        kernels.index_rows(torch.zeros(3, 4), T, 3)
    with pytest.raises(ValueError, match="compiled"):
        kernels.index_rows(torch.zeros(3, 2, dtype=torch.long), T, 3)
    with kernels.compiled_loops(False), pytest.raises(ValueError, match="compiled"):
        kernels.index_rows(torch.zeros(3, 2), T, 3)
