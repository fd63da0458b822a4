"""
A per-sequence Pyro program (such as :class:`~pyro_spikes.models.SNN`'s ``model`` and
``guide``) trained on minibatches of a data set of ``size`` sequences.

Data-parallel SVI hands every worker a minibatch: the worker's loss must then be an unbiased
estimate of the negative ELBO of the *whole* data set, which Pyro obtains with
``pyro.plate(name, size, subsample=index)``: every site in the plate is scaled by
:math:`N / B` (data-set size over minibatch size). Averaged over the :math:`R` workers by
DDP, the gradient is that of the full-data ELBO estimated on the union of the minibatches:

.. math::

    \\frac1R \\sum_{r=1}^R \\nabla \\Big[\\sum_{\\text{global}} +
    \\frac{N}{B} \\sum_{i \\in \\mathcal{B}_r} \\mathcal{L}_i\\Big]
    = \\nabla \\Big[\\sum_{\\text{global}} + \\frac{N}{R B}
    \\sum_{i \\in \\mathcal{B}_1 \\cup \\dots \\cup \\mathcal{B}_R} \\mathcal{L}_i\\Big].

The SNN's programs open their own plate ``"sequences"`` of the minibatch's size, so these
wrappers apply the same scale with :func:`pyro.poutine.scale`, which is what the subsampled
plate would do for programs whose every site lies in that plate. Programs with global latent
sites (e.g. a :class:`~pyro_spikes.distributions.HawkesProcess` with priors on its parameters)
should open ``pyro.plate("sequences", size, subsample=index)`` themselves and be used as they
are.
"""

import pyro.poutine as poutine
import torch
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample

from pyro_spikes.distributed.seeding import seeded

__all__ = ["SubsampledGuide", "SubsampledModel"]


def _check_batch(index, data, seeds, size):
    if not isinstance(index, torch.Tensor) or index.dim() != 1 or index.dtype.is_floating_point:
        raise ValueError("index must be a 1-d integer tensor of sequence indices")
    if not isinstance(data, torch.Tensor) or data.shape[:1] != index.shape:
        raise ValueError(
            f"data must be a tensor with one row per index ({index.shape[0]}), got "
            f"{tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__}"
        )
    if index.numel() == 0:
        raise ValueError("index must not be empty")
    if int(index.min()) < 0 or int(index.max()) >= size:
        raise ValueError(f"index must lie in [0, {size}), got [{int(index.min())}, "
                         f"{int(index.max())}]")
    if seeds is not None and len(seeds) != index.shape[0]:
        raise ValueError(f"seeds must have one entry per sequence ({index.shape[0]}), "
                         f"got {len(seeds)}")


class _Subsampled(torch.nn.Module):
    # A plain Module (not a PyroModule): the program keeps its own Pyro names, and the model
    # and guide wrappers can both hold it (ELBOModule then sees its parameters once).
    def __init__(self, program, size):
        super().__init__()
        if not (hasattr(program, "model") and hasattr(program, "guide")):
            raise TypeError("program must have model and guide methods (e.g. an SNN)")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        self.program = program
        self.size = size

    def extra_repr(self):
        return f"size={self.size}"


class SubsampledModel(_Subsampled):
    """
    ``program.model`` on a minibatch ``data`` (rows ``index`` of a data set of ``size``
    sequences), scaled by ``size / len(index)``.

    Called as ``model(index, data, seeds=None, baseline_value=None, **kwargs)``: ``kwargs`` go
    to ``program.model`` (e.g. ``relaxed``, ``temperature``); ``seeds`` and
    ``baseline_value`` are the guide's and are ignored here.

    :param program: a :class:`~pyro.nn.PyroModule` with ``model(data, **kwargs)`` and
        ``guide(data, **kwargs)`` whose sites all lie in one plate over the sequences at
        ``dim=-1`` (as :class:`~pyro_spikes.models.SNN`'s).
    :param int size: :math:`N`, sequences in the whole data set.
    """

    def forward(self, index, data, seeds=None, baseline_value=None, **kwargs):
        _check_batch(index, data, seeds, self.size)
        with poutine.scale(scale=self.size / index.shape[0]):
            return self.program.model(data, **kwargs)


class SubsampledGuide(_Subsampled):
    """
    ``program.guide`` on a minibatch, scaled like :class:`SubsampledModel`.

    Called as ``guide(index, data, seeds=None, baseline_value=None, **kwargs)``:

    - ``seeds`` (one integer per sequence): each sequence's latent sample is drawn on its own,
      by ``program.guide`` on that sequence alone with torch's generator seeded by its seed,
      and the batched guide is then replayed at the concatenated samples (so its log density
      and, for reparameterised sites, the path-wise dependence on the parameters are those of
      the batched program). A sequence's sample then depends only on its seed, not on the
      minibatch or the worker that holds it: data-parallel runs with any number of workers
      compute the same gradient as one process on the same global batch, up to rounding.
      Costs one extra guide call per sequence.
    - ``baseline_value`` (one number per sequence, the unscaled per-sequence downstream cost
      expected under the guide, e.g. :class:`~pyro_spikes.distributed.SequenceBaseline`): the
      baseline of every non-reparameterised latent site, scaled like the site
      (``infer={"baseline": {"baseline_value": ...}}``, used by ``TraceGraph_ELBO``-type
      losses; see :class:`~pyro_spikes.distributed.DifferentiableTraceGraph_ELBO`).
    """

    def forward(self, index, data, seeds=None, baseline_value=None, **kwargs):
        _check_batch(index, data, seeds, self.size)
        scale = self.size / index.shape[0]
        guide = self.program.guide
        if seeds is not None:
            guide = poutine.replay(guide, trace=_per_sequence_samples(guide, data, seeds,
                                                                       kwargs))
        if baseline_value is not None:
            baseline_value = torch.as_tensor(baseline_value)
            if baseline_value.shape != index.shape:
                raise ValueError(f"baseline_value must have shape {tuple(index.shape)}, got "
                                 f"{tuple(baseline_value.shape)}")
            guide = poutine.infer_config(guide, _baseline_config(scale * baseline_value))
        with poutine.scale(scale=scale):
            return guide(data, **kwargs)


def _baseline_config(value):
    def config(msg):
        fn = msg["fn"]
        if msg["type"] != "sample" or msg["is_observed"] or getattr(fn, "has_rsample", False):
            return {}
        return {"baseline": {"baseline_value": value.to(device=msg["value"].device
                                                        if msg["value"] is not None else
                                                        value.device)}}
    return config


def _per_sequence_samples(guide, data, seeds, kwargs):
    """The latent samples of ``guide`` drawn sequence by sequence, as a trace to replay."""
    traces = []
    for j in range(data.shape[0]):
        with seeded(int(seeds[j]), data.device), poutine.block():
            traces.append(poutine.trace(guide).get_trace(data[j:j + 1], **kwargs))
    merged = Trace()
    for name, site in traces[0].nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        value = site["value"]
        dim = value.dim() - site["fn"].event_dim - 1  # the sequences plate (dim=-1)
        if dim < 0 or value.shape[dim] != 1:
            raise ValueError(
                f"site {name!r} is not local to a plate over the sequences at dim=-1; "
                "per-sequence seeds need every latent site in that plate"
            )
        merged.add_node(name, type="sample", is_observed=False, infer=dict(site["infer"]),
                        value=torch.cat([t.nodes[name]["value"] for t in traces], dim))
    return merged
