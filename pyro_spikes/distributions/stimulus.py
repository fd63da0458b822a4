"""
Deterministic additions to the membrane potential of a
:class:`~pyro_spikes.distributions.SpikingPointProcess`: a filtered exogenous stimulus, and the
traces left by the spikes before an observation window.
"""

import math

import torch
from pyro.distributions.util import broadcast_shape

from pyro_spikes.distributions.scan import exp_decay_scan

__all__ = ["FilteredStimulus", "RaisedCosineStimulus", "Stimulus", "history_drive"]


def _tensor(x, like, name):
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x, dtype=like.dtype if like is not None else torch.get_default_dtype(),
                            device=like.device if like is not None else None)
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype() if like is None else like.dtype)
    return x


class Stimulus:
    """
    Interface of a deterministic stimulus term :math:`s_d(t)` of
    :class:`~pyro_spikes.distributions.SpikingPointProcess`: ``batch_shape``, ``num_neurons``,
    :meth:`drive`, the times where it is not smooth (:meth:`breakpoints`), its shortest time
    scale (:meth:`time_scale`, a bound on the quadrature pieces), and its differentiable
    tensors (:meth:`tensors`, :meth:`with_tensors`) for the relaxed sampler's backward pass.
    """

    def tensors(self):
        raise NotImplementedError

    def with_tensors(self, *tensors):
        raise NotImplementedError

    def precompute(self):
        """Work shared by all :meth:`drive` calls of one likelihood evaluation (or ``None``)."""
        return None

    def drive(self, t, cache=None):
        raise NotImplementedError

    def breakpoints(self, duration=None):
        raise NotImplementedError

    def time_scale(self):
        raise NotImplementedError

    def shifted(self, offset):
        raise NotImplementedError

    def _clip_breakpoints(self, bp, duration):
        if duration is None:
            return bp
        inside = ((bp > 0) & (bp < duration)).reshape(-1, bp.shape[-1]).any(0).nonzero()
        if inside.numel() == 0:
            return bp[..., :0]
        return bp[..., int(inside[0]):int(inside[-1]) + 1].clamp(0.0, float(duration))


