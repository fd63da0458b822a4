import math

import torch
from pyro.distributions.util import broadcast_shape
from torch.distributions import constraints

from pyro_spikes.distributions.point_process import PointProcess, as_param, uniform_order_statistics

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
    :param int capacity: rows of a realisation (default: a count exceeded with probability
        below ~1e-9).
    """

    arg_constraints = {"rate": constraints.independent(constraints.nonnegative, 1)}

    def __init__(self, rate, duration, capacity=None, validate_args=None):
        rate = as_param(rate)
        if rate.dim() < 1:
            raise ValueError(f"rate must have shape (..., D), got {tuple(rate.shape)}")
        self.rate = rate
        if capacity is None:
            if not bool(((rate >= 0) & torch.isfinite(rate)).all()):
                raise ValueError("rate must be nonnegative and finite")
            capacity = _poisson_capacity(float(rate.detach().sum(-1).max()) * float(duration))
        super().__init__(rate.shape[:-1], rate.shape[-1], duration, capacity, validate_args)

    def _params_like(self):
        return self.rate

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(PoissonProcess, _instance)
        batch_shape = torch.Size(batch_shape)
        new.rate = self.rate.expand(batch_shape + (self.num_neurons,))
        PointProcess.__init__(new, batch_shape, self.num_neurons, self.duration, self.capacity,
                              validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _row_terms(self, times, marks):
        rate = self.rate.unsqueeze(-2)
        log_rate = torch.log(rate).expand(broadcast_shape(rate.shape, marks.shape))
        dt = (times[..., 1:] - times[..., :-1]).unsqueeze(-1)
        return log_rate, rate * dt

    def log_prob(self, value):
        # closed form, no need for the row machinery
        if self._validate_args:
            self._validate_sample(value)
        marks = value[..., 1:].to(self.rate)
        counts = marks.sum(-2)
        term = torch.where(counts > 0, counts * torch.log(self.rate), torch.zeros_like(counts))
        return (term - self.duration * self.rate).sum(-1)

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)[:-2]
        with torch.no_grad():
            rate = self.rate.expand(shape + (self.num_neurons,)).reshape(-1, self.num_neurons)
            total = rate.sum(-1)
            counts = torch.poisson(total * self.duration)
            self._check_capacity(counts)
            k = max(int(counts.max()) if counts.numel() else 0, 1)
            n = rate.shape[0]
            times, accepted = uniform_order_statistics(counts, k, self.duration, rate)
            probs = rate / total.clamp(min=torch.finfo(rate.dtype).tiny).unsqueeze(-1)
            probs = torch.where(total.unsqueeze(-1) > 0, probs, torch.ones_like(probs))
            labels = torch.multinomial(probs, k, replacement=True)
            return self._compact(times, accepted, labels, shape)
