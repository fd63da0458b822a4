"""Spiking neural networks as Pyro models and guides."""

from pyro_spikes.models.snn import SNN, temperature_schedule

__all__ = ["SNN", "temperature_schedule"]
