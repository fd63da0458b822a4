"""
The sequential loops of thinning, compiled on the CPU and in PyTorch elsewhere.

Thinning visits its candidates one after another: the mark of candidate :math:`r` depends on
all earlier marks through the exponential-basis traces
:math:`V_{l,j} \\leftarrow e^{-\\Delta s_r/\\tau_l} V_{l,j} + \\sum_i y_{r,i} W_{i,l,j}`. In
PyTorch every candidate costs a dozen tiny tensor operations whose fixed overhead (microseconds
each) dominates the O(L D^2) arithmetic, so the loops of :class:`SpikingPointProcess` sampling
and of the relaxed sampler's forward and adjoint sweeps run in a small C extension
(``pyro_spikes._kernels``, built by ``pip install``) on contiguous float32/float64 CPU tensors.
On other devices, or where the extension was not built, the same loops run as PyTorch
operations batched over sequences; the tests check that both paths agree. The exponential
trace recursion of the log-likelihoods (:func:`~pyro_spikes.distributions.exp_decay_scan`) runs
here too on the CPU, with its reverse recursion as the gradient, and so does the whole
:class:`~pyro_spikes.distributions.SpikingPointProcess` log-likelihood with its reverse sweep
(:func:`spiking_terms`), and the one-pass likelihood of a Hawkes process with one decay
(:func:`hawkes_terms`; one long sequence is split in time over the threads). The checks of an
index-layout value, its neuron indices and its trailing padding take one compiled pass over
its rows (:func:`index_rows`) instead of a dozen PyTorch reductions.

:func:`compiled_loops` switches the compiled path off (or on) for a block of code, e.g. to
compare the two; the environment variable ``PYRO_SPIKES_COMPILED=0`` switches it off for the
process.

The extension is built from ``pyro_spikes/_kernels.c`` at install time; after editing that file,
rebuild it (``pip install -e .`` or ``python setup.py build_ext --inplace``). A build that does
not match the source's ``VERSION`` is ignored with a warning.
"""

import concurrent.futures
import contextlib
import contextvars
import functools
import math
import os
import warnings

import torch
import torch.nn.functional as F
from pyro.distributions.util import broadcast_shape

from pyro_spikes.spikes import _index_labels, raise_index_problems

#: the ``KERNELS_VERSION`` of the ``_kernels.c`` these wrappers are written for
VERSION = 14


def _checked(module):
    """``module`` if it was built from this version of ``_kernels.c``, else ``None`` (warned)."""
    if module is not None and getattr(module, "VERSION", None) != VERSION:
        warnings.warn(
            "pyro_spikes._kernels was built from another version of _kernels.c "
            f"({getattr(module, 'VERSION', None)}, expected {VERSION}); using the PyTorch "
            "loops. Rebuild it with `pip install -e .` (or `python setup.py build_ext "
            "--inplace`).",
            RuntimeWarning,
        )
        return None
    return module


try:
    from pyro_spikes import _kernels as _compiled
except ImportError:  # built without a C compiler: PyTorch loops everywhere
    _compiled = None
_compiled = _checked(_compiled)

__all__ = [
    "compiled_for",
    "compiled_loops",
    "exp_decay_scan_compiled",
    "has_compiled_loops",
    "hawkes_chunk",
    "hawkes_terms",
    "index_rows",
    "relaxed_adjoint",
    "sequential_threads",
    "spiking_terms",
    "thinning_loop",
]

# per thread / async context, so compiled_loops(False) in one thread leaves the others alone
_enabled = contextvars.ContextVar(
    "pyro_spikes_compiled_loops", default=os.environ.get("PYRO_SPIKES_COMPILED", "1") != "0"
)

# ATen's default grain size: elementwise ops on fewer elements gain nothing from intra-op threads
_SMALL_STEP = 32768


@contextlib.contextmanager
def sequential_threads(step_numel):
    """
    Run a sequential sampling loop single-threaded when its per-step tensors are small.

    A thinning loop issues thousands of operations on ``step_numel`` elements each. Below ATen's
    grain size threads cannot speed them up, but some CPU kernels still open a parallel region,
    which costs milliseconds per operation when the cores are shared with other processes. The
    previous thread count is restored on exit. (This sets torch's process-wide intra-op thread
    count, so it is skipped when the loop is large enough to use threads.)
    """
    threads = torch.get_num_threads()
    if threads == 1 or step_numel > _SMALL_STEP:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


#: decision rules of :func:`thinning_loop`
EXACT, RELAXED = 0, 1


def has_compiled_loops():
    """Whether the compiled CPU loops were built (``pyro_spikes._kernels``)."""
    return _compiled is not None


@contextlib.contextmanager
def compiled_loops(enabled=True):
    """
    Use (or, with ``enabled=False``, avoid) the compiled CPU loops inside the block (in the
    current thread or async context).
    """
    token = _enabled.set(bool(enabled))
    try:
        yield
    finally:
        _enabled.reset(token)


def loops_enabled():
    """Whether :func:`compiled_loops` allows the compiled loops here (the default: yes)."""
    return _enabled.get()


def compiled_for(like):
    """Whether the loops for tensors like ``like`` (device, dtype) run compiled."""
    return (
        _compiled is not None
        and _enabled.get()
        and like.device.type == "cpu"
        and like.dtype in (torch.float32, torch.float64)
    )


# Every entry point below checks all of its buffers (type, dtype, device, shape) and sizes
# before any memory is touched: the compiled functions take raw pointers and trust them (they
# refuse only negative or zero sizes and bad enums themselves).

