"""
The spike-train layout shared by every process in pyro_spikes.

A realisation on :math:`[0, T]` of a :math:`D`-neuron process is one float tensor
``events`` of shape ``batch_shape + (capacity, 1 + D)``:

* column 0 holds the event time :math:`t_i \\in [0, T]`;
* columns ``1..D`` hold the mark :math:`m_i`: the one-hot vector :math:`e_d` for an exact spike
  of neuron :math:`d`, a soft mark in the simplex :math:`\\{m \\ge 0, \\sum_d m_d \\le 1\\}` for a
  relaxed spike (:class:`~pyro_spikes.RelaxedPointProcess`), and the zero vector for an unused
  (padding) row.

Rows are sorted by time and padding rows carry time :math:`T`, so they sit at the end. Since
a zero mark adds nothing to a membrane potential, exact, relaxed and padded events all flow
through the same recursions.

**The index layout** (``layout="index"``) stores exact spikes in O(spikes) memory, whatever
:math:`D`: a float tensor of shape ``batch_shape + (capacity, 2)`` whose rows are
(time, neuron index), the index held as a float (exact up to :math:`2^{24}` neurons in float32,
:math:`2^{53}` in float64); a padding row is :math:`(T, -1)`. A dense row's mark is
:math:`e_d`, an index row's mark is :math:`d`: :func:`to_index` and :func:`to_dense` convert
losslessly between the two, :func:`validate_index_events` checks an index-layout tensor, and
:func:`pack_spikes` and :func:`unpack_spikes` take ``layout=``. Relaxed (soft) marks exist only
in the dense layout: a soft mark spreads one candidate over several neurons.
"""

import numbers

import torch

__all__ = [
    "LAYOUTS",
    "num_spikes",
    "one_hot_marks",
    "pack_spikes",
    "pad_rows",
    "select_neurons",
    "spike_mask",
    "to_dense",
    "to_index",
    "trim_padding",
    "unpack_spikes",
    "validate_events",
    "validate_index_events",
]

#: The two spike-train layouts, one-hot marks (``"dense"``) and neuron indices (``"index"``).
LAYOUTS = ("dense", "index")


def check_layout(layout):
    """``layout`` itself, or a :class:`ValueError` naming it."""
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return layout


def _is_train(obj):
    """True when ``obj`` is one neuron's spike times: a 1-D array or a list of numbers."""
    if isinstance(obj, (list, tuple)):
        return all(isinstance(x, numbers.Number) for x in obj)
    return getattr(obj, "ndim", 2) <= 1


