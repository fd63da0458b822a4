import math

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from pyro_spikes.distributions.constraints import spike_trains
from pyro_spikes.spikes import validate_events

__all__ = ["RelaxedPointProcess", "concrete_log_density"]


def concrete_log_density(y, log_probs, temperature):
    """
    Log density of the concrete (Gumbel-softmax) distribution (Maddison, Mnih & Teh, 2017;
    Jang, Gu & Poole, 2017) on the simplex of :math:`n` categories, with respect to the Lebesgue
    measure of its first :math:`n - 1` coordinates:

    .. math::

        \\log p(y) = \\log\\,(n-1)! + (n-1)\\log\\tau
            + \\sum_i \\left(\\log\\pi_i - (\\tau + 1)\\log y_i\\right)
            - n \\log \\sum_i \\pi_i y_i^{-\\tau}.

    :param y: points of the simplex, shape ``(..., n)``.
    :param log_probs: :math:`\\log \\pi`, shape ``(..., n)`` (normalised).
    :param temperature: :math:`\\tau > 0`.
    """
    n = y.shape[-1]
    tiny = torch.finfo(y.dtype).tiny
    log_y = torch.log(y.clamp(min=tiny))
    temperature = torch.as_tensor(temperature, dtype=y.dtype, device=y.device)
    return (
        math.lgamma(n)
        + (n - 1) * torch.log(temperature)
        + (log_probs - (temperature + 1) * log_y).sum(-1)
        - n * torch.logsumexp(log_probs - temperature * log_y, -1)
    )


class RelaxedPointProcess(TorchDistribution):
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

    so that :math:`\\log q` in an ELBO is correct. As :math:`\\tau \\to 0` the marks become
    one-hot and the accepted candidates are an exact thinning sample of the wrapped process.

    :param process: a :class:`~pyro_spikes.distributions.SpikingPointProcess` (possibly a
        subnetwork with context).
    :param float temperature: :math:`\\tau > 0`.
    """

    arg_constraints = {"temperature": constraints.positive}
    has_rsample = True

    def __init__(self, process, temperature, validate_args=None):
        if not hasattr(process, "_thinning") or not hasattr(process, "candidate_log_probs"):
            raise TypeError(
                "process must expose a thinning bound (e.g. SpikingPointProcess); "
                f"got {type(process).__name__}"
            )
        self.process = process
        self.temperature = torch.as_tensor(
            temperature, dtype=process._params_like().dtype, device=process._params_like().device
        )
        if self.temperature.dim() != 0:
            raise ValueError("temperature must be a scalar")
        if not float(self.temperature) > 0:
            raise ValueError(f"temperature must be positive, got {float(self.temperature)}")
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
        tau = self.temperature

        def decide(log_probs):
            u = torch.rand_like(log_probs)
            tiny = torch.finfo(u.dtype).tiny
            gumbel = -torch.log(-torch.log(u.clamp(min=tiny, max=1 - 1e-7)))
            z = (log_probs + gumbel) / tau
            # softmax via logsumexp: F.softmax stalls on tiny tensors when cores are busy
            return torch.exp(z - torch.logsumexp(z, -1, keepdim=True))[..., :-1]

        cand, marks, valid, shape = self.process._thinning(sample_shape, decide)
        rows = torch.cat([cand.unsqueeze(-1), marks], -1)
        pad = rows.new_zeros(rows.shape[0], self.capacity - rows.shape[1], rows.shape[2])
        pad[..., 0] = self.duration
        return torch.cat([rows, pad], 1).reshape(shape + self.event_shape)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        proc = self.process
        ref = proc._params_like()
        value = value.to(dtype=ref.dtype, device=ref.device)
        is_cand = value[..., 0] < self.duration
        bound = proc.thinning_bound()
        count = is_cand.sum(-1).to(ref.dtype)
        log_candidates = count * torch.log(bound) - bound * self.duration
        marks = value[..., 1:]
        y = torch.cat([marks, (1 - marks.sum(-1, keepdim=True)).clamp(min=0)], -1)
        log_probs = proc.candidate_log_probs(value)
        log_marks = concrete_log_density(y, log_probs, self.temperature)
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
        times = torch.where(spike, value[..., 0], torch.full_like(value[..., 0], self.duration))
        # move the spike rows to the front, keeping their order
        order = torch.sort((~spike).to(torch.int8), dim=-1, stable=True).indices
        times = times.gather(-1, order)
        hard = hard.gather(-2, order.unsqueeze(-1).expand(hard.shape))
        return torch.cat([times.unsqueeze(-1), hard], -1)
