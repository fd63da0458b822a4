"""
The synthetic set-up of Kajino (2021), "A Differentiable Point Process with Its Application
to Spiking Neural Networks" (ICML), Section 5: a randomly initialised, fully connected
network of observed and hidden neurons whose observed spikes are the data.
"""

import torch

from pyro_spikes.models.snn import SNN

__all__ = ["kajino_ground_truth"]


def kajino_ground_truth(seed, num_observed=2, num_hidden=4, duration=50.0,
                        time_constants=(1.0, 5.0), upper_bound=5.0, bias_range=(-1.0, 1.0),
                        weight_range=(-5.0, 5.0), self_weight_range=(-5.0, -0.1), name="truth"):
    """
    The data-generating network of Kajino's synthetic experiments: an :class:`SNN` with
    :math:`D_O = 2` observed and :math:`D_H = 4` hidden neurons, fully connected through
    :math:`L = 2` exponential basis functions, upper bound :math:`a = 5`, window
    :math:`T = 50`, and parameters drawn uniformly,

    .. math::

        b_d \\sim \\mathcal U[-1, 1], \\qquad
        W_{l,d,d'} \\sim \\mathcal U[-5, 5]\\ (d \\ne d'), \\qquad
        W_{l,d,d} \\sim \\mathcal U[-5, -0.1],

    so every neuron inhibits itself (a refractory effect that keeps the network stable).

    The draw uses its own :class:`torch.Generator` seeded with ``seed`` (the global random
    state is untouched), so the same seed always gives the same network.

    :param int seed: seed of the parameter draw.
    :param str name: prefix of its parameters in Pyro's param store (default ``"truth"``), so
        that a model fitted beside it (an :class:`SNN` with the default empty name) never shares
        its parameters: every method of an :class:`SNN` reads its parameters from the param
        store, as Pyro modules do.
    :returns: the network, with ``bias`` and ``weight`` set (its ``PyroParam`` values).
    :rtype: SNN
    """
    for arg, (lo, hi) in (("bias_range", bias_range), ("weight_range", weight_range),
                           ("self_weight_range", self_weight_range)):
        if not float(lo) <= float(hi):
            raise ValueError(f"{arg} must be (low, high) with low <= high, got {(lo, hi)}")
    snn = SNN(num_observed, num_hidden, duration, time_constants=time_constants,
              upper_bound=upper_bound, name=name)
    like = snn.bias.detach()
    gen = torch.Generator(device=like.device).manual_seed(int(seed))
    d = num_observed + num_hidden
    num_basis = snn.time_constants.numel()

    def uniform(shape, lo, hi):
        u = torch.rand(shape, generator=gen, dtype=like.dtype, device=like.device)
        return float(lo) + (float(hi) - float(lo)) * u

    bias = uniform((d,), *bias_range)
    weight = uniform((num_basis, d, d), *weight_range)
    diag = torch.arange(d, device=like.device)
    weight[:, diag, diag] = uniform((num_basis, d), *self_weight_range)
    # assigning a tensor to a PyroParam attribute updates its unconstrained value in place
    snn.bias = bias
    snn.weight = weight
    return snn
