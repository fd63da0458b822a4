import math

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from pyro_spikes.distributions.constraints import spike_trains
from pyro_spikes.distributions.unavailable import NoMoments
from pyro_spikes.distributions import kernels
from pyro_spikes.spikes import pad_rows, select_neurons, trim_padding, validate_events

__all__ = ["RelaxedPointProcess", "concrete_log_density"]


def concrete_log_density(y, log_probs, temperature, log_y=None):
    """
    Log density of the concrete (Gumbel-softmax) distribution (Maddison, Mnih & Teh, 2017;
    Jang, Gu & Poole, 2017) on the simplex of :math:`n` categories, with respect to the Lebesgue
    measure of its first :math:`n - 1` coordinates:

    .. math::

        \\log p(y) = \\log\\,(n-1)! + (n-1)\\log\\tau
            + \\sum_i \\left(\\log\\pi_i - (\\tau + 1)\\log y_i\\right)
            - n \\log \\sum_i \\pi_i y_i^{-\\tau}.

    The density needs only :math:`\\log y`. A concrete sample's small coordinates are
    :math:`e^{-\\Delta/\\tau}` for a logit margin :math:`\\Delta`: below the dtype's
    ``tiny`` they underflow (in float32 already for :math:`\\Delta > 26` at :math:`\\tau = 0.3`),
    and a last coordinate :math:`1 - \\sum_{i<n} y_i` below the dtype's ``eps`` is lost to
    cancellation, so pass ``log_y`` when it is known (e.g. a log-softmax of the logits).

    :param y: points of the simplex, shape ``(..., n)`` (ignored where ``log_y`` is given; may
        then be ``None``).
    :param log_probs: :math:`\\log \\pi`, shape ``(..., n)`` (normalised).
    :param temperature: :math:`\\tau > 0`.
    :param log_y: optional :math:`\\log y`, shape ``(..., n)``.
    """
    if log_y is None:
        log_y = torch.log(y.clamp(min=torch.finfo(y.dtype).tiny))
    n = log_y.shape[-1]
    temperature = torch.as_tensor(temperature, dtype=log_y.dtype, device=log_y.device)
    return (
        math.lgamma(n)
        + (n - 1) * torch.log(temperature)
        + (log_probs - (temperature + 1) * log_y).sum(-1)
        - n * torch.logsumexp(log_probs - temperature * log_y, -1)
    )


