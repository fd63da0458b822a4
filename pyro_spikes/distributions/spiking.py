import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from pyro.distributions.util import broadcast_shape

from pyro_spikes.distributions.point_process import (
    PointProcess,
    check_duration,
    Stream,
    as_param,
    chunk_rows,
    mark_rows,
    mark_sum,
    stream_terms,
    uniform_order_statistics,
)
from pyro_spikes.distributions.poisson import _poisson_capacity
from pyro_spikes.distributions import kernels
from pyro_spikes.distributions.kernels import sequential_threads
from pyro_spikes.distributions._checks import (
    check_same_dtype,
    check_sampling_params,
    reduce_or,
)
from pyro_spikes.distributions.constraints import finite, independent, positive_finite
from pyro_spikes.distributions.scan import exp_decay_scan
from pyro_spikes.distributions.stimulus import Stimulus, history_drive
from pyro_spikes.spikes import _exact_marks, _mark_labels, trim_padding, validate_events

__all__ = ["SpikingPointProcess"]


def _gauss_legendre(order, like):
    nodes, weights = np.polynomial.legendre.leggauss(order)
    nodes = torch.as_tensor((nodes + 1) / 2, dtype=like.dtype, device=like.device)
    weights = torch.as_tensor(weights / 2, dtype=like.dtype, device=like.device)
    return nodes, weights


def _log_rule_error(order):
    """:math:`\\log \\frac{(q!)^4}{(2q+1)\\,((2q)!)^2}`, the Gauss-Legendre error constant."""
    return (4 * math.lgamma(order + 1) - math.log(2 * order + 1)
            - 2 * math.lgamma(2 * order + 1))


def _quadrature_rules(order, max_step, scale, adaptive, like):
    """
    The compensator's table of Gauss-Legendre rules, ``(nodes, weights, thresholds)`` of shapes
    ``(K, order)``, ``(K, order)`` and ``(K,)``: an interval of length :math:`\\Delta` takes the
    first rule :math:`k` with :math:`\\Delta \\le` ``thresholds[k]`` (nodes on ``[0, 1]``,
    weights summing to one, zero-padded).

    Without ``adaptive`` it is the one rule of ``order`` nodes. With it, rule :math:`k` has
    :math:`q = k + 1` nodes and its threshold is the longest interval on which its error bound
    per unit length,

    .. math::

        \\epsilon(q, \\Delta) = \\Big(\\frac{\\Delta}{\\tau}\\Big)^{2q}
            \\frac{(q!)^4}{(2q+1)\\,((2q)!)^2},

    is at most that of ``order`` nodes on ``max_step``. (The Gauss-Legendre remainder on an
    interval of length :math:`\\Delta` is
    :math:`\\frac{\\Delta^{2q+1} (q!)^4}{(2q+1)((2q)!)^3} f^{(2q)}(\\xi)`; with the
    derivatives of the integrand bounded as :math:`|f^{(k)}| \\le M k!\\, \\tau^{-k}`, the
    assumption behind the fixed rule's bound, :math:`\\tau` = ``scale`` the integrand's
    shortest time scale, it is at most :math:`M \\Delta\\, \\epsilon(q, \\Delta)`.) Every
    interval then errs by at most :math:`M \\Delta\\, \\epsilon(\\text{order},
    \\text{max\\_step})`, so the bound on the whole compensator,
    :math:`M T \\epsilon(\\text{order}, \\text{max\\_step})`, is the fixed rule's, while the
    intervals much shorter than :math:`\\tau` (most of them in a busy recording) take 2-4 nodes.
    """
    return _rule_table(int(order), float(max_step), float(scale), bool(adaptive), like.dtype,
                       like.device)


@functools.lru_cache(maxsize=64)
def _rule_table(order, max_step, scale, adaptive, dtype, device):
    like = torch.empty((), dtype=dtype, device=device)
    if not adaptive or order == 1:
        nodes, weights = _gauss_legendre(order, like)
        return nodes.unsqueeze(0), weights.unsqueeze(0), like.new_full((1,), math.inf)
    nodes = like.new_zeros(order, order)
    weights = like.new_zeros(order, order)
    log_ref = 2 * order * math.log(max_step / scale) + _log_rule_error(order)
    thresholds = []
    for q in range(1, order + 1):
        nodes[q - 1, :q], weights[q - 1, :q] = _gauss_legendre(q, like)
        if q < order:
            thresholds.append(scale * math.exp((log_ref - _log_rule_error(q)) / (2 * q)))
    thresholds = np.maximum.accumulate(np.array(thresholds + [math.inf]))
    return nodes, weights, torch.as_tensor(thresholds, dtype=dtype, device=device)


