"""Spiking neural networks as Pyro models and guides, and their training set-ups."""

from pyro_spikes.models.paper import kajino_ground_truth
from pyro_spikes.models.snn import SNN, temperature_schedule
from pyro_spikes.models.training import ESTIMATORS, elbo_gradients, train

__all__ = ["ESTIMATORS", "SNN", "elbo_gradients", "kajino_ground_truth", "temperature_schedule",
           "train"]
