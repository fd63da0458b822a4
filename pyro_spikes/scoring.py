r"""
Differentiable sample-based discrepancies between spike-train distributions.

Used to train simulators without a tractable likelihood (e.g.
:class:`~pyro_spikes.distributions.stochastic_lif.StochasticLIF`) by path-wise gradients through
``rsample``, as in C. Holberg and C. Salvi, *Exact gradients for stochastic spiking neural
networks driven by rough signals*, NeurIPS 2024.

* :func:`signature_kernel_gram`: the signature kernel of piecewise-linear paths (linear or RBF
  static kernel), computed as the solution of a Goursat PDE (C. Salvi, T. Cass, J. Foster,
  T. Lyons, W. Yang, *The signature kernel is the solution of a Goursat PDE*, SIAM J. Math.
  Data Sci., 2021): compiled on the CPU with the adjoint sweep as its backward, in PyTorch
  elsewhere.
* :func:`spike_train_paths`: the embedding of an ``events`` tensor as a path.
* :func:`signature_kernel`, :func:`signature_mmd`, :func:`signature_kernel_score`: kernel, unbiased
  MMD² and kernel scoring rule on spike trains, with paths scaled by
  :func:`default_count_scale` so that the kernel stays :math:`O(1)` for any train length.
* :func:`spike_time_mmd`: a Gaussian-kernel MMD² on vectors of spike times (baseline).
"""

import math
import numbers
import warnings

import torch

from pyro_spikes.distributions import kernels as _kernels
from pyro_spikes.distributions.point_process import check_duration

__all__ = [
    "spike_train_paths",
    "signature_kernel_gram",
    "default_count_scale",
    "ACCURATE_VARIATION_PRODUCT",
    "signature_kernel",
    "signature_mmd",
    "signature_kernel_score",
    "spike_time_vectors",
    "spike_time_mmd",
]


