"""Deterministic differentiable spiking networks."""

from pyro_spikes.nn.smooth_gate import SmoothGateSNN, SmoothGateTrajectory, crossings_to_events

__all__ = ["SmoothGateSNN", "SmoothGateTrajectory", "crossings_to_events"]
