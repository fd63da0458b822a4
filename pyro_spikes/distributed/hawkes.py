"""A Hawkes process with priors on its parameters, for minibatch and data-parallel SVI."""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from pyro_spikes.distributions.hawkes import HawkesProcess

__all__ = ["HawkesWithPriors"]


class HawkesWithPriors(PyroModule):
    """
    A multivariate :class:`~pyro_spikes.distributions.HawkesProcess` shared by ``size``
    independent sequences, with Gamma priors on its baseline rates and branching matrix,

    .. math::

        \\mu_i \\sim \\mathrm{Gamma}(a_\\mu, b_\\mu), \\quad
        \\alpha_{ij} \\sim \\mathrm{Gamma}(a_\\alpha, b_\\alpha), \\quad
        J_n \\mid \\mu, \\alpha \\sim \\mathrm{Hawkes}(\\mu, \\alpha, \\beta)
        \\ \\ (n = 1, \\dots, N),

    written as Pyro's subsampling convention wants: the global sites first, then
    ``pyro.plate("sequences", size, subsample=index)``, so that a minibatch's likelihood is
    scaled by :math:`N / B` and the loss of every worker estimates the negative ELBO of the
    whole data set. Called as ``model(index, events)``; a guide is typically
    ``AutoNormal(model)``.

    :param int num_neurons: :math:`D`.
    :param float duration: :math:`T` of every sequence.
    :param int size: :math:`N`, sequences in the data set.
    :param float decay: :math:`\\beta` of the exponential kernels (known).
    :param tuple baseline_prior: :math:`(a_\\mu, b_\\mu)` (shape, rate).
    :param tuple adjacency_prior: :math:`(a_\\alpha, b_\\alpha)` (shape, rate).
    """

    def __init__(self, num_neurons, duration, size, decay=1.0, baseline_prior=(2.0, 4.0),
                 adjacency_prior=(1.0, 5.0)):
        super().__init__()
        if isinstance(num_neurons, bool) or not isinstance(num_neurons, int) or num_neurons < 1:
            raise ValueError(f"num_neurons must be a positive integer, got {num_neurons!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        if not float(duration) > 0 or not float(decay) > 0:
            raise ValueError("duration and decay must be positive")
        self.num_neurons, self.size = num_neurons, size
        self.duration, self.decay = float(duration), float(decay)
        self.baseline_prior = tuple(float(x) for x in baseline_prior)
        self.adjacency_prior = tuple(float(x) for x in adjacency_prior)

    def forward(self, index, events):
        if not isinstance(events, torch.Tensor) or events.dim() != 3 \
                or events.shape[-1] != 1 + self.num_neurons:
            raise ValueError(
                f"events must have shape (batch, capacity, {1 + self.num_neurons}), got "
                f"{tuple(events.shape) if isinstance(events, torch.Tensor) else events!r}"
            )
        d = self.num_neurons
        like = dict(dtype=events.dtype, device=events.device)
        a, b = (torch.tensor(x, **like) for x in self.baseline_prior)
        baseline = pyro.sample("baseline", dist.Gamma(a, b).expand([d]).to_event(1))
        a, b = (torch.tensor(x, **like) for x in self.adjacency_prior)
        adjacency = pyro.sample("adjacency", dist.Gamma(a, b).expand([d, d]).to_event(2))
        with pyro.plate("sequences", self.size, subsample=index, dim=-1):
            process = HawkesProcess(baseline, adjacency, self.decay, self.duration,
                                    capacity=events.shape[-2])
            pyro.sample("events", process, obs=events)
