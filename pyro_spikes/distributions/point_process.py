"""
Base class of the multivariate temporal point processes in pyro_spikes.
"""

import contextlib
import math

import torch
import torch.utils.checkpoint
from pyro.distributions import TorchDistribution
from pyro.distributions.util import broadcast_shape

from pyro_spikes.distributions import kernels
from pyro_spikes.distributions._checks import check_allocation
from pyro_spikes.distributions.constraints import index_spike_trains, spike_trains
from pyro_spikes.distributions.unavailable import NoMoments
from pyro_spikes.spikes import (
    check_layout,
    one_hot_marks,
    raise_index_problems,
    trim_padding,
    validate_events,
    validate_index_events,
)

__all__ = ["DEFAULT_EVENT_LIMIT", "PointProcess", "default_capacity", "event_limit"]


def as_param(x, like=None):
    """``x`` as a tensor; numbers take ``like``'s dtype and device (default dtype otherwise)."""
    if isinstance(x, torch.Tensor):
        return x
    if like is not None:
        return torch.as_tensor(x, dtype=like.dtype, device=like.device)
    return torch.as_tensor(x, dtype=torch.get_default_dtype())


def check_duration(duration):
    """``duration`` as a float, or a :class:`ValueError` naming it."""
    try:
        duration = float(duration)
    except (TypeError, ValueError):
        raise ValueError(f"duration must be a positive finite number, got {duration!r}") from None
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"duration must be a positive finite number, got {duration}")
    return duration


def uniform_order_statistics(counts, width, duration, like, name="rate"):
    """
    For each row ``n``, ``counts[n]`` sorted i.i.d. Uniform(0, T) times in the first columns of
    a ``(N, width)`` tensor (the rest hold ``T``), and the mask of those columns: the event
    times of a homogeneous Poisson process given its count. The uniforms are drawn in float64
    and rounded once to ``like``'s dtype (float32 uniforms are multiples of :math:`2^{-24}`,
    which would put many of a long train's events at the same time). A width that cannot fit in
    memory raises a :class:`ValueError` naming ``name``.
    """
    check_allocation(name, float(counts.numel()) * width * 3, torch.float64, like.device,
                     f"the {width} event times per sequence implied by {name} * duration")
    valid = torch.arange(width, device=like.device) < counts.unsqueeze(-1)
    times = torch.rand(valid.shape, dtype=torch.float64, device=like.device) * duration
    times = torch.where(valid, times, torch.full_like(times, duration)).sort(-1).values
    return times.to(like.dtype), valid


def mark_rows(marks, table):
    """
    The rows' contributions :math:`\\sum_s m_{r,s}\\, \\mathrm{table}_{s,:}`: a product for
    dense marks ``(..., R, S)``, a gather of table rows for labels ``(..., R)`` (int64, -1: no
    mark, a zero row). ``table`` is ``(..., S, F)``; the result ``(..., R, F)``. This is how
    both layouts share one set of recursions: only the rows' inputs are computed differently.
    """
    if marks.dtype != torch.long:
        return torch.matmul(marks, table)
    s, f = table.shape[-2:]
    table = torch.cat([table, table.new_zeros(table.shape[:-2] + (1, f))], -2)
    idx = torch.where(marks < 0, torch.full_like(marks, s), marks)
    batch = torch.Size(broadcast_shape(table.shape[:-2], idx.shape[:-1]))
    table = table.expand(batch + table.shape[-2:])
    idx = idx.expand(batch + idx.shape[-1:])
    return table.gather(-2, idx.unsqueeze(-1).expand(idx.shape + (f,)))


def mark_sum(marks, values):
    """
    :math:`\\sum_r m_{r,d}\\, v_{r,d}`, shape ``(..., D)``, for dense marks ``(..., R, D)``
    or labels ``(..., R)`` (int64, -1: no mark) and ``values`` ``(..., R, D)``. An entry without
    a mark counts zero even where :math:`v = -\\infty` (a zero rate away from the spikes).
    """
    if marks.dtype != torch.long:
        keep = (marks > 0) | torch.isfinite(values)
        return torch.where(keep, marks * values, torch.zeros_like(values)).sum(-2)
    d = values.shape[-1]
    labels = marks.expand(values.shape[:-1])
    picked = values.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    # unmarked rows land in a spare entry past the end, which is dropped
    idx = torch.where(labels < 0, torch.full_like(labels, d), labels)
    # scatter_add sums in sequence: in float64 for narrower floats (a float32 running sum of
    # 1e5 terms loses ~1e-5 relative), except where the device has no float64 (MPS)
    wide = (torch.float64 if values.dtype in (torch.float32, torch.float16, torch.bfloat16)
            and values.device.type != "mps" else values.dtype)
    out = values.new_zeros(values.shape[:-2] + (d + 1,), dtype=wide)
    return out.scatter_add(-1, idx, picked.to(wide))[..., :d].to(values.dtype)


