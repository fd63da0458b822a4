"""
Posterior (and prior) predictive spike trains: :class:`pyro.infer.Predictive` for models whose
sample sites are point processes.
"""

import math

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites

from pyro_spikes.distributions.point_process import PointProcess
from pyro_spikes.spikes import pad_rows

__all__ = ["Predictive"]

_PLATE = "_num_predictive_samples"  # Pyro's name for the plate over draws


def _point_process(fn):
    """The :class:`PointProcess` under Pyro's wrappers (``to_event``, ``mask``), else None."""
    while fn is not None and not isinstance(fn, PointProcess):
        fn = getattr(fn, "base_dist", None)
    return fn


class _NoPointProcessDraws(Messenger):
    """
    Gives every latent point-process site an empty realisation (one padding row) instead of a
    draw: the run that finds the model's plates and sites then never simulates a process, so
    no parameter drawn from the prior (an explosive Hawkes process, a huge rate) is simulated.
    """

    def _pyro_sample(self, msg):
        process = _point_process(msg["fn"])
        if process is None or msg["is_observed"] or msg["value"] is not None:
            return
        like = process._params_like()
        empty = like.new_zeros(tuple(msg["fn"].batch_shape) + (0, process._width))
        msg["value"] = pad_rows(empty, 1, process.duration, process.layout)
        msg["done"] = True


def _plate_nesting(trace):
    dims = [frame.dim for site in trace.nodes.values() if site["type"] == "sample"
            for frame in site["cond_indep_stack"] if frame.vectorized]
    return -min(dims) if dims else 0


def _stack(values, process, site):
    """Stack one site's draws, padding point-process realisations to one row count."""
    shapes = {tuple(v.shape) for v in values}
    if len(shapes) > 1:
        if process is None or len({s[:-2] + s[-1:] for s in shapes}) > 1:
            raise ValueError(
                f"the draws of site {site!r} have different shapes {sorted(shapes)} and the "
                "site is not a point process, so they cannot be padded to one shape"
            )
        rows = max(s[-2] for s in shapes)
        values = [pad_rows(v, rows, process.duration, process.layout) for v in values]
    return torch.stack(values)


def _predictive(model, posterior_samples, num_samples, return_sites=(), parallel=False,
                model_args=(), model_kwargs=None):
    """
    Pyro's ``_predictive`` (same arguments, same result shapes) with two differences: the
    run that finds the model's plates and sites simulates no point process (see
    :class:`_NoPointProcessDraws`) and is conditioned on the first posterior draw, not on the
    prior; and the draws of a point-process site are padded to one row count.
    Returns ``(samples, trace)``: the dict of draws and the trace(s) they came from.
    """
    model_kwargs = model_kwargs or {}
    model = torch.no_grad()(poutine.mask(model, mask=False))
    first = {name: value[0] for name, value in posterior_samples.items()}
    structure = prune_subsample_sites(poutine.trace(
        _NoPointProcessDraws()(poutine.condition(model, first))
    ).get_trace(*model_args, **model_kwargs))
    nesting = _plate_nesting(structure)

    sites = {}  # name -> (number of dims added left of the site's batch shape, process)
    for name in structure.stochastic_nodes + structure.observation_nodes:
        fn = structure.nodes[name]["fn"]
        wanted = (name in return_sites if return_sites
                  else return_sites is None or name not in posterior_samples)
        if wanted:
            sites[name] = (nesting - len(fn.batch_shape), _point_process(fn))
    want_return = return_sites is not None and "_RETURN" in return_sites

    if not parallel:
        traces = [
            poutine.trace(poutine.condition(
                model, {name: value[i] for name, value in posterior_samples.items()}
            )).get_trace(*model_args, **model_kwargs)
            for i in range(num_samples)
        ]
        samples = {}
        for name, (extra, process) in sites.items():
            stacked = _stack([t.nodes[name]["value"] for t in traces], process, name)
            samples[name] = stacked.reshape(
                (num_samples,) + (1,) * extra + stacked.shape[1:])
        if want_return:
            samples["_RETURN"] = _stack_returns(traces)
        return samples, traces

    reshaped = {}
    for name, value in posterior_samples.items():
        shape = value.shape[1:]
        reshaped[name] = value.reshape(
            (num_samples,) + (1,) * (nesting - len(shape)) + shape)
    vectorize = pyro.plate(_PLATE, num_samples, dim=-nesting - 1)
    trace = poutine.trace(poutine.condition(vectorize(model), reshaped)).get_trace(
        *model_args, **model_kwargs)
    samples = {}
    for name, (extra, process) in sites.items():
        value = trace.nodes[name]["value"]
        fn = structure.nodes[name]["fn"]
        if process is not None:  # the draw's own row count
            site_shape = tuple(fn.batch_shape) + tuple(value.shape[-2:])
        else:  # not the value's: the structure run's may carry a posterior draw's plate dims
            site_shape = tuple(fn.batch_shape) + tuple(fn.event_shape)
        shape = (num_samples,) + (1,) * extra + site_shape
        samples[name] = (value.expand(shape) if value.numel() < math.prod(shape)
                         else value.reshape(shape))
    if want_return:
        samples["_RETURN"] = trace.nodes["_RETURN"]["value"]
    return samples, trace


