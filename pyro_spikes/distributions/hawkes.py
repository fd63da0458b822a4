import math

import torch
from pyro.distributions.util import broadcast_shape

from pyro_spikes.distributions import kernels
from pyro_spikes.distributions.kernels import sequential_threads
from pyro_spikes.distributions._checks import (
    check_allocation,
    check_num_neurons,
    check_same_dtype,
    check_sampling_params,
    max_candidates,
    reduce_or,
)
from pyro_spikes.distributions.constraints import (
    independent,
    nonnegative_finite,
    positive_finite,
)
from pyro_spikes.distributions.point_process import (
    PointProcess,
    as_param,
    chunk_rows,
    mark_rows,
    mark_sum,
)
from pyro_spikes.distributions.scan import exp_decay_scan
from pyro_spikes.spikes import (
    UNSORTED,
    _exact_marks,
    _mark_labels,
    one_hot_marks,
    raise_index_problems,
)

__all__ = ["HawkesProcess"]


def _uniform_rows(times, marks, mu, alpha, beta, initial=None):
    """
    The rows' terms of a linear Hawkes process with one decay :math:`\\beta` (``batch + (1,)``),
    ``(log_rate, integral, final)`` (see :meth:`HawkesProcess._trace_terms`): ``mu``
    ``batch + (D,)``, ``alpha`` ``batch + (D, D)``, marks dense or labels on every row.
    """
    mu = mu.unsqueeze(-2)  # batch + (1, D)
    jump = alpha * beta.unsqueeze(-1)  # alpha beta, batch + (D, D)
    dt = (times[..., 1:] - times[..., :-1]).unsqueeze(-1)  # (..., R-1, 1)
    x = mark_rows(marks, jump.transpose(-1, -2)).unsqueeze(-3)  # (..., 1, R, D)
    if initial is not None:  # the carried excitation: one decay group
        initial = initial.unsqueeze(-2)
    h = exp_decay_scan(times, x, beta, initial=initial)[..., 0, :, :]  # (..., R, D)
    after = h + x[..., 0, :, :]
    b = beta.unsqueeze(-1)
    integral = mu * dt + after[..., :-1, :] * (-torch.expm1(-b * dt)) / b
    return torch.log(mu + h), integral, after[..., -1, :]


def _hawkes_sums_torch(times, labels, mu, alpha, beta, window):
    """
    The sums of :func:`~pyro_spikes.distributions.kernels.hawkes_terms` (same arguments) in
    PyTorch operations: the formulas its second derivatives go through.
    """
    edge = times.new_empty(times.shape[:-1] + (1,))
    none = labels.new_full(labels.shape[:-1] + (1,), -1)
    times = torch.cat([edge.fill_(window[0]), times, edge.clone().fill_(window[1])], -1)
    labels = torch.cat([none, labels, none], -1)
    log_rate, integral, _ = _uniform_rows(times, labels, mu, alpha, beta.unsqueeze(-1))
    return mark_sum(labels, log_rate), integral.sum(-2)


