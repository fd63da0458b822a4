"""
Gradient estimators of Kajino (2021) for an :class:`~pyro_spikes.models.SNN` as plain Pyro
:class:`~pyro.infer.SVI` configurations, and small loops that train and compare them.
"""

import torch
from pyro.infer import SVI, Trace_ELBO, TraceGraph_ELBO
from pyro.optim import Adam

from pyro_spikes.models.snn import temperature_schedule

__all__ = ["ESTIMATORS", "elbo_gradients", "train"]

#: name -> (ELBO class, keyword arguments of the model and guide). ``"pathwise"`` is
#: Kajino's relaxed (reparameterised) estimator; the two others are the score-function
#: (REINFORCE) estimator of the exact process, without and with a decaying-average baseline.
ESTIMATORS = {
    "pathwise": (Trace_ELBO, {"relaxed": True}),
    "reinforce": (Trace_ELBO, {"relaxed": False}),
    "reinforce_baseline": (TraceGraph_ELBO, {"relaxed": False, "baseline": True}),
}


def _estimator(name):
    if name not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {sorted(ESTIMATORS)}, got {name!r}")
    elbo_class, kwargs = ESTIMATORS[name]
    return elbo_class, dict(kwargs)


def _parameters(snn):
    """The unconstrained parameter tensors of ``snn`` by name (registered in the store)."""
    return {name: getattr(snn, name + "_unconstrained") for name, _ in snn._pyro_params.items()}


def elbo_gradients(snn, observed, estimator, num_repeats, temperature=0.3):
    """
    Independent estimates of the ELBO gradient at the current parameters of ``snn``.

    :param str estimator: a key of :data:`ESTIMATORS`.
    :param int num_repeats: number of independent estimates (each with fresh samples; for
        ``"reinforce_baseline"`` the decaying-average baseline is updated along the way, as
        during training).
    :returns: dict parameter name -> tensor ``(num_repeats,) + param.shape`` of gradients
        of the loss (the negative ELBO).
    """
    if int(num_repeats) < 1:
        raise ValueError(f"num_repeats must be >= 1, got {num_repeats}")
    elbo_class, kwargs = _estimator(estimator)
    kwargs["temperature"] = temperature
    elbo = elbo_class()
    model, guide = snn.model, snn.guide
    params = _parameters(snn)
    grads = {name: [] for name in params}
    for _ in range(int(num_repeats)):
        for p in params.values():
            p.grad = None
        elbo.loss_and_grads(model, guide, observed, **kwargs)
        for name, p in params.items():
            g = p.grad
            grads[name].append(torch.zeros_like(p) if g is None else g.detach().clone())
    for p in params.values():
        p.grad = None
    return {name: torch.stack(g) for name, g in grads.items()}


def train(snn, observed, estimator, num_steps, lr=0.05, temperature=0.3, anneal_from=None,
          progress=None):
    """
    Fit ``snn`` to ``observed`` by SVI with the given estimator and Adam.

    :param str estimator: a key of :data:`ESTIMATORS`.
    :param float temperature: final relaxation temperature (path-wise estimator only).
    :param float anneal_from: if given, the temperature is annealed geometrically from this
        value to ``temperature`` over the run (:func:`~pyro_spikes.models.temperature_schedule`).
    :param progress: optional callable ``progress(step, loss)`` (e.g. a tqdm update).
    :returns: list of the losses (negative ELBO, summed over sequences) per step.
    """
    elbo_class, kwargs = _estimator(estimator)
    model, guide = snn.model, snn.guide
    svi = SVI(model, guide, Adam({"lr": lr}), elbo_class())
    losses = []
    for step in range(int(num_steps)):
        tau = temperature if anneal_from is None else temperature_schedule(
            step, num_steps, start=anneal_from, end=temperature)
        loss = svi.step(observed, temperature=tau, **kwargs)
        losses.append(float(loss))
        if progress is not None:
            progress(step, loss)
    return losses
