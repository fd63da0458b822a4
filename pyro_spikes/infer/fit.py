"""
Maximum-likelihood and MAP fits of Pyro models of spike trains by a deterministic quasi-Newton
method, with a convergence report and standard errors from the observed information.

For a model with observed spike trains :math:`x`, parameters :math:`\\theta` (``pyro.param``
sites) and continuous latent sites :math:`z` with priors, :func:`fit_map` maximises the log
joint density

.. math::

    \\ell(\\theta, z) = \\log p(x \\mid \\theta, z) + \\log p(z)

(the log-likelihood alone when the model has no latent sites: maximum likelihood). The latent
sites are point estimates (Pyro's :class:`~pyro.infer.autoguide.AutoDelta`, so the loss is
:class:`~pyro.infer.Trace_ELBO`'s with a point-mass guide: :math:`-\\ell` exactly, with no
Monte Carlo noise), and every constrained value is optimised through its unconstrained
coordinates :math:`u` (``biject_to(constraint)``). The optimiser is L-BFGS with a strong-Wolfe
line search (Nocedal & Wright 2006, Algorithms 7.5 and 3.5; ``torch.optim.LBFGS``).

**Convergence.** The fit stops when the largest gradient entry
:math:`\\max_i |\\partial \\ell / \\partial u_i|` is at most ``tolerance_grad``, or when a step
changes :math:`\\ell` or :math:`u` by less than ``tolerance_change`` (then the gradient is
reported as it is), or after ``max_iter`` iterations or ``max_eval`` evaluations: the result's
``converged`` and ``message`` say which.

**Standard errors.** Near the maximum :math:`\\hat u`, the observed information
:math:`I = -\\nabla^2_u \\ell(\\hat u)` gives the asymptotic covariance :math:`I^{-1}` of the
estimate (of the posterior, for MAP: the Laplace approximation). A constrained value
:math:`c = g(u)` with an elementwise transform gets :math:`\\mathrm{se}(c_i) = |g'(u_i)|\\,
\\sqrt{(I^{-1})_{ii}}` (the delta method; at a maximum in the interior this is also the
inverse of the information in :math:`c` itself). The Hessian costs one reverse pass of the
gradient per coordinate, so it is computed for at most ``max_se_params`` coordinates; values
under other transforms (a simplex, a Cholesky factor) get NaN, as do all of them when
:math:`I` is not positive definite (the result's ``message`` says so).
"""

import dataclasses
import math

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDelta
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import biject_to, constraints
from tqdm.auto import tqdm

from pyro_spikes.infer.predictive import _point_process

__all__ = ["FitResult", "fit_map"]


@dataclasses.dataclass(repr=False)
class FitResult:
    """
    What :func:`fit_map` found: ``params`` (name to constrained value: the ``pyro.param``
    sites and the latent sites' point estimates), ``standard_errors`` (same names; ``None``
    when not computed), ``log_joint`` (:math:`\\ell` at the estimate), ``iterations``,
    ``evaluations`` (of :math:`\\ell` and its gradient), ``grad_max`` (largest gradient entry in
    the unconstrained coordinates), ``converged`` and ``message``; ``history`` is :math:`\\ell`
    at every evaluation in order (line-search trials included); ``guide`` is the point-mass
    guide of the latent sites (for :class:`pyro_spikes.infer.Predictive`), or ``None``.
    """

    params: dict
    standard_errors: dict | None
    log_joint: float
    iterations: int
    evaluations: int
    grad_max: float
    converged: bool
    message: str
    guide: object = None
    history: list = dataclasses.field(default_factory=list)

    def __repr__(self):
        status = "converged" if self.converged else "NOT converged"
        lines = [f"FitResult({status}: {self.message}; log joint {self.log_joint:.6g}, "
                 f"{self.iterations} iterations, {self.evaluations} evaluations, "
                 f"max |gradient| {self.grad_max:.3g})"]
        for name, value in self.params.items():
            se = None if self.standard_errors is None else self.standard_errors.get(name)
            shown = _short(value) + ("" if se is None else f" ± {_short(se)}")
            lines.append(f"  {name}: {shown}")
        return "\n".join(lines)


def _short(x):
    x = x.detach().cpu()
    if x.numel() <= 6:
        return str([round(v, 6) for v in x.reshape(-1).tolist()]) if x.dim() else f"{x:.6g}"
    return f"tensor of shape {tuple(x.shape)}"


