"""
Interoperability with the spike-train containers of neuroscience: Neo, pynapple, NWB and plain
dicts of arrays (optional extra ``pip install pyro-spikes[io]``).

Every reader returns a :class:`SpikeRecording`: the spikes in the library's ``events`` layout
(:func:`pyro_spikes.spikes.pack_spikes`), times relative to the start of the observation
window :math:`[t_{start}, t_{stop}]` (the process's :math:`[0, T]`, :math:`T = t_{stop} -
t_{start}`), in seconds unless stated otherwise. Every writer takes ``events`` (exact marks,
shape ``(capacity, 1 + D)``) and the window start, and puts times back on the absolute clock.
Spikes outside the stated window are an error, never silently dropped.
"""

from pyro_spikes.io.convert import (
    SpikeRecording,
    from_dict,
    from_neo,
    from_nwb,
    from_pynapple,
    to_dict,
    to_neo,
    to_nwb,
    to_pynapple,
)

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