def _check_tensor(name, x, ndim=None):
    """``x`` must be a floating-point tensor (of ``ndim`` dimensions, an int or a tuple)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if ndim is not None and x.dim() not in ((ndim,) if isinstance(ndim, int) else ndim):
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")


def _check_float(name, x, like):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != like.dtype or x.device != like.device:
        raise ValueError(f"{name} must have dtype {like.dtype} on {like.device}, got "
                         f"{x.dtype} on {x.device}")


def _check_labels(name, labels, num_neurons):
    """int64 neuron indices ``labels`` in ``[-1, num_neurons)`` (-1: no mark), else a
    ValueError naming ``name``: the compiled loops index the weights with them."""
    if labels.numel():
        low, high = labels.aminmax()
        if int(low) < -1 or int(high) >= num_neurons:
            raise ValueError(f"{name} must lie in [-1, {num_neurons}), got [{int(low)}, "
                             f"{int(high)}]")


def index_rows(events, duration, num_neurons, labels=True):
    """
    One compiled pass over index-layout ``events`` ``(..., K, 2)`` (a CPU float tensor, see
    :func:`compiled_for`) that does the work of :func:`~pyro_spikes.validate_index_events`,
    of reading the neuron indices and of :func:`~pyro_spikes.trim_padding` at once (the
    PyTorch checks take a dozen passes over the data).

    :returns: ``(flags, labels, keep)``: the problems found as the bit flags of
        ``pyro_spikes.spikes`` (``raise_index_problems`` there raises them), the int64 indices
        ``(..., K)`` (-1: padding, or an invalid index, flagged), and the number of leading
        rows that hold every realisation's last spike (at least 1); ``labels=False``: ``None``
        in place of the indices (a faster pass that writes nothing).
    """
    if not compiled_for(events) or events.dim() < 2 or events.shape[-1] != 2:
        raise ValueError("index_rows needs compiled loops and events of shape (..., K, 2), "
                         f"got {events.dtype} {tuple(events.shape)} on {events.device}")
    events = events.contiguous()
    k = events.shape[-2]
    n = events.shape[:-2].numel()
    out = torch.empty(events.shape[:-1], dtype=torch.long) if labels else None
    flags, keep = _compiled.index_scan(events.dtype == torch.float64, n, k, int(num_neurons),
                                       events.data_ptr(), float(duration),
                                       out.data_ptr() if labels else 0)
    return flags, out, keep


def checked_index_labels(events, duration, num_neurons, name="value"):
    """
    The int64 neuron indices of index-layout ``events``, their range checked (compiled where
    :func:`compiled_for` says so, else in PyTorch operations).
    """
    if compiled_for(events):
        flags, labels, _ = index_rows(events, duration, num_neurons)
        raise_index_problems(flags, name, duration, num_neurons, labels_only=True)
        return labels
    return _index_labels(events, num_neurons, name)


def _vjp_through(outputs, inputs, wanted, grad_outputs):
    """
    The vector-Jacobian product of ``outputs`` (PyTorch formulas recomputed in a compiled
    function's backward, so that it can be differentiated again) in the ``inputs`` that
    ``wanted`` marks, with a graph: ``None`` where not wanted, zeros where an input does not
    reach the outputs; a missing output gradient counts as zero.
    """
    grads = [g if g is not None else torch.zeros_like(o) for g, o in zip(grad_outputs, outputs)]
    chosen = [x for x, w in zip(inputs, wanted) if w]
    got = iter(torch.autograd.grad(outputs, chosen, grads, create_graph=True, allow_unused=True))
    result = []
    for x, w in zip(inputs, wanted):
        g = next(got) if w else None
        result.append(torch.zeros_like(x) if w and g is None else g)
    return result


def _check_positive(**sizes):
    for name, value in sizes.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def _check_scan(times, inputs, rates):
    """
    Shapes of :func:`~pyro_spikes.distributions.exp_decay_scan`: ``times`` ``batch + (R,)``,
    ``inputs`` ``batch + (G, R, F)``, ``rates`` broadcastable to ``batch + (G,)``, one dtype
    and device; returns the broadcast batch shape.
    """
    _check_tensor("times", times)
    _check_tensor("inputs", inputs)
    _check_tensor("rates", rates)
    if times.dim() < 1 or inputs.dim() < 3 or rates.dim() < 1:
        raise ValueError(
            "exp_decay_scan needs times (..., R), inputs (..., G, R, F) and rates (..., G), got "
            f"{tuple(times.shape)}, {tuple(inputs.shape)} and {tuple(rates.shape)}"
        )
    if times.shape[-1] != inputs.shape[-2]:
        raise ValueError(f"times has {times.shape[-1]} rows but inputs has {inputs.shape[-2]} "
                         f"(inputs must be (..., G, R, F), got {tuple(inputs.shape)})")
    if rates.shape[-1] not in (1, inputs.shape[-3]):
        raise ValueError(f"rates must have shape (..., G) with G={inputs.shape[-3]}, got "
                         f"{tuple(rates.shape)}")
    for name, x in (("inputs", inputs), ("rates", rates)):
        if x.dtype != times.dtype or x.device != times.device:
            raise TypeError(f"{name} has dtype {x.dtype} on {x.device} but times has "
                            f"{times.dtype} on {times.device}")
    try:
        return torch.Size(broadcast_shape(times.shape[:-1], inputs.shape[:-3], rates.shape[:-1]))
    except ValueError:
        raise ValueError(
            f"times {tuple(times.shape)}, inputs {tuple(inputs.shape)} and rates "
            f"{tuple(rates.shape)} have batch shapes that do not broadcast"
        ) from None


def _check_shape(name, x, *shapes):
    if tuple(x.shape) not in [tuple(shape) for shape in shapes]:
        raise ValueError(f"{name} must have shape " + " or ".join(str(tuple(shape))
                                                              for shape in shapes)
                         + f", got {tuple(x.shape)}")


def _sequence_stride(x, per_sequence_dims):
    """0 for a tensor shared by all sequences, else the number of its entries per sequence."""
    return 0 if x.dim() == per_sequence_dims else x.shape[1:].numel()


# Sequences are independent in every compiled loop and the loops release the GIL, so large
# batches are split over torch's intra-op thread count with a thread pool: below this many
# entries of work per call one thread is faster than the hand-off.
_PARALLEL_WORK = 1 << 16
_pool = []  # [max_workers, executor], made on first use


def _for_sequences(n, work, call):
    """Run ``call(a, b)`` over sequence ranges covering ``[0, n)``, in parallel if worth it."""
    threads = min(torch.get_num_threads(), n)
    if threads <= 1 or work < _PARALLEL_WORK:
        call(0, n)
        return
    bounds = [n * i // threads for i in range(threads + 1)]
    _parallel([functools.partial(call, a, b) for a, b in zip(bounds, bounds[1:]) if b > a])


def _parallel(calls):
    """Run the thunks ``calls`` on the thread pool (the compiled loops release the GIL)."""
    if len(calls) == 1:
        calls[0]()
        return
    if not _pool or _pool[0] < len(calls):
        _pool[:] = [len(calls), concurrent.futures.ThreadPoolExecutor(max_workers=len(calls))]
    for future in [_pool[1].submit(call) for call in calls]:
        future.result()


def _at(x, a):
    """Pointer to sequence ``a`` of a contiguous ``(N, ...)`` tensor."""
    return x[a:].data_ptr() if x.numel() else x.data_ptr()


def thinning_loop(base, decay, weight, mask, mode, draws, inv_temp=1.0, labels=False):
    """
    Run thinning over fixed candidates, without autograd.

    :param base: bias (plus any context share) of the potentials, ``(N, D)`` or per candidate
        ``(N, R, D)``.
    :param decay: trace decay factors since the previous candidate, ``(N, R, L)``.
    :param weight: jumps ``W[i, l, j]`` of trace ``(l, j)`` for a mark on neuron ``i``:
        ``(D, L, D)``, or per sequence ``(N, D, L, D)``.
    :param mask: ``(N, R)``, 1 at real candidates and 0 at padding ones (their mark is zero).
    :param mode: ``EXACT`` (``draws`` are ``(N, R)`` uniforms on ``[0, D)``: the draw picks
        neuron :math:`j = \\lfloor U \\rfloor` uniformly and its fractional part accepts with
        probability :math:`\\sigma(u_j)`, so neuron :math:`j` spikes with probability
        :math:`\\lambda_j / (a D)`; the compiled loop then updates the traces only at spikes) or
        ``RELAXED`` (``draws`` are ``(N, R, D + 1)`` Gumbel noises divided by the temperature;
        the mark is the first ``D`` entries of
        :math:`\\mathrm{softmax}(\\log\\pi(u)/\\tau + g/\\tau)`).
    :param float inv_temp: :math:`1/\\tau` (relaxed mode).
    :param bool labels: exact mode only: return the neuron of every candidate, ``(N, R)``
        int64 with -1 for a rejected one, in place of the marks (O(candidates) memory, not
        O(candidates x D)).
    :returns: ``(potentials, marks, probs)``: marks ``(N, R, D)`` (or the labels) and, in
        relaxed mode, the left potentials ``(N, R, D)`` and the softmax probabilities
        ``(N, R, D + 1)`` (both ``None`` in exact mode).
    """
    with torch.no_grad():
        _check_tensor("decay", decay, 3)
        _check_tensor("weight", weight, (3, 4))
        if mode not in (EXACT, RELAXED):
            raise ValueError(f"mode must be kernels.EXACT or kernels.RELAXED, got {mode!r}")
        n, num_rows, num_basis = decay.shape
        d = weight.shape[-1]
        _check_positive(**{"weight.shape[-1] (neurons)": d})
        if mode == RELAXED and not (math.isfinite(float(inv_temp)) and float(inv_temp) > 0):
            raise ValueError(f"inv_temp must be positive and finite, got {inv_temp}")
        for name, x in (("base", base), ("weight", weight), ("mask", mask), ("draws", draws)):
            _check_float(name, x, decay)
        _check_shape("base", base, (n, d), (n, num_rows, d))
        _check_shape("weight", weight, (d, num_basis, d), (n, d, num_basis, d))
        _check_shape("mask", mask, (n, num_rows))
        _check_shape("draws", draws, (n, num_rows, d + 1) if mode == RELAXED else (n, num_rows))
        base, decay, weight = base.contiguous(), decay.contiguous(), weight.contiguous()
        mask, draws = mask.contiguous(), draws.contiguous()
        relaxed = mode == RELAXED
        if labels and relaxed:
            raise ValueError("labels=True needs mode=kernels.EXACT (a relaxed mark has no index)")
        if labels:
            out = torch.full((n, num_rows), -1, dtype=torch.long, device=decay.device)
            marks = decay.new_empty(0)
        else:
            out = marks = decay.new_zeros(n, num_rows, d)
        potentials = decay.new_empty(n, num_rows, d) if relaxed else marks.new_empty(0)
        probs = decay.new_empty(n, num_rows, d + 1) if relaxed else marks.new_empty(0)
        if compiled_for(decay) and n * num_rows:
            per_row = base.dim() == 3
            batched = weight.dim() == 4

            def call(a, b):
                _compiled.thinning_forward(
                    decay.dtype == torch.float64, b - a, num_rows, num_basis, d,
                    _at(base, a), num_rows * d if per_row else d, d if per_row else 0,
                    _at(decay, a), _at(weight, a) if batched else weight.data_ptr(),
                    _sequence_stride(weight, 3), _at(mask, a), mode, _at(draws, a),
                    float(inv_temp), _at(potentials, a), 0 if labels else _at(marks, a),
                    _at(probs, a), _at(out, a) if labels else 0,
                )

            work = n * num_rows * (d + 1) * (num_basis * d if relaxed else num_basis)
            _for_sequences(n, work, call)
        elif labels:
            dense = decay.new_zeros(n, num_rows, d)
            _torch_forward(base, decay, weight, mask, mode, draws, inv_temp, potentials, dense,
                           probs)
            spike = dense.sum(-1) > 0
            out = torch.where(spike, dense.argmax(-1), out)
        else:
            _torch_forward(base, decay, weight, mask, mode, draws, inv_temp, potentials, marks,
                           probs)
        return (potentials, marks, probs) if relaxed else (None, out, None)


def _torch_forward(base, decay, weight, mask, mode, draws, inv_temp, potentials, marks, probs):
    n, num_rows, num_basis = decay.shape
    d = weight.shape[-1]
    state = decay.new_zeros(n, num_basis, d)
    flat = state.view(n, num_basis * d)
    jumps = weight.reshape(weight.shape[:-3] + (d, num_basis * d))
    batched = jumps.dim() == 3
    per_row = base.dim() == 3
    decay = decay.unsqueeze(-1)
    mask = mask.unsqueeze(-1)
    if mode == EXACT:
        # the draw U picks neuron floor(U) uniformly; its fractional part accepts with
        # probability sigma(u_j)
        label = draws.floor().clamp(0, d - 1).long()
        accept_level = (draws - label).unsqueeze(-1)
        label = label.unsqueeze(-1)
        one_hot = F.one_hot(label.squeeze(-1), d).to(decay)
        potentials = decay.new_empty(n, d)
    with sequential_threads(state.numel()):
        for r in range(num_rows):
            state.mul_(decay[:, r])
            u = torch.add(base[:, r] if per_row else base, state.sum(1),
                          out=potentials[:, r] if mode == RELAXED else potentials)
            if mode == RELAXED:
                # log pi up to a constant: log sigma(u_j) = u_j - softplus(u_j) for a spike of
                # j, log sum_j sigma(-u_j) = logsumexp(-softplus(u)) for no spike
                sp = F.softplus(u)
                z = torch.cat([u - sp, torch.logsumexp(-sp, -1, keepdim=True)], -1)
                z = z.mul_(inv_temp).add_(draws[:, r])
                y = torch.exp(z - torch.logsumexp(z, -1, keepdim=True), out=probs[:, r])[:, :d]
            else:
                accept = accept_level[:, r] < torch.sigmoid(u.gather(-1, label[:, r]))
                y = one_hot[:, r] * accept
            mark = torch.mul(y, mask[:, r], out=marks[:, r])
            if batched:
                flat.unsqueeze(1).baddbmm_(mark.unsqueeze(1), jumps)
            else:
                flat.addmm_(mark, jumps)
    return potentials, marks, probs


def relaxed_adjoint(decay, weight, grad, y_spike, p_coef, q_coef):
    """
    Reverse sweep of the relaxed thinning loop's adjoint (see
    :class:`~pyro_spikes.distributions.relaxed.RelaxedPointProcess`): with :math:`A` the adjoint
    of the traces after row :math:`r`, :math:`g = \\bar y_r + \\sum_{l,j} W_{:,l,j} A_{l,j}`,
    :math:`\\bar u_r = P_r g - (y_r\\cdot g) Q_r` and :math:`A \\leftarrow (A + \\bar u_r)
    e^{-\\Delta s_r/\\tau_l}`.

    :param decay: ``(N, R, L)``; ``weight``: ``(D, L, D)`` or ``(N, D, L, D)``;
        ``grad``, ``y_spike``, ``p_coef``, ``q_coef``: ``(N, R, D)``.
    :returns: :math:`\\bar u` of shape ``(N, R, D)``.
    """
    with torch.no_grad():
        _check_tensor("decay", decay, 3)
        _check_tensor("weight", weight, (3, 4))
        n, num_rows, num_basis = decay.shape
        d = weight.shape[-1]
        _check_positive(**{"weight.shape[-1] (neurons)": d})
        for name, x in (("weight", weight), ("grad", grad), ("y_spike", y_spike),
                        ("p_coef", p_coef), ("q_coef", q_coef)):
            _check_float(name, x, decay)
        _check_shape("weight", weight, (d, num_basis, d), (n, d, num_basis, d))
        for name, x in (("grad", grad), ("y_spike", y_spike), ("p_coef", p_coef),
                        ("q_coef", q_coef)):
            _check_shape(name, x, (n, num_rows, d))
        decay, weight, grad = decay.contiguous(), weight.contiguous(), grad.contiguous()
        y_spike, p_coef, q_coef = y_spike.contiguous(), p_coef.contiguous(), q_coef.contiguous()
        u_bar = decay.new_empty(n, num_rows, d)
        if compiled_for(decay):
            batched = weight.dim() == 4

            def call(a, b):
                _compiled.relaxed_backward(
                    decay.dtype == torch.float64, b - a, num_rows, num_basis, d,
                    _at(decay, a), _at(weight, a) if batched else weight.data_ptr(),
                    _sequence_stride(weight, 3), _at(grad, a), _at(y_spike, a),
                    _at(p_coef, a), _at(q_coef, a), _at(u_bar, a),
                )

            _for_sequences(n, n * num_rows * num_basis * d * d, call)
            return u_bar
        adj = decay.new_zeros(n, num_basis, d)
        flat = adj.view(n, num_basis * d)
        # (.., L*D, D): maps the traces' adjoint to the marks' sources
        jumps_t = weight.reshape(weight.shape[:-3] + (d, num_basis * d)).transpose(-1, -2)
        batched = jumps_t.dim() == 3
        decay = decay.unsqueeze(-1)
        with sequential_threads(adj.numel()):
            for r in reversed(range(num_rows)):
                if batched:
                    g = torch.bmm(flat.unsqueeze(1), jumps_t).squeeze(1)
                else:
                    g = flat.mm(jumps_t)
                g = g.add_(grad[:, r])
                dot = (y_spike[:, r] * g).sum(-1, keepdim=True)
                torch.sub(p_coef[:, r] * g, dot * q_coef[:, r], out=u_bar[:, r])
                adj.add_(u_bar[:, r].unsqueeze(1)).mul_(decay[:, r])
        return u_bar


def hawkes_chunk(mu, cmu, neg_beta, table, state, t, exps, unifs, duration):
    """
    One chunk of Ogata's thinning of a linear exponential-kernel Hawkes process per sequence,
    compiled (see :meth:`HawkesProcess.sample
    <pyro_spikes.distributions.HawkesProcess.sample>` for the state layout); updates ``state``
    ``(N, D)`` (uniform decay, cumulated) or ``(N, D, D)`` and the current times ``t`` ``(N,)``
    in place. A sequence past ``duration`` fills the rest of its chunk with rejected candidates.

    :param exps: ``(N, C)`` Exp(1) draws; ``unifs``: ``(N, C)`` uniform draws.
    :param t: ``(N,)`` float64 whatever the dtype of the parameters: times accumulate in
        float64, so a long float32 run neither stalls (a gap below the spacing of float32
        numbers) nor drifts.
    :returns: candidate times ``(N, C)`` (float64) and labels ``(N, C)`` (``D`` = rejected).
    """
    _check_tensor("mu", mu, 2)
    if not compiled_for(mu):
        raise RuntimeError("hawkes_chunk needs the compiled loops and a CPU float tensor")
    _check_tensor("exps", exps, 2)
    _check_tensor("state", state, (2, 3))
    n, num = exps.shape
    d = mu.shape[-1]
    _check_positive(**{"mu.shape[-1] (neurons)": d})
    uniform = state.dim() == 2
    for name, x in (("cmu", cmu), ("neg_beta", neg_beta), ("table", table), ("state", state),
                    ("exps", exps), ("unifs", unifs)):
        _check_float(name, x, mu)
    _check_tensor("t", t)
    if t.dtype != torch.float64 or t.device != mu.device:
        raise ValueError(f"t must be float64 (times accumulate in float64) on {mu.device}, got "
                         f"{t.dtype} on {t.device}")
    for name, x in (("mu", mu), ("cmu", cmu), ("neg_beta", neg_beta), ("table", table),
                    ("state", state), ("t", t), ("exps", exps), ("unifs", unifs)):
        if not x.is_contiguous():
            raise ValueError(f"{name} must be contiguous")
    _check_shape("mu", mu, (n, d))
    _check_shape("cmu", cmu, (n, d))
    _check_shape("unifs", unifs, (n, num))
    _check_shape("t", t, (n,))
    if uniform:
        _check_shape("neg_beta", neg_beta, (n, 1))
        _check_shape("state", state, (n, d))
    else:
        _check_shape("neg_beta", neg_beta, (n, d, d))
        _check_shape("state", state, (n, d, d))
    _check_shape("table", table, (d + 1, d), (n * (d + 1), d))
    if not math.isfinite(float(duration)):
        raise ValueError(f"duration must be finite, got {duration}")
    times = mu.new_empty(n, num, dtype=torch.float64)
    labels = torch.empty(n, num, dtype=torch.long)
    shared_table = table.shape[0] == d + 1

    def call(a, b):
        _compiled.hawkes_chunk(
            mu.dtype == torch.float64, b - a, num, d, uniform, float(duration), _at(mu, a),
            _at(cmu, a), _at(neg_beta, a),
            table.data_ptr() if shared_table else _at(table, a * (d + 1)),
            0 if shared_table else (d + 1) * d, _at(state, a), _at(t, a), _at(exps, a),
            _at(unifs, a), _at(times, a), _at(labels, a),
        )

    _for_sequences(n, n * num * (d if uniform else d * d), call)
    return times, labels


def hawkes_terms(times, labels, mu, alpha, beta, window, torch_terms):
    """
    Log-likelihood terms of a :class:`~pyro_spikes.distributions.HawkesProcess` with one decay
    per sequence, compiled, in one pass over the events that also accumulates their derivatives
    (forward mode: O(D) per event, O(D^2) per sequence, nothing stored per event): per sequence
    and neuron :math:`i`, :math:`\\sum_{k: i_k = i} \\log\\lambda_i(t_k^-)` and
    :math:`\\int_{t_0}^{t_1} \\lambda_i` (closed form). Gradients reach ``mu``, ``alpha`` and
    ``beta`` (second derivatives go through ``torch_terms``, the same sums in PyTorch
    operations with the same arguments); the event times get none.

    :param times: sorted event times ``(N, K)``; ``labels``: ``(N, K)`` int64 (-1: no event);
        ``mu``: ``(N, D)``; ``alpha``: ``(D, D)`` or ``(N, D, D)`` (row: receiving neuron);
        ``beta``: ``(N,)``; ``window``: ``(t0, t1)``, the observation window.
    :returns: ``(mark_sum, integral)``, each ``(N, D)``.
    """
    _check_tensor("times", times, 2)
    if not compiled_for(times):
        raise RuntimeError("hawkes_terms needs the compiled loops and a CPU float tensor")
    n, k = times.shape
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.long:
        raise TypeError("labels must be an int64 tensor")
    _check_shape("labels", labels, (n, k))
    _check_tensor("mu", mu, 2)
    d = mu.shape[-1]
    _check_positive(**{"mu.shape[-1] (neurons)": d})
    for name, x in (("mu", mu), ("alpha", alpha), ("beta", beta)):
        _check_float(name, x, times)
    _check_shape("mu", mu, (n, d))
    _check_shape("alpha", alpha, (d, d), (n, d, d))
    _check_shape("beta", beta, (n,))
    _check_labels("labels", labels, d)
    t0, t1 = float(window[0]), float(window[1])
    return _HawkesTerms.apply(times, labels, mu, alpha, beta, (t0, t1), torch_terms)


# events per chunk below which one long Hawkes sequence is not split over threads
_HAWKES_CHUNK = 1 << 15


def _hawkes_chunks(times, labels, mu, alpha, beta, window, want_beta, outs, chunks):
    """
    :func:`hawkes_terms` of one sequence ``(1, K)`` split in time into ``chunks`` that run in
    parallel. The traces are linear in the events, so a first parallel pass computes each
    chunk's own contribution to them (one exponential per event), a sequential combination
    gives the traces every chunk starts from, and a second parallel pass computes the terms
    (see ``hawkes_terms`` in ``_kernels_impl.h``). The chunks' sums add up; the compensator
    comes from the summed :math:`s` and the last chunk's traces. Writes ``outs`` in place.
    """
    k, d = times.shape[-1], mu.shape[-1]
    f64 = times.dtype == torch.float64
    bounds = [k * c // chunks for c in range(chunks + 1)]
    parts = [[x.new_empty(x.shape) for x in outs] for _ in range(chunks)]
    states = [times.new_empty(2 * d + 1) for _ in range(chunks - 1)]  # the last: not needed

    def run(c, init, ref0, state_out, finish, terms):
        a, b = bounds[c], bounds[c + 1]
        _compiled.hawkes_terms(
            f64, 1, b - a, d, times[0, a:].data_ptr(), labels[0, a:].data_ptr(), mu.data_ptr(),
            d, alpha.data_ptr(), 0, beta.data_ptr(), 1, window[0], window[1], int(want_beta),
            *(x.data_ptr() for x in parts[c]), init.data_ptr() if init is not None else 0,
            ref0, state_out.data_ptr() if state_out is not None else 0, int(finish), int(terms))

    # each chunk's own traces (relative to its reference time, the last entry)
    _parallel([functools.partial(run, c, None, 0.0, states[c], False, False)
               for c in range(chunks - 1)])
    bt = float(beta.reshape(-1)[0])
    starts, start = [None], None
    for c in range(chunks - 1):  # the traces just after chunk c: earlier ones decayed + own
        own = states[c]
        if start is None:
            start = own
        else:
            ref = max(float(start[-1]), float(own[-1]))
            start = _shift_traces(start, ref, bt, d) + _shift_traces(own, ref, bt, d)
            start[-1] = ref
        starts.append(start)
    _parallel([functools.partial(run, c, starts[c], float(starts[c][-1]) if c else 0.0, None,
                                 c == chunks - 1, True) for c in range(chunks)])
    mark_sum, integral, j_mu, j_alpha, j_beta, s, s_prime = outs
    for total, i in ((mark_sum, 0), (j_mu, 2), (j_alpha, 3), (j_beta, 4), (s, 5)):
        torch.sum(torch.stack([p[i] for p in parts]), 0, out=total)
    s_prime.copy_(parts[-1][6])
    al = alpha.reshape(d, d)
    integral.copy_(mu * (window[1] - window[0]) + (al @ s[0]).unsqueeze(0))


def _shift_traces(state, ref, beta, d):
    """Traces ``(A, C, r)`` re-referenced to the later time ``ref`` (``A e, (C + (ref - r) A) e``
    with ``e = exp(-beta (ref - r))``); the last entry is left for the caller."""
    delta = ref - float(state[-1])
    e = math.exp(-beta * delta)
    out = state.clone()
    a = state[:d]
    out[:d] = e * a
    out[d:2 * d] = e * (state[d:2 * d] + delta * a)
    return out


class _HawkesTerms(torch.autograd.Function):
    @staticmethod
    def forward(ctx, times, labels, mu, alpha, beta, window, torch_terms):
        n, k = times.shape
        d = mu.shape[-1]
        times, labels, mu_c, alpha_c, beta_c = (x.detach().contiguous() for x in
                                                (times, labels, mu, alpha, beta))
        batched = alpha_c.dim() == 3
        want_beta = bool(ctx.needs_input_grad[4])  # the derivative in beta costs a dot product
        outs = [times.new_empty(n, d) for _ in range(3)] + [times.new_empty(n, d, d)] + \
            [times.new_zeros(n, d) if not want_beta else times.new_empty(n, d)] + \
            [times.new_empty(n, d) for _ in range(2)]
        mark_sum, integral, j_mu, j_alpha, j_beta, s, s_prime = outs

        def call(a, b):
            _compiled.hawkes_terms(
                times.dtype == torch.float64, b - a, k, d, _at(times, a), _at(labels, a),
                _at(mu_c, a), d, _at(alpha_c, a) if batched else alpha_c.data_ptr(),
                d * d if batched else 0, _at(beta_c, a), 1, window[0], window[1],
                int(want_beta), *(_at(x, a) for x in outs), 0, 0.0, 0, 1, 1,
            )

        threads = min(torch.get_num_threads(), k // _HAWKES_CHUNK)
        if n == 1 and threads > 1:  # one long sequence: chunks of it in parallel
            _hawkes_chunks(times, labels, mu_c, alpha_c, beta_c, window, want_beta, outs,
                           threads)
        elif n:
            _for_sequences(n, n * max(k, 1) * d, call)
        ctx.save_for_backward(times, labels, mu, alpha, beta, j_mu, j_alpha, j_beta, s, s_prime)
        ctx.window, ctx.torch_terms = window, torch_terms
        ctx.mark_non_differentiable(labels)
        return mark_sum, integral

    @staticmethod
    def backward(ctx, g_mark, g_int):
        times, labels, mu, alpha, beta, j_mu, j_alpha, j_beta, s, s_prime = ctx.saved_tensors
        wanted = ctx.needs_input_grad[2:5]
        if torch.is_grad_enabled():  # create_graph: differentiate the PyTorch formulas instead
            params = (mu, alpha, beta)
            outs = ctx.torch_terms(times, labels, *params, ctx.window)
            got = _vjp_through(outs, params, wanted, (g_mark, g_int))
            return (None, None, *got, None, None)
        g_mark = torch.zeros_like(j_mu) if g_mark is None else g_mark
        g_int = torch.zeros_like(j_mu) if g_int is None else g_int
        t0, t1 = ctx.window
        g_mu = g_mark * j_mu + g_int * (t1 - t0)
        g_alpha = g_mark.unsqueeze(-1) * j_alpha + g_int.unsqueeze(-1) * s.unsqueeze(-2)
        if alpha.dim() == 2:
            g_alpha = g_alpha.sum(0)
        alpha_n = alpha.detach().expand(j_alpha.shape)
        g_beta = (g_mark * j_beta).sum(-1) + (g_int.unsqueeze(-1) * alpha_n
                                             * s_prime.unsqueeze(-2)).sum((-1, -2))
        grads = (g_mu, g_alpha, g_beta)
        return (None, None, *(g if w else None for g, w in zip(grads, wanted)), None, None)


def _sum_to(grad, shape):
    """Reduce a gradient of a broadcast result back to the argument's ``shape``."""
    if grad.shape == shape:
        return grad
    lead = grad.dim() - len(shape)
    grad = grad.sum(tuple(range(lead))) if lead else grad
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(dims, keepdim=True) if dims else grad


