"""pyro_spikes: probabilistic spiking neural networks in continuous time, in Pyro."""

from pyro_spikes import diagnostics, infer, models, nn, plot, scoring
from pyro_spikes.distributions import (
    HawkesProcess,
    PointProcess,
    PoissonProcess,
    RelaxedPointProcess,
    SpikingPointProcess,
    StochasticLIF,
)
from pyro_spikes.models import SNN
from pyro_spikes.nn import SmoothGateSNN
from pyro_spikes.spikes import (
    num_spikes,
    pack_spikes,
    select_neurons,
    spike_mask,
    to_dense,
    to_index,
    trim_padding,
    unpack_spikes,
    validate_events,
    validate_index_events,
)
from pyro_spikes.windows import split_windows

__version__ = "0.1.0"

__all__ = [
    "HawkesProcess",
    "PointProcess",
    "PoissonProcess",
    "RelaxedPointProcess",
    "SNN",
    "SmoothGateSNN",
    "SpikingPointProcess",
    "StochasticLIF",
    "diagnostics",
    "infer",
    "models",
    "nn",
    "num_spikes",
    "pack_spikes",
    "plot",
    "scoring",
    "select_neurons",
    "spike_mask",
    "split_windows",
    "to_dense",
    "to_index",
    "trim_padding",
    "unpack_spikes",
    "validate_events",
    "validate_index_events",
]