class FilteredStimulus(Stimulus):
    """
    An exogenous covariate filtered by learnable exponential kernels, as the stimulus term of a
    generalised linear model of spiking (Pillow et al., 2008, "Spatio-temporal correlations and
    visual signalling in a complete neuronal population", Nature; Truccolo et al., 2005):

    .. math::

        s_d(t) = \\sum_{k=1}^{K} \\sum_{j=1}^{J} \\beta_{k,d,j}\\, F_{k,j}(t), \\qquad
        F_{k,j}(t) = \\int_0^\\infty \\frac{1}{\\tau_k} e^{-r/\\tau_k}\\, x_j(t + t_0 - r)\\, dr,

    added to the potential :math:`u_d(t)`. The stimulus :math:`x` is a sampled time series with
    **zero-order hold**: :math:`x(t) = x_m` on :math:`[g_m, g_{m+1})` for sample times
    :math:`g_0 < g_1 < \\dots < g_{M-1}`, the last sample held after :math:`g_{M-1}`, and
    :math:`x = 0` before :math:`g_0`. :math:`t_0` (``offset``) maps the process's time (from 0)
    to the stimulus clock, e.g. the start of a window of a long recording.

    Each kernel is normalised (:math:`\\int \\kappa_k = 1`), so :math:`\\beta_{k,d,j}` is the
    steady-state gain of channel :math:`j` on neuron :math:`d` through time constant
    :math:`\\tau_k`. On every hold piece the filter is closed form,

    .. math::

        F_k(t) = x_m + (F_k(g_m) - x_m)\\, e^{-(t - g_m)/\\tau_k}, \\qquad t \\in [g_m, g_{m+1}),

    with the values at the breakpoints from the linear recursion
    :math:`F_k(g_{m+1}) = x_m + (F_k(g_m) - x_m) e^{-(g_{m+1}-g_m)/\\tau_k}`, :math:`F_k(g_0)=0`
    (evaluated in parallel by :func:`~pyro_spikes.distributions.exp_decay_scan`). So between
    breakpoints the potential stays a constant plus a sum of exponentials: the process adds the
    breakpoints as rows of its compensator quadrature, and its likelihood is exact (to the
    stated quadrature error) for this interpolation. :math:`F` is continuous, so
    :math:`s_d(t^-) = s_d(t)`. Everything is differentiable in :math:`\\beta`, :math:`\\tau`
    and the samples :math:`x`.

    :param torch.Tensor values: samples :math:`x_m`, shape ``batch + (M, J)``.
    :param torch.Tensor times: sample times :math:`g_m`, strictly increasing, shape ``(M,)``
        (on the stimulus clock; may start before the process's 0).
    :param torch.Tensor weight: :math:`\\beta`, shape ``batch + (K, D, J)`` with ``D`` the
        network size of the process.
    :param torch.Tensor time_constants: :math:`\\tau_k > 0`, shape ``batch + (K,)``.
    :param offset: :math:`t_0`, a number or a tensor of shape ``batch``.
    """

    def __init__(self, values, times, weight, time_constants, offset=0.0):
        weight = _tensor(weight, None, "weight")
        values = _tensor(values, weight, "values")
        times = _tensor(times, weight, "times").to(dtype=weight.dtype, device=weight.device)
        time_constants = _tensor(time_constants, weight, "time_constants")
        offset = _tensor(offset, weight, "offset").to(dtype=weight.dtype, device=weight.device)
        if values.dim() < 2:
            raise ValueError(f"values must have shape (..., M, J), got {tuple(values.shape)}")
        num_samples, num_channels = values.shape[-2:]
        if times.dim() != 1 or times.shape[0] != num_samples or num_samples < 1:
            raise ValueError(
                f"times must have shape (M,) with M={num_samples} (values' rows), got "
                f"{tuple(times.shape)}"
            )
        if not bool(torch.isfinite(times).all()) or bool((times[1:] <= times[:-1]).any()):
            raise ValueError("times must be finite and strictly increasing")
        if not bool(torch.isfinite(values.detach()).all()):
            raise ValueError("values must be finite")
        if time_constants.dim() < 1:
            raise ValueError(
                f"time_constants must have shape (..., K), got {tuple(time_constants.shape)}"
            )
        num_kernels = time_constants.shape[-1]
        if not bool((time_constants.detach() > 0).all()) or not bool(
            torch.isfinite(time_constants.detach()).all()
        ):
            raise ValueError("time_constants must be positive and finite")
        if weight.dim() < 3 or weight.shape[-3] != num_kernels or weight.shape[-1] != num_channels:
            raise ValueError(
                f"weight must have shape (..., K, D, J) with K={num_kernels}, J={num_channels}, "
                f"got {tuple(weight.shape)}"
            )
        if not bool(torch.isfinite(offset).all()):
            raise ValueError("offset must be finite")
        try:
            self.batch_shape = torch.Size(broadcast_shape(
                values.shape[:-2], weight.shape[:-3], time_constants.shape[:-1], offset.shape
            ))
        except ValueError:
            raise ValueError(
                f"values {tuple(values.shape)}, weight {tuple(weight.shape)}, time_constants "
                f"{tuple(time_constants.shape)} and offset {tuple(offset.shape)} have "
                "incompatible batch shapes"
            ) from None
        self.values, self.times, self.weight = values, times, weight
        self.time_constants, self.offset = time_constants, offset
        self.num_neurons = weight.shape[-2]
        self.num_kernels, self.num_channels = num_kernels, num_channels

    def tensors(self):
        """``(values, weight, time_constants)``."""
        return self.values, self.weight, self.time_constants

    def with_tensors(self, values, weight, time_constants):
        return self.with_params(values, weight, time_constants)

    def precompute(self):
        return self.filtered_at_breakpoints()

    def time_scale(self):
        return float(self.time_constants.detach().min())

    def with_params(self, values=None, weight=None, time_constants=None):
        """A copy with some tensors replaced (same times and offset)."""
        return FilteredStimulus(
            self.values if values is None else values, self.times,
            self.weight if weight is None else weight,
            self.time_constants if time_constants is None else time_constants, self.offset,
        )

    def shifted(self, offset):
        """The same stimulus seen from a clock starting at ``offset`` (e.g. window starts)."""
        return FilteredStimulus(self.values, self.times, self.weight, self.time_constants,
                                offset)

    def breakpoints(self, duration=None):
        """
        The hold breakpoints :math:`g_m - t_0` on the process clock, shape ``batch' + (M',)``;
        with ``duration``, only the columns with a breakpoint inside :math:`(0, T)` for some
        batch entry, clamped to :math:`[0, T]`.
        """
        return self._clip_breakpoints(self.times - self.offset.unsqueeze(-1), duration)

    def filtered_at_breakpoints(self):
        """:math:`F_{k,j}(g_m)`, shape ``batch + (K, M, J)``."""
        x = self.values.unsqueeze(-3)  # batch + (1, M, J)
        rates = 1.0 / self.time_constants
        gaps = self.times[1:] - self.times[:-1]  # (M - 1,)
        keep = torch.exp(-gaps * rates.unsqueeze(-1))  # batch + (K, M - 1)
        # increments (1 - a_m) x_m arrive at g_{m+1}: an exclusive scan over those rows plus
        # the row's own increment is F(g_{m+1})
        inc = (1 - keep).unsqueeze(-1) * x[..., :-1, :]  # batch + (K, M - 1, J)
        zero = inc.new_zeros(inc.shape[:-2] + (1, inc.shape[-1]))
        if inc.shape[-2] == 0:
            return zero.expand(inc.shape[:-2] + (1, x.shape[-1]))
        batch = torch.Size(broadcast_shape(inc.shape[:-3], rates.shape[:-1]))
        inc = inc.expand(batch + inc.shape[-3:])
        rows = self.times[1:].expand(batch + gaps.shape)
        after = exp_decay_scan(rows, inc, rates.expand(batch + rates.shape[-1:])) + inc
        return torch.cat([zero.expand(after.shape[:-2] + zero.shape[-2:]), after], -2)

    def filtered(self, t, at_breakpoints=None):
        """
        :math:`F_{k,j}(t)` at process times ``t`` (``batch' + (n,)``): ``batch + (K, n, J)``
        (``at_breakpoints``: :meth:`filtered_at_breakpoints`, if already computed).
        """
        t = torch.as_tensor(t, dtype=self.weight.dtype, device=self.weight.device)
        clock = t + self.offset.unsqueeze(-1)  # stimulus clock
        at_bp = self.filtered_at_breakpoints() if at_breakpoints is None else at_breakpoints
        piece = torch.searchsorted(self.times, clock.detach().contiguous(), right=True) - 1
        before = piece < 0
        piece = piece.clamp(min=0)
        elapsed = (clock - self.times[piece]).clamp(min=0)  # batch + (n,)
        batch = torch.Size(broadcast_shape(at_bp.shape[:-3], piece.shape[:-1],
                                           self.values.shape[:-2]))
        index = piece.expand(batch + piece.shape[-1:]).unsqueeze(-1)
        x = self.values.expand(batch + self.values.shape[-2:])
        x = x.gather(-2, index.expand(index.shape[:-1] + x.shape[-1:])).unsqueeze(-3)
        f0 = at_bp.expand(batch + at_bp.shape[-3:])
        idx = index.unsqueeze(-3).expand(batch + (self.num_kernels, index.shape[-2],
                                                  self.num_channels))
        f0 = f0.gather(-2, idx)  # batch + (K, n, J)
        decay = torch.exp(-elapsed.unsqueeze(-2) / self.time_constants.unsqueeze(-1))
        out = x + (f0 - x) * decay.unsqueeze(-1)
        return torch.where(before.unsqueeze(-2).unsqueeze(-1), torch.zeros_like(out), out)

    def drive(self, t, at_breakpoints=None):
        """:math:`s_d(t)` at process times ``t`` (``batch' + (n,)``): ``batch + (n, D)``."""
        f = self.filtered(t, at_breakpoints)  # batch + (K, n, J)
        # sum_k F_k (n, J) @ beta_k^T (J, D)
        return torch.matmul(f, self.weight.transpose(-1, -2)).sum(-3)

    def __repr__(self):
        return (f"FilteredStimulus(samples={self.times.shape[0]}, channels={self.num_channels}, "
                f"kernels={self.num_kernels}, batch_shape={tuple(self.batch_shape)})")


