"""
Time windows of one long recording, each with the spikes before it as history.

A point-process log-likelihood is a sum over time of the log intensity at the spikes minus
the compensator, both conditional on the past. Cut :math:`[0, T]` into windows
:math:`[t_0^{(w)}, t_1^{(w)})`; with the spikes before each window given as its history
(:class:`~pyro_spikes.distributions.SpikingPointProcess`'s ``history``, which carries the
basis traces into the window exactly) and the stimulus seen from the window's clock
(:meth:`~pyro_spikes.distributions.FilteredStimulus.shifted`),

.. math::

    \\log p(J_{[0, T]}) = \\sum_w \\log p\\big(J_{[t_0^{(w)}, t_1^{(w)})} \\,\\big|\\,
        J_{[0, t_0^{(w)})}\\big)

for windows that tile :math:`[0, T]`. So SVI or MAP can train on random windows: inside a
``pyro.plate("windows", W, subsample_size=B)`` each window's log-likelihood is scaled by
:math:`W/B`, an unbiased estimate of the whole recording's (Hoffman et al., 2013, stochastic
variational inference)::

    windows, history = split_windows(events, T, starts, length)
    with pyro.plate("windows", len(starts), subsample_size=8) as idx:
        pyro.sample("spikes", SpikingPointProcess(
            bias, weight, tau, length, history=history[idx],
            stimulus=stimulus.shifted(starts[idx]), capacity=windows.shape[-2],
        ), obs=windows[idx])
"""

import torch

from pyro_spikes.spikes import validate_events

__all__ = ["split_windows"]


def split_windows(events, duration, starts, length, horizon=None):
    """
    Cut windows :math:`[t_0, t_0 + \\ell)` out of one recording in the ``events`` layout.

    A spike at :math:`t_0 + \\ell` belongs to the next window, except at the end of the
    recording (:math:`t_0 + \\ell = T`), whose spikes at :math:`T` stay in the last window.

    :param torch.Tensor events: one recording, shape ``(capacity, 1 + D)`` (exact marks).
    :param float duration: its length :math:`T`.
    :param starts: window starts :math:`t_0`, 1-D (numbers or a tensor).
    :param float length: window length :math:`\\ell > 0` (all windows the same).
    :param float horizon: keep only history spikes later than :math:`t_0 - ` ``horizon``
        (default: all earlier spikes, exact). A spike older than :math:`h` changes the
        potentials by at most :math:`|W| e^{-h/\\tau_{\\max}}`: ``horizon`` of
        :math:`37 \\tau_{\\max}` is below float64 resolution, and bounds the history's memory.
    :returns: ``(windows, history)``: ``windows`` of shape ``(W, C_w, 1 + D)`` with times
        relative to each start (padding at time ``length``), and ``history`` of shape
        ``(W, C_h, 1 + D)`` with times :math:`t - t_0 < 0` (padding: zero marks at time 0),
        for the ``history`` argument of
        :class:`~pyro_spikes.distributions.SpikingPointProcess`.
    :raises ValueError: naming ``starts`` for a window outside :math:`[0, T]`.
    """
    if not isinstance(events, torch.Tensor) or events.dim() != 2:
        raise ValueError(
            "events must be one recording of shape (capacity, 1 + D), got "
            f"{tuple(events.shape) if isinstance(events, torch.Tensor) else type(events).__name__}"
        )
    duration = float(duration)
    validate_events(events, duration, events.shape[1] - 1)  # errors name "events"
    length = float(length)
    if not length > 0:
        raise ValueError(f"length must be positive, got {length}")
    starts = torch.as_tensor(starts, dtype=events.dtype, device=events.device)
    if starts.dim() != 1 or starts.numel() == 0:
        raise ValueError(
            f"starts must be a non-empty 1-D sequence, got shape {tuple(starts.shape)}"
        )
    if not bool(torch.isfinite(starts).all()):
        raise ValueError("starts must be finite")
    ends = starts + length
    bad = (starts < 0) | (ends > duration * (1 + 1e-12))
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(
            f"starts[{i}]: window [{float(starts[i])}, {float(ends[i])}) lies outside the "
            f"recording [0, {duration}]"
        )
    if horizon is not None and not float(horizon) > 0:
        raise ValueError(f"horizon must be positive, got {horizon}")
    spikes = (events[:, 1:] != 0).any(dim=1)
    t = events[:, 0]
    t_spk, marks = t[spikes], events[spikes, 1:]
    rel = t_spk[None, :] - starts[:, None]  # (W, S)
    at_end = (ends >= duration)[:, None]
    inside = (rel >= 0) & ((rel < length) | (at_end & (t_spk[None, :] <= duration)))
    before = rel < 0
    if horizon is not None:
        before &= rel > -float(horizon)
    windows = _gather(rel, marks, inside, pad_time=length)
    windows[..., 0].clamp_(max=length)  # t - t0 may round past the end
    return (windows,
            _gather(rel, marks, before, pad_time=0.0))


def _gather(rel, marks, keep, pad_time):
    """Rows ``keep`` of every window, in time order, padded to a common capacity."""
    count = keep.sum(dim=1)
    cap = max(int(count.max()), 1)  # count has one entry per window: at least one
    out = marks.new_zeros(keep.shape[0], cap, 1 + marks.shape[1])  # marks: the events' dtype
    out[..., 0] = pad_time
    if keep.shape[1]:
        # a stable sort puts the kept columns first, still in time order
        order = torch.sort(~keep, stable=True).indices[:, :cap]
        valid = torch.arange(cap, device=rel.device)[None, :] < count[:, None]
        out[..., 0] = torch.where(valid, rel.gather(1, order), pad_time)
        out[..., 1:] = marks[order] * valid[..., None]
    return out
