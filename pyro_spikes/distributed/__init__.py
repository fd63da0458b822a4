"""
Data-parallel SVI of the library's Pyro programs across processes and machines, on PyTorch
Lightning (the optional extra ``pip install 'pyro-spikes[distributed]'``).

:class:`SubsampledModel`, :class:`SubsampledGuide`, :class:`SequenceBaseline`,
:class:`DifferentiableTraceGraph_ELBO`, :class:`HawkesWithPriors`, :func:`mix_seed` and
:func:`seeded` need only torch and Pyro; :class:`SVIModule` and :class:`SequenceDataModule`
import Lightning on first use. See the "Distributed SVI" page of the documentation.
"""

from pyro_spikes.distributed.baseline import SequenceBaseline
from pyro_spikes.distributed.elbo import DifferentiableTraceGraph_ELBO
from pyro_spikes.distributed.hawkes import HawkesWithPriors
from pyro_spikes.distributed.seeding import mix_seed, seeded
from pyro_spikes.distributed.subsample import SubsampledGuide, SubsampledModel

__all__ = [
    "DifferentiableTraceGraph_ELBO",
    "HawkesWithPriors",
    "SVIModule",
    "SequenceBaseline",
    "SequenceDataModule",
    "SubsampledGuide",
    "SubsampledModel",
    "mix_seed",
    "seeded",
]

_LIGHTNING = ("SVIModule", "SequenceDataModule")


def __getattr__(name):
    if name in _LIGHTNING:
        from pyro_spikes.distributed import lightning_module

        return getattr(lightning_module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
