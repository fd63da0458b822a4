"""Readers and writers between the ``events`` layout and Neo, pynapple, NWB and dicts."""

import numbers
from dataclasses import dataclass, field

import numpy as np
import torch

from pyro_spikes.spikes import pack_spikes, unpack_spikes

__all__ = [
    "SpikeRecording",
    "from_dict",
    "from_neo",
    "from_nwb",
    "from_pynapple",
    "to_dict",
    "to_neo",
    "to_nwb",
    "to_pynapple",
]


@dataclass
class SpikeRecording:
    """
    A recording in the ``events`` layout.

    :ivar torch.Tensor events: ``(capacity, 1 + D)``, times in :math:`[0, T]` relative to
        ``t_start``.
    :ivar float t_start: start of the observation window on the source's clock.
    :ivar float duration: :math:`T = t_{stop} - t_{start}`, the processes' ``duration``.
    :ivar list names: one identifier per neuron (mark column), in column order.
    """

    events: torch.Tensor
    t_start: float
    duration: float
    names: list = field(default_factory=list)

    @property
    def t_stop(self):
        return self.t_start + self.duration


def _window(t_start, t_stop):
    t_start, t_stop = float(t_start), float(t_stop)
    if not (np.isfinite(t_start) and np.isfinite(t_stop)) or not t_stop > t_start:
        raise ValueError(f"the window needs t_start < t_stop, got [{t_start}, {t_stop}]")
    return t_start, t_stop


def _pack(trains, names, t_start, t_stop, capacity, dtype, device, source):
    """Absolute per-neuron float64 arrays -> SpikeRecording (checking the window)."""
    t_start, t_stop = _window(t_start, t_stop)
    if len(trains) == 0:
        raise ValueError(f"{source}: no spike trains")
    rel = []
    for name, t in zip(names, trains):
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        if t.size and (not np.isfinite(t).all() or t.min() < t_start or t.max() > t_stop):
            raise ValueError(
                f"{source}: unit {name!r} has spike times outside the window "
                f"[{t_start}, {t_stop}]"
            )
        rel.append(np.clip(t - t_start, 0.0, t_stop - t_start))
    duration = t_stop - t_start
    events = pack_spikes(rel, duration, capacity=capacity, dtype=dtype, device=device)
    return SpikeRecording(events, t_start, duration, list(names))


def _unpack(events, t_start, name="events"):
    if not isinstance(events, torch.Tensor) or events.dim() != 2:
        raise ValueError(f"{name} must be one recording of shape (capacity, 1 + D)")
    return [t.detach().cpu().double().numpy() + float(t_start) for t in unpack_spikes(events)]


def _names(names, num):
    if names is None:
        return list(range(num))
    names = list(names)
    if len(names) != num:
        raise ValueError(f"names must have one entry per neuron ({num}), got {len(names)}")
    return names


# ---------------------------------------------------------------------------- dicts
def from_dict(trains, t_stop, t_start=0.0, capacity=None, dtype=None, device=None):
    """
    :param dict trains: neuron name -> 1-D array of spike times (insertion order = columns).
    :param float t_stop: end of the window; :param float t_start: its start.
    :rtype: SpikeRecording
    """
    if not hasattr(trains, "items"):
        raise TypeError(f"trains must be a dict of arrays, got {type(trains).__name__}")
    names = list(trains.keys())
    return _pack([trains[k] for k in names], names, t_start, t_stop, capacity, dtype, device,
                 "trains")


def to_dict(events, t_start=0.0, names=None):
    """``events`` -> dict name -> absolute spike times (float64 numpy arrays)."""
    trains = _unpack(events, t_start)
    return dict(zip(_names(names, len(trains)), trains))


# ---------------------------------------------------------------------------- neo
def from_neo(spiketrains, units="s", capacity=None, dtype=None, device=None):
    """
    A list of :class:`neo.core.SpikeTrain` sharing ``t_start`` and ``t_stop`` (quantities:
    any time units, converted to ``units``). Names: the trains' ``name`` (else their index).

    :rtype: SpikeRecording
    """
    import neo
    import quantities as pq

    spiketrains = list(spiketrains)
    if not spiketrains or not all(isinstance(s, neo.SpikeTrain) for s in spiketrains):
        raise TypeError("spiketrains must be a non-empty list of neo.SpikeTrain")
    unit = pq.Quantity(1.0, units)
    starts = {float(s.t_start.rescale(unit.units).magnitude) for s in spiketrains}
    stops = {float(s.t_stop.rescale(unit.units).magnitude) for s in spiketrains}
    if len(starts) != 1 or len(stops) != 1:
        raise ValueError(
            f"spiketrains must share t_start and t_stop, got t_start {sorted(starts)} and "
            f"t_stop {sorted(stops)} ({units})"
        )
    trains = [s.rescale(unit.units).magnitude for s in spiketrains]
    names = [s.name if s.name is not None else i for i, s in enumerate(spiketrains)]
    return _pack(trains, names, starts.pop(), stops.pop(), capacity, dtype, device,
                 "spiketrains")