class RelaxedPointProcess(NoMoments, TorchDistribution):
    """
    Kajino's (2021) differentiable point process: the relaxation of thinning in which the
    accept/reject decision of every candidate becomes a concrete (Gumbel-softmax) mark, so
    realisations are reparameterised and the path-wise gradient applies.

    Candidates :math:`s_1 < s_2 < \\dots` form a homogeneous Poisson process at the bound rate
    :math:`\\bar\\lambda` of the wrapped process (they do not depend on its parameters). At each
    candidate the categories "spike of neuron :math:`d`" and "no spike" have probabilities

    .. math::

        \\pi_{k,d} = \\lambda_d(s_k \\mid \\mathcal H_{s_k}) / \\bar\\lambda, \\qquad
        \\pi_{k,0} = 1 - \\sum_d \\pi_{k,d},

    computed from the history of the previous *soft* marks (and of the context rows of the
    wrapped process), and the mark is
    :math:`y_k = \\mathrm{softmax}((\\log \\pi_k + g_k)/\\tau)` with i.i.d. Gumbel noise
    :math:`g_k`. The first :math:`D` entries of :math:`y_k` fill the mark columns of the
    ``events`` layout: every candidate is a row, unused rows have time :math:`T` and a zero
    mark. :meth:`log_prob` is the exact density of this relaxed marked process,

    .. math::

        \\log q(J) = N \\log \\bar\\lambda - \\bar\\lambda T
            + \\sum_{k=1}^{N} \\log \\mathrm{Concrete}(y_k;\\ \\pi_k, \\tau),

    so that :math:`\\log q` in an ELBO is correct. A value returned by :meth:`rsample` carries
    its log marks (the log-softmax of the logits, in the attribute ``_relaxed_log_marks``), and
    :meth:`log_prob` evaluates the concrete densities from them: exact in float32 too, where
    :math:`\\log y` recomputed from :math:`y` loses the marks below the dtype's ``tiny`` and
    the no-spike weight :math:`1 - \\sum_d y_{k,d}` below its ``eps`` (a copy or a value from
    elsewhere is evaluated from :math:`y`, see :func:`concrete_log_density`). As
    :math:`\\tau \\to 0` the marks become one-hot and the accepted candidates are an exact
    thinning sample of the wrapped process.

    :param process: a :class:`~pyro_spikes.distributions.SpikingPointProcess` (possibly a
        subnetwork with context; bound :math:`a |\\mathcal D|`), or a
        :class:`~pyro_spikes.distributions.PoissonProcess` built with ``upper_bound``.
    :param float temperature: :math:`\\tau > 0`.
    """

    arg_constraints = {"temperature": constraints.positive}
    has_rsample = True

    def __init__(self, process, temperature, validate_args=None):
        if not hasattr(process, "_stream") or not hasattr(process, "candidate_log_probs"):
            raise TypeError(
                "process must expose a thinning bound (SpikingPointProcess, or PoissonProcess "
                f"with upper_bound); got {type(process).__name__}"
            )
        process.thinning_bound()  # raises if the process has no bound
        if process.layout != "dense":
            raise ValueError(
                "RelaxedPointProcess needs a process with layout='dense': a relaxed (soft) mark "
                f"spreads over several neurons and has no neuron index (got layout="
                f"{process.layout!r})"
            )
        self.process = process
        self.temperature = torch.as_tensor(
            temperature, dtype=process._params_like().dtype, device=process._params_like().device
        )
        if self.temperature.dim() != 0:
            raise ValueError("temperature must be a scalar")
        if not (math.isfinite(float(self.temperature)) and float(self.temperature) > 0):
            raise ValueError(f"temperature must be positive and finite, got "
                             f"{float(self.temperature)}")
        self.duration = process.duration
        self.num_neurons = process.num_neurons
        self.capacity = process.capacity
        super().__init__(process.batch_shape, process.event_shape, validate_args)

    @property
    def support(self):
        return spike_trains(self.duration, self.num_neurons, relaxed=True)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(RelaxedPointProcess, _instance)
        new.process = self.process.expand(batch_shape)
        new.temperature = self.temperature
        new.duration, new.num_neurons, new.capacity = (
            self.duration, self.num_neurons, self.capacity
        )
        super(RelaxedPointProcess, new).__init__(
            new.process.batch_shape, self.event_shape, validate_args=False
        )
        new._validate_args = self._validate_args
        return new

    def _validate_sample(self, value):
        self.process._validate_sample(value)

    def rsample(self, sample_shape=torch.Size()):
        proc = self.process
        stream = proc._stream(sample_shape)
        if stream.cand.shape[1] > self.capacity:  # a relaxed sample keeps every candidate
            raise ValueError(
                f"capacity={self.capacity} exceeded: a relaxed realisation has "
                f"{stream.cand.shape[1]} thinning candidates; build the process with a larger "
                "capacity"
            )
        u = torch.rand(stream.times.shape + (proc.num_neurons + 1,),
                       dtype=stream.times.dtype, device=stream.times.device)
        tiny = torch.finfo(u.dtype).tiny
        gumbel = -torch.log(-torch.log(u.clamp(min=tiny, max=1 - 1e-7)))
        if hasattr(proc, "_relaxed_marks"):  # history-free marks (Poisson)
            marks = proc._relaxed_marks(stream, gumbel, self.temperature)
        else:
            marks = _RelaxedThinning.apply(
                proc, stream, gumbel, float(self.temperature),
                proc.bias, proc.weight, proc.time_constants, proc.context,
                *proc._drive_inputs(),
            )
        rows = torch.cat([stream.cand.unsqueeze(-1), marks], -1)
        value = pad_rows(rows, self.capacity, self.duration).reshape(
            stream.shape + self.event_shape)
        # The log marks, log-softmax of the logits (log pi_k + g_k) / tau with log pi_k from the
        # history of the soft marks (the loop's fixed point, so the same total derivative), for
        # log_prob: log y computed from y loses the marks below the dtype's tiny and the
        # no-spike weight 1 - sum(y) below its eps (float32: tens of nats per sequence).
        spare = (gumbel.shape[0], self.capacity - gumbel.shape[1], gumbel.shape[-1])
        gumbel = torch.cat([gumbel, gumbel.new_zeros(spare)], 1)
        logits = (proc.candidate_log_probs(value)
                  + gumbel.reshape(stream.shape + gumbel.shape[1:])) / self.temperature
        log_marks = torch.log_softmax(logits, -1)
        value._relaxed_log_marks = torch.where(
            (value[..., :1] < self.duration), log_marks, torch.zeros_like(log_marks))
        return value

    def log_prob(self, value):
        self.process._check_value(value)
        if self._validate_args:
            self._validate_sample(value)
        proc = self.process
        ref = proc._params_like()
        log_y = getattr(value, "_relaxed_log_marks", None)
        value = trim_padding(value.to(dtype=ref.dtype, device=ref.device), self.duration)
        if log_y is not None:
            log_y = log_y[..., :value.shape[-2], :].to(dtype=ref.dtype, device=ref.device)
            if log_y.shape[:-1] != value.shape[:-1] or log_y.shape[-1] != value.shape[-1]:
                log_y = None
        is_cand = value[..., 0] < self.duration
        bound = proc.thinning_bound()
        count = is_cand.sum(-1).to(ref.dtype)
        log_candidates = count * torch.log(bound) - bound * self.duration
        marks = value[..., 1:]
        y = None
        if log_y is None:  # a value from elsewhere: log y from y (see concrete_log_density)
            y = torch.cat([marks, (1 - marks.sum(-1, keepdim=True)).clamp(min=0)], -1)
        log_probs = proc.candidate_log_probs(value)
        log_marks = concrete_log_density(y, log_probs, self.temperature, log_y=log_y)
        log_marks = torch.where(is_cand, log_marks, torch.zeros_like(log_marks))
        return log_candidates + log_marks.sum(-1)

    def hard_marks(self, value):
        """
        The exact realisation obtained by taking the most probable category of every relaxed
        mark (the :math:`\\tau \\to 0` limit): rows whose argmax is "no spike" become padding.
        """
        if self._validate_args:
            validate_events(value, self.duration, self.num_neurons, relaxed=True, name="value")
        marks = value[..., 1:]
        y = torch.cat([marks, 1 - marks.sum(-1, keepdim=True)], -1)
        label = y.argmax(-1)
        spike = (label < self.num_neurons) & (value[..., 0] < self.duration)
        hard = F.one_hot(label.clamp(max=self.num_neurons - 1), self.num_neurons).to(value)
        hard = hard * spike.unsqueeze(-1).to(value)
        # rows without a spike become padding, moved behind the spikes in order
        events = torch.cat([value[..., :1], hard], -1)
        return select_neurons(events, range(self.num_neurons), self.duration)