def pack_spikes(times_per_neuron, duration, capacity=None, dtype=None, device=None,
                layout="dense"):
    """
    Pack per-neuron spike times into the ``events`` layout (``layout="dense"``, shape
    ``(capacity, 1 + D)``) or the index layout (``layout="index"``, shape ``(capacity, 2)``).

    :param times_per_neuron: one 1-D array of spike times per neuron (list of length ``D``),
        or, for a batch, a list of such lists (all with the same ``D``).
    :param float duration: the observation window :math:`T`; every time must lie in
        :math:`[0, T]`.
    :param int capacity: number of rows; defaults to the largest spike count in the batch.
        Raises :class:`ValueError` naming ``capacity`` if a train has more spikes.
    :param str layout: ``"dense"`` (one-hot marks) or ``"index"`` (neuron indices).
    :returns: tensor of shape ``(capacity, 1 + D)`` or ``(B, capacity, 1 + D)`` (dense), or
        ``(capacity, 2)`` or ``(B, capacity, 2)`` (index); simultaneous spikes in neuron order.
    :rtype: torch.Tensor
    """
    check_layout(layout)
    if dtype is None:
        dtype = torch.get_default_dtype()
    duration = float(duration)
    if not duration > 0:
        raise ValueError(f"duration must be positive, got {duration}")
    if len(times_per_neuron) == 0:
        raise ValueError("times_per_neuron must name at least one neuron")
    batched = not _is_train(times_per_neuron[0])
    batch = list(times_per_neuron) if batched else [times_per_neuron]
    num_neurons = len(batch[0])
    flat = []
    for b, trains in enumerate(batch):
        if len(trains) != num_neurons:
            raise ValueError(
                f"times_per_neuron: sequence {b} has {len(trains)} neurons, expected {num_neurons}"
            )
        times, labels = [], []
        for d, train in enumerate(trains):
            where = (f"times_per_neuron[{b}][{d}] (sequence {b}, neuron {d})" if batched
                     else f"times_per_neuron[{d}] (neuron {d})")
            t = torch.as_tensor(train, dtype=dtype).reshape(-1).cpu()
            if t.numel():
                if not torch.isfinite(t).all():
                    raise ValueError(f"{where} has non-finite spike times")
                if (t < 0).any() or (t > duration).any():
                    raise ValueError(
                        f"{where} has spike times outside [0, duration={duration}]"
                    )
            times.append(t)
            labels.append(torch.full((t.numel(),), d, dtype=torch.long))
        t = torch.cat(times)
        lab = torch.cat(labels)
        order = torch.sort(t, stable=True).indices
        flat.append((t[order], lab[order]))
    max_count = max(t.numel() for t, _ in flat)
    if capacity is None:
        capacity = max(max_count, 1)
    elif max_count > capacity:
        raise ValueError(
            f"capacity={capacity} is too small: a spike train has {max_count} spikes"
        )
    out = torch.full((len(batch), capacity, 2), -1.0, dtype=dtype)
    out[..., 0] = duration
    for b, (t, lab) in enumerate(flat):
        n = t.numel()
        out[b, :n, 0] = t
        out[b, :n, 1] = lab.to(dtype)
    if layout == "dense":
        out = to_dense(out, num_neurons)
    out = out.to(device=device)
    return out if batched else out[0]


def spike_mask(events):
    """Boolean mask of shape ``batch_shape + (capacity,)``: rows that carry a (nonzero) mark."""
    return (events[..., 1:] != 0).any(-1)


def num_spikes(events):
    """Total mark mass per neuron, shape ``batch_shape + (D,)`` (spike counts for exact marks)."""
    return events[..., 1:].sum(-2)


def unpack_spikes(events, layout="dense", num_neurons=None):
    """
    Inverse of :func:`pack_spikes` for exact (one-hot) marks.

    :param torch.Tensor events: tensor of shape ``batch_shape + (capacity, 1 + D)``, or
        ``batch_shape + (capacity, 2)`` with ``layout="index"``.
    :param str layout: ``"dense"`` or ``"index"``.
    :param int num_neurons: :math:`D` of an index-layout input (required there: silent
        neurons at the top have no row to count them).
    :returns: for an unbatched input a list of ``D`` 1-D tensors of spike times; otherwise
        nested lists following ``batch_shape``.
    """
    if check_layout(layout) == "index":
        if num_neurons is None:
            raise ValueError("unpack_spikes with layout='index' needs num_neurons (D)")
        labels = _index_labels(events, _check_num_neurons(num_neurons), "events")
        if events.dim() > 2:
            return [unpack_spikes(e, "index", num_neurons) for e in events]
        return [events[labels == d, 0] for d in range(int(num_neurons))]
    if not isinstance(events, torch.Tensor) or events.dim() < 2:
        got = tuple(events.shape) if isinstance(events, torch.Tensor) else type(events).__name__
        raise ValueError(f"events must have shape (..., capacity, 1 + D), got {got}")
    marks = events[..., 1:]
    hard = (marks == 0) | (marks == 1)
    if not bool(hard.all()) or bool((marks.sum(-1) > 1).any()):
        raise ValueError("unpack_spikes needs exact one-hot marks; got soft marks in events")
    if events.dim() > 2:
        return [unpack_spikes(e) for e in events]
    num_neurons = marks.shape[-1]
    return [events[marks[:, d] == 1, 0] for d in range(num_neurons)]


