"""
The index layout of spike trains (issue 12, item 1): rows (time, neuron index), O(spikes)
memory whatever D, lossless conversions to and from the dense layout, and validation that names
the problem.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_spikes import (pack_spikes, to_dense, to_index, unpack_spikes, validate_events,
                         validate_index_events)
from pyro_spikes.spikes import LAYOUTS, check_layout

D64 = torch.float64


def test_pack_index_rows_ties_and_padding():
    trains = [[0.1, 0.5, 0.9], [], [0.3, 0.5]]
    index = pack_spikes(trains, 1.0, capacity=7, dtype=D64, layout="index")
    dense = pack_spikes(trains, 1.0, capacity=7, dtype=D64)
    assert index.shape == (7, 2) and dense.shape == (7, 4) and index.dtype == D64
    # rows (time, neuron), simultaneous spikes in neuron order, padding (T, -1) at the end
    assert index[:5].tolist() == [[0.1, 0], [0.3, 2], [0.5, 0], [0.5, 2], [0.9, 0]]
    assert index[5:].tolist() == [[1.0, -1], [1.0, -1]]
    assert torch.equal(to_index(dense, 1.0), index)
    assert torch.equal(to_dense(index, 3), dense)
    for got, want in zip(unpack_spikes(index, layout="index", num_neurons=3), trains):
        assert got.tolist() == pytest.approx(want)
    validate_index_events(index, 1.0, 3)


def test_batch_and_memory():
    batch = [[[0.2], [0.1, 0.7], []], [[], [0.4], [0.45, 0.5]]]
    index = pack_spikes(batch, 1.0, dtype=D64, layout="index")
    assert index.shape == (2, 3, 2)
    back = unpack_spikes(index, layout="index", num_neurons=3)
    for seq, seq_back in zip(batch, back):
        for want, got in zip(seq, seq_back):
            assert got.tolist() == pytest.approx(want)
    # two floats a row whatever D: 1,000 neurons cost what 3 cost
    many = pack_spikes([[0.5]] + [[]] * 999, 1.0, layout="index")
    assert many.shape == (1, 2)
    assert to_dense(many, 1000).shape == (1, 1001)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(0, 3), st.integers(0, 10_000))
def test_round_trips(num_neurons, extra_rows, seed):
    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(2):
        trains = []
        for _ in range(num_neurons):
            n = int(torch.randint(0, 4, (), generator=g))
            # a coarse grid makes ties (across neurons) common
            trains.append(sorted((torch.randint(0, 5, (n,), generator=g) / 4.0).tolist()))
        batch.append(trains)
    count = max(sum(len(t) for t in trains) for trains in batch)
    dense = pack_spikes(batch, 1.0, capacity=count + extra_rows or 1, dtype=D64)
    index = to_index(dense, 1.0)
    validate_index_events(index, 1.0, num_neurons)
    assert torch.equal(index, pack_spikes(batch, 1.0, capacity=dense.shape[-2], dtype=D64,
                                          layout="index"))
    assert torch.equal(to_dense(index, num_neurons), dense)
    validate_events(to_dense(index, num_neurons), 1.0, num_neurons)
    assert torch.equal(to_index(to_dense(index, num_neurons), 1.0), index)


@pytest.mark.parametrize("edit, match", [
    (lambda e: e.__setitem__((1, 0), 0.05), "sorted"),
    (lambda e: e.__setitem__((0, 1), 3.0), r"\[0, 3\)"),
    (lambda e: e.__setitem__((0, 1), -2.0), r"\[0, 3\)"),
    (lambda e: e.__setitem__((0, 1), 0.5), "integers"),
    (lambda e: e.__setitem__((0, 1), -1.0), "padding rows"),
    (lambda e: e.__setitem__((0, 0), -0.1), "outside"),
    (lambda e: e.__setitem__((2, 0), 1.5), "outside"),
    (lambda e: e.__setitem__((0, 0), math.nan), "NaN"),
    (lambda e: e.__setitem__((0, 1), math.inf), "NaN or infinite"),
])
def test_index_validation_names_the_problem(edit, match):
    events = pack_spikes([[0.1, 0.5], [], [0.3]], 1.0, capacity=4, dtype=D64, layout="index")
    edit(events)
    with pytest.raises(ValueError, match=match) as info:
        validate_index_events(events, 1.0, 3, name="spikes")
    assert "spikes" in str(info.value)


def test_shape_and_type_errors_name_the_argument():
    dense = pack_spikes([[0.2], [0.4]], 1.0, dtype=D64)
    with pytest.raises(ValueError, match=r"spikes must have shape \(\.\.\., capacity, 2\)"):
        validate_index_events(dense, 1.0, 2, name="spikes")
    with pytest.raises(TypeError, match="floating-point"):
        validate_index_events(torch.zeros(3, 2, dtype=torch.long), 1.0, 2)
    with pytest.raises(TypeError, match="torch.Tensor"):
        validate_index_events([[0.1, 0]], 1.0, 2)
    with pytest.raises(ValueError, match="one-hot"):
        to_index(torch.tensor([[0.1, 0.5, 0.5]]), 1.0)  # a soft mark has no index
    with pytest.raises(ValueError, match=r"\(\.\.\., capacity, 2\)"):
        to_dense(dense, 2)
    with pytest.raises(ValueError, match="num_neurons"):
        to_dense(to_index(dense, 1.0), 0)
    with pytest.raises(ValueError, match="num_neurons"):
        unpack_spikes(to_index(dense, 1.0), layout="index")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        to_dense(to_index(dense, 1.0), 1)  # an index beyond D is refused, not dropped
    with pytest.raises(ValueError, match="layout"):
        pack_spikes([[0.1]], 1.0, layout="sparse")
    with pytest.raises(ValueError, match="layout"):
        unpack_spikes(dense, layout="csr")
    assert LAYOUTS == ("dense", "index") and check_layout("index") == "index"


def test_pack_errors_name_the_argument_and_the_neuron():
    # unbatched: one index, the neuron's
    with pytest.raises(ValueError, match=r"times_per_neuron\[1\] \(neuron 1\) has spike times"):
        pack_spikes([[0.1], [0.2, 1.5]], 1.0, layout="index")
    # batched: sequence and neuron
    with pytest.raises(ValueError, match=r"times_per_neuron\[1\]\[0\] \(sequence 1, neuron 0\) "
                                         "has non-finite"):
        pack_spikes([[[0.1], []], [[math.nan], [0.2]]], 1.0)


def test_empty_and_all_padding():
    index = pack_spikes([[], []], 2.0, capacity=3, layout="index")
    assert index.tolist() == [[2.0, -1.0]] * 3
    validate_index_events(index, 2.0, 2)
    assert to_dense(index, 2).tolist() == [[2.0, 0.0, 0.0]] * 3
    assert [t.numel() for t in unpack_spikes(index, layout="index", num_neurons=2)] == [0, 0]
    validate_index_events(torch.zeros(0, 2), 1.0, 2)
