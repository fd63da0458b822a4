"""What the benchmark scripts print about the machine they ran on (see pyro_spikes.provenance)."""

from pyro_spikes.provenance import cpu_model

__all__ = ["cpu_model"]