class RaisedCosineStimulus(Stimulus):
    """
    A stimulus on a uniform sample grid filtered by a learnable combination of raised-cosine
    bumps (the linear-time basis of Pillow et al., 2008, and nemos' ``RaisedCosineLinear``):

    .. math::

        s_d(t) = \\sum_{k} \\sum_j \\beta_{k,d,j} \\int_0^\\infty \\kappa_k(r)\\,
            x_j(t + t_0 - r)\\, dr, \\qquad
        \\kappa_k(r) = \\frac{1}{2w}\\Big(1 + \\cos\\frac{\\pi (r - c_k)}{w}\\Big)
            \\ [\\,|r - c_k| \\le w\\,],

    (bumps with a support reaching below lag 0 are cut at 0), with the stimulus :math:`x`
    held constant on each sample interval of length :math:`h` (zero-order hold, 0 before the
    first sample, the last sample held). With
    :math:`\\mathcal K_k(r) = \\int_0^r \\kappa_k` in closed form,
    :math:`\\frac{1}{2w}\\big[s + \\frac{w}{\\pi}\\sin\\frac{\\pi (s - c_k)}{w}\\big]` between the
    support's ends,

    .. math::

        F_k(t) = \\sum_m x_m \\big(\\mathcal K_k(t - g_m) - \\mathcal K_k(t - g_{m+1})\\big),

    a finite sum over the :math:`\\lceil (c_k + w)/h \\rceil + 1` samples in the bump's reach.
    The kinks of :math:`F_k` lie at :math:`g_m`, :math:`g_m + \\max(0, c_k - w)` and
    :math:`g_m + c_k + w`: the centres :math:`c_k` and the half-width :math:`w` must be
    multiples of :math:`h`, so all of them are sample times (extended past the last sample by
    the bumps' reach) and the process's compensator quadrature, cut there, stays exact; its
    pieces are at most :math:`w/\\pi` long (:meth:`time_scale`). Differentiable in
    :math:`\\beta` and :math:`x` (the bump positions are fixed).

    :param torch.Tensor values: ``batch + (M, J)``; :param torch.Tensor times: ``(M,)``,
        uniformly spaced.
    :param torch.Tensor weight: :math:`\\beta`, ``batch + (K, D, J)``.
    :param centers: :math:`c_k \\ge 0`, ``(K,)``, multiples of :math:`h`.
    :param float width: :math:`w > 0`, a multiple of :math:`h`.
    :param offset: :math:`t_0` (number or ``batch`` tensor).
    """

    def __init__(self, values, times, weight, centers, width, offset=0.0):
        weight = _tensor(weight, None, "weight")
        values = _tensor(values, weight, "values")
        times = _tensor(times, weight, "times").to(dtype=weight.dtype, device=weight.device)
        centers = _tensor(centers, weight, "centers").to(dtype=weight.dtype,
                                                         device=weight.device).reshape(-1)
        offset = _tensor(offset, weight, "offset").to(dtype=weight.dtype, device=weight.device)
        if values.dim() < 2:
            raise ValueError(f"values must have shape (..., M, J), got {tuple(values.shape)}")
        m, j = values.shape[-2:]
        if times.dim() != 1 or times.shape[0] != m or m < 2:
            raise ValueError(
                f"times must have shape (M,) with M={m} >= 2, got {tuple(times.shape)}"
            )
        step = float(times[1] - times[0])
        if not step > 0 or not bool(
            ((times[1:] - times[:-1] - step).abs() <= 1e-9 * step).all()
        ):
            raise ValueError("times must be uniformly spaced and increasing")
        width = float(width)
        k = centers.numel()
        if weight.dim() < 3 or weight.shape[-3] != k or weight.shape[-1] != j:
            raise ValueError(
                f"weight must have shape (..., K, D, J) with K={k}, J={j}, got "
                f"{tuple(weight.shape)}"
            )

        def multiple(x):
            q = x / step
            return abs(q - round(q)) <= 1e-9 * max(1.0, abs(q))

        if not width > 0 or not multiple(width):
            raise ValueError(f"width must be a positive multiple of the sample step {step}, "
                             f"got {width}")
        if bool((centers < 0).any()) or not all(multiple(float(c)) for c in centers):
            raise ValueError(f"centers must be nonnegative multiples of the sample step {step}")
        if not bool(torch.isfinite(values.detach()).all()):
            raise ValueError("values must be finite")
        try:
            self.batch_shape = torch.Size(broadcast_shape(values.shape[:-2], weight.shape[:-3],
                                                          offset.shape))
        except ValueError:
            raise ValueError("values, weight and offset have incompatible batch shapes") from None
        self.values, self.times, self.weight, self.offset = values, times, weight, offset
        self.centers, self.width, self.step = centers, width, step
        self.num_neurons, self.num_kernels, self.num_channels = weight.shape[-2], k, j
        self.reach = int(round(float(centers.max()) / step + width / step)) + 1

    def tensors(self):
        """``(values, weight)``."""
        return self.values, self.weight

    def with_tensors(self, values, weight):
        return RaisedCosineStimulus(values, self.times, weight, self.centers, self.width,
                                    self.offset)

    def shifted(self, offset):
        return RaisedCosineStimulus(self.values, self.times, self.weight, self.centers,
                                    self.width, offset)

    def time_scale(self):
        return self.width / math.pi

    def breakpoints(self, duration=None):
        """Sample times, extended by the bumps' reach past the last one, on the process clock."""
        n = self.times.shape[0] + self.reach
        grid = self.times[0] + self.step * torch.arange(n, dtype=self.times.dtype,
                                                        device=self.times.device)
        return self._clip_breakpoints(grid - self.offset.unsqueeze(-1), duration)

    def _cumulative(self, r):
        """:math:`\\mathcal K_k(r)` at lags ``r`` ``(..., 1, n, P)``: ``(..., K, n, P)``."""
        c = self.centers.reshape(-1, 1, 1)
        w = self.width
        lo, hi = (c - w).clamp(min=0.0), c + w

        def g(s):
            return (s + (w / math.pi) * torch.sin(math.pi * (s - c) / w)) / (2 * w)

        return g(torch.minimum(torch.maximum(r, lo), hi)) - g(lo)

    def filtered(self, t):
        """:math:`F_{k,j}(t)` at process times ``t`` (``batch' + (n,)``): ``batch + (K, n, J)``."""
        t = torch.as_tensor(t, dtype=self.weight.dtype, device=self.weight.device)
        clock = t + self.offset.unsqueeze(-1)
        m = self.times.shape[0]
        last = torch.searchsorted(self.times, clock.detach().contiguous(), right=True) - 1
        pieces = last.unsqueeze(-1) - torch.arange(self.reach, device=last.device)  # (..., n, P)
        valid = pieces >= 0
        pieces = pieces.clamp(min=0)
        start = self.times[pieces]
        end = torch.where(pieces + 1 < m, self.times[(pieces + 1).clamp(max=m - 1)],
                          torch.full_like(start, math.inf))
        lag = clock.unsqueeze(-1)
        weight = (self._cumulative((lag - start).unsqueeze(-3))
                  - self._cumulative((lag - end).unsqueeze(-3)))  # (..., K, n, P)
        weight = weight * valid.unsqueeze(-3).to(weight)
        batch = torch.Size(broadcast_shape(pieces.shape[:-2], self.values.shape[:-2]))
        x = self.values.expand(batch + self.values.shape[-2:])
        idx = pieces.expand(batch + pieces.shape[-2:]).flatten(-2).unsqueeze(-1)
        x = x.gather(-2, idx.expand(idx.shape[:-1] + x.shape[-1:]))
        x = x.unflatten(-2, pieces.shape[-2:])  # batch + (n, P, J)
        return torch.matmul(weight.unsqueeze(-2), x.unsqueeze(-4)).squeeze(-2)

    def drive(self, t, cache=None):
        """:math:`s_d(t)` at process times ``t``: ``batch + (n, D)``."""
        return torch.matmul(self.filtered(t), self.weight.transpose(-1, -2)).sum(-3)

    def __repr__(self):
        return (f"RaisedCosineStimulus(samples={self.times.shape[0]}, "
                f"channels={self.num_channels}, kernels={self.num_kernels}, "
                f"width={self.width}, batch_shape={tuple(self.batch_shape)})")


