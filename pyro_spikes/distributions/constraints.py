"""Constraints for spike-train values in the ``events`` layout, and finite parameter constraints."""

import torch
from torch.distributions import constraints

__all__ = [
    "finite",
    "independent",
    "index_spike_trains",
    "nonnegative_finite",
    "positive_finite",
    "spike_trains",
]


class _SpikeTrains(constraints.Constraint):
    """
    Realisations on ``[0, duration]`` of a ``num_neurons``-neuron process in the ``events``
    layout: sorted times in ``[0, duration]``, marks one-hot or zero (``relaxed=False``) or in the
    sub-simplex :math:`\\{m \\ge 0, \\sum_d m_d \\le 1\\}` (``relaxed=True``).
    """

    event_dim = 2

    def __init__(self, duration, num_neurons, relaxed=False):
        self.duration = float(duration)
        self.num_neurons = int(num_neurons)
        self.relaxed = relaxed
        super().__init__()

    def check(self, value):
        times, marks = value[..., 0], value[..., 1:]
        ok = (times >= 0) & (times <= self.duration) & torch.isfinite(value).all(-1)
        ok[..., 1:] &= times[..., 1:] >= times[..., :-1]
        if self.relaxed:
            tol = 1e-5 if value.dtype != torch.float64 else 1e-10
            ok &= (marks >= 0).all(-1) & (marks.sum(-1) <= 1 + tol)
        else:
            ok &= ((marks == 0) | (marks == 1)).all(-1) & (marks.sum(-1) <= 1)
        return ok.all(-1)

    def __repr__(self):
        return (
            f"{self.__class__.__name__[1:]}(duration={self.duration}, "
            f"num_neurons={self.num_neurons}, relaxed={self.relaxed})"
        )


spike_trains = _SpikeTrains


class _IndexSpikeTrains(constraints.Constraint):
    """
    Realisations on ``[0, duration]`` of a ``num_neurons``-neuron process in the index layout
    (see :mod:`pyro_spikes.spikes`): rows (time, neuron index) with sorted times in
    ``[0, duration]`` and integer indices in ``[0, num_neurons)``, or :math:`-1` for a padding
    row at time ``duration``.
    """

    event_dim = 2

    def __init__(self, duration, num_neurons):
        self.duration = float(duration)
        self.num_neurons = int(num_neurons)
        super().__init__()

    def check(self, value):
        times, labels = value[..., 0], value[..., 1]
        ok = (times >= 0) & (times <= self.duration) & torch.isfinite(value).all(-1)
        ok[..., 1:] &= times[..., 1:] >= times[..., :-1]
        ok &= (labels == labels.round()) & (labels >= -1) & (labels < self.num_neurons)
        ok &= (labels >= 0) | (times >= self.duration)
        return ok.all(-1)

    def __repr__(self):
        return (f"IndexSpikeTrains(duration={self.duration}, "
                f"num_neurons={self.num_neurons})")


index_spike_trains = _IndexSpikeTrains


class _Finite(constraints.Constraint):
    """Finite reals (torch's ``real`` lets infinities through)."""

    def check(self, value):
        return torch.isfinite(value)


class _NonnegativeFinite(constraints.Constraint):
    """Finite reals :math:`\\ge 0` (torch's ``nonnegative`` accepts :math:`+\\infty`)."""

    def check(self, value):
        return torch.isfinite(value) & (value >= 0)


class _PositiveFinite(constraints.Constraint):
    """Finite reals :math:`> 0` (torch's ``positive`` accepts :math:`+\\infty`, e.g. a decay
    rate whose kernel would be a Dirac spike the sampler cannot represent)."""

    def check(self, value):
        return torch.isfinite(value) & (value > 0)


finite = _Finite()
nonnegative_finite = _NonnegativeFinite()
positive_finite = _PositiveFinite()


class _IndependentConstraint(constraints._IndependentConstraint):
    """torch's ``independent`` whose check also works on empty tensors (a batch of size zero:
    torch's reshapes them with ``-1`` and fails)."""

    def check(self, value):
        result = self.base_constraint.check(value)
        n = self.reinterpreted_batch_ndims
        if result.dim() < n:
            raise ValueError(f"expected a tensor of at least {n} dimensions, got shape "
                             f"{tuple(value.shape)}")
        return result.all(tuple(range(-n, 0))) if n else result


independent = _IndependentConstraint
