"""
Goodness-of-fit of point-process models by the time-rescaling theorem.

If :math:`\\Lambda_d(t) = \\int_0^t \\lambda_d(s \\mid \\mathcal H_s)\\, ds` is the compensator of
neuron :math:`d` of a process, the rescaled inter-spike intervals
:math:`\\Lambda_d(t_k) - \\Lambda_d(t_{k-1})` (with :math:`t_0 = 0`) of a realisation of that
process are i.i.d. Exp(1) (Brown, Barbieri, Ventura, Kass & Frank, 2002, "The time-rescaling
theorem and its application to neural spike train data analysis", Neural Computation).
"""

import torch

__all__ = ["rescaled_intervals", "ks_statistic"]


def rescaled_intervals(process, events, per_neuron=False):
    """
    Compensator increments between consecutive spikes of each neuron.

    :param process: a :class:`~pyro_spikes.distributions.PointProcess`.
    :param torch.Tensor events: realisations, shape ``batch + (capacity, 1 + D)``.
    :param bool per_neuron: return a list with one 1-D tensor per neuron instead of one pooled
        1-D tensor.
    :returns: the increments, Exp(1)-distributed when ``events`` comes from ``process``.
    """
    with torch.no_grad():
        comp = process.compensator(events)  # batch + (C, D)
        spikes = events[..., 1:].to(comp) == 1
        at_spikes = torch.where(spikes, comp, torch.zeros_like(comp))
        previous = at_spikes.cummax(-2).values
        previous = torch.cat([torch.zeros_like(previous[..., :1, :]), previous[..., :-1, :]], -2)
        increments = comp - previous
    if per_neuron:
        return [increments[..., d][spikes[..., d]] for d in range(comp.shape[-1])]
    return increments[spikes]


def ks_statistic(samples):
    """Kolmogorov–Smirnov distance of ``samples`` (1-D tensor) from Exp(1)."""
    x = samples.detach().double().sort().values
    n = x.numel()
    cdf = 1 - torch.exp(-x)
    i = torch.arange(1, n + 1, dtype=x.dtype, device=x.device)
    return float(torch.maximum(i / n - cdf, cdf - (i - 1) / n).max())
