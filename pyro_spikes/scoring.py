r"""
Differentiable sample-based discrepancies between spike-train distributions.

Used to train simulators without a tractable likelihood (e.g.
:class:`~pyro_spikes.distributions.stochastic_lif.StochasticLIF`) by path-wise gradients through
``rsample``, as in C. Holberg and C. Salvi, *Exact gradients for stochastic spiking neural
networks driven by rough signals*, NeurIPS 2024.

* :func:`signature_kernel_gram`: the signature kernel of piecewise-linear paths, computed as the
  solution of a Goursat PDE (C. Salvi, T. Cass, J. Foster, T. Lyons, W. Yang, *The signature
  kernel is the solution of a Goursat PDE*, SIAM J. Math. Data Sci., 2021).
* :func:`spike_train_paths`: the embedding of an ``events`` tensor as a path.
* :func:`signature_kernel`, :func:`signature_mmd`, :func:`signature_kernel_score`: kernel, unbiased
  MMD² and kernel scoring rule on spike trains.
* :func:`spike_time_mmd`: a Gaussian-kernel MMD² on vectors of spike times (baseline).
"""

import numbers

import torch

from pyro_spikes.distributions.point_process import check_duration

__all__ = [
    "spike_train_paths",
    "signature_kernel_gram",
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


def signature_kernel_gram(x, y, dyadic_order=0):
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

    All pairs are handled as one tensor; the only Python loop runs over the anti-diagonals of
    the grid (cells on one anti-diagonal are independent). Differentiable in ``x`` and ``y``
    by plain autograd through the sweep, so the backward pass stores
    :math:`O(n\,m\,M\,(M + N))` numbers for :math:`M \times N` refined cells (no adjoint PDE).

    :param torch.Tensor x: vertices, shape ``(n, Lx, d)``.
    :param torch.Tensor y: vertices, shape ``(m, Ly, d)``.
    :param int dyadic_order: refinement :math:`\lambda \ge 0`.
    :returns: Gram matrix of shape ``(n, m)``.
    """
    for name, p in (("x", x), ("y", y)):
        if not isinstance(p, torch.Tensor) or p.dim() != 3 or p.shape[-2] < 2:
            got = tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
            raise ValueError(f"{name} must be a tensor of path vertices (num_paths, length >= 2, dim), got {got}")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x and y must have the same path dimension, got {x.shape[-1]} and {y.shape[-1]}")
    if isinstance(dyadic_order, bool) or not isinstance(dyadic_order, numbers.Integral) or dyadic_order < 0:
        raise ValueError(f"dyadic_order must be an integer >= 0, got {dyadic_order!r}")
    r = 2**dyadic_order
    dx = torch.diff(x, dim=-2)
    dy = torch.diff(y, dim=-2)
    z = torch.einsum("ipk,jqk->ijpq", dx, dy) / (r * r)  # per refined cell, on the coarse grid
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


def _paths(events, duration, time_scale, count_scale, name):
    if events.dim() != 3:
        raise ValueError(f"{name} must have shape (num_samples, capacity, 1 + D), got {tuple(events.shape)}")
    return spike_train_paths(events, duration, time_scale, count_scale)


def signature_kernel(X, Y, duration, time_scale=1.0, count_scale=1.0, dyadic_order=1):
    r"""
    Signature-kernel Gram matrix between two sets of spike trains, ``(n, m)``: the kernel
    :func:`signature_kernel_gram` of their paths :func:`spike_train_paths` (time-augmented
    counting processes with vertical jumps, linear static kernel).

    :param torch.Tensor X: events ``(n, capacity_x, 1 + D)``.
    :param torch.Tensor Y: events ``(m, capacity_y, 1 + D)``.
    :param float duration: the window :math:`T`.
    :param float time_scale: length of the time axis of the path (time is mapped to
        ``[0, time_scale]``).
    :param float count_scale: size of one spike's jump in the path.
    :param int dyadic_order: PDE grid refinement (see :func:`signature_kernel_gram`).
    """
    _check_events(X, "X")
    _check_events(Y, "Y", X.shape[-1] - 1)
    duration = check_duration(duration)
    x = _paths(X, duration, time_scale, count_scale, "X")
    y = _paths(Y, duration, time_scale, count_scale, "Y")
    return signature_kernel_gram(x, y, dyadic_order)


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
    :param kernel_args: ``time_scale``, ``count_scale``, ``dyadic_order``.
    """
    _check_events(X, "X")
    _check_events(Y, "Y", X.shape[-1] - 1)
    _need_two(X, "X")
    _need_two(Y, "Y")
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
    """
    _check_events(samples, "samples")
    _check_events(observed, "observed", samples.shape[-1] - 1)
    _need_two(samples, "samples")
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
