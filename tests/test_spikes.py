import pytest
import torch

from pyro_spikes import pack_spikes, unpack_spikes, validate_events
from pyro_spikes.spikes import num_spikes, spike_mask


def test_pack_unpack_round_trip_single():
    trains = [torch.tensor([0.1, 0.5, 0.9]), torch.tensor([]), torch.tensor([0.3])]
    events = pack_spikes(trains, duration=1.0, capacity=6)
    assert events.shape == (6, 4)
    assert torch.all(events[1:, 0] >= events[:-1, 0])
    assert events[4:, 0].eq(1.0).all() and events[4:, 1:].eq(0).all()
    back = unpack_spikes(events)
    for a, b in zip(trains, back):
        assert torch.equal(a, b)
    assert num_spikes(events).tolist() == [3.0, 0.0, 1.0]
    validate_events(events, 1.0, 3)


def test_pack_unpack_round_trip_batch():
    batch = [[[0.2], [0.1, 0.7]], [[], [0.4, 0.45]], [[0.3, 0.31, 0.9], []]]
    events = pack_spikes(batch, duration=1.0, dtype=torch.float64)
    assert events.shape == (3, 3, 3) and events.dtype == torch.float64
    back = unpack_spikes(events)
    for seq, seq_back in zip(batch, back):
        for a, b in zip(seq, seq_back):
            assert b.tolist() == pytest.approx(a)


def test_pack_errors():
    with pytest.raises(ValueError, match="outside"):
        pack_spikes([[0.1, 1.5]], duration=1.0)
    with pytest.raises(ValueError, match="capacity"):
        pack_spikes([[0.1, 0.2], [0.3]], duration=1.0, capacity=2)
    with pytest.raises(ValueError, match="duration"):
        pack_spikes([[0.1]], duration=-1.0)
    with pytest.raises(ValueError, match="neurons"):
        pack_spikes([[[0.1], [0.2]], [[0.3]]], duration=1.0)


def test_validate_errors():
    good = pack_spikes([[0.1, 0.5], [0.3]], duration=1.0, capacity=4)
    bad = good.clone()
    bad[0, 0], bad[1, 0] = 0.4, 0.2
    with pytest.raises(ValueError, match="sorted"):
        validate_events(bad, 1.0, 2)
    bad = good.clone()
    bad[0, 0] = -0.1
    with pytest.raises(ValueError, match="outside"):
        validate_events(bad, 1.0, 2)
    bad = good.clone()
    bad[0, 1:] = torch.tensor([0.5, 0.5])
    with pytest.raises(ValueError, match="one-hot"):
        validate_events(bad, 1.0, 2)
    validate_events(bad, 1.0, 2, relaxed=True)
    bad[0, 1:] = torch.tensor([0.9, 0.5])
    with pytest.raises(ValueError, match="sum <= 1"):
        validate_events(bad, 1.0, 2, relaxed=True)
    with pytest.raises(ValueError, match="shape"):
        validate_events(good, 1.0, 3)
    bad = good.clone()
    bad[0, 1:] = 0  # a padding row before the end would hide spikes
    with pytest.raises(ValueError, match="padding"):
        validate_events(bad, 1.0, 2)
    bad = good.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        validate_events(bad, 1.0, 2)


def test_unpack_rejects_soft_marks():
    events = pack_spikes([[0.1], [0.3]], duration=1.0)
    events[0, 1:] = torch.tensor([0.7, 0.2])
    with pytest.raises(ValueError, match="soft"):
        unpack_spikes(events)


def test_select_neurons_and_trim_padding():
    from pyro_spikes import select_neurons, trim_padding

    events = pack_spikes([[[0.1, 0.6], [0.3], []], [[0.2], [], [0.5]]], duration=1.0,
                         capacity=5)
    sub = select_neurons(events, [1, 2], 1.0)
    assert sub.shape == (2, 5, 3)
    back = unpack_spikes(sub)
    assert back[0][0].tolist() == pytest.approx([0.3]) and back[0][1].numel() == 0
    assert back[1][0].numel() == 0 and back[1][1].tolist() == pytest.approx([0.5])
    validate_events(sub, 1.0, 2)  # padding moved to the end, times still sorted
    trimmed = trim_padding(sub, 1.0)
    assert trimmed.shape == (2, 1, 3) and torch.equal(trimmed, sub[:, :1])
    empty = pack_spikes([[], []], duration=1.0, capacity=3)
    assert trim_padding(empty, 1.0).shape == (1, 3)  # at least one row is kept


def test_spike_mask_is_true_on_rows_with_a_nonzero_mark():
    events = torch.tensor([[[0.5, 1, 0], [0.7, 0, 0.3], [1.0, 0, 0]],
                           [[0.2, 0, -0.0], [0.4, 0, 1], [1.0, 0, 0]]])
    assert spike_mask(events).tolist() == [[True, True, False], [False, True, False]]
    assert spike_mask(events[0, :, :2]).tolist() == [True, False, False]  # one neuron


def test_unpack_and_layout_conversions_refuse_what_they_cannot_read():
    from pyro_spikes.spikes import to_dense, to_index

    for bad in (torch.tensor([0.5, 1.0]), torch.zeros(3, 1)):  # 1-D; no mark column
        with pytest.raises(ValueError, match="^events must be a tensor of shape"):
            to_index(bad, 1.0)
    with pytest.raises(ValueError, match=r"^events must have shape .* got \(2,\)"):
        unpack_spikes(torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match=r"^events must have shape .* got list"):
        unpack_spikes([[0.5, 1.0, 0.0]])
    with pytest.raises(ValueError, match="exact one-hot"):  # two marks in one row
        unpack_spikes(torch.tensor([[0.5, 1.0, 1.0], [1.0, 0.0, 0.0]]))
    index = torch.tensor([[0.5, 1.0], [0.7, 3.0], [1.0, -1.0]])
    with pytest.raises(ValueError, match="^events"):  # neuron 3 of 3
        unpack_spikes(index, "index", num_neurons=3)
    # a batch of 2 sequences of 3 rows with 2 neurons: rows and neurons not confused
    dense = torch.tensor([[[0.125, 1, 0], [0.25, 0, 1], [0.375, 0, 1]],
                          [[0.5, 0, 1], [1.0, 0, 0], [1.0, 0, 0]]])
    got = unpack_spikes(dense)
    assert [[t.tolist() for t in seq] for seq in got] == \
        [[[0.125], [0.25, 0.375]], [[], [0.5]]]
    rows = to_index(dense, 1.0)
    assert rows.dtype == dense.dtype and rows[1].tolist() == [[0.5, 1], [1.0, -1], [1.0, -1]]
    assert torch.equal(to_dense(rows, 2), dense)


def test_validate_index_events():
    from pyro_spikes.spikes import validate_index_events

    good = torch.tensor([[0.5, 0.0], [2.0, 1.0], [3.0, -1.0]], dtype=torch.float64)
    validate_index_events(good, 3.0, 2)
    # entries whose sum overflows are still finite: accepted
    huge = torch.tensor([[1.7e308, 0.0], [1.7e308, -1.0]], dtype=torch.float64)
    validate_index_events(huge, 1.7e308, 1)
    for bad, match in (([[0.5, 0.0], [float("inf"), -1.0]], "NaN or infinite"),
                       ([[0.5, 0.0], [2.0, 1.0], [1.0, 1.0], [3.0, -1.0]], "sorted"),
                       ([[0.5, -1.0], [3.0, -1.0]], "padding rows")):
        with pytest.raises(ValueError, match=f"^events .*{match}"):
            validate_index_events(torch.tensor(bad, dtype=torch.float64), 3.0, 2)