def validate_events(events, duration, num_neurons, relaxed=False, name="events"):
    """
    Check that ``events`` follows the layout, raising :class:`ValueError` naming the problem.

    Checks: shape ``(..., capacity, 1 + num_neurons)``, finite times in :math:`[0, T]`, sorted
    times, marks one-hot or zero (exact) or in the sub-simplex (``relaxed=True``).
    """
    if not isinstance(events, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(events).__name__}")
    if events.dim() < 2 or events.shape[-1] != 1 + num_neurons:
        raise ValueError(
            f"{name} must have shape (..., capacity, 1 + D) with D={num_neurons}, "
            f"got {tuple(events.shape)}"
        )
    times = events[..., 0]
    marks = events[..., 1:]
    if events.numel() == 0:
        return
    # one reduction first: a sum of in-range entries is finite, so the elementwise check runs
    # only when something is off (NaN and infinities propagate into the sum)
    if not bool(torch.isfinite(events.sum())) and not bool(torch.isfinite(events).all()):
        raise ValueError(f"{name} contains NaN or infinite entries")
    t_min, t_max = times.aminmax()
    if bool(t_min < 0) or bool(t_max > duration):
        raise ValueError(f"{name} has spike times outside [0, duration={float(duration)}]")
    if bool((times[..., 1:] < times[..., :-1]).any()):
        raise ValueError(f"{name} spike times must be sorted in increasing order along dim -2")
    row_sum = marks.sum(-1)
    if relaxed:
        tol = 1e-5 if events.dtype != torch.float64 else 1e-10
        if bool(marks.min() < 0) or bool(row_sum.max() > 1 + tol):
            raise ValueError(f"{name} marks must be nonnegative with sum <= 1 (soft marks)")
    else:
        # m (1 - m) vanishes exactly at m = 0 and m = 1 only
        is_binary = not bool((marks * (1 - marks)).any())
        if not is_binary or bool(row_sum.max() > 1):
            raise ValueError(
                f"{name} marks must be one-hot (a spike) or all-zero (padding) for an exact process"
            )
        # padding rows must sit at the end (time T) so no spike is hidden behind them
        if bool(((row_sum == 0) & (times < duration)).any()):
            raise ValueError(
                f"{name} has padding rows (zero marks) at times before duration={float(duration)}"
            )


def select_neurons(events, neurons, duration):
    """
    The sub-train of the given neurons: their mark columns, with rows of other neurons turned
    into padding (time ``duration``, zero mark) and moved to the end, order kept.

    :param torch.Tensor events: ``batch + (capacity, 1 + D)``.
    :param neurons: distinct indices in ``[0, D)`` of the neurons to keep (else
        :class:`ValueError`).
    :param float duration: the window :math:`T`.
    :returns: tensor ``batch + (capacity, 1 + len(neurons))``.
    """
    if not isinstance(events, torch.Tensor) or events.dim() < 2 or events.shape[-1] < 2:
        got = tuple(events.shape) if isinstance(events, torch.Tensor) else type(events).__name__
        raise ValueError(f"events must have shape (..., capacity, 1 + D) with D >= 1, got {got}")
    num_neurons = events.shape[-1] - 1
    try:
        idx = torch.as_tensor(neurons, device=events.device).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"neurons must be a sequence of integer indices, got {neurons!r}") from None
    if idx.numel() and (idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool):
        raise TypeError(f"neurons must be integer indices, got dtype {idx.dtype}")
    idx = idx.long()
    if idx.numel() and bool(((idx < 0) | (idx >= num_neurons)).any()):
        raise ValueError(f"neurons must be indices in [0, {num_neurons}), got {idx.tolist()}")
    if idx.unique().numel() != idx.numel():
        raise ValueError(f"neurons must not repeat, got {idx.tolist()}")
    marks = events[..., 1:].index_select(-1, idx)
    keep = (marks != 0).any(-1)
    times = torch.where(keep, events[..., 0], torch.full_like(events[..., 0], float(duration)))
    order = torch.sort((~keep).to(torch.int8), dim=-1, stable=True).indices
    times = times.gather(-1, order)
    marks = marks.gather(-2, order.unsqueeze(-1).expand(marks.shape))
    return torch.cat([times.unsqueeze(-1), marks], -1)


