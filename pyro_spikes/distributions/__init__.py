"""Point processes on spike trains as Pyro distributions."""

from pyro_spikes.distributions.constraints import index_spike_trains, spike_trains
from pyro_spikes.distributions.hawkes import HawkesProcess
from pyro_spikes.distributions.point_process import PointProcess, default_capacity, event_limit
from pyro_spikes.distributions.poisson import PoissonProcess
from pyro_spikes.distributions.relaxed import RelaxedPointProcess, concrete_log_density
from pyro_spikes.distributions.scan import exp_decay_scan
from pyro_spikes.distributions.spiking import SpikingPointProcess
from pyro_spikes.distributions.stimulus import FilteredStimulus, RaisedCosineStimulus, Stimulus
from pyro_spikes.distributions.stochastic_lif import StochasticLIF

__all__ = [
    "FilteredStimulus",
    "HawkesProcess",
    "PointProcess",
    "PoissonProcess",
    "RaisedCosineStimulus",
    "RelaxedPointProcess",
    "SpikingPointProcess",
    "StochasticLIF",
    "Stimulus",
    "concrete_log_density",
    "default_capacity",
    "event_limit",
    "exp_decay_scan",
    "index_spike_trains",
    "spike_trains",
]