class _CompiledScan(torch.autograd.Function):
    """:func:`~pyro_spikes.distributions.exp_decay_scan` by the compiled recursion, with its
    compiled vector-Jacobian product; higher derivatives go through the PyTorch scan."""

    @staticmethod
    def forward(ctx, times, inputs, rates, torch_scan):
        batch = torch.Size(broadcast_shape(times.shape[:-1], inputs.shape[:-3], rates.shape[:-1]))
        g, r, f = inputs.shape[-3:]
        n = batch.numel()
        t = times.expand(batch + times.shape[-1:]).reshape(n, r).contiguous()
        x = inputs.expand(batch + (g, r, f)).reshape(n, g, r, f).contiguous()
        rate = rates.expand(batch + (g,)).reshape(n, g).contiguous()
        h = torch.empty_like(x)
        _for_sequences(n, n * g * r * f, lambda a, b: _compiled.scan_forward(
            x.dtype == torch.float64, b - a, g, r, f, _at(t, a), _at(x, a), _at(rate, a),
            _at(h, a)))
        ctx.save_for_backward(times, inputs, rates, t, rate, h)
        ctx.batch, ctx.torch_scan = batch, torch_scan
        return h.reshape(batch + (g, r, f))

    @staticmethod
    def backward(ctx, grad):
        times, inputs, rates, t, rate, h = ctx.saved_tensors
        wanted = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # create_graph: differentiate the PyTorch scan instead
            args = (times, inputs, rates)
            return (*_vjp_through((ctx.torch_scan(*args),), args, wanted, (grad,)), None)
        n, g, r, f = h.shape
        gh = grad.expand(ctx.batch + (g, r, f)).reshape(n, g, r, f).contiguous()
        gx, gt, grate = torch.empty_like(h), torch.empty_like(t), torch.empty_like(rate)
        _for_sequences(n, n * g * r * f, lambda a, b: _compiled.scan_backward(
            h.dtype == torch.float64, b - a, g, r, f, _at(t, a), _at(rate, a), _at(h, a),
            _at(gh, a), _at(gx, a), _at(gt, a), _at(grate, a)))
        batch = ctx.batch
        return (
            _sum_to(gt.reshape(batch + (r,)), times.shape) if wanted[0] else None,
            _sum_to(gx.reshape(batch + (g, r, f)), inputs.shape) if wanted[1] else None,
            _sum_to(grate.reshape(batch + (g,)), rates.shape) if wanted[2] else None,
            None,
        )