def trim_padding(events, duration, layout="dense"):
    """
    Drop the trailing rows that are padding (time ``duration`` and a zero mark, or index
    :math:`-1` in the index layout) in every realisation of the batch, keeping at least one
    row. Nothing else changes.
    """
    if check_layout(layout) == "index":
        pad = (events[..., 1] < 0) & (events[..., 0] >= duration)
    else:
        pad = (events[..., 1:] == 0).all(-1) & (events[..., 0] >= duration)
    real = ~pad.reshape(-1, pad.shape[-1]).all(0)
    idx = real.nonzero()
    keep = int(idx.max()) + 1 if idx.numel() else 1
    return events[..., :keep, :]


def pad_rows(events, rows, duration, layout="dense"):
    """
    Append padding rows (time ``duration`` and a zero mark, or index :math:`-1` in the index
    layout) to ``events`` until it has ``rows`` rows: the inverse of :func:`trim_padding`, for
    stacking realisations of different lengths (e.g. posterior predictive draws). A value with
    more than ``rows`` rows raises a :class:`ValueError` naming ``rows``.
    """
    have = events.shape[-2]
    if rows < have:
        raise ValueError(f"rows={rows} is fewer than the {have} rows events already has")
    if rows == have:
        return events
    pad = events.new_zeros(events.shape[:-2] + (rows - have, events.shape[-1]))
    pad[..., 0] = float(duration)
    if check_layout(layout) == "index":
        pad[..., 1] = -1.0
    return torch.cat([events, pad], -2)


def _check_num_neurons(num_neurons):
    if isinstance(num_neurons, bool) or not isinstance(num_neurons, numbers.Integral) \
            or num_neurons < 1:
        raise ValueError(f"num_neurons must be an integer >= 1, got {num_neurons!r}")
    return int(num_neurons)


def _check_index_shape(events, name):
    if not isinstance(events, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(events).__name__}")
    if not events.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (time, index), got {events.dtype}")
    if events.dim() < 2 or events.shape[-1] != 2:
        raise ValueError(
            f"{name} must have shape (..., capacity, 2) (time, neuron index) in the index "
            f"layout, got {tuple(events.shape)}"
        )


# Problems of index-layout events, as bit flags: the compiled one-pass scan
# (pyro_spikes.distributions.kernels.index_rows) reports the same ones, and
# raise_index_problems turns either into the same error.
NONFINITE_TIME, NONFINITE_LABEL, TIME_OUTSIDE, UNSORTED, BAD_LABEL, EARLY_PADDING = (
    1 << i for i in range(6))


def raise_index_problems(flags, name, duration, num_neurons, labels_only=False):
    """
    Raise the :class:`ValueError` of the first problem in ``flags`` (bit flags above), in the
    order :func:`validate_index_events` checks them; with ``labels_only``, only the neuron
    indices' problems count (the check that every use of the labels needs).
    """
    if not labels_only:
        if flags & (NONFINITE_TIME | NONFINITE_LABEL):
            raise ValueError(f"{name} contains NaN or infinite entries")
        if flags & TIME_OUTSIDE:
            raise ValueError(
                f"{name} has spike times outside [0, duration={float(duration)}]")
        if flags & UNSORTED:
            raise ValueError(
                f"{name} spike times must be sorted in increasing order along dim -2")
    if flags & NONFINITE_LABEL:
        raise ValueError(f"{name} contains NaN or infinite neuron indices (column 1)")
    if flags & BAD_LABEL:
        raise ValueError(
            f"{name} neuron indices (column 1) must be integers in [0, {num_neurons}) or -1 "
            "(padding)"
        )
    if not labels_only and flags & EARLY_PADDING:
        raise ValueError(
            f"{name} has padding rows (index -1) at times before duration={float(duration)}"
        )