def _check_model(model, args, kwargs):
    """The latent sites (a trace of one run); refuses the ones a point estimate cannot be."""
    with poutine.block(), poutine.trace() as tr:
        model(*args, **kwargs)
    latent = []
    for name, site in prune_subsample_sites(tr.trace).nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site["infer"].get("is_auxiliary"):
            continue
        fn = site["fn"]
        if _point_process(fn) is not None:
            raise ValueError(f"model: latent site {name!r} is a point process (hidden spikes); "
                             "fit_map finds point estimates of continuous values: train hidden "
                             "spikes by SVI (pyro_spikes.models.training)")
        if fn.support.is_discrete:
            raise ValueError(f"model: latent site {name!r} is discrete ({fn.support}); fit_map "
                             "finds point estimates of continuous values only (enumerate or "
                             "marginalise it out in the model)")
        latent.append(name)
    return latent


def _positive_int(name, x):
    if isinstance(x, bool) or not isinstance(x, int) or x < 1:
        raise ValueError(f"{name} must be a positive integer, got {x!r}")


def _nonnegative(name, x):
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not x >= 0 or math.isinf(x):
        raise ValueError(f"{name} must be a finite number >= 0, got {x!r}")


def fit_map(model, *args, max_iter=500, max_eval=None, tolerance_grad=1e-6,
            tolerance_change=1e-10, history_size=20, init_loc_fn=None, standard_errors=True,
            max_se_params=2000, progress=True, **kwargs):
    """
    Maximum-likelihood / MAP estimate of the ``pyro.param`` sites and the continuous latent
    sites of ``model(*args, **kwargs)`` by L-BFGS with a strong-Wolfe line search (see the
    module's docstring for the objective, the stopping rules and the standard errors).

    The parameters start from the param store (``pyro.param``'s initial values) and the latent
    sites from ``init_loc_fn`` (default: the prior's median, as
    :class:`~pyro.infer.autoguide.AutoDelta`); the fitted values are left in the param store.

    :param model: a Pyro model (a callable); every latent sample site continuous and not a point
        process (hidden spikes need SVI).
    :param int max_iter: most L-BFGS iterations.
    :param int max_eval: most evaluations of the objective and its gradient (default
        ``max_iter * 5 // 4``, as ``torch.optim.LBFGS``).
    :param float tolerance_grad: stop when every gradient entry (unconstrained coordinates) is
        at most this in absolute value.
    :param float tolerance_change: stop when a step changes the objective or the coordinates by
        less than this.
    :param int history_size: L-BFGS memory (pairs of steps and gradient changes).
    :param bool standard_errors: compute them from the observed information.
    :param int max_se_params: most unconstrained coordinates to compute standard errors for.
    :param bool progress: show a progress bar of the evaluations (tqdm).
    :returns: a :class:`FitResult`.
    """
    _positive_int("max_iter", max_iter)
    if max_eval is None:
        max_eval = max_iter * 5 // 4
    _positive_int("max_eval", max_eval)
    _positive_int("history_size", history_size)
    _positive_int("max_se_params", max_se_params)
    _nonnegative("tolerance_grad", tolerance_grad)
    _nonnegative("tolerance_change", tolerance_change)
    latent = _check_model(model, args, kwargs)
    if latent:
        guide = AutoDelta(model, **({} if init_loc_fn is None else {"init_loc_fn": init_loc_fn}))
    else:
        guide = None

        def _empty_guide(*args, **kwargs):
            pass

    run_guide = guide if guide is not None else _empty_guide
    elbo = Trace_ELBO()

    def loss_fn():
        return elbo.differentiable_loss(model, run_guide, *args, **kwargs)

    with poutine.trace(param_only=True) as tr:
        loss_fn()
    store = pyro.get_param_store()
    names = list(tr.trace.nodes)
    unconstrained = [store.get_param(name).unconstrained() for name in names]
    if not unconstrained:
        raise ValueError("model: nothing to fit (no pyro.param sites and no latent sites)")
    optimizer = torch.optim.LBFGS(unconstrained, lr=1.0, max_iter=max_iter, max_eval=max_eval,
                                  tolerance_grad=tolerance_grad,
                                  tolerance_change=tolerance_change, history_size=history_size,
                                  line_search_fn="strong_wolfe")
    bar = tqdm(desc="fit_map (evaluations)", disable=not progress, leave=False)
    history = []

    def closure():
        optimizer.zero_grad()
        loss = loss_fn()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ValueError(f"fit_map: the log joint density is {-value} at evaluation "
                             f"{bar.n + 1} (parameters outside the model's support, or a "
                             "start too far out); start elsewhere")
        loss.backward()
        history.append(-value)
        bar.update(1)
        bar.set_postfix(log_joint=f"{-value:.6g}")
        return loss

    try:
        optimizer.step(closure)
    finally:
        bar.close()
    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    iterations, evaluations = int(state.get("n_iter", 0)), int(state.get("func_evals", 0))
    # the report at the final point; its gradient's graph gives the Hessian too
    optimizer.zero_grad()
    size = sum(u.numel() for u in unconstrained)
    hessian_wanted = standard_errors and size <= max_se_params
    loss = loss_fn()
    grads = torch.autograd.grad(loss, unconstrained, create_graph=hessian_wanted,
                                allow_unused=True)
    grad_max = max((float(g.detach().abs().max()) for g in grads if g is not None and g.numel()),
                   default=0.0)
    if grad_max <= tolerance_grad:
        converged, message = True, f"max |gradient| {grad_max:.3g} <= tolerance_grad"
    elif iterations < max_iter and evaluations < max_eval:
        converged = True
        float32 = unconstrained[0].dtype == torch.float32
        message = (f"a step changed the objective or the coordinates by less than "
                   f"tolerance_change ({tolerance_change:g}"
                   + ("; in float32 the objective's own rounding can stop it there)" if float32
                      else ")"))
    else:
        converged = False
        limit = "max_iter" if iterations >= max_iter else "max_eval"
        message = (f"stopped at {limit} with max |gradient| {grad_max:.3g} > tolerance_grad "
                   f"({tolerance_grad:g}): raise {limit} or start closer")

    def public(name):  # AutoDelta's parameters are named after their sites
        prefix = f"{type(guide).__name__}." if guide is not None else None
        return name[len(prefix):] if prefix and name.startswith(prefix) else name

    params = {public(n): store[n].detach() for n in names}
    errors = None
    if hessian_wanted:
        errors, note = _standard_errors(grads, unconstrained, names, store)
        errors = {public(n): e for n, e in errors.items()}
        if note:
            message += "; " + note
    elif standard_errors:
        message += f"; no standard errors: {size} coordinates > max_se_params ({max_se_params})"
    return FitResult(params, errors, -float(loss.detach()), iterations, evaluations, grad_max,
                     converged, message, guide, list(history))


