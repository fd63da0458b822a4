"""
The look-ahead drive of a guide for hidden neurons: exponential traces of the observed spikes
*after* the current time.
"""

import torch

from pyro_spikes.distributions.scan import exp_decay_scan
from pyro_spikes.distributions.stimulus import Stimulus

__all__ = ["LookaheadDrive", "anticausal_traces"]


def anticausal_traces(times, marks, time_constants):
    """
    :math:`R_{m,c} = \\sum_{c' \\ge c} e^{-(t_{c'} - t_c)/\\kappa_m}\\, x_{c'}` at every row
    :math:`c` of sorted ``times`` (``batch + (C,)``) with values ``marks`` (``batch + (C, K)``):
    the exponential traces of the rows from :math:`t_c` on (row :math:`c` included), one
    :func:`~pyro_spikes.distributions.exp_decay_scan` on the reversed clock. Returns
    ``batch + (M, C, K)``.
    """
    rev_times = (times[..., -1:] - times).flip(-1)  # increasing on the reversed clock
    x = marks.flip(-2).unsqueeze(-3).expand(marks.shape[:-2] + (time_constants.numel(),)
                                            + marks.shape[-2:])
    rates = (1.0 / time_constants).expand(marks.shape[:-2] + time_constants.shape)
    r = exp_decay_scan(rev_times.contiguous(), x.contiguous(), rates.contiguous()) + x
    return r.flip(-2)


class LookaheadDrive(Stimulus):
    """
    An anticausal drive of the hidden neurons :math:`h` of a network given its observed spikes
    :math:`J_O`,

    .. math::

        s_h(t) = \\sum_{m=1}^{M} \\sum_{o} A_{m,h,o} \\sum_{t' \\in J_o,\\, t' > t}
            e^{-(t' - t)/\\kappa_m},

    zero for the observed neurons. Added to the potentials of a guide
    :math:`q(J_H \\mid J_O)` (a :class:`~pyro_spikes.distributions.SpikingPointProcess` of the
    hidden neurons with the observed spikes as context), it lets the guide anticipate the
    observed spikes that a hidden spike causes, which the causal guide of Kajino (2021) cannot
    see. Between observed spikes :math:`s_h` is a sum of growing exponentials; it jumps down at
    every observed spike, so the observed spike times are breakpoints of the compensator
    quadrature (they are rows already, as context). The traces are evaluated from a reverse
    recursion over the observed spikes: with
    :math:`R_{m,c} = \\sum_{c' \\ge c} e^{-(t_{c'} - t_c)/\\kappa_m} e_{o_{c'}}` (one
    :func:`~pyro_spikes.distributions.exp_decay_scan` on the reversed clock),
    :math:`s(t) = A\\, e^{-(t_c - t)/\\kappa} R_c` for the first observed spike :math:`t_c > t`.
    Differentiable in :math:`A` (the traces depend on the data only).

    :param torch.Tensor observed: exact events of the observed neurons, ``(B, C, 1 + D_O)``.
    :param torch.Tensor weight: :math:`A`, shape ``(M, D_H, D_O)``.
    :param torch.Tensor time_constants: :math:`\\kappa_m > 0`, shape ``(M,)``.
    :param hidden: indices of the hidden neurons in the network (length ``D_H``).
    :param int num_network: :math:`D`, the network size.
    :param float duration: :math:`T`.
    """

    def __init__(self, observed, weight, time_constants, hidden, num_network, duration):
        if weight.dim() != 3:
            raise ValueError(f"weight must have shape (M, D_H, D_O), got {tuple(weight.shape)}")
        time_constants = torch.as_tensor(time_constants, dtype=weight.dtype,
                                         device=weight.device).reshape(-1)
        hidden = torch.as_tensor(hidden, dtype=torch.long, device=weight.device).reshape(-1)
        if weight.shape != (time_constants.numel(), hidden.numel(), observed.shape[-1] - 1):
            raise ValueError(
                f"weight must have shape (M, D_H, D_O) = {(time_constants.numel(), hidden.numel(), observed.shape[-1] - 1)}, "
                f"got {tuple(weight.shape)}"
            )
        if not bool((time_constants > 0).all() and torch.isfinite(time_constants).all()):
            raise ValueError("time_constants must be positive and finite")
        self.observed = observed.to(dtype=weight.dtype, device=weight.device)
        self.weight, self.time_constants, self.hidden = weight, time_constants, hidden
        self.num_neurons = int(num_network)
        self.duration = float(duration)
        self.batch_shape = observed.shape[:-2]

    def tensors(self):
        """``(weight,)``."""
        return (self.weight,)

    def with_tensors(self, weight):
        return LookaheadDrive(self.observed, weight, self.time_constants, self.hidden,
                              self.num_neurons, self.duration)

    def time_scale(self):
        return float(self.time_constants.min())

    def breakpoints(self, duration=None):
        return self._clip_breakpoints(self.observed[..., 0], duration)

    def shifted(self, offset):
        raise NotImplementedError(
            "LookaheadDrive depends on the observed window as a whole; build it for each window"
        )

    def precompute(self):
        """:math:`R_{m,c}` at every observed row, ``batch + (M, C, D_O)``."""
        return anticausal_traces(self.observed[..., 0], self.observed[..., 1:],
                                 self.time_constants)

    def drive(self, t, cache=None):
        """:math:`s_d(t)` at times ``t`` (``batch' + (n,)``): ``batch + (n, D)``."""
        r = self.precompute() if cache is None else cache  # batch + (M, C, D_O)
        times = self.observed[..., 0]
        t = torch.as_tensor(t, dtype=self.weight.dtype, device=self.weight.device)
        batch = torch.Size(torch.broadcast_shapes(times.shape[:-1], t.shape[:-1]))
        times = times.expand(batch + times.shape[-1:]).contiguous()
        t = t.expand(batch + t.shape[-1:])
        nxt = torch.searchsorted(times, t.detach().contiguous(), right=True)  # first t_c > t
        beyond = nxt >= times.shape[-1]
        idx = nxt.clamp(max=times.shape[-1] - 1)
        gap = (times.gather(-1, idx) - t).clamp(min=0)  # batch + (n,)
        r = r.expand(batch + r.shape[-3:])
        sel = r.gather(-2, idx.unsqueeze(-2).unsqueeze(-1).expand(batch + (r.shape[-3],)
                                                                  + idx.shape[-1:]
                                                                  + r.shape[-1:]))
        decay = torch.exp(-gap.unsqueeze(-2) / self.time_constants.unsqueeze(-1))  # (M, n)
        trace = sel * decay.unsqueeze(-1)  # batch + (M, n, D_O)
        trace = torch.where(beyond.unsqueeze(-2).unsqueeze(-1), torch.zeros_like(trace), trace)
        hid = torch.matmul(trace, self.weight.transpose(-1, -2)).sum(-3)  # batch + (n, D_H)
        out = hid.new_zeros(hid.shape[:-1] + (self.num_neurons,))
        return out.index_copy(-1, self.hidden, hid)

    def __repr__(self):
        return (f"LookaheadDrive(kernels={self.time_constants.numel()}, "
                f"hidden={self.hidden.numel()}, batch_shape={tuple(self.batch_shape)})")