def history_drive(history, weight, time_constants, t):
    """
    The potential left at times :math:`t \\ge 0` by spikes before the window (times
    :math:`t_h \\le 0`, marks :math:`m_h`): with :math:`S_{l,d'} = \\sum_h m_{h,d'}
    e^{t_h/\\tau_l}` the basis traces' spike sums at 0,

    .. math::

        \\sum_l e^{-t/\\tau_l} \\sum_{d'} W_{l,d,d'} S_{l,d'}
        = \\sum_l \\sum_{d'} W_{l,d,d'} \\sum_h m_{h,d'} e^{-(t - t_h)/\\tau_l},

    exactly the share of those spikes in :math:`u_d(t)` of the whole recording. Exponents are
    :math:`\\le 0`, so nothing overflows.

    :param history: ``batch + (H, 1 + D)`` (zero marks for padding).
    :param weight: ``batch + (L, D, D)``; :param time_constants: ``batch + (L,)``.
    :param t: ``batch + (n,)``, times :math:`\\ge 0`.
    :returns: ``batch + (n, D)``.
    """
    rates = 1.0 / time_constants
    times, marks = history[..., 0], history[..., 1:]
    # spike sums S_{l,d'} at the window start, batch + (L, D)
    sums = torch.matmul(torch.exp(times.unsqueeze(-2) * rates.unsqueeze(-1)), marks)
    start = torch.matmul(weight, sums.unsqueeze(-1)).squeeze(-1)  # batch + (L, D)
    decay = torch.exp(-t.unsqueeze(-2) * rates.unsqueeze(-1))  # batch + (L, n)
    return torch.matmul(decay.transpose(-1, -2), start)