class HawkesProcess(PointProcess):
    """
    Multivariate linear Hawkes process with exponential kernels, in the parameterisation of
    tick's ``SimuHawkesExpKernels``:

    .. math::

        \\lambda_i(t) = \\mu_i + \\sum_j \\sum_{t_j^{(k)} < t}
            \\alpha_{ij} \\beta_{ij} e^{-\\beta_{ij} (t - t_j^{(k)})},

    so :math:`\\alpha_{ij}` is the expected number of children in :math:`i` of a spike in
    :math:`j` (the branching matrix) and the process is stationary when its spectral radius
    is below one (Hawkes, 1971). The compensator has the closed form

    .. math::

        \\int_0^T \\lambda_i = \\mu_i T + \\sum_j \\alpha_{ij} \\sum_{t_j^{(k)} < T}
            \\left(1 - e^{-\\beta_{ij} (T - t_j^{(k)})}\\right),

    used in :meth:`log_prob` interval by interval, streamed through the rows in chunks that
    carry the excitation (see :func:`~pyro_spikes.distributions.point_process.stream_terms`).
    On the CPU, with one decay and exact spikes whose times need no gradient, ``log_prob`` runs
    instead the compiled one-pass likelihood of
    :func:`~pyro_spikes.distributions.kernels.hawkes_terms`, which accumulates the derivatives
    in the same pass (O(D) per event, nothing stored per event); it is the same function as
    tick's ``ModelHawkesExpKernLogLik`` (whose log-likelihood is ours plus :math:`D T`, relative
    to a unit-rate Poisson process), see ``benchmarks/recordings.py``. The history enters through exponentially
    decaying states (one per decay rate) evaluated by
    :func:`~pyro_spikes.distributions.scan.exp_decay_scan`. Sampling is Ogata's (1981)
    thinning: with :math:`\\alpha \\ge 0` the intensity decays between events, so its value
    right after the current time bounds it until the next candidate.

    :param torch.Tensor baseline: :math:`\\mu \\ge 0`, shape ``batch_shape + (D,)``.
    :param torch.Tensor adjacency: :math:`\\alpha \\ge 0`, shape ``batch_shape + (D, D)``
        (row: receiving neuron, column: source neuron).
    :param decay: :math:`\\beta > 0`, a number or a tensor broadcastable to
        ``batch_shape + (D, D)`` by torch's rules (so a ``(D,)`` tensor holds one decay per
        source neuron, :math:`\\beta_{ij} = \\beta_j`; pass ``beta.unsqueeze(-1)`` for one per
        receiving neuron).
    :param float duration: observation window :math:`T`.
    :param int capacity: rows of a realisation; by default the stationary mean count
        :math:`T\\,\\mathbf 1^\\top (I - \\alpha)^{-1} \\mu` plus eight standard deviations,
        computed when first sampling, or as many rows as a realisation needs where it has more
        or where there is no default (a spectral radius of one or more: the draw then ends at
        :math:`T` or at the event limit, :func:`~pyro_spikes.distributions.event_limit`);
        scoring accepts any parameters and any number of rows.
    :param str layout: ``"dense"`` or ``"index"``, the layout of samples and values (see
        :class:`~pyro_spikes.distributions.PointProcess`).
    """

    _count_args = ("baseline, adjacency and duration; an adjacency with spectral radius >= 1 "
                   "is explosive, its count grows without bound")

    arg_constraints = {
        "baseline": independent(nonnegative_finite, 1),
        "adjacency": independent(nonnegative_finite, 2),
        "decay": independent(positive_finite, 2),
    }

    def __init__(self, baseline, adjacency, decay, duration, capacity=None, validate_args=None,
                 layout="dense"):
        baseline = as_param(baseline)
        adjacency = as_param(adjacency, baseline)
        decay = as_param(decay, baseline)
        if baseline.dim() < 1:
            raise ValueError(f"baseline must have shape (..., D), got {tuple(baseline.shape)}")
        num_neurons = check_num_neurons("baseline", baseline.shape)
        if adjacency.dim() < 2 or adjacency.shape[-2:] != (num_neurons, num_neurons):
            raise ValueError(
                f"adjacency must have shape (..., D, D) with D={num_neurons}, "
                f"got {tuple(adjacency.shape)}"
            )
        check_same_dtype(baseline=baseline, adjacency=adjacency, decay=decay)
        try:
            # torch's broadcasting: a (D,) decay is per source neuron (column), like any (D,)
            # tensor broadcast against (D, D)
            target = broadcast_shape(decay.shape, (num_neurons, num_neurons))
            if tuple(target[-2:]) != (num_neurons, num_neurons):
                raise ValueError
            decay = decay.expand(target)
            batch_shape = broadcast_shape(
                baseline.shape[:-1], adjacency.shape[:-2], decay.shape[:-2]
            )
        except (ValueError, RuntimeError):
            raise ValueError(
                f"baseline {tuple(baseline.shape)}, adjacency {tuple(adjacency.shape)} and decay "
                f"{tuple(decay.shape)} have incompatible shapes"
            ) from None
        self.baseline, self.adjacency, self.decay = baseline, adjacency, decay
        super().__init__(batch_shape, num_neurons, duration, capacity, validate_args, layout)

    def _default_capacity(self):
        duration = self.duration
        adj = self.adjacency.detach()
        for name, value in [("baseline", self.baseline), ("adjacency", adj)]:
            if not bool(((value >= 0) & torch.isfinite(value)).all()):
                raise ValueError(f"{name} must be nonnegative and finite")
        radius = float(torch.linalg.eigvals(adj).abs().max()) if adj.numel() else 0.0
        if not radius < 1:
            raise ValueError(
                f"adjacency has spectral radius {radius:.3g} >= 1 (explosive process), so there "
                "is no default capacity (nor event_shape): pass capacity for samples of fixed "
                "rows; samples without one have the rows they need, up to "
                "pyro_spikes.distributions.event_limit (scoring needs none)"
            )
        eye = torch.eye(adj.shape[-1], dtype=adj.dtype, device=adj.device)
        mean_rate = torch.linalg.solve(eye - adj, self.baseline.detach().unsqueeze(-1))
        mean = reduce_or(mean_rate.sum((-1, -2)), "max", 0.0) * duration
        std = math.sqrt(mean) / (1.0 - radius)
        return int(math.ceil(mean + 8.0 * std + 10))

    def _params_like(self):
        return self.baseline

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(HawkesProcess, _instance)
        batch_shape = torch.Size(batch_shape)
        d = self.num_neurons
        new.baseline = self.baseline.expand(batch_shape + (d,))
        new.adjacency = self.adjacency.expand(batch_shape + (d, d))
        new.decay = self.decay.expand(batch_shape + (d, d))
        PointProcess.__init__(new, batch_shape, d, self.duration, self._capacity,
                              validate_args=False, layout=self.layout)
        new._validate_args = self._validate_args
        return new

    def _uniform_decay(self):
        dec = self.decay.detach()
        return bool((dec == dec[..., :1, :1]).all())

    def _row_terms(self, times, marks):
        log_rate, integral, _ = self._trace_terms(times, marks)
        return log_rate, integral

    def _terms(self, value):
        compiled = self._compiled_terms(value)  # trims the value itself
        if compiled is not None:
            return compiled
        if not value.requires_grad:  # see PointProcess._terms
            value = self._trim(value)
        return super()._terms(value)

    def _compiled_terms(self, value):
        """
        On the CPU, with one decay, exact marks (indices, or one-hot dense marks), sorted
        rows and times that need no gradient: the compiled one-pass likelihood with its
        forward-mode derivatives (:func:`~pyro_spikes.distributions.kernels.hawkes_terms`) over
        the value's own rows and the window :math:`[0, T]`; ``None`` otherwise (the streamed
        PyTorch formulas then).
        """
        params = (self.baseline, self.adjacency, self.decay)
        if not (
            kernels.compiled_for(self.baseline)
            and not value.requires_grad
            and all(type(x) in (torch.Tensor, torch.nn.Parameter) for x in params + (value,))
            and all(x.dtype == self.baseline.dtype for x in params)
            and self._uniform_decay()
        ):
            return None
        value = value.to(self.baseline)
        if self.layout == "dense":
            value = self._trim(value)
            times = value[..., 0]
            if times.shape[-1] > 1 and bool((times[..., 1:] < times[..., :-1]).any()):
                return None  # unsorted rows (not validated): the general path sorts them
            marks = value[..., 1:]
            if not _exact_marks(marks):
                return None  # soft marks: the PyTorch formulas
            labels = _mark_labels(marks)
        else:  # the labels, their order and the padding in one pass
            flags, labels, keep = kernels.index_rows(value, self.duration, self.num_neurons)
            raise_index_problems(flags, "value", self.duration, self.num_neurons,
                                 labels_only=True)
            if flags & UNSORTED:
                return None  # unsorted rows (not validated): the general path sorts them
            times, labels = value[..., :keep, 0], labels[..., :keep]
        d = self.num_neurons
        shape = torch.Size(broadcast_shape(times.shape[:-1], self.batch_shape))
        n = shape.numel()
        k = times.shape[-1]
        times = times.expand(shape + (k,)).reshape(n, k)
        labels = labels.expand(shape + (k,)).reshape(n, k)
        mu = self.baseline.expand(shape + (d,)).reshape(n, d)
        alpha = self.adjacency
        alpha = (alpha.reshape(d, d) if alpha.shape[:-2].numel() == 1
                 else alpha.expand(shape + (d, d)).reshape(n, d, d))
        beta = self.decay[..., 0, 0].expand(shape).reshape(n)
        mark_total, integral = kernels.hawkes_terms(times, labels, mu, alpha, beta,
                                                    (0.0, self.duration), _hawkes_sums_torch)
        return mark_total.reshape(shape + (d,)), integral.reshape(shape + (d,))

    def _chunk_terms(self, times, marks, state):
        log_rate, integral, final = self._trace_terms(times, marks, state)
        return mark_sum(marks, log_rate), integral.sum(-2), final

    def _chunk_size(self, times, marks):
        # working memory per row: a few (D,) rows with one decay, (D, D) per pair otherwise
        d = self.num_neurons
        batch = torch.Size(broadcast_shape(times.shape[:-1], self.batch_shape)).numel()
        return chunk_rows(8 * batch * d * (1 if self._uniform_decay() else d))

    def _trace_terms(self, times, marks, initial=None):
        """
        :math:`\\log\\lambda(t_r^-)` ``batch + (R, D)``, the intervals' compensators
        ``batch + (R - 1, D)`` and the excitation just after the last row, over sorted rows
        with marks (dense, or labels) and the excitation's left limits ``initial`` at the first
        row (``None``: zero). The excitation is ``batch + (D,)`` with a uniform decay, else
        ``batch + (D D, 1)`` (one trace per pair).
        """
        if self._uniform_decay():
            return _uniform_rows(times, marks, self.baseline, self.adjacency,
                                 self.decay[..., :1, 0], initial)
        d = self.num_neurons
        mu = self.baseline.unsqueeze(-2)  # batch + (1, D)
        jump = self.adjacency * self.decay  # batch + (D, D)
        dt = (times[..., 1:] - times[..., :-1]).unsqueeze(-1)  # (..., R-1, 1)
        if marks.dtype == torch.long:  # every pair needs its source's mark: one-hot
            marks = one_hot_marks(marks, d, mu)
        # one decay group per pair (i, j): x_{(i,j), r} = alpha_ij beta_ij m_{r,j}
        x = (jump.unsqueeze(-1) * marks.transpose(-1, -2).unsqueeze(-3))  # (..., D, D, R)
        x = x.reshape(x.shape[:-3] + (d * d, x.shape[-1], 1))
        beta = self.decay.reshape(self.decay.shape[:-2] + (d * d,))
        h = exp_decay_scan(times, x, beta, initial=initial)  # (..., D*D, R, 1)
        after = h + x
        final = after[..., -1, :]  # (..., D*D, 1)
        hp = after[..., :-1, 0]  # (..., D*D, R-1)
        h = h[..., 0].reshape(h.shape[:-3] + (d, d, h.shape[-2]))
        excite = h.sum(-2).transpose(-1, -2)  # (..., R, D)
        b = beta.unsqueeze(-1)
        pair = hp * (-torch.expm1(-b * dt.squeeze(-1).unsqueeze(-2))) / b
        pair = pair.reshape(pair.shape[:-2] + (d, d, pair.shape[-1]))
        integral = mu * dt + pair.sum(-2).transpose(-1, -2)
        log_rate = torch.log(mu + excite)
        return log_rate, integral, final

    def _jump_table(self, shape, n):
        """
        Jumps of the (cumulated) state per label, with an all-zero row for the rejection label
        ``D``: shape ``(D + 1, D)`` when the parameters are shared by the whole batch, else
        ``(N * (D + 1), D)`` (row ``k (D + 1) + label`` for sequence ``k``).
        """
        d = self.num_neurons
        jump = (self.adjacency * self.decay).transpose(-1, -2)  # [..., j, i]: jump of i by j
        if jump.shape[:-2].numel() != 1:
            jump = jump.expand(shape + (d, d)).reshape(n, d, d)
        table = torch.cat([jump, jump.new_zeros(jump.shape[:-2] + (1, d))], -2)
        return table.reshape(-1, d)

    def sample(self, sample_shape=torch.Size()):
        """
        Ogata's thinning. On the CPU each sequence runs in the compiled loop of
        :mod:`~pyro_spikes.distributions.kernels` (the same steps, in chunks of pre-drawn
        variates); elsewhere all sequences advance together one candidate per iteration. The
        per-candidate exponential and uniform variates are drawn in chunks, and termination
        (every time past :math:`T`) is checked once per chunk; a sequence keeps simulating
        past :math:`T` until then, but its candidates there are discarded. With a uniform decay
        the state is kept projected and cumulated over the receiving neuron,
        :math:`c_{n,i} = \\sum_{i' \\le i} \\sum_j h_{n,i',j}`, an ``(N, D)`` tensor that decays
        by one scalar per sequence; the label is then one ``searchsorted`` of the uniform in the
        cumulated intensity.
        """
        shape = self._sample_batch(sample_shape)
        d = self.num_neurons
        with torch.no_grad():
            # whatever validate_args says: a negative or infinite rate never lets time pass
            check_sampling_params(baseline=(self.baseline, "nonnegative"),
                                  adjacency=(self.adjacency, "nonnegative"),
                                  decay=(self.decay, "positive"))
            mu = self.baseline.expand(shape + (d,)).reshape(-1, d)
            n = mu.shape[0]
            self._check_room(n, mu, self._sample_rows(0))
            uniform = self._uniform_decay()
            table = self._jump_table(shape, n)
            offset = None
            if table.shape[0] != d + 1:
                offset = torch.arange(n, device=mu.device) * (d + 1)
            cmu = mu.cumsum(-1)
            mu_sum = cmu[:, -1:]  # (N, 1): sequences along dim 0, (N, 1) scalars throughout
            if uniform:
                neg_beta = -self.decay[..., 0, 0].expand(shape).reshape(n, 1)
                table = table.reshape(-1, d + 1, d).cumsum(-1).reshape(-1, d)
                state = mu.new_zeros(n, d)  # cumulated over the receiving neuron
            else:
                neg_beta = -self.decay.transpose(-1, -2).expand(shape + (d, d)).reshape(n, d, d)
                state = mu.new_zeros(n, d, d)  # state[n, j, i]: excitation of i by j
            if kernels.compiled_for(mu):
                return self._sample_compiled(mu, cmu, neg_beta, table, state, shape)
            t = mu.new_zeros(n, 1, dtype=torch.float64)  # time accumulates in float64
            rows = torch.arange(n, device=mu.device)
            times, labels = [], []
            counts = torch.zeros(n, dtype=torch.long, device=mu.device)
            chunk = 16
            with sequential_threads(state.numel()):
                while True:
                    exps = torch.empty(chunk, n, 1, dtype=mu.dtype, device=mu.device)
                    unifs = torch.rand(chunk, n, 1, dtype=mu.dtype, device=mu.device)
                    gaps = []
                    for e, u in zip(exps.exponential_().unbind(0), unifs.unbind(0)):
                        if uniform:
                            bound = state[:, -1:] + mu_sum
                        else:
                            total = state.sum(-2)  # (n, D): total excitation of each i
                            bound = total.sum(-1, keepdim=True) + mu_sum
                        gap = e / bound
                        if uniform:
                            state.mul_(torch.exp(gap * neg_beta))
                            cum = state + cmu
                        else:
                            state.mul_(torch.exp(gap.unsqueeze(-1) * neg_beta))
                            cum = (state.sum(-2) + mu).cumsum_(-1)
                        label = torch.searchsorted(cum, u * bound).view(-1)
                        index = label if offset is None else label + offset
                        if uniform:
                            state.add_(table.index_select(0, index))
                        else:
                            state[rows, label.clamp(max=d - 1)] += table.index_select(0, index)
                        gaps.append(gap)
                        labels.append(label)
                    # candidate times of the chunk: running sums of the gaps, in float64
                    gaps[0] = gaps[0] + t
                    chunk_times = torch.cat(gaps, -1).to(torch.float64).cumsum_(-1)
                    times.append(chunk_times)
                    t = chunk_times[:, -1:]
                    chunk_labels = torch.stack(labels[-len(gaps):], -1)
                    if self._chunk_done(counts, chunk_times, chunk_labels, t, len(labels)):
                        break
                    chunk = min(2 * chunk, 64)
                # the O(N K) post-processing is a few passes: not worth threads either
                return self._accepted(torch.cat(times, -1), torch.stack(labels, -1), shape)

    def _chunk_done(self, counts, chunk_times, chunk_labels, t, num_candidates):
        """
        Add a chunk's accepted candidates to ``counts`` (in place), raise as soon as a
        realisation overflows its capacity (an explosive process never ends), and say whether
        every sequence is past :math:`T` (NaN counts as finished). ``num_candidates`` (per
        sequence so far) is held to a hard bound, so the loop ends whatever the parameters.
        """
        accepted = (chunk_labels < self.num_neurons) & (chunk_times <= self.duration)
        counts += accepted.sum(-1)
        self._check_capacity(counts)
        running = bool((t <= self.duration).any())
        # the candidates kept so far (float64 time, int64 label each) must fit in memory too
        check_allocation(self._arg_names.get("capacity", "capacity"),
                         2.0 * counts.numel() * num_candidates, torch.float64, t.device,
                         f"the {num_candidates} thinning candidates per sequence")
        if running and num_candidates > max_candidates(self._row_bound()):
            raise ValueError(
                f"thinning stopped after {num_candidates} candidates per sequence without "
                f"reaching duration={self.duration}: baseline, adjacency and decay must be "
                "nonnegative, nonnegative and positive finite numbers"
            )
        return not running

    def _accepted(self, times, labels, shape):
        """The events layout of the candidates with a label below ``D`` inside the window."""
        d = self.num_neurons
        accepted = (labels < d) & (times <= self.duration)
        # float64 times, rounded once to the parameters' dtype
        times = times.to(self.baseline.dtype)
        return self._compact(times, accepted, labels.clamp(max=d - 1), shape)

    def _sample_compiled(self, mu, cmu, neg_beta, table, state, shape):
        """The same thinning with the compiled per-sequence loop (CPU), in growing chunks."""
        n = mu.shape[0]
        mu, cmu = mu.contiguous(), cmu.contiguous()
        neg_beta, table = neg_beta.contiguous(), table.contiguous()
        t = mu.new_zeros(n, dtype=torch.float64)  # time accumulates in float64
        times, labels = [], []
        counts = torch.zeros(n, dtype=torch.long)
        # a first guess at the candidates per sequence: the baseline's count, doubled
        base_rate = float(cmu[:, -1].max()) if n else 0.0
        # chunks hold (N, C) variates: C at most 4M / N entries per sequence (and at least 64)
        most = max(64, (1 << 22) // max(n, 1))
        chunk = min(most, max(64, int(2 * base_rate * self.duration) + 16))
        while True:
            exps = torch.empty(n, chunk, dtype=mu.dtype).exponential_()
            unifs = torch.rand(n, chunk, dtype=mu.dtype)
            chunk_times, chunk_labels = kernels.hawkes_chunk(
                mu, cmu, neg_beta, table, state, t, exps, unifs, self.duration
            )
            times.append(chunk_times)
            labels.append(chunk_labels)
            num_candidates = sum(x.shape[-1] for x in times)
            if self._chunk_done(counts, chunk_times, chunk_labels, t, num_candidates):
                break
            chunk = min(2 * chunk, most)
        return self._accepted(torch.cat(times, -1), torch.cat(labels, -1), shape)