class _RelaxedThinning(torch.autograd.Function):
    """
    Relaxed thinning with an exact, loop-free-autograd gradient.

    The marks solve the causal fixed point :math:`y_k = F_k(y_{<k}; \\theta)`:
    :math:`y_k = \\mathrm{softmax}((\\log\\pi(u_k) + g_k)/\\tau)` with potentials
    :math:`u_k = u_k(y_{<k}; \\theta)`. The forward pass runs the sequential loop without
    recording a graph. The backward pass applies the implicit function theorem:
    :math:`\\bar u_k = (\\partial y_k/\\partial u_k)^\\top \\lambda_k` with
    :math:`\\lambda_k = \\partial L/\\partial y_k + \\sum_{j>k} (\\partial u_j/\\partial y_k)^\\top
    \\bar u_j`, accumulated by one reverse sweep of the exponential-kernel recursion (the adjoint
    of the forward state update), and then
    :math:`\\partial L/\\partial\\theta = \\sum_k \\bar u_k^\\top \\partial u_k/\\partial\\theta`
    from one parallel re-evaluation of the potentials (blocked scan). This equals
    back-propagation through the loop, at the cost of two loops without an autograd graph
    (compiled on the CPU, see :mod:`~pyro_spikes.distributions.kernels`).
    The temperature, the Gumbel noise, the candidate times and the context times are
    constants; bias, weights, time constants, context marks and the drive tensors (stimulus
    samples, filter weights and time constants, history marks) get gradients.
    """

    @staticmethod
    def forward(ctx, proc, stream, gumbel, temperature, bias, weight, time_constants, context,
                *drive_inputs):
        base, decay, loop_weight, mask = proc._loop_inputs(stream)
        potentials, marks, probs = kernels.thinning_loop(
            base, decay, loop_weight, mask, kernels.RELAXED, gumbel / temperature,
            1.0 / temperature,
        )
        ctx.proc, ctx.stream, ctx.temperature = proc, stream, temperature
        ctx.loop = decay, loop_weight, mask  # constants of the backward sweep
        ctx.save_for_backward(potentials, probs, marks, bias, weight, time_constants,
                              context if context is not None else torch.empty(0))
        ctx.has_context = context is not None
        ctx.drive_inputs = drive_inputs
        return marks

    @staticmethod
    def backward(ctx, grad_marks):
        proc, stream, tau = ctx.proc, ctx.stream, ctx.temperature
        potentials, probs, marks, bias, weight, time_constants, context = ctx.saved_tensors
        context = context if ctx.has_context else None
        num = proc.num_neurons
        decay, loop_weight, mask = ctx.loop
        cand_mask = mask.unsqueeze(-1)
        # Per row, with y the probabilities (spikes y_s, no spike y_0), sigma = sigmoid(u) and
        # w = softmax(log sigma(-u)), the vector-Jacobian product of the marks through the
        # softmax and log pi(u) is  u_bar = P * g - (y_s . g) Q  with
        # P = y_s (1 - sigma) / tau and Q = P - y_0 sigma w / tau; zero at non-candidate rows.
        # g, the marks' total adjoint, comes from the reverse sweep of the trace recursion.
        u = potentials
        sig = torch.sigmoid(u)
        log_neg = -F.softplus(u)  # log sigma(-u)
        share = torch.exp(log_neg - torch.logsumexp(log_neg, -1, keepdim=True))
        y_spike = probs[..., :num] * cand_mask
        p_coef = y_spike * (1 - sig) / tau
        q_coef = p_coef - probs[..., num:] * cand_mask * sig * share / tau
        u_bar = kernels.relaxed_adjoint(decay, loop_weight, grad_marks * cand_mask, y_spike,
                                        p_coef, q_coef)
        inputs = [bias, weight, time_constants, context, *ctx.drive_inputs]
        leaves = [None if x is None else x.detach().requires_grad_(x.requires_grad)
                  for x in inputs]
        wanted = [leaf for leaf in leaves if leaf is not None and leaf.requires_grad]
        grads = [None] * len(leaves)
        if wanted:
            with torch.enable_grad():
                u = proc._stream_potentials(stream, marks, *leaves[:4],
                                            drive_inputs=tuple(leaves[4:]))
                u = u.index_select(-1, proc.neurons)
                got = iter(torch.autograd.grad((u * u_bar).sum(), wanted, allow_unused=True))
            grads = [next(got) if leaf is not None and leaf.requires_grad else None
                     for leaf in leaves]
        return (None, None, None, None, *grads)