def _stack_returns(traces):
    """The model's return values, stacked (padded when they are a point-process site's)."""
    values = [t.nodes["_RETURN"]["value"] for t in traces]
    if not all(torch.is_tensor(v) for v in values):
        return values
    process = None
    for site in traces[0].nodes.values():  # the return value is a point-process site's value
        if site["type"] == "sample" and site["value"] is values[0]:
            process = _point_process(site["fn"])
    return _stack(values, process, "_RETURN")


class Predictive(pyro.infer.Predictive):
    """
    :class:`pyro.infer.Predictive` for models with point-process sites: the same arguments and
    results (a dict of draws, ``num_samples`` first, in the same shapes as Pyro's), with no
    ``capacity`` to set.

    Pyro's ``Predictive`` cannot sample spike trains on its own: (i) it stacks (sequential) or
    reshapes (``parallel=True``) every draw of a site to the shape of one draw, but
    realisations of a point process have as many rows as they need
    (:class:`~pyro_spikes.distributions.PointProcess`), so draws with different parameters
    differ in shape; (ii) it first runs the model once with every latent site drawn from the
    prior (``init_to_sample``) to guess the plate nesting, so a point process with parameters
    drawn from the prior is simulated, which fails where the prior allows an explosive Hawkes
    process or a huge rate, however good the fitted guide. This class

    - pads the draws of each point-process site to the longest one's row count (padding rows
      at time :math:`T`, as :func:`~pyro_spikes.spikes.pad_rows` writes them), in both modes;
    - finds the plates from a run conditioned on the *first posterior draw* in which no point
      process is simulated (each latent one returns an empty realisation); the draws then come
      from the posterior samples (or the guide) only.

    Samples of the latent sites that a guide does not cover are drawn from the prior, as in
    Pyro. A realisation that reaches the event limit (an explosive process among the posterior
    draws) raises the :class:`ValueError` of
    :func:`~pyro_spikes.distributions.event_limit`.

    :param model: the Pyro model.
    :param dict posterior_samples: draws of latent sites, ``num_samples`` first.
    :param guide: a guide (a callable) to draw the latent sites from (instead of
        ``posterior_samples``); its own point-process sites are padded too.
    :param int num_samples: the number of draws.
    :param return_sites: the sites to return (default: those not in ``posterior_samples``,
        and every site of the guide when ``guide`` is given).
    :param bool parallel: draw all samples at once under a plate left of the model's plates
        (the model must be vectorised over it, as in Pyro).
    """

    def forward(self, *args, **kwargs):
        """
        The dict of predictive draws, ``num_samples`` first: the guide's (or the posterior
        samples'), then the model's; call the instance instead, ``Predictive(...)(*args)``.

        :param args: the model's (and guide's) arguments.
        :param kwargs: their keyword arguments.
        """
        posterior_samples = self.posterior_samples
        return_sites = self.return_sites
        if self.guide is not None:
            return_sites = None if not return_sites else return_sites
            posterior_samples, _ = _predictive(
                self.guide, posterior_samples, self.num_samples, return_sites=None,
                parallel=self.parallel, model_args=args, model_kwargs=kwargs)
        samples, _ = _predictive(
            self.model, posterior_samples, self.num_samples, return_sites=return_sites,
            parallel=self.parallel, model_args=args, model_kwargs=kwargs)
        return samples

    def get_vectorized_trace(self, *args, **kwargs):
        """One vectorised trace of the model (``parallel=True``), as in Pyro."""
        posterior_samples = self.posterior_samples
        if self.guide is not None:
            posterior_samples, _ = _predictive(
                self.guide, posterior_samples, self.num_samples, parallel=self.parallel,
                model_args=args, model_kwargs=kwargs)
        _, trace = _predictive(self.model, posterior_samples, self.num_samples, parallel=True,
                               model_args=args, model_kwargs=kwargs)
        return trace