def exp_decay_scan_compiled(times, inputs, rates, torch_scan):
    """The compiled :func:`~pyro_spikes.distributions.exp_decay_scan` (CPU float tensors of one
    dtype); ``torch_scan`` is the PyTorch implementation used for higher derivatives."""
    _check_scan(times, inputs, rates)
    if not compiled_for(inputs):
        raise RuntimeError("exp_decay_scan_compiled needs the compiled loops and a CPU float "
                           "tensor")
    return _CompiledScan.apply(times, inputs, rates, torch_scan)


def spiking_terms(times, marks, bias, weight, rates, upper_bound, nodes, qweights, torch_terms,
                  initial=None, thresholds=None):
    """
    Log-likelihood terms of :class:`~pyro_spikes.distributions.SpikingPointProcess` over sorted
    merged rows, compiled, with their compiled vector-Jacobian product (second derivatives go
    through ``torch_terms``, the same sums in PyTorch operations with the same arguments): per
    sequence and network neuron :math:`d`, the mark
    term :math:`\\sum_r m_{r,d} \\log \\lambda_d(t_r^-)` and the compensator
    :math:`\\sum_r \\int_{t_r}^{t_{r+1}} \\lambda_d` by Gauss-Legendre quadrature (``nodes``
    on ``[0, 1]`` and ``qweights`` summing to one, ``(Q,)``; or a table of rules ``(K, Q)``,
    zero-padded, an interval of length :math:`\\Delta` taking the first rule whose
    ``thresholds`` entry ``(K,)`` is at least :math:`\\Delta`), the same numbers as the
    PyTorch path, and
    the traces just after the last row, so that a long sequence is scored chunk by chunk (the
    next chunk starts from them, ``initial``). The reverse sweep recomputes the chunk's traces
    from ``initial``: its memory is that of one chunk's rows.

    :param times: ``(N, R)``; ``marks``: dense ``(N, R, D)`` or labels ``(N, R)`` (int64, -1:
        no mark; no gradient); ``bias``: ``(N, D)``; ``weight``: ``(L, D, D)`` or
        ``(N, L, D, D)``; ``rates`` (:math:`1/\\tau_l`): ``(N, L)``; ``upper_bound``: ``(N,)``;
        ``initial``: the traces' left limits at row 0, ``(N, L, D)`` (default zero).
    :returns: ``(mark_sum, integral, final)``: ``(N, D)``, ``(N, D)``, ``(N, L, D)``.
    """
    _check_tensor("times", times, 2)
    if not compiled_for(times):
        raise RuntimeError("spiking_terms needs the compiled loops and a CPU float tensor")
    labels = isinstance(marks, torch.Tensor) and marks.dtype == torch.long
    if labels:
        if marks.dim() != 2 or marks.device != times.device:
            raise ValueError(f"marks (labels) must be an (N, R) int64 tensor on {times.device}, "
                             f"got shape {tuple(marks.shape)} on {marks.device}")
    else:
        _check_tensor("marks", marks, 3)
    _check_tensor("weight", weight, (3, 4))
    _check_tensor("nodes", nodes, (1, 2))
    _check_tensor("qweights", qweights, (1, 2))
    if nodes.dim() == 1:
        if thresholds is not None:
            raise ValueError("thresholds go with a table of rules: nodes of shape (K, Q)")
        nodes, qweights = nodes.unsqueeze(0), qweights.unsqueeze(0)
        thresholds = nodes.new_full((1,), math.inf)
    elif thresholds is None:
        raise ValueError("a table of rules, nodes of shape (K, Q), needs thresholds (K,)")
    n, num_rows = times.shape
    d = bias.shape[-1] if labels else marks.shape[-1]
    num_basis = weight.shape[-3]
    _check_positive(**{"bias.shape[-1] (neurons)" if labels else "marks.shape[-1] (neurons)": d,
                       "nodes.numel()": nodes.numel()})
    if qweights.shape != nodes.shape:
        raise ValueError(f"qweights must have the shape of nodes {tuple(nodes.shape)}, got "
                         f"{tuple(qweights.shape)}")
    _check_tensor("thresholds", thresholds, 1)
    _check_shape("thresholds", thresholds, (nodes.shape[0],))
    floats = [("bias", bias), ("weight", weight), ("rates", rates), ("upper_bound", upper_bound),
              ("nodes", nodes), ("qweights", qweights), ("thresholds", thresholds)]
    if not labels:
        floats.append(("marks", marks))
    if initial is not None:
        floats.append(("initial", initial))
    for name, x in floats:
        _check_float(name, x, times)
    if labels:
        _check_shape("marks", marks, (n, num_rows))
        _check_labels("marks (labels)", marks, d)
    else:
        _check_shape("marks", marks, (n, num_rows, d))
    _check_shape("bias", bias, (n, d))
    _check_shape("weight", weight, (num_basis, d, d), (n, num_basis, d, d))
    _check_shape("rates", rates, (n, num_basis))
    _check_shape("upper_bound", upper_bound, (n,))
    if initial is None:
        initial = times.new_zeros(n, num_basis, d)
    _check_shape("initial", initial, (n, num_basis, d))
    return _SpikingTerms.apply(times, marks, bias, weight, rates, upper_bound, initial, nodes,
                               qweights, thresholds, torch_terms)