def _likelihood_rows(times, h, x, bias, rates, upper_bound, nodes, weights, thresholds=None,
                     drive=None):
    """
    Per sorted row :math:`r`: :math:`\\log \\lambda(t_r^-)` from the traces' left limits ``h``
    and, over the interval to the next row, :math:`\\int \\lambda` by Gauss-Legendre
    quadrature (``nodes`` on ``[0, 1]``, ``weights`` summing to one; or the table of rules of
    :func:`_quadrature_rules` with its ``thresholds``, the rule chosen per interval) of the
    potential
    :math:`b + \\sum_l (h + x)_{l,r}\\, e^{-r_l s}`. ``h``, ``x``: ``batch + (L, R, D)``;
    ``bias`` ``batch + (D,)``, ``rates`` (:math:`1/\\tau_l`) ``batch + (L,)``, ``upper_bound``
    ``batch``. Returns ``(log_rate, integral)`` of shapes ``batch + (R, D)``, ``batch + (R-1, D)``.
    ``drive``, if given, maps times ``batch + (n,)`` to a deterministic addition to the
    potential ``batch + (n, D)`` (stimulus, history before the window), evaluated at the rows
    and at every quadrature node.
    """
    a = upper_bound.unsqueeze(-1).unsqueeze(-1)
    bias = bias.unsqueeze(-2)
    extra = 0.0 if drive is None else drive(times)
    log_rate = torch.log(a) + F.logsigmoid(bias + h.sum(-3) + extra)
    start = (h + x)[..., :-1, :]  # (..., L, R-1, D)
    dt = times[..., 1:] - times[..., :-1]  # (..., R-1)
    if nodes.dim() == 2:  # a table of rules: each interval's own, (..., R-1, Q)
        rule = torch.searchsorted(thresholds, dt.contiguous()).clamp(max=nodes.shape[0] - 1)
        nodes, weights = nodes[rule], weights[rule]
    node_dt = dt.unsqueeze(-1) * nodes  # (..., R-1, Q)
    decay = torch.exp(-node_dt.unsqueeze(-3) * rates.unsqueeze(-1).unsqueeze(-1))  # (..., L, R-1, Q)
    # one batched (Q, L) @ (L, D) product per interval: u_{r,q,d} of shape (..., R-1, Q, D)
    u = torch.matmul(decay.movedim(-3, -1), start.movedim(-3, -2)) + bias.unsqueeze(-2)
    if drive is not None:
        node_times = times[..., :-1].unsqueeze(-1) + node_dt  # (..., R-1, Q)
        u = u + drive(node_times.flatten(-2)).unflatten(-2, node_times.shape[-2:])
    integral = torch.matmul(weights.unsqueeze(-2), torch.sigmoid(u)).squeeze(-2)
    return log_rate, integral * (a * dt.unsqueeze(-1))


def _row_inputs(marks, weight):
    """
    The rows' jumps of the basis traces, :math:`x_{l,r,d} = (W_l m_r)_d`, ``batch + (L, R, D)``:
    a product with dense marks ``batch + (R, D)``, a gather of the columns of :math:`W` for
    labels ``batch + (R,)`` (int64, -1: no mark).
    """
    return mark_rows(marks.unsqueeze(-2 if marks.dtype == torch.long else -3),
                     weight.transpose(-1, -2))


def _likelihood_sums_torch(times, marks, bias, weight, rates, upper_bound, initial, nodes,
                           weights, thresholds=None, drive=None):
    """
    The sums of one chunk of rows (see :func:`~pyro_spikes.distributions.point_process.
    stream_terms`) in PyTorch operations: :math:`\\sum_r m_{r,d} \\log\\lambda_d(t_r^-)`, the
    compensator over the chunk's intervals and the traces just after its last row, from the
    traces' left limits ``initial`` ``batch + (L, D)`` at its first row (``None``: zero).
    The PyTorch path of the likelihood, and the formulas that second derivatives of
    :func:`~pyro_spikes.distributions.kernels.spiking_terms` (same arguments, flattened
    ``(N, ...)``) go through. ``marks`` dense ``batch + (R, D)`` or labels ``batch + (R,)``.

    :returns: ``(mark_sum, integral, final)`` of shapes ``batch + (D,)``, ``batch + (D,)``,
        ``batch + (L, D)``.
    """
    x = _row_inputs(marks, weight)  # batch + (L, R, D)
    h = exp_decay_scan(times, x, rates, initial=initial)  # the carried traces decay in too
    log_rate, integral = _likelihood_rows(times, h, x, bias, rates, upper_bound, nodes, weights,
                                          thresholds, drive=drive)
    return mark_sum(marks, log_rate), integral.sum(-2), (h + x)[..., -1, :]


