import math

import torch
from pyro.distributions.util import broadcast_shape

from pyro_spikes.distributions._checks import (
    check_num_neurons,
    check_sampling_params,
    reduce_or,
)
from pyro_spikes.distributions.constraints import independent, nonnegative_finite
from pyro_spikes.distributions.point_process import (
    PointProcess,
    check_duration,
    Stream,
    as_param,
    mark_sum,
    uniform_order_statistics,
)

__all__ = ["PoissonProcess"]


def _poisson_capacity(mean):
    """A count that Poisson(``mean``) exceeds with probability below ~1e-9."""
    return int(math.ceil(mean + 6.0 * math.sqrt(mean) + 10))


class PoissonProcess(PointProcess):
    """
    Homogeneous multivariate Poisson process on :math:`[0, T]`: neuron :math:`d` spikes at the
    constant rate :math:`\\lambda_d`, independently of the history. Its log-likelihood is

    .. math::

        \\log p(J) = \\sum_d N_d \\log \\lambda_d - T \\sum_d \\lambda_d,

    with :math:`N_d` the (soft) mark mass of neuron :math:`d`. Samples are drawn exactly: the
    total count is Poisson(:math:`T \\sum_d \\lambda_d`), times are sorted uniforms and marks are
    categorical with probabilities :math:`\\lambda_d / \\sum_{d'} \\lambda_{d'}`.

    :param torch.Tensor rate: rates :math:`\\lambda_d \\ge 0`, shape ``batch_shape + (D,)``.
    :param float duration: observation window :math:`T`.
    :param int capacity: rows of a sample (default: a count exceeded with probability
        below ~1e-9, computed when first sampling; scoring accepts any number of rows).
    :param upper_bound: a constant :math:`\\bar\\lambda \\ge \\sum_d \\lambda_d`, only needed to wrap
        the process in a :class:`~pyro_spikes.distributions.RelaxedPointProcess` (the
        candidates of relaxed thinning come at this rate, independent of ``rate``).
    :param str layout: ``"dense"`` or ``"index"``, the layout of samples and values (see
        :class:`~pyro_spikes.distributions.PointProcess`).
    """

    _count_args = "rate and duration"

    arg_constraints = {"rate": independent(nonnegative_finite, 1)}

    def __init__(self, rate, duration, capacity=None, upper_bound=None, validate_args=None,
                 layout="dense"):
        rate = as_param(rate)
        if rate.dim() < 1:
            raise ValueError(f"rate must have shape (..., D), got {tuple(rate.shape)}")
        check_num_neurons("rate", rate.shape)
        self.rate = rate
        duration = check_duration(duration)
        self.upper_bound = None
        if upper_bound is not None:
            self.upper_bound = as_param(upper_bound, rate).detach()
            if not bool(torch.isfinite(self.upper_bound).all()):
                raise ValueError(f"upper_bound must be finite, got {upper_bound}")
            if bool((self.upper_bound < rate.detach().sum(-1)).any()):
                raise ValueError("upper_bound must be at least the total rate rate.sum(-1)")
        super().__init__(rate.shape[:-1], rate.shape[-1], duration, capacity, validate_args,
                         layout)

    def _default_capacity(self):
        # (upper_bound, when given, is finite and at least the total rate: checked at __init__)
        check_sampling_params(rate=(self.rate, "nonnegative"))
        total = self.rate.detach().sum(-1) if self.upper_bound is None else self.upper_bound
        return _poisson_capacity(reduce_or(total, "max", 0.0) * self.duration)

    def _params_like(self):
        return self.rate

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(PoissonProcess, _instance)
        batch_shape = torch.Size(batch_shape)
        new.rate = self.rate.expand(batch_shape + (self.num_neurons,))
        new.upper_bound = None if self.upper_bound is None else self.upper_bound.expand(
            batch_shape)
        PointProcess.__init__(new, batch_shape, self.num_neurons, self.duration, self._capacity,
                              validate_args=False, layout=self.layout)
        new._validate_args = self._validate_args
        return new

    def _row_terms(self, times, marks):
        rate = self.rate.unsqueeze(-2)
        rows = marks.shape + (1,) if marks.dtype == torch.long else marks.shape
        log_rate = torch.log(rate).expand(broadcast_shape(rate.shape, rows))
        dt = (times[..., 1:] - times[..., :-1]).unsqueeze(-1)
        return log_rate, rate * dt

    def log_prob(self, value):
        # closed form, no need for the row machinery
        self._check_value(value)
        if self._validate_args:
            self._validate_sample(value)
        marks = self._value_marks(value.to(self.rate))
        if marks.dtype == torch.long:  # the count of each index
            ones = self.rate.new_ones(()).expand(marks.shape + (self.num_neurons,))
            counts = mark_sum(marks, ones)
        else:
            counts = marks.sum(-2)
        term = torch.where(counts > 0, counts * torch.log(self.rate), torch.zeros_like(counts))
        return (term - self.duration * self.rate).sum(-1)

    def sample(self, sample_shape=torch.Size()):
        shape = self._sample_batch(sample_shape)
        with torch.no_grad():
            check_sampling_params(rate=(self.rate, "nonnegative"))  # whatever validate_args says
            rate = self.rate.expand(shape + (self.num_neurons,)).reshape(-1, self.num_neurons)
            total = rate.sum(-1)
            counts = torch.poisson(total * self.duration)
            self._check_capacity(counts)
            k = max(int(counts.max()) if counts.numel() else 0, 1)
            times, accepted = uniform_order_statistics(counts, k, self.duration, rate, "rate")
            probs = rate / total.clamp(min=torch.finfo(rate.dtype).tiny).unsqueeze(-1)
            probs = torch.where(total.unsqueeze(-1) > 0, probs, torch.ones_like(probs))
            labels = torch.multinomial(probs, k, replacement=True)
            return self._compact(times, accepted, labels, shape)

    # ------------------------------------------------------------------ relaxation
    def thinning_bound(self):
        """The candidate rate :math:`\\bar\\lambda` of relaxed thinning (``upper_bound``)."""
        if self.upper_bound is None:
            raise ValueError(
                "a PoissonProcess needs upper_bound (>= the total rate) to be relaxed"
            )
        return self.upper_bound.expand(self.batch_shape)

    def _mark_log_probs(self):
        """:math:`\\log(\\lambda_d/\\bar\\lambda)` and :math:`\\log(1 - \\sum_d \\lambda_d/\\bar\\lambda)`."""
        share = self.rate / self.thinning_bound().unsqueeze(-1)
        return torch.cat([torch.log(share), torch.log1p(-share.sum(-1, keepdim=True))], -1)

    def candidate_log_probs(self, value):
        """Thinning log probabilities at every row of ``value`` (history plays no role)."""
        log_probs = self._mark_log_probs().unsqueeze(-2)
        return log_probs.expand(
            torch.Size(broadcast_shape(log_probs.shape[:-2], value.shape[:-2]))
            + value.shape[-2:-1] + log_probs.shape[-1:]
        )

    def _stream(self, sample_shape):
        shape = self._sample_batch(sample_shape)
        n = shape.numel()
        bound = self.thinning_bound().expand(shape).reshape(n)
        check_sampling_params(rate=(self.rate, "nonnegative"))  # upper_bound: at __init__
        counts = torch.poisson(bound * self.duration)  # RelaxedPointProcess checks its rows
        k = max(int(counts.max()) if counts.numel() else 0, 1)
        cand, valid = uniform_order_statistics(counts, k, self.duration, self.rate.detach(),
                                               "upper_bound")
        return Stream(shape=shape, cand=cand, times=cand, is_cand=valid)

    def _relaxed_marks(self, stream, gumbel, temperature):
        """Concrete marks of independent candidates: no history, so no loop."""
        log_probs = self._mark_log_probs().expand(stream.shape + (self.num_neurons + 1,))
        z = (log_probs.reshape(-1, 1, self.num_neurons + 1) + gumbel) / temperature
        y = torch.exp(z - torch.logsumexp(z, -1, keepdim=True))
        return y[..., :-1] * stream.is_cand[..., None]