def _check_events(events, name, num_neurons=None):
    if not isinstance(events, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of events, got {type(events).__name__}")
    if events.dim() < 2 or events.shape[-1] < 2:
        raise ValueError(f"{name} must have shape (..., capacity, 1 + D) with D >= 1, got {tuple(events.shape)}")
    if num_neurons is not None and events.shape[-1] != 1 + num_neurons:
        raise ValueError(f"{name} has D={events.shape[-1] - 1} neurons, expected D={num_neurons}")


def spike_train_paths(events, duration, time_scale=1.0, count_scale=1.0):
    r"""
    Embed spike trains as time-augmented counting paths in :math:`\mathbb{R}^{1 + D}`.

    The path of a realisation with events :math:`(t_i, m_i)_{i=1}^{n}` is the piecewise-linear
    path through the vertices

    .. math::

        (0, 0),\ (s t_1, 0),\ (s t_1, a N_1),\ (s t_2, a N_1),\ (s t_2, a N_2),\ \dots,\
        (s t_n, a N_n),\ (s T, a N_n),

    with :math:`N_i = \sum_{j \le i} m_j` the counting process after the :math:`i`-th event,
    :math:`s = ` ``time_scale`` :math:`/T` and :math:`a = ` ``count_scale``: the graph of the
    counting process with every jump filled in by a vertical segment. The vertices are smooth
    (linear) functions of the spike times and marks, so kernels of these paths are
    differentiable in the spike times. Padding rows (time :math:`T`, zero mark) add zero-length
    segments and change nothing.

    :param torch.Tensor events: ``(..., capacity, 1 + D)``.
    :returns: vertices, shape ``(..., 2 * capacity + 2, 1 + D)``.
    """
    _check_events(events, "events")
    duration = check_duration(duration)
    t = events[..., 0:1] * (time_scale / duration)
    counts = torch.cumsum(events[..., 1:], dim=-2) * count_scale
    prev = torch.cat([torch.zeros_like(counts[..., :1, :]), counts[..., :-1, :]], dim=-2)
    a = torch.cat([t, prev], dim=-1)
    b = torch.cat([t, counts], dim=-1)
    inner = torch.stack([a, b], dim=-2).flatten(-3, -2)
    start = torch.zeros_like(inner[..., :1, :])
    end = torch.cat([torch.full_like(t[..., :1, :], float(time_scale)), counts[..., -1:, :]], dim=-1)
    return torch.cat([start, inner, end], dim=-2)


#: paths whose 1-variations multiply to more than this leave the tested, accurate range: the
#: kernel can reach :math:`I_0(2\sqrt{36}) \approx 1.9 \cdot 10^4` there and grows like
#: :math:`e^{2\sqrt{\ell_x \ell_y}}` beyond (see :func:`signature_kernel_gram`)
ACCURATE_VARIATION_PRODUCT = 36.0

_STATIC_KERNELS = ("linear", "rbf")


def _variation(p, static_kernel, sigma):
    """1-variation of piecewise-linear paths ``(n, L, d)`` (in the static kernel's features)."""
    seg = torch.diff(p.detach(), dim=-2).norm(dim=-1)
    if static_kernel == "rbf":  # |phi(u) - phi(v)|^2 = 2 - 2 kappa(u, v) <= min(2, 2 |u - v|^2 / sigma)
        seg = (seg * (2.0 / sigma) ** 0.5).clamp_max(2.0**0.5)
    return seg.sum(-1)


def _check_range(x, y, static_kernel, sigma):
    """Warn when the paths leave the range in which the solver is tested accurate."""
    lx, ly = _variation(x, static_kernel, sigma), _variation(y, static_kernel, sigma)
    worst = (lx.max() * ly.max()).item()
    if worst > ACCURATE_VARIATION_PRODUCT:
        warnings.warn(
            f"signature kernel paths of 1-variation up to {lx.max().item():.3g} and "
            f"{ly.max().item():.3g} (product {worst:.3g} > {ACCURATE_VARIATION_PRODUCT:g}): the "
            "kernel may grow like exp(2 sqrt(product)), overflow in float32 and lose accuracy; "
            "scale the paths down (count_scale / time_scale of signature_kernel, or the default "
            "count_scale=None)",
            RuntimeWarning,
            stacklevel=3,
        )


def _increment_products(x, y, static_kernel, sigma):
    """Coarse increment products ``(n, m, M, N)``: second differences of the static kernel."""
    if static_kernel == "linear":
        return torch.einsum("ipk,jqk->ijpq", torch.diff(x, dim=-2), torch.diff(y, dim=-2))
    # RBF: kappa(u, v) = exp(-|u - v|^2 / sigma) on all vertex pairs
    d2 = (x.pow(2).sum(-1)[:, None, :, None] + y.pow(2).sum(-1)[None, :, None, :]
          - 2 * torch.einsum("ipk,jqk->ijpq", x, y)).clamp_min(0)
    g = torch.exp(-d2 / sigma)
    return g[..., 1:, 1:] - g[..., 1:, :-1] - g[..., :-1, 1:] + g[..., :-1, :-1]


def _goursat_torch(z, r):
    """The explicit scheme on refined cells, coarse increment products ``z`` (n, m, M, N)."""
    z = z / (r * r)  # per refined cell, on the coarse grid
    A = 1 + z / 2 + z * z / 12
    B = 1 - z * z / 12
    M, N = z.shape[-2] * r, z.shape[-1] * r
    # skew the refined cells so that anti-diagonal q = i + j is one slice along dim -2, and
    # unbind: one (n, m, M) slice per anti-diagonal (the backward pass is then a single stack)
    rows = torch.arange(M, device=z.device)
    diag = torch.arange(M + N - 1, device=z.device)
    cols = diag.unsqueeze(-1) - rows  # (M + N - 1, M)
    inside = (cols >= 0) & (cols < N)
    cols = cols.clamp(0, N - 1)
    A = A[..., rows // r, cols // r].unbind(-2)
    B = B[..., rows // r, cols // r].unbind(-2)
    one = torch.ones(z.shape[:-2] + (1,), dtype=z.dtype, device=z.device)
    prev2 = torch.ones(z.shape[:-2] + (M + 1,), dtype=z.dtype, device=z.device)  # grid diagonal p - 2
    prev = prev2  # grid diagonal p - 1; entries index the row i = 0..M, junk off the grid
    for q in range(M + N - 1):  # grid diagonal p = q + 2 holds k[i, p - i], cell (i - 1, p - i - 1)
        new = (prev[..., :-1] + prev[..., 1:]) * A[q] - prev2[..., :-1] * B[q]
        new = torch.where(inside[q], new, one)
        prev2, prev = prev, torch.cat([one, new], dim=-1)
    return prev[..., M]


def _compiled_solver(*tensors):
    """The compiled Goursat solver of ``pyro_spikes._kernels`` if it runs for these tensors."""
    module = _kernels._compiled
    if getattr(module, "SIGKERNEL_VERSION", None) != 1:  # an older build: PyTorch reference
        return None
    return module if all(_kernels.compiled_for(t) for t in tensors) else None


def _f64(t):
    return None if t is None else t.detach().to(torch.float64).contiguous()


def _solve(module, n, m, M, N, d, lam, dx, dy, z):
    """Gram (n, m) by the compiled solver, in float64 whatever the input dtype."""
    dx, dy, z = _f64(dx), _f64(dy), _f64(z)
    out = torch.empty(n, m, dtype=torch.float64)
    ptrs = [t.data_ptr() if t is not None else 0 for t in (dx, dy, z)]
    _kernels._for_sequences(
        n, n * m * M * N << (2 * lam),
        lambda a0, a1: module.sigkernel_forward(a0, a1, m, M, N, d, lam, *ptrs, out.data_ptr()),
    )
    return out


def _solve_backward(module, n, m, M, N, d, lam, dx, dy, z, grad):
    """The adjoint sweep: gradients of dx and dy (linear) or of z, in float64."""
    dx, dy, z, grad = _f64(dx), _f64(dy), _f64(z), _f64(grad)
    ptrs = [t.data_ptr() if t is not None else 0 for t in (dx, dy, z)]
    work = n * m * M * N << (2 * lam)
    if z is not None:
        gz = torch.empty_like(z)
        _kernels._for_sequences(
            n, work,
            lambda a0, a1: module.sigkernel_backward(a0, a1, m, M, N, d, lam, *ptrs,
                                                     grad.data_ptr(), 0, 0, gz.data_ptr()),
        )
        return gz
    gdx = torch.zeros_like(dx)
    parts = []  # one gdy per range of x-paths: the ranges run in parallel

    def call(a0, a1):
        gdy = torch.zeros_like(dy)
        parts.append(gdy)
        module.sigkernel_backward(a0, a1, m, M, N, d, lam, *ptrs, grad.data_ptr(),
                                  gdx.data_ptr(), gdy.data_ptr(), 0)

    _kernels._for_sequences(n, work, call)
    return gdx, torch.stack(parts).sum(0) if len(parts) > 1 else parts[0]


def _first_order_only():
    if torch.is_grad_enabled():  # backward with create_graph=True
        raise RuntimeError(
            "the compiled signature-kernel backward is not differentiable (no second "
            "derivatives); use signature_kernel_gram(..., backend='torch') for higher derivatives"
        )


class _LinearGoursat(torch.autograd.Function):
    """Compiled solver, linear static kernel: path increments ``dx``, ``dy`` to the Gram."""

    @staticmethod
    def forward(ctx, dx, dy, lam, module):
        dx, dy = dx.contiguous(), dy.contiguous()
        ctx.save_for_backward(dx, dy)
        ctx.lam, ctx.module = lam, module
        (n, M, d), (m, N, _) = dx.shape, dy.shape
        return _solve(module, n, m, M, N, d, lam, dx, dy, None).to(dx.dtype)

    @staticmethod
    def backward(ctx, grad):
        _first_order_only()
        dx, dy = ctx.saved_tensors
        (n, M, d), (m, N, _) = dx.shape, dy.shape
        gdx, gdy = _solve_backward(ctx.module, n, m, M, N, d, ctx.lam, dx, dy, None, grad)
        return gdx.to(dx.dtype), gdy.to(dy.dtype), None, None


class _GivenGoursat(torch.autograd.Function):
    """Compiled solver for given coarse increment products ``z`` (any static kernel)."""

    @staticmethod
    def forward(ctx, z, lam, module):
        z = z.contiguous()
        ctx.save_for_backward(z)
        ctx.lam, ctx.module = lam, module
        n, m, M, N = z.shape
        return _solve(module, n, m, M, N, 0, lam, None, None, z).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        _first_order_only()
        (z,) = ctx.saved_tensors
        n, m, M, N = z.shape
        gz = _solve_backward(ctx.module, n, m, M, N, 0, ctx.lam, None, None, z, grad)
        return gz.to(z.dtype), None, None


def signature_kernel_gram(x, y, dyadic_order=0, static_kernel="linear", sigma=1.0, backend="auto"):
    r"""
    Signature kernels :math:`k(x_a, y_b) = \langle S(x_a), S(y_b) \rangle` of all pairs of
    piecewise-linear paths, by solving the Goursat PDE (Salvi et al., 2021)

    .. math::

        \frac{\partial^2 k}{\partial s\, \partial t} =
        \langle \dot x(s), \dot y(t) \rangle\, k(s, t), \qquad k(0, \cdot) = k(\cdot, 0) = 1,

    on the grid of path segments, each segment split into :math:`2^{\lambda}` pieces
    (``dyadic_order`` :math:`\lambda`). On a cell with increment product
    :math:`z = \langle \Delta x, \Delta y \rangle` the second-order explicit scheme reads

    .. math::

        k_{i+1,j+1} = (k_{i+1,j} + k_{i,j+1})\,(1 + z/2 + z^2/12) - k_{i,j}\,(1 - z^2/12).

    With ``static_kernel="rbf"`` the inner product of increments is replaced by the second
    difference of :math:`\kappa(u, v) = \exp(-\lVert u - v \rVert^2 / \sigma)` on the
    vertices, :math:`z = \kappa(x_{p+1}, y_{q+1}) - \kappa(x_{p+1}, y_q) - \kappa(x_p, y_{q+1})
    + \kappa(x_p, y_q)` (the convention of sigkernel and pysiglib): the signature kernel of the
    paths lifted to the RKHS of :math:`\kappa`, bounded in the path scale.

    **Backends.** On CPU float32/float64 tensors, with the compiled extension built
    (:func:`~pyro_spikes.distributions.kernels.has_compiled_loops`, not switched off by
    :func:`~pyro_spikes.distributions.kernels.compiled_loops`), ``backend="auto"`` runs the
    compiled solver (in float64, also for float32 tensors: the scheme's rounding errors add
    up over the cells): pairs swept in vectorised groups, one grid row kept per pair, and a custom
    backward that is the exact discrete adjoint of the scheme (the discrete counterpart of the
    adjoint Goursat PDE of Salvi et al.) swept in reverse from the corner, recomputing the grid
    from :math:`\sqrt{M}` checkpoint rows instead of storing it: nothing but the inputs is kept
    between forward and backward, and the backward works in :math:`O(\sqrt{M}\,N)` memory per
    thread (:math:`M \times N` refined cells). Its backward is not itself differentiable. With
    the linear kernel the gradients go straight to the path increments (no
    :math:`n \times m \times M \times N` tensor); with the RBF kernel the increment products
    ``z`` are one dense tensor. ``backend="torch"`` (and every other device, e.g. the GPU) runs
    the PyTorch reference: a loop over the anti-diagonals with all pairs as one tensor,
    differentiable any number of times by autograd (second derivatives, e.g. for gradient
    penalties, need it), whose backward stores :math:`O(n\,m\,M\,(M + N))` numbers.

    **Range.** The scheme is second-order accurate in :math:`2^{-\lambda}` for bounded
    :math:`|k|`; since :math:`|k(x, y)| \le I_0(2\sqrt{\ell_x \ell_y})` for paths of
    1-variation :math:`\ell_x, \ell_y`, the kernel can reach :math:`e^{2\sqrt{\ell_x\ell_y}}`
    for long paths (1e76 for a 2-neuron counting path of 100 spikes per train at unit jumps),
    overflow in float32 and lose all accuracy. A ``RuntimeWarning`` is given when
    :math:`\max \ell_x \cdot \max \ell_y` exceeds :data:`ACCURATE_VARIATION_PRODUCT`, and a
    ``ValueError`` when the result is not finite; :func:`signature_kernel` scales spike-train
    paths into the accurate range by default.

    :param torch.Tensor x: vertices, shape ``(n, Lx, d)``.
    :param torch.Tensor y: vertices, shape ``(m, Ly, d)``.
    :param int dyadic_order: refinement :math:`\lambda \ge 0`.
    :param str static_kernel: ``"linear"`` (:math:`\langle u, v\rangle`) or ``"rbf"``.
    :param float sigma: RBF scale :math:`\sigma > 0`.
    :param str backend: ``"auto"``, ``"compiled"`` (error if it cannot run) or ``"torch"``.
    :returns: Gram matrix of shape ``(n, m)``.
    """
    for name, p in (("x", x), ("y", y)):
        if not isinstance(p, torch.Tensor) or p.dim() != 3 or p.shape[-2] < 2 or p.shape[0] < 1:
            got = tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
            raise ValueError(f"{name} must be a tensor of path vertices (num_paths >= 1, length >= 2, dim >= 1), got {got}")
        if not p.dtype.is_floating_point:
            raise TypeError(f"{name} must have a floating dtype, got {p.dtype}")
    if x.shape[-1] != y.shape[-1] or x.shape[-1] < 1:
        raise ValueError(f"x and y must have the same path dimension >= 1, got {x.shape[-1]} and {y.shape[-1]}")
    if x.dtype != y.dtype or x.device != y.device:
        raise ValueError(f"x and y must have the same dtype and device, got {x.dtype} on {x.device} and {y.dtype} on {y.device}")
    if isinstance(dyadic_order, bool) or not isinstance(dyadic_order, numbers.Integral) or not 0 <= dyadic_order <= 12:
        raise ValueError(f"dyadic_order must be an integer in [0, 12], got {dyadic_order!r}")
    if static_kernel not in _STATIC_KERNELS:
        raise ValueError(f"static_kernel must be one of {_STATIC_KERNELS}, got {static_kernel!r}")
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not 0 < sigma < math.inf:
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    if backend not in ("auto", "compiled", "torch"):
        raise ValueError(f"backend must be 'auto', 'compiled' or 'torch', got {backend!r}")
    for name, p in (("x", x), ("y", y)):
        if not bool(torch.isfinite(p).all()):
            raise ValueError(f"{name} has non-finite vertices")
    _check_range(x, y, static_kernel, float(sigma))
    lam = int(dyadic_order)
    module = _compiled_solver(x, y) if backend != "torch" else None
    if backend == "compiled" and module is None:
        raise ValueError("backend='compiled' needs CPU float32/float64 tensors and the built extension "
                         "pyro_spikes._kernels (compiled loops enabled)")
    if module is not None and static_kernel == "linear":
        K = _LinearGoursat.apply(torch.diff(x, dim=-2), torch.diff(y, dim=-2), lam, module)
    elif module is not None:
        K = _GivenGoursat.apply(_increment_products(x, y, static_kernel, sigma), lam, module)
    else:
        K = _goursat_torch(_increment_products(x, y, static_kernel, sigma), 2**lam)
    if not bool(torch.isfinite(K).all()):
        raise ValueError(
            "the signature kernel overflowed (non-finite values): the paths are too long for "
            f"{K.dtype}; scale them down (count_scale / time_scale of signature_kernel)"
        )
    return K


def _paths(events, duration, time_scale, count_scale, name):
    if events.dim() != 3:
        raise ValueError(f"{name} must have shape (num_samples, capacity, 1 + D), got {tuple(events.shape)}")
    return spike_train_paths(events, duration, time_scale, count_scale)


def default_count_scale(*event_sets):
    r"""
    The default ``count_scale`` of :func:`signature_kernel`: one over the largest number of
    spikes (all neurons together) of any train in ``event_sets``, at most 1,

    .. math::

        a = 1 / \max\bigl(1, \max_{\text{trains}} \textstyle\sum_i m_i\bigr).

    The counting part of every path then has 1-variation at most 1 and the time part
    ``time_scale``, so for ``time_scale = 1`` all kernel values are at most
    :math:`I_0(4) \approx 11.3` whatever the train length and rate (see
    :func:`signature_kernel_gram`), finite and accurate in float32 too. The scale is computed
    without gradient (a choice of kernel, not a function of the parameters) from all sets
    compared, so every term of an MMD or score uses the same kernel. It changes with the
    samples; pass a fixed ``count_scale`` (e.g. ``default_count_scale(data)`` or a bit less) for
    one kernel throughout a training run.

    :param torch.Tensor event_sets: events ``(..., capacity, 1 + D)``.
    :rtype: float
    """
    if not event_sets:
        raise ValueError("default_count_scale needs at least one events tensor")
    most = 1.0
    for i, events in enumerate(event_sets):
        _check_events(events, f"event_sets[{i}]")
        if events.numel():
            most = max(most, events[..., 1:].detach().sum((-2, -1)).max().item())
    return 1.0 / most


def _check_scales(time_scale, count_scale):
    for name, v in (("time_scale", time_scale), ("count_scale", count_scale)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 < v < math.inf:
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")


def signature_kernel(X, Y, duration, time_scale=1.0, count_scale=None, dyadic_order=1,
                     static_kernel="linear", sigma=1.0, backend="auto"):
    r"""
    Signature-kernel Gram matrix between two sets of spike trains, ``(n, m)``: the kernel
    :func:`signature_kernel_gram` of their paths :func:`spike_train_paths` (time-augmented
    counting processes with vertical jumps; linear or RBF static kernel).

    **Scaling.** A path's time axis has length ``time_scale`` and each spike a jump of
    ``count_scale``. With unit jumps the kernel of trains of :math:`c` spikes grows like
    :math:`e^{2c}` (1e76 at 100 spikes) and the solver loses all accuracy; the default
    ``count_scale=None`` takes :func:`default_count_scale` of ``X`` and ``Y``, which keeps every
    value at most :math:`I_0(4) \approx 11.3` for any train length and rate. With it, on
    2-neuron trains of 80-230 spikes, the default ``dyadic_order=1`` solution is within
    :math:`10^{-5}` (relative) of a Richardson-extrapolated high-order solution and of the
    inner product of level-10 truncated signatures (``dyadic_order=4``: :math:`2 \cdot
    10^{-7}`). In
    float32 the compiled CPU solver (float64 inside) agrees with float64 to :math:`10^{-5}`;
    the PyTorch reference (float32 throughout, e.g. on a GPU) to :math:`2 \cdot 10^{-3}`
    (tests in ``tests/test_sigkernel.py``).

    :param torch.Tensor X: events ``(n, capacity_x, 1 + D)``.
    :param torch.Tensor Y: events ``(m, capacity_y, 1 + D)``.
    :param float duration: the window :math:`T`.
    :param float time_scale: length of the time axis of the path (time is mapped to
        ``[0, time_scale]``).
    :param float count_scale: size of one spike's jump in the path; ``None`` (default):
        :func:`default_count_scale` of ``X`` and ``Y``.
    :param int dyadic_order: PDE grid refinement (see :func:`signature_kernel_gram`).
    :param str static_kernel: ``"linear"`` or ``"rbf"`` (see :func:`signature_kernel_gram`).
    :param float sigma: RBF scale.
    :param str backend: ``"auto"``, ``"compiled"`` or ``"torch"`` (see
        :func:`signature_kernel_gram`).
    """
    _check_events(X, "X")
    _check_events(Y, "Y", X.shape[-1] - 1)
    duration = check_duration(duration)
    if count_scale is None:
        count_scale = default_count_scale(X, Y)
    _check_scales(time_scale, count_scale)
    x = _paths(X, duration, time_scale, count_scale, "X")
    y = _paths(Y, duration, time_scale, count_scale, "Y")
    return signature_kernel_gram(x, y, dyadic_order, static_kernel, sigma, backend)


def _kernel_args(kernel_args, *event_sets):
    """``kernel_args`` with one ``count_scale`` for all terms (the default from all sets)."""
    allowed = {"time_scale", "count_scale", "dyadic_order", "static_kernel", "sigma", "backend"}
    unknown = set(kernel_args) - allowed
    if unknown:
        raise TypeError(f"unknown kernel arguments {sorted(unknown)}; allowed: {sorted(allowed)}")
    kernel_args = dict(kernel_args)
    if kernel_args.get("count_scale") is None:
        kernel_args["count_scale"] = default_count_scale(*event_sets)
    return kernel_args


def _offdiag_mean(K):
    n = K.shape[0]
    return (K.sum() - K.diagonal().sum()) / (n * (n - 1))


def _need_two(X, name):
    if X.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples for the unbiased estimator, got {X.shape[0]}")


def signature_mmd(X, Y, duration, **kernel_args):
    r"""
    Unbiased estimator of the squared maximum mean discrepancy with the signature kernel
    :func:`signature_kernel`,

    .. math::

        \widehat{\mathrm{MMD}}^2 = \frac{1}{n(n-1)}\sum_{i \ne j} k(X_i, X_j)
        + \frac{1}{m(m-1)}\sum_{i \ne j} k(Y_i, Y_j) - \frac{2}{nm}\sum_{i,j} k(X_i, Y_j).

    Zero in expectation iff the two laws agree on expected signatures (characteristic up to
    the usual tree-like equivalence); it can be slightly negative. Differentiable in the spike
    times of both sets.

    :param X: events ``(n, capacity, 1 + D)``, ``n >= 2``.
    :param Y: events ``(m, capacity, 1 + D)``, ``m >= 2``.
    :param kernel_args: ``time_scale``, ``count_scale``, ``dyadic_order``, ``static_kernel``,
        ``sigma``, ``backend`` of :func:`signature_kernel`; the default ``count_scale`` is
        :func:`default_count_scale` of ``X`` and ``Y`` together.
    """
    _check_events(X, "X")
    _check_events(Y, "Y", X.shape[-1] - 1)
    _need_two(X, "X")
    _need_two(Y, "Y")
    kernel_args = _kernel_args(kernel_args, X, Y)
    kxx = signature_kernel(X, X, duration, **kernel_args)
    kyy = signature_kernel(Y, Y, duration, **kernel_args)
    kxy = signature_kernel(X, Y, duration, **kernel_args)
    return _offdiag_mean(kxx) + _offdiag_mean(kyy) - 2 * kxy.mean()


def signature_kernel_score(samples, observed, duration, **kernel_args):
    r"""
    Signature-kernel scoring rule of a model, represented by its samples :math:`X_{1..n}`,
    averaged over the observations :math:`y_{1..m}` (Holberg & Salvi, 2024):

    .. math::

        \widehat S(P, y) = \frac{1}{n(n-1)}\sum_{i \ne j} k(X_i, X_j)
        - \frac{2}{nm}\sum_{i, j} k(X_i, y_j).

    The kernel score :math:`S(P, y) = \mathbb{E}\,k(X, X') - 2\,\mathbb{E}\,k(X, y)` is strictly
    proper for a characteristic kernel; the estimate is unbiased and equals
    :func:`signature_mmd` minus a term that depends only on the data, so minimising either in
    the model parameters (by path-wise gradients through ``rsample``) is the same.

    :param samples: model samples, events ``(n, capacity, 1 + D)``, ``n >= 2``.
    :param observed: data, events ``(m, capacity, 1 + D)``.
    :param kernel_args: as for :func:`signature_mmd`; the default ``count_scale`` is
        :func:`default_count_scale` of ``samples`` and ``observed`` together (pass a fixed one,
        e.g. from the data, for the same kernel at every training step).
    """
    _check_events(samples, "samples")
    _check_events(observed, "observed", samples.shape[-1] - 1)
    _need_two(samples, "samples")
    kernel_args = _kernel_args(kernel_args, samples, observed)
    kxx = signature_kernel(samples, samples, duration, **kernel_args)
    kxy = signature_kernel(samples, observed, duration, **kernel_args)
    return _offdiag_mean(kxx) - 2 * kxy.mean()


def spike_time_vectors(events, duration, num_spikes=None):
    r"""
    Per-neuron sorted spike times, padded with :math:`T`: shape ``(..., D * num_spikes)``
    (neuron-major), a differentiable function of the event times (exact one-hot marks).

    :param int num_spikes: spikes kept per neuron (default: the capacity).
    """
    _check_events(events, "events")
    duration = check_duration(duration)
    cap = events.shape[-2]
    k = cap if num_spikes is None else int(num_spikes)
    if k < 1 or k > cap:
        raise ValueError(f"num_spikes must be in [1, capacity={cap}], got {num_spikes}")
    t = events[..., 0].unsqueeze(-2)  # (..., 1, cap)
    own = events[..., 1:].transpose(-1, -2) > 0.5  # (..., D, cap)
    keyed = torch.where(own, t, torch.full_like(t, duration))
    return torch.sort(keyed, dim=-1).values[..., :k].flatten(-2)


def spike_time_mmd(X, Y, bandwidth, duration, num_spikes=None):
    r"""
    Unbiased MMD² with the Gaussian kernel
    :math:`k(x, y) = \exp(-\lVert x - y \rVert^2 / (2 h^2))` on the per-neuron spike-time
    vectors of :func:`spike_time_vectors` (missing spikes count as time :math:`T`): a simple
    baseline to :func:`signature_mmd`.

    :param X: events ``(n, capacity, 1 + D)``, ``n >= 2``.
    :param Y: events ``(m, capacity, 1 + D)``, ``m >= 2``.
    :param float bandwidth: :math:`h > 0`.
    :param float duration: the window :math:`T`.
    """
    _check_events(X, "X")
    _check_events(Y, "Y", X.shape[-1] - 1)
    if X.dim() != 3 or Y.dim() != 3:
        raise ValueError("X and Y must have shape (num_samples, capacity, 1 + D)")
    _need_two(X, "X")
    _need_two(Y, "Y")
    if isinstance(bandwidth, torch.Tensor):
        if bool((bandwidth <= 0).any()):
            raise ValueError("bandwidth must be > 0")
    elif not isinstance(bandwidth, numbers.Real) or not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    k = num_spikes if num_spikes is not None else min(X.shape[-2], Y.shape[-2])
    x = spike_time_vectors(X, duration, k)
    y = spike_time_vectors(Y, duration, k)

    def gram(a, b):
        d2 = (a.unsqueeze(-2) - b.unsqueeze(-3)).pow(2).sum(-1)
        return torch.exp(-d2 / (2 * bandwidth**2))

    return _offdiag_mean(gram(x, x)) + _offdiag_mean(gram(y, y)) - 2 * gram(x, y).mean()