def _index_labels(events, num_neurons, name):
    """The neuron indices of index-layout ``events`` as int64 (-1 = padding), checked."""
    _check_index_shape(events, name)
    labels = events[..., 1]
    if labels.numel():
        if not bool(torch.isfinite(labels).all()):
            raise_index_problems(NONFINITE_LABEL, name, None, num_neurons, labels_only=True)
        low, high = labels.aminmax()
        if bool(low < -1) or bool(high >= num_neurons) or bool((labels != labels.round()).any()):
            raise_index_problems(BAD_LABEL, name, None, num_neurons, labels_only=True)
    return labels.long()


def validate_index_events(events, duration, num_neurons, name="events"):
    """
    Check that ``events`` follows the index layout, raising :class:`ValueError` naming the
    problem: shape ``(..., capacity, 2)``, finite times in :math:`[0, T]`, sorted, neuron
    indices integers in :math:`[0, D)` or :math:`-1` (padding, at time :math:`T` only).
    """
    _check_index_shape(events, name)
    if events.numel() == 0:
        return

    def fail(flag):
        raise_index_problems(flag, name, duration, num_neurons)

    # one reduction first: a sum of in-range entries is finite (see validate_events)
    if not bool(torch.isfinite(events.sum())) and not bool(torch.isfinite(events).all()):
        fail(NONFINITE_TIME)
    times = events[..., 0]
    t_min, t_max = times.aminmax()
    if bool(t_min < 0) or bool(t_max > duration):
        fail(TIME_OUTSIDE)
    if bool((times[..., 1:] < times[..., :-1]).any()):
        fail(UNSORTED)
    labels = _index_labels(events, num_neurons, name)
    if bool(((labels < 0) & (times < duration)).any()):
        fail(EARLY_PADDING)


def _exact_marks(marks):
    """Whether every mark ``(..., D)`` is one-hot or zero, i.e. has a neuron index (or none)."""
    return not (bool((marks * (1 - marks)).any()) or bool((marks.sum(-1) > 1).any()))


def _mark_labels(marks):
    """The neuron index of every exact mark ``(..., D)``, int64 ``(...)``, -1 for a zero mark."""
    spike = (marks != 0).any(-1)
    return torch.where(spike, marks.argmax(-1), torch.full_like(spike, -1, dtype=torch.long))


def one_hot_marks(labels, num_neurons, like):
    """
    Dense marks ``(..., R, D)`` in ``like``'s dtype and device of int64 labels ``(..., R)``
    (-1: a zero mark): the inverse of the index layout's marks.
    """
    marks = like.new_zeros(labels.shape + (num_neurons + 1,))
    idx = torch.where(labels < 0, torch.full_like(labels, num_neurons), labels)
    return marks.scatter_(-1, idx.unsqueeze(-1), 1.0)[..., :num_neurons]


def to_index(events, duration):
    """
    The index layout ``batch + (capacity, 2)`` of dense exact ``events``
    ``batch + (capacity, 1 + D)``: rows (time, neuron index), padding :math:`(T, -1)`.
    Lossless: :func:`to_dense` inverts it.
    """
    if not isinstance(events, torch.Tensor) or events.dim() < 2 or events.shape[-1] < 2:
        raise ValueError(
            "events must be a tensor of shape (..., capacity, 1 + D) in the dense layout, got "
            f"{tuple(getattr(events, 'shape', ()))}"
        )
    marks = events[..., 1:]
    if not _exact_marks(marks):
        raise ValueError("to_index needs exact one-hot (or zero) marks in events; a soft "
                         "(relaxed) mark has no neuron index")
    labels = _mark_labels(marks)
    times = events[..., 0]
    times = torch.where(labels >= 0, times, torch.full_like(times, float(duration)))
    return torch.stack([times, labels], -1)  # the labels promote to the times' dtype


def to_dense(events, num_neurons):
    """
    The dense layout ``batch + (capacity, 1 + D)`` of index-layout ``events``
    ``batch + (capacity, 2)`` (padding rows get a zero mark). Inverse of :func:`to_index`.
    """
    num_neurons = _check_num_neurons(num_neurons)
    labels = _index_labels(events, num_neurons, "events")
    return torch.cat([events[..., :1], one_hot_marks(labels, num_neurons, events)], -1)
