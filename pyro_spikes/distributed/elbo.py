"""``TraceGraph_ELBO`` as a differentiable loss module, recording per-sequence costs."""

import torch
from pyro.infer import TraceGraph_ELBO
from pyro.infer.tracegraph_elbo import _compute_downstream_costs
from pyro.ops.provenance import detach_provenance

__all__ = ["DifferentiableTraceGraph_ELBO"]


class DifferentiableTraceGraph_ELBO(TraceGraph_ELBO):
    """
    :class:`~pyro.infer.TraceGraph_ELBO` with :meth:`differentiable_loss`, so that
    ``DifferentiableTraceGraph_ELBO()(model, guide)`` is a :class:`torch.nn.Module` loss (as
    ``Trace_ELBO()(model, guide)``) for REINFORCE with baselines in PyTorch-native training
    loops (PyTorch Lightning, DDP). Pyro 1.9's ``TraceGraph_ELBO`` has no differentiable loss.

    The loss's value is the negative ELBO estimate; its gradient is that of TraceGraph's
    surrogate loss (Rao-Blackwellised score-function terms, minus baselines). For every
    non-reparameterised guide site that has a ``baseline_value``, the per-element downstream
    cost (:math:`\\log p - \\log q` of the site and the sites that depend on it, summed to
    the site's plates and divided by the site's scale, averaged over particles) of the last
    call is kept in :attr:`site_costs`, so that a baseline can be updated from it
    (:class:`~pyro_spikes.distributed.SequenceBaseline`).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.site_costs = {}

    def _loss_and_surrogate_loss(self, model, guide, args, kwargs):
        self.site_costs = {}
        return super()._loss_and_surrogate_loss(model, guide, args, kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        elbo, surrogate_loss = self._loss_and_surrogate_loss(model, guide, args, kwargs)
        elbo = torch.as_tensor(elbo)
        surrogate_loss = torch.as_tensor(surrogate_loss)
        return -elbo.detach() + (surrogate_loss - surrogate_loss.detach())

    def _loss_and_surrogate_loss_particle(self, model_trace, guide_trace):
        sites = [name for name, site in guide_trace.nodes.items()
                 if site["type"] == "sample" and not site["is_observed"]
                 and site["infer"].get("baseline", {}).get("baseline_value") is not None]
        if sites:
            costs, _ = _compute_downstream_costs(model_trace, guide_trace, set(sites))
            for name in sites:
                cost = detach_provenance(costs[name]).detach() / guide_trace.nodes[name]["scale"]
                cost = cost / self.num_particles
                self.site_costs[name] = self.site_costs.get(name, 0.0) + cost
        return super()._loss_and_surrogate_loss_particle(model_trace, guide_trace)
