"""Inference with the library's processes: Pyro's tools, extended where spike trains need it."""

from pyro_spikes.infer.fit import FitResult, fit_map
from pyro_spikes.infer.predictive import Predictive

__all__ = ["FitResult", "Predictive", "fit_map"]