class SpikingPointProcess(PointProcess):
    """
    The probabilistic spiking neural network of Kajino (2021), "A Differentiable Point Process
    with Its Application to Spiking Neural Networks" (ICML), after Rezende & Gerstner (2014):
    neuron :math:`d` fires with conditional intensity

    .. math::

        \\lambda_d(t) = a\\, \\sigma(u_d(t)), \\qquad
        u_d(t) = b_d + \\sum_{l=1}^{L} \\sum_{d'} W_{l,d,d'}
            \\sum_{t' \\in J_{d'},\\, t' < t} e^{-(t - t')/\\tau_l},

    with :math:`\\sigma` the logistic sigmoid, bias :math:`b`, :math:`L` exponential basis
    functions with time constants :math:`\\tau_l` and weights :math:`W_{l,d,d'}` (from
    :math:`d'` to :math:`d`; negative for inhibition), and upper bound :math:`a`.

    The basis traces :math:`V_{l,d}(t) = \\sum_{d'} W_{l,d,d'} \\sum_{t'} e^{-(t-t')/\\tau_l}`
    decay by :math:`e^{-\\Delta/\\tau_l}` between events and jump by :math:`W_{l,:,d'}` (by
    :math:`W_l m` for a soft mark :math:`m`) at an event, an O(L D) update per event.

    **Sampling** is exact thinning (Lewis & Shedler, 1979; Ogata, 1981): candidates form a
    homogeneous Poisson process of rate :math:`\\bar\\lambda = a D \\ge \\sum_d \\lambda_d(t)`;
    a candidate at :math:`s` is a spike of neuron :math:`d` with probability
    :math:`\\lambda_d(s)/\\bar\\lambda` and is rejected otherwise. The loop runs over candidate
    index only; all sequences and neurons advance together.

    **log_prob** is :math:`\\sum_i \\log \\lambda_{d_i}(t_i^-) - \\sum_d \\int_0^T \\lambda_d`.
    The compensator has no closed form: between consecutive rows the potential is a sum of
    exponentials, and each such interval, cut by auxiliary rows into pieces of length at most
    ``max_step`` (default :math:`\\min_l \\tau_l`), is integrated by Gauss–Legendre quadrature of
    order ``quadrature_order`` :math:`q`. On a piece of length :math:`h` the error is
    :math:`\\frac{h^{2q+1} (q!)^4}{(2q+1) ((2q)!)^3} f^{(2q)}(\\xi)`; as the integrand's
    derivatives scale as :math:`\\tau_{\\min}^{-k}`, the default :math:`q = 8`,
    :math:`h \\le \\tau_{\\min}` gives a relative error of the compensator below
    :math:`10^{-8}` (tested in float64 against adaptive quadrature). With
    ``adaptive_quadrature`` (the default) each interval takes the fewest nodes whose error bound
    per unit length is at most that of the order-:math:`q` rule on ``max_step`` (see
    :func:`~pyro_spikes.distributions.spiking._quadrature_rules`): the bound on the whole
    compensator is unchanged, while the short intervals between the spikes of a busy recording
    need 2-4 nodes.

    **Long recordings stream.** ``log_prob`` and its gradient run through the merged rows in
    chunks (:func:`~pyro_spikes.distributions.point_process.stream_terms`), carrying the
    :math:`L \\times D` traces from one chunk to the next: on the CPU the compiled kernel sums a
    chunk and its reverse sweep recomputes that chunk's traces from the ones saved at its
    start; the PyTorch path (GPU, other dtypes, a stimulus or history) checkpoints each chunk.
    The working memory is then one chunk's (about ``CHUNK_ELEMENTS`` numbers) plus O(rows) for
    the rows' times and marks: with ``layout="index"`` O(spikes) in all, not O(spikes × D).
    Exact sampling writes each candidate's neuron index, not its mark, for the same reason.

    :param torch.Tensor bias: :math:`b`, shape ``batch_shape + (D,)``.
    :param torch.Tensor weight: :math:`W`, shape ``batch_shape + (L, D, D)``.
    :param torch.Tensor time_constants: :math:`\\tau_l > 0`, shape ``batch_shape + (L,)``.
    :param float duration: observation window :math:`T`.
    :param upper_bound: :math:`a > 0`, a number or a tensor of shape ``batch_shape``.
    :param int capacity: rows of a sample; defaults to a candidate count exceeded with
        probability below ~1e-9, so exact samples never overflow (computed when first sampling;
        scoring accepts any number of rows).
    :param int quadrature_order: Gauss–Legendre nodes per piece.
    :param float max_step: longest piece of the compensator quadrature (default the smallest
        time constant, of the basis and of the stimulus filter).
    :param bool adaptive_quadrature: choose the number of nodes per interval (at most
        ``quadrature_order``) so that the error bound stays that of ``quadrature_order`` nodes
        on ``max_step`` (see :func:`_quadrature_rules`); ``False``: ``quadrature_order`` nodes
        on every interval.
    :param neurons: indices of the network neurons this distribution models (default: all).
        The value's marks are those neurons' marks, ``event_shape = (capacity, 1 + |D|)``, and
        the thinning bound is :math:`a |\\mathcal D|`.
    :param torch.Tensor context: with ``neurons`` a strict subset, the spikes of the other
        neurons (in increasing index order) in the ``events`` layout,
        ``batch + (C, 1 + D - |D|)``: exogenous input that drives the modelled neurons through
        ``weight`` but is not modelled (soft marks allowed). ``log_prob`` is then the partial
        likelihood of the modelled neurons given the whole history, so the likelihood of a
        network splits into ``log_prob`` of neuron groups, each with the others as context.
    :param stimulus: a :class:`~pyro_spikes.distributions.Stimulus` (exponential kernels:
        :class:`~pyro_spikes.distributions.FilteredStimulus`; raised cosines:
        :class:`~pyro_spikes.distributions.RaisedCosineStimulus`): an exogenous
        covariate filtered by learnable kernels, :math:`s_d(t)`, added to :math:`u_d(t)`
        (the stimulus term of a GLM, Pillow et al., 2008). Its hold breakpoints become rows of
        the compensator quadrature, so the likelihood stays exact for the stimulus's
        zero-order-hold interpolation; exact thinning and the relaxed sampler add it to the
        potential at every candidate (like the context's share).
    :param torch.Tensor history: spikes of the network before the observation window, in the
        ``events`` layout with times :math:`\\le 0` (relative to the window start),
        ``batch + (H, 1 + D)``, zero marks for padding (soft marks allowed). They add
        :math:`\\sum_l \\sum_{d'} W_{l,d,d'} \\sum_h m_{h,d'} e^{-(t-t_h)/\\tau_l}` to
        :math:`u_d(t)` (see :func:`~pyro_spikes.distributions.stimulus.history_drive`), so the
        windows of one recording, each with the spikes before it as history, have
        log-likelihoods that sum to the recording's (see :func:`pyro_spikes.windows.split_windows`).

    :param str layout: ``"dense"`` (one-hot marks) or ``"index"`` (rows of time and neuron
        index, O(spikes) memory): the layout of samples and of :meth:`log_prob`'s value (see
        :class:`~pyro_spikes.distributions.PointProcess`). ``context`` and ``history`` stay in
        the dense layout (they may hold soft marks); with exact context marks the index layout
        uses them as indices too.
    :param dict arg_names: the names a caller knows some arguments by, used in error messages
        (e.g. ``{"context": "observed", "capacity": "hidden_capacity"}`` for a model that passes
        its data as ``context``).

    With a stimulus or a history the log-likelihood runs on the PyTorch path (the compiled
    likelihood loop has no drive term).
    """

    _count_args = "upper_bound, the number of neurons and duration"

    arg_constraints = {
        "bias": independent(finite, 1),
        "weight": independent(finite, 3),
        "time_constants": independent(positive_finite, 1),
        "upper_bound": positive_finite,
    }

    def __init__(self, bias, weight, time_constants, duration, upper_bound=5.0, capacity=None,
                 quadrature_order=8, max_step=None, neurons=None, context=None,
                 stimulus=None, history=None, validate_args=None, arg_names=None,
                 layout="dense", adaptive_quadrature=True):
        self._arg_names = {"max_step": "max_step" if max_step is not None else
                           "time_constants (max_step defaults to min(time_constants))",
                           **(arg_names or {})}
        bias = as_param(bias)
        duration = check_duration(duration)
        weight = as_param(weight, bias)
        time_constants = as_param(time_constants, bias)
        upper_bound = as_param(upper_bound, bias)
        if bias.dim() < 1:
            raise ValueError(f"bias must have shape (..., D), got {tuple(bias.shape)}")
        num_network = bias.shape[-1]
        if time_constants.dim() < 1:
            raise ValueError(
                f"time_constants must have shape (..., L), got {tuple(time_constants.shape)}"
            )
        num_basis = time_constants.shape[-1]
        if num_network < 1 or num_basis < 1:
            raise ValueError(
                f"bias must name at least one neuron (D >= 1) and time_constants at least one "
                f"basis function (L >= 1), got bias {tuple(bias.shape)} and time_constants "
                f"{tuple(time_constants.shape)}"
            )
        check_same_dtype(bias=bias, weight=weight, time_constants=time_constants,
                         upper_bound=upper_bound)
        if weight.dim() < 3 or weight.shape[-3:] != (num_basis, num_network, num_network):
            raise ValueError(
                f"weight must have shape (..., L, D, D) with L={num_basis}, D={num_network}, "
                f"got {tuple(weight.shape)}"
            )
        neurons, others = self._neuron_sets(neurons, num_network, bias.device)
        num_neurons = neurons.numel()
        if context is not None:
            ctx_name = self._arg_names.get("context", "context")
            if neurons.numel() == num_network:
                raise ValueError(f"{ctx_name} needs neurons: a strict subset of the network")
            context = as_param(context, bias).to(dtype=bias.dtype, device=bias.device)
            validate = validate_args
            if validate is None:
                validate = torch.distributions.Distribution._validate_args
            if validate:
                validate_events(context, duration, others.numel(), relaxed=True, name=ctx_name)
            elif context.dim() < 2 or context.shape[-1] != 1 + others.numel():
                raise ValueError(
                    f"{ctx_name} must have shape (..., capacity, {1 + others.numel()}), "
                    f"got {tuple(context.shape)}"
                )
            context = trim_padding(context, duration)  # trailing padding drives nothing
        stimulus, history = self._check_drive(stimulus, history, num_network, bias)
        try:
            batch_shape = broadcast_shape(
                bias.shape[:-1], weight.shape[:-3], time_constants.shape[:-1], upper_bound.shape,
                () if context is None else context.shape[:-2],
                () if stimulus is None else stimulus.batch_shape,
                () if history is None else history.shape[:-2],
            )
        except ValueError:
            raise ValueError(
                f"bias {tuple(bias.shape)}, weight {tuple(weight.shape)}, time_constants "
                f"{tuple(time_constants.shape)}, upper_bound {tuple(upper_bound.shape)}, "
                "context, stimulus and history have incompatible batch shapes"
            ) from None
        if int(quadrature_order) < 1:
            raise ValueError(f"quadrature_order must be >= 1, got {quadrature_order}")
        if max_step is not None and not (math.isfinite(float(max_step)) and float(max_step) > 0):
            raise ValueError(f"max_step must be positive and finite, got {max_step}")
        self.bias, self.weight = bias, weight
        self.time_constants, self.upper_bound = time_constants, upper_bound
        self.num_basis = num_basis
        self.num_network = num_network
        self.neurons, self.others, self.context = neurons, others, context
        self.stimulus, self.history = stimulus, history
        self._whole_network = context is None and bool(
            (neurons == torch.arange(num_network, device=neurons.device)).all()
        )
        self.quadrature_order = int(quadrature_order)
        self.max_step = None if max_step is None else float(max_step)
        self.adaptive_quadrature = bool(adaptive_quadrature)
        self._exact_context = context is not None and _exact_marks(context.detach()[..., 1:])
        super().__init__(batch_shape, num_neurons, duration, capacity, validate_args, layout)

    def _default_capacity(self):
        upper_bound = self.upper_bound.detach()
        if not bool(((upper_bound > 0) & torch.isfinite(upper_bound)).all()):
            raise ValueError("upper_bound must be positive and finite")
        return _poisson_capacity(reduce_or(upper_bound, "max", 0.0) * self.num_neurons
                                 * self.duration)

    @staticmethod
    def _check_drive(stimulus, history, num_network, bias):
        """Validate the ``stimulus`` and ``history`` arguments (see the class docstring)."""
        if stimulus is not None:
            if not isinstance(stimulus, Stimulus):
                raise TypeError(
                    "stimulus must be a Stimulus (FilteredStimulus, RaisedCosineStimulus), got "
                    f"{type(stimulus).__name__}"
                )
            if stimulus.num_neurons != num_network:
                raise ValueError(
                    f"stimulus weight must have shape (..., K, D, J) with D={num_network} "
                    f"(the network), got {tuple(stimulus.weight.shape)}"
                )
            if stimulus.weight.dtype != bias.dtype or stimulus.weight.device != bias.device:
                raise ValueError(
                    f"stimulus tensors must have bias's dtype {bias.dtype} and device "
                    f"{bias.device}, got {stimulus.weight.dtype} on {stimulus.weight.device}"
                )
        if history is not None:
            history = as_param(history, bias).to(dtype=bias.dtype, device=bias.device)
            if history.dim() < 2 or history.shape[-1] != 1 + num_network:
                raise ValueError(
                    f"history must have shape (..., H, {1 + num_network}), "
                    f"got {tuple(history.shape)}"
                )
            h = history.detach()
            if not bool(torch.isfinite(h).all()):
                raise ValueError("history contains NaN or infinite entries")
            if h.numel() and bool((h[..., 0] > 0).any()):
                raise ValueError("history times must be <= 0 (before the window start)")
            marks = h[..., 1:]
            if marks.numel() and (bool((marks < 0).any())
                                  or bool((marks.sum(-1) > 1 + 1e-6).any())):
                raise ValueError("history marks must be nonnegative with sum <= 1")
        return stimulus, history

    @property
    def _has_drive(self):
        return self.stimulus is not None or self.history is not None

    def _drive_inputs(self):
        """The tensors of the drive terms: the stimulus's (:meth:`Stimulus.tensors`), history."""
        if self.stimulus is None:
            return (self.history,)
        return tuple(self.stimulus.tensors()) + (self.history,)

    def _drive(self, weight=None, time_constants=None, inputs=None):
        """
        The deterministic addition to the potentials (stimulus drive plus the history's
        share) as a function of times ``batch + (n,)`` -> ``batch + (n, D_net)``, in the given
        tensors (defaults: this distribution's), or ``None`` when there is neither.
        """
        if not self._has_drive:
            return None
        weight = self.weight if weight is None else weight
        time_constants = self.time_constants if time_constants is None else time_constants
        inputs = self._drive_inputs() if inputs is None else inputs
        history = inputs[-1]
        stimulus = cache = None
        if self.stimulus is not None:
            stimulus = self.stimulus.with_tensors(*inputs[:-1])
            # e.g. the filter at the breakpoints: once per drive function, computed here
            # rather than at the first call (which may run inside a checkpointed chunk)
            cache = stimulus.precompute()

        def drive(t):
            out = 0.0
            if stimulus is not None:
                out = stimulus.drive(t, cache)
            if history is not None:
                out = out + history_drive(history, weight, time_constants, t)
            return out

        return drive

    def _breakpoints(self):
        if self.stimulus is None:
            return None
        return self.stimulus.breakpoints(self.duration)

    @staticmethod
    def _neuron_sets(neurons, num_network, device):
        if neurons is None:
            neurons = torch.arange(num_network, device=device)
        else:
            neurons = torch.as_tensor(neurons, dtype=torch.long, device=device).reshape(-1)
            if neurons.numel() == 0 or bool((neurons < 0).any()) or bool(
                (neurons >= num_network).any()
            ):
                raise ValueError(f"neurons must be indices in [0, {num_network}), got {neurons}")
            if neurons.unique().numel() != neurons.numel():
                raise ValueError(f"neurons must not repeat, got {neurons.tolist()}")
        keep = torch.ones(num_network, dtype=torch.bool, device=device)
        keep[neurons] = False
        return neurons, keep.nonzero().reshape(-1)

    def _params_like(self):
        return self.bias

    def _embed(self, marks):
        if self._whole_network:
            return marks
        full = marks.new_zeros(marks.shape[:-1] + (self.num_network,))
        return full.index_copy(-1, self.neurons, marks)

    def _select(self, x):
        return x if self._whole_network else x.index_select(-1, self.neurons)

    def _embed_labels(self, labels):
        if self._whole_network:
            return labels
        return torch.where(labels < 0, labels, self.neurons[labels.clamp(min=0)])

    def _context(self):
        if self.context is None:
            return None
        marks = self.context[..., 1:]
        if self.layout == "index" and self._exact_context:  # as network indices
            labels = _mark_labels(marks)
            return self.context[..., 0], torch.where(labels < 0, labels,
                                                     self.others[labels.clamp(min=0)])
        full = marks.new_zeros(marks.shape[:-1] + (self.num_network,))
        return self.context[..., 0], full.index_copy(-1, self.others, marks)

    def _time_scale(self):
        """The intensity's shortest time scale: the smallest time constant (and the filtered
        stimulus's own)."""
        step = reduce_or(self.time_constants.detach(), "min", self.duration)
        if self.stimulus is not None:  # the filtered stimulus varies on its own time scale
            step = min(step, self.stimulus.time_scale())
        return step

    def _max_step(self):
        return self.max_step if self.max_step is not None else self._time_scale()

    def _quadrature(self, like):
        """The compensator's table of rules (see :func:`_quadrature_rules`)."""
        return _quadrature_rules(self.quadrature_order, self._max_step(), self._time_scale(),
                                 self.adaptive_quadrature, like)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(SpikingPointProcess, _instance)
        batch_shape = torch.Size(batch_shape)
        d, l = self.num_network, self.num_basis
        new.bias = self.bias.expand(batch_shape + (d,))
        new.weight = self.weight.expand(batch_shape + (l, d, d))
        new.time_constants = self.time_constants.expand(batch_shape + (l,))
        new.upper_bound = self.upper_bound.expand(batch_shape)
        new.num_basis = l
        new.num_network = self.num_network
        new.neurons, new.others = self.neurons, self.others
        new._whole_network = self._whole_network
        new.context = (
            None if self.context is None
            else self.context.expand(batch_shape + self.context.shape[-2:])
        )
        new.quadrature_order = self.quadrature_order
        new.max_step = self.max_step
        new.adaptive_quadrature = self.adaptive_quadrature
        new.stimulus, new.history = self.stimulus, self.history
        new._arg_names = self._arg_names
        new._exact_context = self._exact_context
        PointProcess.__init__(new, batch_shape, self.num_neurons, self.duration, self._capacity,
                              validate_args=False, layout=self.layout)
        new._validate_args = self._validate_args
        return new

    # ------------------------------------------------------------------ likelihood
    def basis_states(self, times, marks):
        """
        Left limits :math:`V_{l,d}(t_r^-)` of the basis traces at sorted rows, and the row
        contributions :math:`x_{l,r,d} = (W_l m_r)_d`; both of shape ``batch + (L, R, D)``.
        ``marks`` are dense ``batch + (R, D)`` or labels ``batch + (R,)`` (int64, -1: none).
        """
        x = _row_inputs(marks, self.weight)
        return exp_decay_scan(times, x, 1.0 / self.time_constants), x

    def thinning_bound(self):
        """The thinning bound :math:`\\bar\\lambda = a |\\mathcal D|` (batch shape)."""
        return self.upper_bound.detach() * self.num_neurons

    def candidate_log_probs(self, value):
        """
        At every row :math:`s_k` of ``value``, the log probabilities of the thinning
        categories given the history before :math:`s_k` (the value's earlier rows, soft marks
        included, and the context): :math:`\\log(\\lambda_d(s_k^-)/\\bar\\lambda)` for the
        modelled neurons and, last, :math:`\\log(1 - \\sum_d \\lambda_d(s_k^-)/\\bar\\lambda)`,
        computed stably as :math:`\\log \\sum_d \\sigma(-u_d) - \\log |\\mathcal D|`.

        :returns: tensor of shape ``batch + (capacity, |D| + 1)``.
        """
        times, marks, event_pos, _ = self._rows(value, grid=False)
        h, _ = self.basis_states(times, marks)
        u = self.bias.unsqueeze(-2) + h.sum(-3)
        drive = self._drive()
        if drive is not None:
            u = u + drive(times)
        u = self._select(u)
        u = u.gather(-2, event_pos.unsqueeze(-1).expand(event_pos.shape + u.shape[-1:]))
        log_share = math.log(self.num_neurons)
        log_spike = F.logsigmoid(u) - log_share
        log_none = torch.logsumexp(F.logsigmoid(-u), -1, keepdim=True) - log_share
        return torch.cat([log_spike, log_none], -1)

    def _compiled_likelihood(self, value):
        """Whether the compiled kernel computes the likelihood (else the PyTorch formulas)."""
        ref = self.bias
        params = (self.bias, self.weight, self.time_constants, self.upper_bound)
        return (
            kernels.compiled_for(ref)
            and all(type(x) in (torch.Tensor, torch.nn.Parameter) for x in params + (value,))
            and all(x.dtype == ref.dtype for x in params)
            and (self.context is None or type(self.context) in (torch.Tensor, torch.nn.Parameter))
            and not self._has_drive
        )

    def _terms(self, value):
        # The merged rows stream in chunks carrying the traces (see the class docstring): on
        # the CPU the compiled kernel sums each chunk and back-propagates by its reverse sweep
        # from the chunk's saved initial traces; elsewhere (GPU, other dtypes, a stimulus or
        # history drive) the PyTorch formulas, each chunk checkpointed.
        if not value.requires_grad:  # see PointProcess._terms
            value = self._trim(value)
        times, marks, _, _ = self._rows(value)
        rules = self._quadrature(times)
        rates = 1.0 / self.time_constants
        d, l = self.num_network, self.num_basis
        if not self._compiled_likelihood(value):
            drive = self._drive()
            batch = torch.Size(broadcast_shape(times.shape[:-1], self.batch_shape)).numel()

            def chunk(t, m, state):
                return _likelihood_sums_torch(t, m, self.bias, self.weight, rates,
                                              self.upper_bound, state, *rules, drive=drive)

            size = chunk_rows(batch * l * d * (self.quadrature_order + 4))
            mark_total, integral = stream_terms(times, marks, size, chunk, checkpoint=True)
            return self._select(mark_total), self._select(integral)
        labels = marks.dtype == torch.long
        shape = times.shape[:-1]
        if self.bias.dim() > 1 or self.weight.dim() > 3 or self.time_constants.dim() > 1 \
                or self.upper_bound.dim() > 0:
            shape = torch.Size(broadcast_shape(shape, self.batch_shape))
            times = times.expand(shape + times.shape[-1:])
            marks = marks.expand(shape + marks.shape[-1:] if labels else shape + marks.shape[-2:])
        n = shape.numel()
        times = times.reshape(n, times.shape[-1])
        marks = (marks.reshape(n, times.shape[-1]) if labels
                 else marks.reshape(n, times.shape[-1], d))
        bias, weight, flat_rates, a = self._flat_params(shape)

        def chunk(t, m, state):
            return kernels.spiking_terms(t, m, bias, weight, flat_rates, a, rules[0], rules[1],
                                         _likelihood_sums_torch, initial=state,
                                         thresholds=rules[2])

        # the reverse sweep recomputes one chunk's traces: rows x L x D per thread
        mark_total, integral = stream_terms(times, marks, chunk_rows(l * d), chunk)
        return (self._select(mark_total.reshape(shape + (d,))),
                self._select(integral.reshape(shape + (d,))))

    def _row_terms(self, times, marks):
        h, x = self.basis_states(times, marks)
        return _likelihood_rows(times, h, x, self.bias, 1.0 / self.time_constants,
                                self.upper_bound, *self._quadrature(times), drive=self._drive())

    # ------------------------------------------------------------------ sampling
    def _flat_params(self, shape):
        """Parameters broadcast to ``shape`` and flattened to a leading ``N`` dimension."""
        d, l = self.num_network, self.num_basis
        n = shape.numel()
        bias = self.bias.expand(shape + (d,)).reshape(n, d)
        a = self.upper_bound.expand(shape).reshape(n)
        rate = (1.0 / self.time_constants).expand(shape + (l,)).reshape(n, l)
        if self.weight.shape[:-3].numel() == 1:
            weight = self.weight.reshape(l, d, d)
        else:
            weight = self.weight.expand(shape + (l, d, d)).reshape(n, l, d, d)
        return bias, weight, rate, a

    def _candidates(self, n, bound, like):
        """Homogeneous Poisson candidates at rate ``bound`` (shape ``(N,)``) on [0, T]."""
        # the loop's parameters, whatever validate_args says (invalid ones would give NaN
        # potentials or an unbounded candidate count)
        check_sampling_params(upper_bound=(self.upper_bound, "positive"),
                              time_constants=(self.time_constants, "positive"),
                              bias=(self.bias, "finite"), weight=(self.weight, "finite"))
        # no capacity check here: a capacity bounds the accepted spikes (checked by
        # _compact), or a relaxed sample's candidates (checked by RelaxedPointProcess)
        counts = torch.poisson(bound * self.duration)
        k = max(int(counts.max()) if counts.numel() else 0, 1)
        return uniform_order_statistics(counts, k, self.duration, like, name="upper_bound")

    def _stream(self, sample_shape):
        """
        The rows of a thinning run, flattened over the batch ``N``: the candidates of a
        homogeneous Poisson process at the bound rate :math:`\\bar\\lambda = a|\\mathcal D|`
        (:math:`\\mathcal D` the modelled neurons). Context spikes are not loop rows: their
        share of the potentials at the candidates does not depend on the candidates' marks, so
        it is computed once, in parallel, and added to the bias (``stream.base``).
        """
        shape = self._sample_batch(sample_shape)
        n = shape.numel()
        like = self.bias.detach()
        bound = (self.upper_bound.detach().expand(shape).reshape(n)) * self.num_neurons
        cand, valid = self._candidates(n, bound, like)
        stream = Stream(shape=shape, cand=cand, times=cand, is_cand=valid)
        if self.context is not None:
            ctx_times = self._flat_context(shape, self.context.detach())[..., 0]
            stream.merged_times, stream.perm = torch.sort(
                torch.cat([cand, ctx_times], -1), dim=-1, stable=True
            )
            stream.from_cand = stream.perm < cand.shape[-1]
        if self.context is not None or self._has_drive:
            # stimulus and history shares are, like the context's, fixed given the candidates
            with torch.no_grad():
                no_marks = cand.new_zeros(cand.shape + (self.num_neurons,))
                stream.base = self._stream_potentials(
                    stream, no_marks, self.bias, self.weight, self.time_constants, self.context
                ).index_select(-1, self._order)
        return stream

    def _flat_context(self, shape, context):
        """``context`` broadcast to ``shape`` and flattened: ``(N, C, 1 + D - |D|)``."""
        context = context.expand(shape + context.shape[-2:])
        return context.reshape((shape.numel(),) + context.shape[-2:])

    def _stream_potentials(self, stream, marks, bias, weight, time_constants, context,
                           drive_inputs=None):
        """
        Left potentials ``(N, K, D_net)`` at the candidates of ``stream`` given their marks
        ``(N, K, |D|)`` (and the context, stimulus and history), in parallel (blocked scan),
        differentiable in the explicit parameter tensors (``drive_inputs``: see
        :meth:`_drive_inputs`; default this distribution's): the map whose fixed point the
        thinning loop computes.
        """
        drive = self._drive(weight, time_constants, drive_inputs)
        shape, (n, k) = stream.shape, stream.cand.shape
        d, l = self.num_network, self.num_basis
        full = self._embed(marks)
        times = stream.times
        if context is not None:
            ctx = self._flat_context(shape, context)
            ctx_full = ctx.new_zeros(ctx.shape[:-1] + (d,)).index_copy(-1, self.others,
                                                                        ctx[..., 1:])
            full = torch.cat([full, ctx_full], 1)
            full = full.gather(1, stream.perm.unsqueeze(-1).expand(full.shape))
            times = stream.merged_times
        bias = bias.expand(shape + (d,)).reshape(n, 1, d)
        if weight.shape[:-3].numel() == 1:
            weight = weight.reshape(l, d, d)
        else:
            weight = weight.expand(shape + (l, d, d)).reshape(n, l, d, d)
        rate = (1.0 / time_constants).expand(shape + (l,)).reshape(n, l)
        x = torch.matmul(full.unsqueeze(1), weight.transpose(-1, -2))
        u = bias + exp_decay_scan(times, x, rate).sum(1)
        if context is not None:
            u = u[stream.from_cand].reshape(n, k, d)  # the candidates, in time order
        if drive is not None:
            u = u + drive(stream.cand.reshape(shape + (k,))).expand(shape + (k, d)).reshape(n, k, d)
        return u

    @property
    def _order(self):
        """Network neurons reordered as (modelled neurons, context neurons)."""
        return torch.cat([self.neurons, self.others])

    def _loop_weight(self, shape):
        """
        Weights in the loop's order as a matrix mapping a row mark to the basis traces:
        ``(D_net, L * D_net)``, or ``(N, D_net, L * D_net)`` for batched weights.
        """
        d, l = self.num_network, self.num_basis
        order = self._order
        w = self.weight.detach().index_select(-1, order).index_select(-2, order)
        if w.shape[:-3].numel() == 1:
            return w.reshape(l, d, d).permute(2, 0, 1).reshape(d, l * d)
        n = shape.numel()
        w = w.expand(shape + (l, d, d)).reshape(n, l, d, d)
        return w.permute(0, 3, 1, 2).reshape(n, d, l * d)

    def _loop_inputs(self, stream):
        """
        The inputs of the sequential loops over the candidates of ``stream`` (see
        :func:`~pyro_spikes.distributions.kernels.thinning_loop`; exact thinning here, the
        relaxed sweeps in :class:`~pyro_spikes.distributions.RelaxedPointProcess`), for the
        modelled neurons only: ``base`` (bias, plus the context's share per candidate when
        there is context), ``decay`` ``(N, K, L)``, the jumps ``weight`` ``(|D|, L, |D|)`` (or
        ``(N, |D|, L, |D|)`` for batched weights) and the candidate mask ``(N, K)``.
        """
        with torch.no_grad():
            d, l, dsub = self.num_network, self.num_basis, self.num_neurons
            bias, _, rate, _ = self._flat_params(stream.shape)
            base = bias.detach().index_select(-1, self.neurons)
            if stream.base is not None:
                base = stream.base[..., :dsub]  # bias plus the context's share, per candidate
            w = self._loop_weight(stream.shape)[..., :dsub, :]
            weight = w.reshape(w.shape[:-1] + (l, d))[..., :dsub]
            n = stream.times.shape[0]
            gaps = torch.diff(stream.times, dim=-1, prepend=stream.times.new_zeros(n, 1))
            decay = torch.exp(-gaps.unsqueeze(-1) * rate.detach().unsqueeze(-2))
            return base, decay, weight, stream.is_cand.to(bias)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            if self._whole_network and not kernels.compiled_for(self.bias) and not self._has_drive:
                return self._sample_fast(sample_shape)  # the PyTorch loop for a whole network
            stream = self._stream(sample_shape)
            # U |D| picks neuron d = floor(U |D|) uniformly, its fractional part accepts with
            # probability sigma(u_d): a spike of d with probability lambda_d / (a |D|)
            uniforms = torch.rand_like(stream.times) * self.num_neurons
            # the loop writes each candidate's neuron (-1: rejected), O(candidates) memory
            _, labels, _ = kernels.thinning_loop(*self._loop_inputs(stream), kernels.EXACT,
                                                 uniforms, labels=True)
            return self._compact(stream.cand, labels >= 0, labels.clamp(min=0), stream.shape)

    @staticmethod
    def _jump_table(weight, n):
        """
        The jumps :math:`W_{:, :, d}` of the basis traces for every label :math:`d`, plus an
        all-zero entry for the rejection label ``D``: shape ``(D + 1, L, D)`` for shared weights, else ``(N (D + 1), L, D)``
        (entry ``k (D + 1) + label`` for sequence ``k``).
        """
        if weight.dim() == 3:
            table = weight.permute(2, 0, 1)
        else:
            table = weight.permute(0, 3, 1, 2)  # (N, D, L, D)
        table = torch.cat([table, table.new_zeros(table.shape[:-3] + (1,) + table.shape[-2:])], -3)
        return table.reshape((-1,) + table.shape[-2:])

    def _sample_fast(self, sample_shape):
        """
        Exact thinning of the whole network. The decay factors of the basis traces between
        consecutive candidates and the uniforms are computed for all candidates before the
        loop; each step then decays the traces, draws the label by a ``searchsorted`` of the
        uniform in the cumulated intensity (label ``D`` = rejected) and adds the jump of that
        label (zero for ``D``): O(L D) per candidate. Candidates past the count of their
        sequence sit at :math:`T` after all real ones, and are masked afterwards.
        """
        shape = self._sample_batch(sample_shape)
        d, l = self.num_neurons, self.num_basis
        bias, weight, rate, a = self._flat_params(shape)
        n = bias.shape[0]
        cand, valid = self._candidates(n, a * d, bias)
        k = cand.shape[-1]
        table = self._jump_table(weight, n)
        offset = None
        if table.shape[0] != d + 1:
            offset = torch.arange(n, device=bias.device) * (d + 1)
        gaps = torch.diff(cand, dim=-1, prepend=cand.new_zeros(n, 1))  # (N, K)
        # lambda_d / a = sigmoid(u_d) is compared with U * D (bound / a = D)
        uniforms = torch.rand(k, n, 1, dtype=bias.dtype, device=bias.device) * d
        state = bias.new_zeros(n, l, d)
        labels = []
        with sequential_threads(state.numel()):
            for start in range(0, k, 256):
                stop = min(start + 256, k)
                # decay factors of this chunk of candidates, (chunk, N, L, 1)
                decay = torch.exp(-gaps[:, start:stop].t().unsqueeze(-1) * rate).unsqueeze(-1)
                for dec, u in zip(decay.unbind(0), uniforms[start:stop].unbind(0)):
                    state.mul_(dec)
                    potential = state.sum(-2) if l > 1 else state[:, 0]
                    cum = torch.sigmoid(potential + bias).cumsum_(-1)
                    label = torch.searchsorted(cum, u).squeeze(-1)
                    index = label if offset is None else label + offset
                    state.add_(table.index_select(0, index))
                    labels.append(label)
            # the O(N K) post-processing is a few passes: not worth threads either
            labels = torch.stack(labels, -1)
            accepted = (labels < d) & valid
            return self._compact(cand, accepted, labels.clamp(max=d - 1), shape)