def _spiking_run(kernel, inputs, outputs):
    """
    Run a compiled spiking-likelihood kernel over the sequences: ``inputs`` are the contiguous
    ``(times, marks, bias, weight, rates, upper_bound, initial, nodes, qweights, thresholds)``
    (marks dense or int64 labels; a table of ``K`` rules), ``outputs`` the per-sequence
    ``(N, ...)`` tensors it reads or writes after them, in its argument order (``None``: a null
    pointer).
    """
    times, marks, bias, weight, rates, upper_bound, initial, nodes, qweights, thresholds = inputs
    n, num_rows = times.shape
    d, num_basis = bias.shape[-1], weight.shape[-3]
    batched = weight.dim() == 4
    labels = marks.dtype == torch.long
    if n == 0:
        return

    def call(a, b):
        kernel(
            times.dtype == torch.float64, b - a, num_rows, num_basis, d, nodes.shape[0],
            nodes.shape[1],
            _at(times, a), 0 if labels else _at(marks, a), _at(marks, a) if labels else 0,
            _at(bias, a), d,
            _at(weight, a) if batched else weight.data_ptr(),
            num_basis * d * d if batched else 0, _at(rates, a), num_basis,
            _at(upper_bound, a), 1, nodes.data_ptr(), qweights.data_ptr(),
            thresholds.data_ptr(), _at(initial, a),
            *(0 if x is None else _at(x, a) for x in outputs),
        )

    _for_sequences(n, n * max(num_rows, 1) * nodes.shape[1] * num_basis * d, call)