def to_neo(events, duration, t_start=0.0, units="s", names=None):
    """
    ``events`` (times in ``units``) -> list of :class:`neo.core.SpikeTrain` on
    ``[t_start, t_start + duration]``, named by ``names`` (default: column index).
    """
    import neo

    trains = _unpack(events, t_start)
    duration = _duration(events, duration)
    names = _names(names, len(trains))
    return [neo.SpikeTrain(t, units=units, t_start=float(t_start),
                           t_stop=float(t_start) + duration, name=str(n))
            for t, n in zip(trains, names)]


def _duration(events, duration):
    duration = float(duration)
    if not duration > 0:
        raise ValueError(f"duration must be positive, got {duration}")
    if events.numel() and float(events[..., 0].max()) > duration:
        raise ValueError(f"events has times after duration={duration}")
    return duration


# ---------------------------------------------------------------------------- pynapple
def from_pynapple(group, epoch=None, capacity=None, dtype=None, device=None):
    """
    A :class:`pynapple.TsGroup` (seconds). The window is ``epoch`` (a one-interval
    :class:`pynapple.IntervalSet`; spikes outside it are left out, as
    ``TsGroup.restrict`` does) or, by default, the group's ``time_support``, which must be a
    single interval (for several, read each with ``epoch=`` or cut windows with
    :func:`pyro_spikes.windows.split_windows`). Names: the group's keys.

    :rtype: SpikeRecording
    """
    import pynapple as nap

    if not isinstance(group, nap.TsGroup):
        raise TypeError(f"group must be a pynapple.TsGroup, got {type(group).__name__}")
    support = group.time_support if epoch is None else epoch
    if len(support) != 1:
        raise ValueError(
            f"{'epoch' if epoch is not None else 'group.time_support'} must be one interval, "
            f"got {len(support)}"
        )
    start, end = float(support.start[0]), float(support.end[0])
    if epoch is not None:
        group = group.restrict(support)
    names = list(group.keys())
    return _pack([group[k].t for k in names], names, start, end, capacity, dtype, device,
                 "group")


def to_pynapple(events, duration, t_start=0.0, names=None):
    """``events`` -> :class:`pynapple.TsGroup` with time support ``[t_start, t_start + T]``."""
    import pynapple as nap

    trains = _unpack(events, t_start)
    duration = _duration(events, duration)
    support = nap.IntervalSet(start=float(t_start), end=float(t_start) + duration)
    names = _names(names, len(trains))
    if not all(isinstance(n, numbers.Integral) for n in names):
        raise ValueError("pynapple TsGroup keys must be integers; pass integer names")
    return nap.TsGroup({int(n): nap.Ts(t=t) for n, t in zip(names, trains)},
                       time_support=support)


# ---------------------------------------------------------------------------- NWB
def from_nwb(source, interval=None, capacity=None, dtype=None, device=None):
    """
    The units table of an NWB file (:class:`pynwb.NWBFile` or its ``units``
    :class:`pynwb.misc.Units`), times in seconds. The window is ``interval`` ``(start, stop)``
    if given, else the units' ``obs_intervals``: every unit must have exactly one, the same
    for all (for several, pass ``interval`` or use windows). Spikes outside the window are an
    error. Names: the table's ids.

    :rtype: SpikeRecording
    """
    import pynwb

    units = source.units if isinstance(source, pynwb.NWBFile) else source
    if not isinstance(units, pynwb.misc.Units):
        raise TypeError(f"source must be an NWBFile or a Units table, got {type(source).__name__}")
    if units is None or len(units) == 0:
        raise ValueError("source has no units")
    names = [int(i) for i in units.id[:]]
    trains = [np.asarray(units["spike_times"][i]) for i in range(len(units))]
    if interval is None:
        if "obs_intervals" not in units.colnames:
            raise ValueError("the units table has no obs_intervals: pass interval=(start, stop)")
        spans = {tuple(map(tuple, np.asarray(units["obs_intervals"][i]).reshape(-1, 2)))
                 for i in range(len(units))}
        if len(spans) != 1 or len(next(iter(spans))) != 1:
            raise ValueError(
                "units must share one obs_interval (got "
                f"{sorted(spans)}); pass interval=(start, stop)"
            )
        interval = next(iter(spans))[0]
    start, stop = interval
    return _pack(trains, names, start, stop, capacity, dtype, device, "units")


def to_nwb(events, nwbfile, duration, t_start=0.0):
    """
    Add one unit per neuron of ``events`` to ``nwbfile``'s units table, with absolute spike
    times and ``obs_intervals = [[t_start, t_start + T]]``. Returns the file.
    """
    trains = _unpack(events, t_start)
    duration = _duration(events, duration)
    for t in trains:
        nwbfile.add_unit(spike_times=t, obs_intervals=[[float(t_start), float(t_start) + duration]])
    return nwbfile