def _standard_errors(grads, unconstrained, names, store):
    """
    Delta-method standard errors of the constrained values from the Hessian in ``u``:
    ``grads`` is the gradient of the loss in ``unconstrained``, with its graph.
    """
    sizes = [u.numel() for u in unconstrained]
    n = sum(sizes)
    flat = torch.cat([(g if g is not None else torch.zeros_like(u)).reshape(-1)
                      for g, u in zip(grads, unconstrained)])
    like = unconstrained[0]
    hessian = torch.zeros(n, n, dtype=torch.float64, device=like.device)
    for i in range(n):
        if not flat.requires_grad:
            break
        row = torch.autograd.grad(flat[i], unconstrained, retain_graph=True, allow_unused=True)
        hessian[i] = torch.cat([(r if r is not None else torch.zeros_like(u)).reshape(-1)
                                for r, u in zip(row, unconstrained)]).double()
    hessian = (hessian + hessian.T) / 2
    eigenvalues, vectors = torch.linalg.eigh(hessian)
    # below this share of the largest eigenvalue an eigenvalue is rounding: a flat direction
    cutoff = 1e3 * n * torch.finfo(like.dtype).eps * float(eigenvalues.abs().max())
    note = None
    if not bool(torch.isfinite(eigenvalues).all()) or float(eigenvalues.min()) <= cutoff:
        var_u = torch.full((n,), math.nan, dtype=torch.float64, device=like.device)
        note = ("the observed information is not positive definite (a flat or downhill "
                "direction: not at a strict maximum, or a parameter not identified): standard "
                "errors are NaN")
    else:
        var_u = (vectors.pow(2) / eigenvalues).sum(-1)  # the diagonal of the inverse
    errors, start = {}, 0
    for name, u, size in zip(names, unconstrained, sizes):
        sd_u = var_u[start:start + size].sqrt().reshape(u.shape)
        start += size
        constraint = store._constraints[name]  # the store keeps no public getter
        while isinstance(constraint, constraints.independent):  # to_event: entries still
            constraint = constraint.base_constraint                # transform one by one
        transform = biject_to(constraint)
        with torch.no_grad():
            value = transform(u)
            jac = transform.log_abs_det_jacobian(u, value)
        if jac.shape != u.shape:  # not elementwise: no per-entry delta method
            errors[name] = torch.full_like(value, math.nan)
            continue
        errors[name] = (jac.double().exp() * sd_u).to(value.dtype)
    return errors, note