#: elements of working memory per chunk when a log-likelihood streams through long sequences
CHUNK_ELEMENTS = 1 << 21
#: fewest rows of a chunk (the per-chunk overhead then stays small next to its work)
MIN_CHUNK_ROWS = 64


def chunk_rows(per_row):
    """Rows per chunk when a row costs ``per_row`` elements of working memory."""
    return max(MIN_CHUNK_ROWS, CHUNK_ELEMENTS // max(int(per_row), 1))


def stream_terms(times, marks, size, chunk_terms, checkpoint=False):
    """
    Sum the log-likelihood terms of sorted rows chunk by chunk, carrying the history's state
    from one chunk to the next, so that the working memory is that of one chunk.

    Chunk :math:`k` holds the rows ``[kC, (k+1)C)`` and, to close its last interval, the time
    of row :math:`(k+1)C` as an extra row without a mark (that row's own mark is the next
    chunk's). ``chunk_terms(t, m, state)`` returns the chunk's ``(mark_sum, integral, state)``,
    with ``state`` the history's summary at the chunk's first row (``None`` at the first
    chunk) and after its last. With ``checkpoint`` (and autograd recording) every chunk runs
    under ``torch.utils.checkpoint.checkpoint``, so the backward pass recomputes one chunk
    at a time: memory O(rows + chunks x state + one chunk) instead of O(rows x state).

    :param times: ``batch + (R,)``; ``marks``: dense ``batch + (R, D)`` or labels
        ``batch + (R,)`` (int64, -1: no mark); ``size``: rows per chunk :math:`C`
        (``None``: one chunk).
    :returns: ``(mark_sum, integral)``, the sums over all chunks.
    """
    num_rows = times.shape[-1]
    if size is None or size >= num_rows:
        mark_total, integral, _ = chunk_terms(times, marks, None)
        return mark_total, integral
    dim, none = (-1, -1) if marks.dtype == torch.long else (-2, 0)  # the row axis, no mark
    checkpoint = checkpoint and torch.is_grad_enabled()
    if checkpoint:
        # the backward pass recomputes the chunks wherever it runs: under the loops (compiled
        # or PyTorch) of this forward pass, not those of the caller's later context
        chunk_terms = _in_loops_of_now(chunk_terms)
    state = mark_total = integral = None
    for start in range(0, num_rows, size):
        stop = min(start + size, num_rows)
        t = times[..., start:stop + 1]  # with the closing row when there is a next chunk
        m = marks.narrow(dim, start, stop - start)
        if stop < num_rows:
            closing = list(m.shape)
            closing[dim] = 1
            m = torch.cat([m, m.new_full(closing, none)], dim)
        if checkpoint:
            ms, it, state = torch.utils.checkpoint.checkpoint(chunk_terms, t, m, state,
                                                              use_reentrant=False)
        else:
            ms, it, state = chunk_terms(t, m, state)
        mark_total = ms if mark_total is None else mark_total + ms
        integral = it if integral is None else integral + it
    return mark_total, integral


def _in_loops_of_now(fn):
    """``fn`` run under the compiled-loops setting (:func:`kernels.compiled_loops`) in force
    now, wherever it is called later."""
    enabled = kernels.loops_enabled()

    def run(*args):
        with kernels.compiled_loops(enabled):
            return fn(*args)

    return run


class Stream:
    """
    The candidates of one thinning run, flattened over the batch: times ``(N, K)``, the mask of
    real candidates, and (for a subnetwork with context) the merge of candidates and context
    rows and the context's share of the potentials.
    """

    def __init__(self, shape, cand, times, is_cand):
        self.shape, self.cand = shape, cand
        self.times, self.is_cand = times, is_cand
        self.merged_times = self.perm = self.from_cand = self.base = None


_CAPACITY_STACK = []
_LIMIT_STACK = []

#: The most events one realisation may have when a process samples without a capacity
#: (see :func:`event_limit`).
DEFAULT_EVENT_LIMIT = 10_000_000


@contextlib.contextmanager
def _pushed(stack, value, name):
    """Push the positive integer ``value`` on ``stack`` for the context (``name`` in errors)."""
    value = int(value)
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    stack.append(value)
    try:
        yield value
    finally:
        stack.pop()


def default_capacity(capacity):
    """
    Within this context, processes built without ``capacity`` sample exactly ``capacity`` rows
    (a realisation with more events raises a :class:`ValueError` naming it) instead of as many
    as they need (see :class:`PointProcess`).

    A fixed row count makes every draw the same shape whatever its parameters, which
    :class:`pyro.infer.Predictive` needs (it stacks the draws and reshapes them to the shape of
    one prior draw)::

        with default_capacity(500):
            samples = pyro.infer.Predictive(model, guide=guide, num_samples=100)(num_sequences)

    :class:`pyro_spikes.infer.Predictive` needs no capacity: it pads the draws to one row
    count.

    :param int capacity: rows of every sample drawn in the context.
    """
    return _pushed(_CAPACITY_STACK, capacity, "capacity")


def event_limit(limit):
    """
    Within this context, a process that samples without a capacity stops a realisation that
    reaches more than ``limit`` events with a :class:`ValueError` naming the limit (default
    :data:`~pyro_spikes.distributions.point_process.DEFAULT_EVENT_LIMIT`, ten million). An
    explosive process (a Hawkes process whose branching matrix has spectral radius at least
    one) has no bound on its count: the limit is what ends its draw.

    :param int limit: the most events of one realisation.
    """
    return _pushed(_LIMIT_STACK, limit, "limit")


def current_event_limit():
    """The innermost :func:`event_limit` in force, else :data:`DEFAULT_EVENT_LIMIT`."""
    return _LIMIT_STACK[-1] if _LIMIT_STACK else DEFAULT_EVENT_LIMIT


def _prior_draw_note():
    """
    A sentence for errors raised while Pyro's initialisation (``init_to_sample``, as run by
    :class:`pyro.infer.Predictive` to guess the plate nesting) draws a site from the prior.
    """
    from pyro.infer.autoguide.initialization import InitMessenger
    from pyro.poutine.runtime import _PYRO_STACK

    if not any(isinstance(m, InitMessenger) for m in _PYRO_STACK):
        return ""
    return (
        ". This draw came from the prior: pyro.infer.Predictive first runs the model once with "
        "every latent site (the point process's parameters too) drawn from the prior "
        "(init_to_sample), to guess the plate nesting and the site shapes; "
        "pyro_spikes.infer.Predictive does not, and pads draws of different lengths"
    )


class PointProcess(NoMoments, TorchDistribution):
    """
    A :math:`D`-variate temporal point process on :math:`[0, T]` whose values are spike trains in
    the ``events`` layout (see :mod:`pyro_spikes.spikes`), ``event_shape = (capacity, 1 + D)``.

    Subclasses describe the conditional intensity :math:`\\lambda_d(t \\mid \\mathcal H_t)` through
    ``_row_terms``; this class turns it into the log-likelihood

    .. math::

        \\log p(J) = \\sum_i \\sum_d m_{i,d} \\log \\lambda_d(t_i^-)
                    - \\sum_d \\int_0^T \\lambda_d(t)\\, dt,

    (for one-hot marks :math:`m_i = e_{d_i}` this is the usual point-process likelihood; soft
    marks in the sub-simplex enter linearly, both here and in the history, so log_prob accepts
    them and is differentiable in them), the compensator path
    :math:`\\Lambda_d(t) = \\int_0^t \\lambda_d` and the intensity path, by evaluating the
    intensity at the sorted union of the event rows and auxiliary zero-mark rows (the origin,
    :math:`T`, query times and, for processes that integrate numerically, a grid of spacing at
    most ``_max_step``). Zero-mark rows leave the history unchanged.

    **Capacity.** A realisation is padded to a number of rows, ``capacity``, only so that
    samples stack into one tensor. The number of rows says nothing about a realisation: scoring
    (:meth:`log_prob`, :meth:`intensity`, :meth:`compensator`) accepts values with any number of
    rows, so a model that observes data needs no ``capacity``. With a ``capacity`` (the
    argument, or :func:`default_capacity` in force) every sample has exactly that many rows and
    a realisation with more events raises a :class:`ValueError` naming it. Without one, a
    sample has the default capacity's rows (a count the process exceeds with negligible
    probability, from subclass ``_default_capacity``, computed when first needed, i.e. when
    sampling or reading ``event_shape``), or as many as its longest realisation needs when one
    exceeds it, or when the process has no default (an explosive Hawkes process, whose
    ``event_shape`` is then an error): the sampler's buffer grows until the draw ends or a
    realisation reaches the event limit (:func:`event_limit`, ten million events by default),
    which raises a :class:`ValueError` naming the limit.

    Samples of processes with different parameters may thus have different row counts and do
    not stack: :class:`pyro_spikes.infer.Predictive` pads them to one row count; with
    :class:`pyro.infer.Predictive` run under :func:`default_capacity` (or pass the process a
    fixed ``capacity``).

    :param torch.Size batch_shape: batch shape of the parameters.
    :param int num_neurons: number of neurons (mark dimensions) :math:`D`.
    :param float duration: observation window :math:`T`.
    :param int capacity: number of rows of a sample (default: ``_default_capacity``,
        computed when first needed, or more rows where a realisation needs them).
    :param str layout: the layout of samples and of the values :meth:`log_prob` takes (see
        :mod:`pyro_spikes.spikes`): ``"dense"`` (``event_shape = (capacity, 1 + D)``, one-hot
        or soft marks) or ``"index"`` (``event_shape = (capacity, 2)``, rows (time, neuron
        index), padding :math:`(T, -1)`: O(spikes) memory whatever :math:`D`). The likelihood
        runs the same recursions for both: a row's input to the history is a product with its
        mark in the dense layout and a gather by its index in the index layout
        (:func:`mark_rows`, :func:`mark_sum`), so the two agree to rounding.
    """

    #: the arguments that set the number of events, for the event limit's error message
    _count_args = "the parameters and duration"

    #: the names the caller knows the arguments by, for error messages (e.g. a model that
    #: passes its ``hidden_capacity`` as ``capacity``: ``{"capacity": "hidden_capacity"}``)
    _arg_names = {}

    def __init__(self, batch_shape, num_neurons, duration, capacity=None, validate_args=None,
                 layout="dense"):
        self.layout = check_layout(layout)
        duration = check_duration(duration)
        if capacity is not None:
            capacity = int(capacity)
            if capacity < 1:
                raise ValueError(f"capacity must be a positive integer, got {capacity}")
        if int(num_neurons) < 1:
            raise ValueError(f"the process needs at least one neuron (D >= 1), got D={num_neurons}")
        self.duration = duration
        self.num_neurons = int(num_neurons)
        self._capacity = capacity
        super().__init__(batch_shape, torch.Size(), validate_args)  # see _event_shape

    # ------------------------------------------------------------------ capacity
    @property
    def capacity(self):
        """
        The number of rows of a sample, an int. It is the ``capacity`` argument, else the
        innermost :func:`default_capacity` in force, else the process's default (cached): a
        count its realisations exceed with negligible probability, or more rows when one does
        (see the class docstring).
        """
        fixed = self._fixed_capacity()
        if fixed is not None:
            return fixed
        if getattr(self, "_computed_capacity", None) is None:
            self._computed_capacity = int(self._default_capacity())
        return self._computed_capacity

    def _fixed_capacity(self):
        """The ``capacity`` argument, else the innermost :func:`default_capacity`, else None."""
        if self._capacity is not None:
            return self._capacity
        if _CAPACITY_STACK:
            return _CAPACITY_STACK[-1]
        return None

    def _row_bound(self):
        """The most rows a sample may have: a fixed capacity, else the event limit."""
        fixed = self._fixed_capacity()
        return fixed if fixed is not None else current_event_limit()

    def _sample_rows(self, most):
        """
        Rows of a sample whose longest realisation has ``most`` events: a fixed capacity (see
        :meth:`_check_capacity`), else the default capacity, or ``most`` when a realisation
        exceeds it or the process has no default (an explosive Hawkes process).
        """
        fixed = self._fixed_capacity()
        if fixed is not None:
            return fixed
        try:
            default = self.capacity
        except ValueError:  # no default (explosive): as many rows as the draw needs
            default = 1
        return max(default, most, 1)

    def _sample_batch(self, sample_shape):
        """``sample_shape + batch_shape``: the batch of a sample (needs no capacity)."""
        return torch.Size(sample_shape) + self.batch_shape

    def _default_capacity(self):
        """A number of rows that a realisation exceeds with negligible probability."""
        raise ValueError(f"{type(self).__name__} has no default capacity: pass capacity")

    @property
    def _event_shape(self):
        # computed on demand, so that scoring never needs the capacity
        return torch.Size((self.capacity, self._width))

    @property
    def _width(self):
        """Columns of a value: ``1 + D`` (dense) or 2 (index)."""
        return 2 if self.layout == "index" else 1 + self.num_neurons

    @_event_shape.setter
    def _event_shape(self, value):
        pass  # set by Distribution.__init__; the property above is the truth

    @property
    def event_dim(self):
        return 2

    # ------------------------------------------------------------------ validation
    @property
    def support(self):
        if self.layout == "index":
            return index_spike_trains(self.duration, self.num_neurons)
        return spike_trains(self.duration, self.num_neurons)

    def _validate_sample(self, value):
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"value must be a torch.Tensor, got {type(value).__name__}")
        # any number of rows: padding rows carry no information (see the class docstring)
        if self.layout == "index":
            if kernels.compiled_for(value):  # the same checks in one compiled pass
                flags = kernels.index_rows(value, self.duration, self.num_neurons,
                                           labels=False)[0]
                raise_index_problems(flags, "value", self.duration, self.num_neurons)
            else:
                validate_index_events(value, self.duration, self.num_neurons, name="value")
        else:
            # log_prob extends linearly to soft marks (relaxed histories): the sub-simplex
            validate_events(value, self.duration, self.num_neurons, relaxed=True, name="value")
        try:
            broadcast_shape(value.shape[:-2], self.batch_shape)
        except ValueError:
            raise ValueError(
                f"value batch shape {tuple(value.shape[:-2])} does not broadcast with the "
                f"distribution's batch_shape {tuple(self.batch_shape)}"
            ) from None

    def _check_value(self, value, name="value"):
        """
        The structure of a value, checked whatever ``validate_args`` says (O(1), unlike the
        data checks of :meth:`_validate_sample`): a floating or integer tensor of shape
        ``(..., rows, 1 + D)`` whose batch shape broadcasts with the distribution's.
        """
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must be a real tensor, got dtype {value.dtype}")
        if value.dim() < 2 or value.shape[-1] != self._width or value.shape[-2] < 1:
            if self.layout == "index":
                hint = ""
                if value.dim() >= 2 and value.shape[-1] == 1 + self.num_neurons:
                    hint = (": this is the dense layout; convert it with "
                            "pyro_spikes.to_index(value, duration), or build the distribution "
                            "with layout='dense'")
                raise ValueError(
                    f"{name} must have shape (..., capacity, 2) (layout='index': rows of time "
                    f"and neuron index) with at least one row, got {tuple(value.shape)}{hint}"
                )
            hint = ""
            if value.dim() >= 2 and value.shape[-1] == 2:
                hint = (" (rows of time and neuron index are the index layout: build the "
                        "distribution with layout='index')")
            raise ValueError(
                f"{name} must have shape (..., capacity, 1 + D) with D={self.num_neurons} and "
                f"at least one row, got {tuple(value.shape)}{hint}"
            )
        try:
            broadcast_shape(value.shape[:-2], self.batch_shape)
        except ValueError:
            raise ValueError(
                f"{name} batch shape {tuple(value.shape[:-2])} does not broadcast with the "
                f"distribution's batch_shape {tuple(self.batch_shape)}"
            ) from None

    def _check_capacity(self, counts):
        """
        Raise if any realisation needs more rows than a fixed capacity allows or, without one,
        has more events than the event limit (:func:`event_limit`).
        """
        if not counts.numel():
            return
        most = int(counts.max())
        fixed = self._fixed_capacity()
        if fixed is not None:
            if most > fixed:
                name = self._arg_names.get("capacity", "capacity")
                raise ValueError(
                    f"{name}={fixed} exceeded: a realisation has {most} events; pass a larger "
                    f"{name} (or, for Predictive, run it under a larger "
                    "pyro_spikes.distributions.default_capacity(n), or use "
                    f"pyro_spikes.infer.Predictive, which needs none){_prior_draw_note()}"
                )
            return
        limit = current_event_limit()
        if most > limit:
            raise ValueError(
                f"event limit {limit} exceeded: a realisation of this {type(self).__name__} "
                f"reached {most} events (its count is set by {self._count_args}); raise the "
                "limit with pyro_spikes.distributions.event_limit(n) if the draw is meant to "
                f"be this long{_prior_draw_note()}"
            )

    def _check_room(self, n, like, rows):
        """Raise before sampling when ``n`` realisations of ``rows`` rows cannot fit in memory
        (e.g. a default capacity derived from a huge rate)."""
        check_allocation(self._arg_names.get("capacity", "capacity"),
                         float(n) * rows * self._width, like.dtype,
                         like.device, f"{n} realisations of {rows} rows")

    def rsample(self, sample_shape=torch.Size()):
        raise NotImplementedError(
            f"{type(self).__name__}.rsample: samples of a point process are not "
            "reparameterisable (the events appear and vanish as the parameters move); for "
            "path-wise gradients sample RelaxedPointProcess(process, temperature).rsample() "
            "(a SpikingPointProcess, or a PoissonProcess with upper_bound), otherwise use "
            ".sample() with a score-function estimator (Pyro's ELBOs do this for "
            "non-reparameterised sites)"
        )

    # ------------------------------------------------------------------ subclass hooks
    def _row_terms(self, times, marks):
        """
        :param times: sorted row times, shape ``batch + (R,)``, first row at 0 and last at T.
        :param marks: row marks, shape ``batch + (R, D)``.
        :returns: ``(log_rate, integral)``: :math:`\\log\\lambda_d(t_r^-)` of shape
            ``batch + (R, D)`` and :math:`\\int_{t_r}^{t_{r+1}} \\lambda_d` of shape
            ``batch + (R - 1, D)``.
        """
        raise NotImplementedError

    def _max_step(self):
        """Largest spacing of auxiliary rows, or ``None`` when integrals are exact."""
        return None

    # ------------------------------------------------------------------ row machinery
    def _params_like(self):
        """A tensor whose dtype and device the process follows."""
        raise NotImplementedError

    def _embed(self, marks):
        """Map value marks ``(..., D)`` to the marks of the rows the intensity is computed on."""
        return marks

    def _embed_labels(self, labels):
        """Map value labels ``(...,)`` (-1: none) to labels of the intensity's neurons."""
        return labels

    def _value_marks(self, events):
        """
        The marks of the value's rows on the intensity's neurons: dense ``(..., C, D)``, or
        in the index layout int64 labels ``(..., C)`` (-1: padding; checked here whatever
        ``validate_args`` says, since a label out of range would index out of bounds).
        """
        if self.layout == "index":
            return self._embed_labels(
                kernels.checked_index_labels(events, self.duration, self.num_neurons))
        return self._embed(events[..., 1:])

    def _select(self, x):
        """Pick the modelled neurons out of per-row terms (identity for a full network)."""
        return x

    def _context(self):
        """
        Rows of exogenous events ``(times, marks)`` that drive but are not modelled: marks
        dense ``(..., C, D)`` or labels ``(..., C)``.
        """
        return None

    def _breakpoints(self):
        """
        Times in :math:`[0, T]` where the intensity is not smooth for reasons other than events
        (e.g. the hold breakpoints of a stimulus), ``batch + (M,)``, or ``None``: added as
        zero-mark rows, so that numerical integration never straddles them.
        """
        return None

    def _rows(self, events, query=None, grid=True):
        """
        Sorted union of the value's rows, query rows (zero marks, placed before events at ties
        so that they see left limits), context rows, a grid, and the rows at 0 and T.

        :returns: ``(times, marks, event_pos, query_pos)`` with the positions of the original
            event and query rows in the merged order.
        """
        ref = self._params_like()
        events = events.to(dtype=ref.dtype, device=ref.device)
        marks = self._value_marks(events)
        context = self._context()
        if context is not None and (marks.dtype == torch.long) != (context[1].dtype == torch.long):
            # labels beside dense (e.g. soft) marks: the rows take dense marks
            ctx_times, ctx_marks = context
            width = (ctx_marks if marks.dtype == torch.long else marks).shape[-1]
            if marks.dtype == torch.long:
                marks = one_hot_marks(marks, width, ref)
            else:
                ctx_marks = one_hot_marks(ctx_marks, width, ref)
            context = (ctx_times, ctx_marks)
        labels = marks.dtype == torch.long
        dim = -1 if labels else -2  # the row axis of the marks
        batch = events.shape[:-2]
        if context is not None:
            batch = torch.Size(broadcast_shape(batch, context[0].shape[:-1]))
        pieces = []
        if query is not None:
            query = torch.as_tensor(query, dtype=ref.dtype, device=ref.device)
            if query.dim() < 1:
                raise ValueError("t must have shape (n,) or batch + (n,), got a scalar")
            # NaN fails both comparisons
            if not bool(((query >= 0) & (query <= self.duration)).all()):
                raise ValueError(f"t must lie in [0, duration={self.duration}] (no NaN)")
            try:
                batch = torch.Size(broadcast_shape(batch, query.shape[:-1]))
            except ValueError:
                raise ValueError(f"t of shape {tuple(query.shape)} does not broadcast with the "
                                 f"batch shape {tuple(batch)} of events") from None
            pieces.append((query, None))
        pieces.append((events[..., 0], marks))
        if context is not None:
            pieces.append(context)
        breakpoints = self._breakpoints() if grid else None
        if breakpoints is not None:
            batch = torch.Size(broadcast_shape(batch, breakpoints.shape[:-1]))
            pieces.append((breakpoints, None))
        step = self._max_step() if grid else None
        if step is not None and not (math.isfinite(step) and step > 0):
            raise ValueError(f"{self._arg_names.get('max_step', 'max_step')} must give a "
                             f"positive finite quadrature step, got {step}")
        num_grid = 1 if step is None else max(1, math.ceil(self.duration / step))
        # the grid rows of every realisation, with their marks: refuse before allocating
        check_allocation(self._arg_names.get("max_step", "max_step"),
                         float(batch.numel()) * num_grid * (2 if labels else 1 + marks.shape[-1]),
                         ref.dtype, ref.device,
                         f"a quadrature grid of duration / max_step = {num_grid:.3g} rows")
        grid = torch.linspace(0.0, self.duration, num_grid + 1, dtype=ref.dtype, device=ref.device)
        pieces.append((grid, None))
        times = torch.cat([t.expand(batch + t.shape[-1:]) for t, _ in pieces], -1)
        # auxiliary rows carry no mark: label -1, or a zero mark of D entries
        mark_shape, none = ((), -1) if labels else (marks.shape[-1:], 0)
        marks = torch.cat([marks.new_full(batch + t.shape[-1:] + mark_shape, none)
                           if m is None else m.expand(batch + m.shape[dim:])
                           for t, m in pieces], dim)
        times, perm = torch.sort(times, dim=-1, stable=True)
        marks = marks.gather(dim, perm if labels else perm.unsqueeze(-1).expand(marks.shape))
        inverse = torch.argsort(perm, dim=-1)
        n_query = 0 if query is None else query.shape[-1]
        num_events = events.shape[-2]
        return times, marks, inverse[..., n_query:n_query + num_events], inverse[..., :n_query]

    def _terms(self, value):
        # Trailing padding rows (time T, zero mark) add nothing to the likelihood but cost as
        # much as events; drop them unless the value requires grad (the derivative of the
        # linear extension in a padding row's mark is log lambda(T), kept in that case).
        if not value.requires_grad:
            value = self._trim(value)
        times, marks, _, _ = self._rows(value)
        mark_total, integral = stream_terms(times, marks, self._chunk_size(times, marks),
                                            self._chunk_terms, checkpoint=True)
        return self._select(mark_total), self._select(integral)

    def _chunk_terms(self, times, marks, state):
        """
        The terms of one chunk of rows given the history's ``state`` at its first row (see
        :func:`stream_terms`): ``(mark_sum, integral, state after its last row)``. This
        default evaluates :meth:`_row_terms` and carries no state, so it is only right for a
        whole sequence (:meth:`_chunk_size` ``None``); processes with a history override both.
        """
        log_rate, integral = self._row_terms(times, marks)
        # a zero rate (log -inf) only matters where a mark sits (see mark_sum)
        return mark_sum(marks, log_rate), integral.sum(-2), None

    def _chunk_size(self, times, marks):
        """Rows per chunk of the streamed likelihood (``None``: the whole sequence at once)."""
        return None

    def _trim(self, value):
        """``value`` without its trailing padding rows (see :func:`~pyro_spikes.trim_padding`)."""
        if self.layout == "index" and kernels.compiled_for(value):
            keep = kernels.index_rows(value, self.duration, self.num_neurons, labels=False)[2]
            return value[..., :keep, :]
        return trim_padding(value, self.duration, self.layout)

    def log_prob(self, value):
        self._check_value(value)
        if self._validate_args:
            self._validate_sample(value)
        mark_term, integral = self._terms(value)
        return (mark_term - integral).sum(-1)

    def log_prob_per_neuron(self, value):
        """
        The log-likelihood split by neuron, shape ``batch + (D,)``:
        :math:`\\sum_i m_{i,d} \\log\\lambda_d(t_i^-) - \\int_0^T \\lambda_d`. Summing a subset
        of neurons gives the partial likelihood of those neurons given the whole history.
        """
        self._check_value(value)
        if self._validate_args:
            self._validate_sample(value)
        mark_term, integral = self._terms(value)
        return mark_term - integral

    def intensity(self, events, t):
        """
        Conditional intensity :math:`\\lambda_d(t^- \\mid \\mathcal H_t)` of the realisation
        ``events`` at query times ``t`` (1-D, or batched ``batch + (n,)``).

        :returns: tensor of shape ``batch + (n, D)``.
        """
        self._check_value(events, "events")
        if self._validate_args:
            self._validate_sample(events)
        times, marks, _, query_pos = self._rows(events, query=t)
        log_rate = self._select(self._row_terms(times, marks)[0])
        idx = query_pos.unsqueeze(-1).expand(query_pos.shape + (self.num_neurons,))
        return log_rate.gather(-2, idx).exp()

    def compensator(self, events):
        """
        Compensator :math:`\\Lambda_d(t_i) = \\int_0^{t_i} \\lambda_d(s)\\, ds` at every row of
        ``events``, shape ``batch + (R, D)`` for ``R`` rows of ``events``; padding rows (time :math:`T`) hold
        :math:`\\Lambda_d(T)`. By the time-rescaling theorem the increments of
        :math:`\\Lambda_d` between consecutive spikes of neuron :math:`d` are i.i.d. Exp(1)
        (see :func:`pyro_spikes.diagnostics.rescaled_intervals`).
        """
        self._check_value(events, "events")
        if self._validate_args:
            self._validate_sample(events)
        times, marks, event_pos, _ = self._rows(events)
        integral = self._select(self._row_terms(times, marks)[1])
        cum = torch.cat([torch.zeros_like(integral[..., :1, :]), integral.cumsum(-2)], -2)
        idx = event_pos.unsqueeze(-1).expand(event_pos.shape + (self.num_neurons,))
        return cum.gather(-2, idx)

    def _compact(self, cand_times, accepted, labels, sample_batch):
        """
        Gather accepted candidates into the ``events`` layout, with :meth:`_sample_rows` rows.

        :param cand_times: candidate times ``(N, K)``; :param accepted: bool ``(N, K)``;
        :param labels: neuron index ``(N, K)``; :param sample_batch: output batch shape.
        """
        n, k = cand_times.shape
        width = self._width
        pos = accepted.long().cumsum(-1)  # 1-based row of each accepted candidate
        counts = pos[:, -1] if k else pos.new_zeros(n)
        self._check_capacity(counts)
        rows = self._sample_rows(int(counts.max()) if n else 0)
        self._check_room(n, cand_times, rows)
        if self.layout == "index":  # rows (time, index); the spare row past the end is dropped
            out = cand_times.new_empty(n, rows + 1, 2)
            out[..., 0] = self.duration
            out[..., 1] = -1.0
            row = torch.where(accepted, pos - 1, torch.full_like(pos, rows))
            out[..., 0].scatter_(1, row, cand_times)
            out[..., 1].scatter_(1, row, labels.to(cand_times.dtype))
            return out[:, :rows].reshape(sample_batch + (rows, width))
        # flat offsets into an (N, rows, 1 + D) buffer; rejected candidates all go to one
        # spare row past the end, which is dropped
        spare = n * rows * width
        flat = (pos - 1) * width + (
            torch.arange(n, device=cand_times.device) * (rows * width)
        ).unsqueeze(-1)
        flat = torch.where(accepted, flat, torch.full_like(flat, spare)).reshape(-1)
        buf = cand_times.new_zeros(spare + width)
        out = buf[:spare].view(n, rows, width)
        out[..., 0] = self.duration
        buf.scatter_(0, flat, cand_times.reshape(-1))
        buf.scatter_(0, flat + 1 + labels.reshape(-1), 1.0)
        return out.reshape(sample_batch + (rows, width))

    def __repr__(self):
        layout = "" if self.layout == "dense" else f", layout={self.layout!r}"
        return (
            f"{type(self).__name__}(num_neurons={self.num_neurons}, duration={self.duration}, "
            f"capacity={self._capacity}, batch_shape={tuple(self.batch_shape)}{layout})"
        )

