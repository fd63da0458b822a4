"""Spiking neural networks as Pyro models and guides, and their training set-ups."""

from pyro_spikes.models.paper import kajino_ground_truth
from pyro_spikes.models.smc import HiddenProposal, SMCResult, smc_log_marginal
from pyro_spikes.models.snn import SNN, temperature_schedule
from pyro_spikes.models.training import ESTIMATORS, elbo_gradients, train

__all__ = ["ESTIMATORS", "HiddenProposal", "SMCResult", "SNN", "elbo_gradients",
           "kajino_ground_truth", "smc_log_marginal", "temperature_schedule", "train"]