class _SpikingTerms(torch.autograd.Function):
    @staticmethod
    def forward(ctx, times, marks, bias, weight, rates, upper_bound, initial, nodes, qweights,
                thresholds, torch_terms):
        ctx.save_for_backward(times, marks, bias, weight, rates, upper_bound, initial, nodes,
                              qweights, thresholds)
        ctx.torch_terms = torch_terms
        inputs = [x.detach().contiguous() for x in
                  (times, marks, bias, weight, rates, upper_bound, initial, nodes, qweights,
                   thresholds)]
        n, d = bias.shape
        mark_sum, integral = times.new_empty(n, d), times.new_empty(n, d)
        final = torch.empty_like(inputs[6])
        _spiking_run(_compiled.spiking_terms, inputs, (final, mark_sum, integral))
        if marks.dtype == torch.long:
            ctx.mark_non_differentiable(marks)
        return mark_sum, integral, final

    @staticmethod
    def backward(ctx, g_mark, g_int, g_final):
        args = ctx.saved_tensors
        labels = args[1].dtype == torch.long
        wanted = list(ctx.needs_input_grad[:7])
        if labels:
            wanted[1] = False
        if torch.is_grad_enabled():  # create_graph: differentiate the PyTorch formulas instead
            outs = ctx.torch_terms(*args)
            got = _vjp_through(outs, args[:7], wanted, (g_mark, g_int, g_final))
            return (*got, None, None, None, None)
        inputs = [x.detach().contiguous() for x in args]
        times, marks, bias, weight, rates, upper_bound, initial = inputs[:7]
        n, d = bias.shape
        num_basis = weight.shape[-3]
        batched = weight.dim() == 4
        g_mark = (torch.zeros_like(bias) if g_mark is None else g_mark).contiguous()
        g_int = (torch.zeros_like(bias) if g_int is None else g_int).contiguous()
        g_final = None if g_final is None else g_final.contiguous()
        gt = torch.empty_like(times)
        # the O(D^2)-per-row mark gradient only when asked for (wanted[1]: dense marks that
        # require grad, e.g. a relaxed history)
        gm = torch.empty_like(marks) if wanted[1] else None
        gb, gr, ga = torch.empty_like(bias), torch.empty_like(rates), torch.empty_like(upper_bound)
        gw = times.new_empty(n, num_basis, d, d)
        g_initial = torch.empty_like(initial)
        _spiking_run(_compiled.spiking_terms_backward, inputs,
                     (g_mark, g_int, g_final, gt, gm, gb, gw, gr, ga, g_initial))
        if not batched:
            gw = gw.sum(0)
        grads = (gt, gm, gb, gw, gr, ga, g_initial)
        return (*(g if w else None for g, w in zip(grads, wanted)), None, None, None, None)
