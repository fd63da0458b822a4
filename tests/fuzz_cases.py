"""
Property-based fuzz cases of the public API (run by tests/test_fuzz.py, each group in its own
subprocess so that a segfault or a hang fails a test instead of killing the run).

Every call either returns finite, correct results (cross-checked between the compiled and the
PyTorch loops where both exist) or raises ValueError/TypeError whose message names one of the
arguments of the call. Inputs: random shapes including zeros, float32/float64 (and integer or
half tensors where a float is expected), NaN/inf/huge/negative values, validation on and off.

Usage: ``python tests/fuzz_cases.py GROUP[,GROUP...]|all [MAX_EXAMPLES] [--trace]``; exits
non-zero on a failure (``--trace`` prints every call, to find a case that hangs or crashes).
"""

import math
import sys
import traceback

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyro_spikes import (pack_spikes, select_neurons, trim_padding, unpack_spikes, validate_events,
                         validate_index_events)
from pyro_spikes.distributions import (
    HawkesProcess,
    PoissonProcess,
    RelaxedPointProcess,
    SpikingPointProcess,
    StochasticLIF,
    exp_decay_scan,
    kernels,
)
from pyro_spikes.distributions.scan import _blocked_scan
from pyro_spikes.distributions.hawkes import _hawkes_sums_torch
from pyro_spikes.distributions.spiking import _likelihood_sums_torch
from pyro_spikes.spikes import raise_index_problems

torch.set_num_threads(1)
MAX_EXAMPLES = 25
TRACE = "--trace" in sys.argv  # print every call (to find a case that hangs or crashes)

DTYPES = [torch.float64, torch.float32]
# numbers a parameter may get: ordinary, boundary, huge, negative, non-finite
SPECIAL = [0.0, -1.0, 1e-300, 1e3, -1e3, 1e30, math.inf, -math.inf, math.nan]


class Rejected(Exception):
    """A call raised something other than ValueError/TypeError naming an argument."""


def named_call(names, fn, *args, **kwargs):
    """``fn(*args)``, or ``None`` if it raised ValueError/TypeError naming one of ``names``."""
    if TRACE:
        print("call:", getattr(fn, "__qualname__", fn), args, kwargs, file=sys.stderr, flush=True)
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as e:
        msg = str(e)
        if not any(name in msg for name in names):
            raise Rejected(f"{type(e).__name__} names none of {names}: {msg}") from e
        return None
    except Exception as e:  # noqa: BLE001 - any other exception is a failure
        raise Rejected(f"{type(e).__name__} instead of ValueError/TypeError: {e}") from e


def finite(*xs):
    for x in xs:
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            assert bool(torch.isfinite(x).all()), f"non-finite result {x}"


def close(a, b, dtype, scale=None):
    assert a.shape == b.shape, f"paths disagree in shape: {a.shape} vs {b.shape}"
    if not b.numel():
        return
    tol = {torch.float64: 1e-7, torch.float32: 2e-3}[dtype]
    scale = (1 + b.abs().max()) if scale is None else scale
    assert bool((a - b).abs().max() <= tol * scale), f"paths disagree: {a} vs {b}"


def both_paths(fn):
    with kernels.compiled_loops(True):
        fast = fn()
    with kernels.compiled_loops(False):
        slow = fn()
    return fast, slow


def values(draw, shape, dtype, low=-2.0, high=2.0, special=0.15):
    """A tensor of ``shape`` with uniform entries and, sometimes, special numbers."""
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = low + (high - low) * torch.rand(shape, generator=g, dtype=torch.float64)
    if x.numel() and draw(st.floats(0, 1)) < special:
        x.view(-1)[draw(st.integers(0, x.numel() - 1))] = draw(st.sampled_from(SPECIAL))
    return x.to(dtype)


def settings_for(n):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=False)


# ---------------------------------------------------------------------------------------------
# compiled entry points (kernels.__all__): shapes, sizes, dtypes, enums, contiguity
KERNEL_NAMES = ["base", "decay", "weight", "mask", "draws", "mode", "inv_temp", "grad",
                "y_spike", "p_coef", "q_coef", "mu", "cmu", "neg_beta", "table", "state", "t",
                "exps", "unifs", "duration", "times", "marks", "bias", "rates", "upper_bound",
                "nodes", "qweights", "inputs", "neurons", "initial", "labels", "alpha", "beta"]


@st.composite
def loop_case(draw):
    n, r, l, d = (draw(st.integers(0, 3)), draw(st.integers(0, 6)), draw(st.integers(0, 2)),
                  draw(st.integers(0, 3)))
    dtype = draw(st.sampled_from(DTYPES))
    mode = draw(st.sampled_from([kernels.EXACT, kernels.EXACT, kernels.RELAXED,
                                 kernels.RELAXED, 2, -1]))
    per_row, batched = draw(st.booleans()), draw(st.booleans())
    # the kernels check structure, not values (the processes check those): finite inputs
    base = values(draw, (n, r, d) if per_row else (n, d), dtype, special=0)
    decay = values(draw, (n, r, l), dtype, 0.0, 1.0, special=0)
    weight = values(draw, ((n,) if batched else ()) + (d, l, d), dtype, special=0)
    mask = (values(draw, (n, r), dtype, 0, 1, special=0) < 0.8).to(dtype)
    if mode == kernels.RELAXED:
        draws = values(draw, (n, r, d + 1), dtype, special=0)
    else:
        draws = values(draw, (n, r), dtype, 0.0, max(d, 1) - 1e-6, special=0)
    args = dict(base=base, decay=decay, weight=weight, mask=mask, draws=draws)
    bad = draw(st.sampled_from([None, None, "shape", "dtype", "stride", "int"]))
    if bad:
        name = draw(st.sampled_from(sorted(args)))
        x = args[name]
        if bad == "shape":
            x = x.reshape(-1)[: max(x.numel() - 1, 0)] if x.numel() else torch.zeros(2, dtype=dtype)
        elif bad == "dtype":
            x = x.to(torch.float32 if dtype == torch.float64 else torch.float64)
        elif bad == "stride" and x.dim() >= 2:
            x = x.transpose(0, 1).contiguous().transpose(0, 1)  # non-contiguous, same shape
        elif bad == "int":
            x = x.long()
        args[name] = x
    return args, mode, bad


def check_thinning_loop(case):
    args, mode, bad = case
    run = lambda: named_call(KERNEL_NAMES, kernels.thinning_loop, args["base"],  # noqa: E731
                             args["decay"], args["weight"], args["mask"], mode, args["draws"],
                             0.5)
    fast, slow = both_paths(run)
    assert (fast is None) == (slow is None), "one path raised, the other did not"
    if fast is None:
        return
    assert mode in (kernels.EXACT, kernels.RELAXED)
    for a, b in zip(fast, slow):
        if a is not None:
            finite(a, b)
            if args["decay"].dtype == torch.float64:
                close(a, b, torch.float64)


@st.composite
def adjoint_case(draw):
    args, _, bad = draw(loop_case())
    decay, weight = args["decay"], args["weight"]
    n, r = decay.shape[:2] if decay.dim() >= 2 else (0, 0)
    d = weight.shape[-1] if weight.dim() else 0
    dtype = decay.dtype
    extra = {k: values(draw, (n, r, d), dtype, special=0) for k in
             ("grad", "y_spike", "p_coef", "q_coef")}
    if draw(st.booleans()):
        k = draw(st.sampled_from(sorted(extra)))
        extra[k] = extra[k][..., :-1] if extra[k].shape[-1] else torch.zeros(1, dtype=dtype)
    return args["decay"], args["weight"], extra


def check_relaxed_adjoint(case):
    decay, weight, extra = case
    run = lambda: named_call(KERNEL_NAMES, kernels.relaxed_adjoint, decay, weight,  # noqa: E731
                             extra["grad"], extra["y_spike"], extra["p_coef"], extra["q_coef"])
    fast, slow = both_paths(run)
    assert (fast is None) == (slow is None)
    if fast is not None:
        finite(fast, slow)
        if decay.dtype == torch.float64:
            close(fast, slow, torch.float64)


@st.composite
def scan_case(draw):
    b, g, r, f = (draw(st.integers(0, 3)), draw(st.integers(0, 3)), draw(st.integers(0, 40)),
                  draw(st.integers(0, 3)))
    dtype = draw(st.sampled_from(DTYPES))
    times = values(draw, (b, r), dtype, 0, 5, special=0).sort(-1).values
    inputs = values(draw, (b, g, r, f), dtype, special=0)
    rates = values(draw, (b, g), dtype, 0.1, 3.0, special=0)
    bad = draw(st.sampled_from([None, None, None, "rows", "groups", "dtype", "rank"]))
    if bad == "rows":
        times = torch.cat([times, times[..., -1:] + 1], -1) if r else times[..., :0].new_ones(b, 1)
    elif bad == "groups":
        rates = torch.cat([rates, rates], -1) if g else rates.new_ones(b, 2)
    elif bad == "dtype":
        rates = rates.to(torch.float32 if dtype == torch.float64 else torch.float64)
    elif bad == "rank":
        inputs = inputs.reshape(-1)
    return times, inputs, rates


def check_scan(case):
    times, inputs, rates = case
    names = ["times", "inputs", "rates"]
    with kernels.compiled_loops(True):
        fast = named_call(names, exp_decay_scan, times, inputs, rates)
        direct = (named_call(names, kernels.exp_decay_scan_compiled, times, inputs, rates,
                             _blocked_scan) if kernels.has_compiled_loops() else fast)
    slow = named_call(names, exp_decay_scan, times, inputs, rates, block_size=4)
    assert (fast is None) == (slow is None) == (direct is None)
    if fast is not None:
        finite(fast, slow, direct)
        close(fast, slow, times.dtype)
        close(direct, slow, times.dtype)


@st.composite
def terms_case(draw):
    n, r, l, d, q = (draw(st.integers(0, 3)), draw(st.integers(0, 6)), draw(st.integers(0, 2)),
                     draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    dtype = draw(st.sampled_from(DTYPES))
    args = dict(
        times=values(draw, (n, r), dtype, 0, 2, special=0).sort(-1).values,
        marks=(values(draw, (n, r, d), dtype, 0, 1, special=0) > 0.7).to(dtype),
        bias=values(draw, (n, d), dtype, special=0),
        weight=values(draw, (l, d, d), dtype, special=0),
        rates=values(draw, (n, l), dtype, 0.2, 2, special=0),
        upper_bound=values(draw, (n,), dtype, 1, 5, special=0),
        nodes=values(draw, (q,), dtype, 0, 1, special=0),
        qweights=values(draw, (q,), dtype, 0, 1, special=0),
        initial=values(draw, (n, l, d), dtype, -1, 1, special=0),
    )
    if d and draw(st.booleans()):  # labels (int64, -1: none) in place of dense marks
        args["marks"] = torch.where(args["marks"].sum(-1) > 0, args["marks"].argmax(-1),
                                    torch.full((n, r), -1, dtype=torch.long))
        if d and draw(st.floats(0, 1)) < 0.2:
            args["marks"] = args["marks"] + d  # out of range: refused, never read
    bad = draw(st.sampled_from([None, None, "shape", "dtype", "qlen"]))
    if bad == "qlen":
        args["qweights"] = values(draw, (q + 1,), dtype, 0, 1, special=0)
    elif bad:
        spoil(draw, args, bad)
    return args


def spoil(draw, args, bad):
    """One argument of ``args`` given an extra dimension (``bad="shape"``) or the other float
    dtype (``"dtype"``), in place: the entry point must refuse it by name."""
    key = draw(st.sampled_from(sorted(args)))
    x = args[key]
    args[key] = (x.unsqueeze(0) if bad == "shape" else
                 x.to(torch.float32 if x.dtype == torch.float64 else torch.float64))


def agrees_with_torch(entry, args, kwargs, reference, dtype):
    """A compiled ``entry`` point on ``args``: a named error, or finite results equal to
    ``reference()`` (its PyTorch formulas). Whether it returned (``False``: it refused)."""
    with kernels.compiled_loops(True):
        got = named_call(KERNEL_NAMES, entry, *args, **kwargs)
    if got is None:
        return False
    for x, y in zip(got, reference()):
        finite(x, y)
        close(x, y, dtype)
    return True


def check_spiking_terms(case):
    if not kernels.has_compiled_loops():
        return
    a = case
    ran = agrees_with_torch(
        kernels.spiking_terms,
        (a["times"], a["marks"], a["bias"], a["weight"], a["rates"], a["upper_bound"],
         a["nodes"], a["qweights"], _likelihood_sums_torch), {"initial": a["initial"]},
        lambda: _likelihood_sums_torch(a["times"], a["marks"], a["bias"], a["weight"],
                                       a["rates"], a["upper_bound"], a["initial"], a["nodes"],
                                       a["qweights"]),
        a["times"].dtype)
    labels = a["marks"]
    if ran and labels.dtype == torch.long:
        assert bool((labels >= -1).all() & (labels < a["bias"].shape[-1]).all()), \
            "labels out of range accepted"


@st.composite
def hawkes_terms_case(draw):
    n, k, d = draw(st.integers(0, 3)), draw(st.integers(0, 8)), draw(st.integers(0, 3))
    dtype = draw(st.sampled_from(DTYPES))
    args = dict(
        times=values(draw, (n, k), dtype, 0, 2, special=0).sort(-1).values,
        labels=torch.tensor(draw(st.lists(st.integers(-1, max(d - 1, -1)), min_size=n * k,
                                          max_size=n * k)), dtype=torch.long).reshape(n, k),
        mu=values(draw, (n, d), dtype, 0.1, 2, special=0),
        alpha=values(draw, draw(st.sampled_from([(d, d), (n, d, d)])), dtype, 0, 1, special=0),
        beta=values(draw, (n,), dtype, 0.5, 3, special=0),
    )
    bad = draw(st.sampled_from([None, None, "shape", "dtype", "label"]))
    if bad == "label" and args["labels"].numel():
        args["labels"] = args["labels"] + d + 1  # out of range: refused, never read
    elif bad in ("shape", "dtype"):
        spoil(draw, args, bad)
    return args


def check_hawkes_terms(case):
    if not kernels.has_compiled_loops():
        return
    a = case
    args = (a["times"], a["labels"], a["mu"], a["alpha"], a["beta"], (0.0, 2.0))
    agrees_with_torch(kernels.hawkes_terms, args + (_hawkes_sums_torch,), {},
                      lambda: _hawkes_sums_torch(*args), a["times"].dtype)


@st.composite
def index_rows_case(draw):
    n, k, d = draw(st.integers(0, 3)), draw(st.integers(0, 8)), draw(st.integers(1, 4))
    dtype = draw(st.sampled_from(DTYPES))
    duration = draw(st.sampled_from([1.0, 2.0]))
    times = values(draw, (n, k), dtype, 0, duration, special=0.3).sort(-1).values
    if draw(st.booleans()) and times.numel():  # sometimes unsorted
        times = times.flip(-1)
    labels = torch.tensor(draw(st.lists(st.integers(-1, d - 1), min_size=n * k,
                                        max_size=n * k)), dtype=dtype).reshape(n, k)
    if labels.numel() and draw(st.floats(0, 1)) < 0.3:  # a bad index: fractional, large, NaN
        labels.view(-1)[draw(st.integers(0, labels.numel() - 1))] = draw(
            st.sampled_from([0.5, -0.5, -2.0, float(d), math.nan, math.inf]))
    pad = labels < 0  # padding at the duration, mostly
    if draw(st.floats(0, 1)) < 0.8:
        times = torch.where(pad, torch.full_like(times, duration), times)
    events = torch.stack([times, labels], -1)
    if draw(st.booleans()):  # not contiguous
        events = events.transpose(-1, -2).contiguous().transpose(-1, -2)
    return events, duration, d


def check_index_rows(case):
    """The compiled scan raises what validate_index_events raises, and otherwise returns its
    labels and trim_padding's rows."""
    if not kernels.has_compiled_loops():
        return
    events, duration, d = case

    def error(fn):
        try:
            fn()
        except ValueError as e:
            return str(e)
        return None

    with kernels.compiled_loops(True):
        flags, labels, keep = kernels.index_rows(events, duration, d)
    want = error(lambda: validate_index_events(events, duration, d, name="value"))
    assert error(lambda: raise_index_problems(flags, "value", duration, d)) == want
    if events.numel():
        assert keep == trim_padding(events, duration, "index").shape[-2]
    if want is None:
        assert torch.equal(labels, events[..., 1].long())


@st.composite
def hawkes_chunk_case(draw):
    n, c, d = draw(st.integers(0, 3)), draw(st.integers(0, 20)), draw(st.integers(0, 3))
    dtype = draw(st.sampled_from(DTYPES))
    uniform = draw(st.booleans())
    mu = values(draw, (n, d), dtype, 0.1, 2, special=0)
    args = dict(
        mu=mu, cmu=mu.cumsum(-1),
        neg_beta=-values(draw, (n, 1) if uniform else (n, d, d), dtype, 0.5, 2, special=0),
        table=values(draw, (d + 1, d), dtype, 0, 1, special=0),
        state=torch.zeros((n, d) if uniform else (n, d, d), dtype=dtype),
        t=torch.zeros(n, dtype=torch.float64),
        exps=values(draw, (n, c), dtype, 0.01, 3, special=0),
        unifs=values(draw, (n, c), dtype, 0, 1, special=0),
    )
    args["table"][-1] = 0
    bad = draw(st.sampled_from([None, None, "shape", "dtype", "stride"]))
    if bad:
        k = draw(st.sampled_from(sorted(args)))
        x = args[k]
        if bad == "shape":
            x = torch.cat([x, x[:1]], 0) if x.shape[0] else x.new_zeros((1,) + x.shape[1:])
        elif bad == "dtype":
            x = x.to(torch.float32 if x.dtype == torch.float64 else torch.float64)
        elif x.dim() >= 2:
            x = x.transpose(0, 1).contiguous().transpose(0, 1)
        args[k] = x
    return args, uniform


def check_hawkes_chunk(case):
    args, uniform = case
    if not kernels.has_compiled_loops():
        return
    with kernels.compiled_loops(True):
        got = named_call(KERNEL_NAMES, kernels.hawkes_chunk, args["mu"], args["cmu"],
                         args["neg_beta"], args["table"], args["state"], args["t"],
                         args["exps"], args["unifs"], 5.0)
    if got is None:
        return
    times, labels = got
    d = args["mu"].shape[-1]
    assert times.dtype == torch.float64
    assert bool((labels >= 0).all() & (labels <= d).all())
    if times.shape[-1] > 1:
        assert bool((times[:, 1:] >= times[:, :-1]).all()), "candidate times must increase"


# ---------------------------------------------------------------------------------------------
# processes: constructors, sample, log_prob, intensity, compensator
PROCESS_NAMES = ["rate", "baseline", "adjacency", "decay", "bias", "weight", "time_constants",
                 "upper_bound", "capacity", "duration", "value", "t", "neurons", "context",
                 "temperature", "max_step", "D >= 1", "quadrature_order", "events", "layout"]

LAYOUT_CHOICES = ["dense", "dense", "index", "sparse"]


def exercise(process, names, cross_check, num_samples=2):
    """Sample, log_prob, intensity, compensator of ``process``; results finite and the two
    loop paths' log_prob agree (on valid parameters)."""
    x = named_call(names, process.sample, (num_samples,))
    if x is None:
        return
    if process.layout == "index":
        validate_index_events(x, process.duration, process.num_neurons)
    else:
        validate_events(x, process.duration, process.num_neurons)
    lp = named_call(names, process.log_prob, x)
    if lp is None:
        return
    finite(lp)
    assert lp.shape == (num_samples,) + process.batch_shape
    if cross_check:
        fast, slow = both_paths(lambda: process.log_prob(x))
        close(fast, slow, lp.dtype, scale=1 + slow.abs().max())
    # malformed values: a named error whatever validate_args says
    bad_values = [x[..., :-1], x[..., 0], x.tolist(), x.bool()]
    if process.layout == "index" and x.numel():  # an index out of range: never read past D
        bad_values.append(torch.cat([x[..., :1], x[..., 1:].clamp(min=0) + process.num_neurons],
                                    -1))
    for bad in bad_values:
        assert named_call(names, process.log_prob, bad) is None, "malformed value accepted"
    t = torch.linspace(0, process.duration, 5, dtype=lp.dtype)
    clash = t.expand((x.shape[0] + 1,) + x.shape[1:-2] + (5,))  # batch (3, ...) vs (2, ...)
    assert named_call(names, process.intensity, x, clash) is None, "t of a clashing batch"
    lam = named_call(names, process.intensity, x, t)
    if lam is not None:
        finite(lam)
        assert bool((lam >= 0).all())
    comp = named_call(names, process.compensator, x)
    if comp is not None:
        finite(comp)
        inc = comp[..., 1:, :] - comp[..., :-1, :]  # a compensator never decreases
        assert bool((inc >= -1e-4 * (1 + comp[..., 1:, :].abs())).all())


def params_valid(**tensors):
    return all(bool(torch.isfinite(x).all()) for x in tensors.values())


@st.composite
def poisson_case(draw):
    d = draw(st.integers(0, 3))
    batch = tuple(draw(st.lists(st.integers(0, 2), max_size=2)))
    dtype = draw(st.sampled_from(DTYPES))
    rate = values(draw, batch + (d,), dtype, 0, 3)
    duration = draw(st.sampled_from([1.0, 3.0, 0.0, -1.0, math.inf, math.nan, 1e-3]))
    capacity = draw(st.sampled_from([None, None, 1, 50, 0]))
    validate = draw(st.booleans())
    layout = draw(st.sampled_from(LAYOUT_CHOICES))
    return rate, duration, capacity, validate, layout


def check_poisson(case):
    rate, duration, capacity, validate, layout = case
    p = named_call(PROCESS_NAMES, PoissonProcess, rate, duration, capacity=capacity,
                   validate_args=validate, layout=layout)
    if p is None:
        return
    ok = bool((torch.isfinite(rate) & (rate >= 0)).all())
    if not ok and validate:
        raise AssertionError("invalid rate accepted with validate_args=True")
    exercise(p, PROCESS_NAMES, cross_check=False) if ok else named_call(
        PROCESS_NAMES, p.sample, (2,))


@st.composite
def hawkes_case(draw):
    d = draw(st.integers(0, 3))
    batch = tuple(draw(st.lists(st.integers(1, 2), max_size=1)))
    dtype = draw(st.sampled_from(DTYPES))
    baseline = values(draw, batch + (d,), dtype, 0.1, 2)
    adjacency = values(draw, batch + (d, d), dtype, 0, 0.8 / max(d, 1))
    decay_shape = draw(st.sampled_from([(), (1,), (d,), (d, 1), (d, d), batch + (d, d), (d + 1,)]))
    decay = values(draw, decay_shape, dtype, 0.5, 3)
    duration = draw(st.sampled_from([2.0, 5.0, -1.0, math.nan]))
    capacity = draw(st.sampled_from([None, None, 3, 200]))
    validate = draw(st.booleans())
    if draw(st.floats(0, 1)) < 0.1:
        decay = decay.to(torch.float32 if dtype == torch.float64 else torch.float64)
    layout = draw(st.sampled_from(LAYOUT_CHOICES))
    return baseline, adjacency, decay, duration, capacity, validate, layout


def check_hawkes(case):
    baseline, adjacency, decay, duration, capacity, validate, layout = case
    p = named_call(PROCESS_NAMES, HawkesProcess, baseline, adjacency, decay, duration,
                   capacity=capacity, validate_args=validate, layout=layout)
    if p is None:
        return
    if decay.dim() >= 1 and decay.shape[-1] == p.num_neurons:  # torch's broadcasting
        want = decay.expand(torch.broadcast_shapes(decay.shape, (p.num_neurons,) * 2))
        assert bool((p.decay == want.expand_as(p.decay)).all() | torch.isnan(want).any())
    ok = (bool((torch.isfinite(baseline) & (baseline >= 0)).all())
          and bool((torch.isfinite(adjacency) & (adjacency >= 0)).all())
          and bool((torch.isfinite(decay) & (decay > 0)).all()))
    if not ok and validate:
        raise AssertionError("invalid parameters accepted with validate_args=True")
    if ok:
        exercise(p, PROCESS_NAMES, cross_check=True)
    else:
        named_call(PROCESS_NAMES, p.sample, (2,))


@st.composite
def spiking_case(draw):
    d, l = draw(st.integers(0, 3)), draw(st.integers(0, 2))
    batch = tuple(draw(st.lists(st.integers(1, 2), max_size=1)))
    dtype = draw(st.sampled_from(DTYPES))
    bias = values(draw, batch + (d,), dtype)
    weight = values(draw, (l, d, d), dtype)
    tau = values(draw, (l,), dtype, 0.2, 2)
    upper = draw(st.sampled_from([2.0, 5.0, 0.0, -1.0, math.inf, math.nan]))
    duration = draw(st.sampled_from([1.0, 2.0]))
    neurons = draw(st.sampled_from([None, None, [0], [0, 0], [5], [-1], []]))
    validate = draw(st.booleans())
    max_step = draw(st.sampled_from([None, None, 0.5, 0.0, -1.0, math.nan]))
    layout = draw(st.sampled_from(LAYOUT_CHOICES))
    return bias, weight, tau, upper, duration, neurons, validate, max_step, layout


def check_spiking(case):
    bias, weight, tau, upper, duration, neurons, validate, max_step, layout = case
    context = None
    if neurons is not None and bias.shape[-1] > 1:
        context = torch.tensor([[0.3] + [1.0] + [0.0] * (bias.shape[-1] - 2),
                                [duration] + [0.0] * (bias.shape[-1] - 1)], dtype=bias.dtype)
        if len(neurons) != 1:
            context = context[..., :1]  # a context of the wrong width
    p = named_call(PROCESS_NAMES, SpikingPointProcess, bias, weight, tau, duration,
                   upper_bound=upper, neurons=neurons, context=context, max_step=max_step,
                   validate_args=validate, layout=layout)
    if p is None:
        return
    ok = params_valid(bias=bias, weight=weight, tau=tau) and bool((tau > 0).all()) and \
        math.isfinite(upper) and upper > 0
    if not ok and validate:
        raise AssertionError("invalid parameters accepted with validate_args=True")
    if ok:
        exercise(p, PROCESS_NAMES, cross_check=True)
        r = named_call(PROCESS_NAMES, RelaxedPointProcess, p, 0.5)
        if r is not None:
            y = r.rsample((2,))
            finite(y, r.log_prob(y))
            fast, slow = both_paths(lambda: r.log_prob(y))
            close(fast, slow, y.dtype, scale=1 + slow.abs().max())
    else:
        named_call(PROCESS_NAMES, p.sample, (2,))


@st.composite
def slif_case(draw):
    d = draw(st.integers(0, 3))
    dtype = draw(st.sampled_from(DTYPES))
    current = values(draw, (d,), dtype, 0, 3)
    tau = draw(st.sampled_from([1.0, 0.0, -1.0, math.inf, math.nan, 0.5]))
    noise_scale = draw(st.sampled_from([0.0, 0.3, -0.1, math.nan]))
    escape = draw(st.booleans())
    dt = draw(st.sampled_from([0.1, 0.05, 0.0, -1.0, math.nan, 5.0]))
    bad_noise = draw(st.sampled_from([None, None, "nan", "inf", "shape", "dtype"]))
    return current, tau, noise_scale, escape, dt, bad_noise


SLIF_NAMES = ["input_current", "weight", "tau", "noise_scale", "dt", "noise", "duration",
              "D >= 1", "escape", "reset", "threshold"]


def check_slif(case):
    current, tau, noise_scale, escape, dt, bad_noise = case
    p = named_call(SLIF_NAMES, StochasticLIF, current, tau=tau, noise_scale=noise_scale,
                   duration=1.0, num_spikes=2, dt=dt, escape_noise=escape)
    if p is None:
        return
    noise = p.sample_noise((2,))
    if bad_noise == "nan":
        noise["brownian"].view(-1)[0] = math.nan
    elif bad_noise == "inf":
        noise["brownian"].view(-1)[-1] = math.inf
    elif bad_noise == "shape":
        noise["brownian"] = noise["brownian"][..., :-1, :]
    elif bad_noise == "dtype":
        noise["brownian"] = noise["brownian"].to(
            torch.float32 if current.dtype == torch.float64 else torch.float64)
    x = named_call(SLIF_NAMES, p.rsample, (2,), noise=noise)
    if bad_noise is not None:
        assert x is None, "bad noise accepted"
    if x is not None:
        finite(x)
        validate_events(x, p.duration, p.num_neurons)


# ---------------------------------------------------------------------------------------------
# the spike-train layout helpers
@st.composite
def layout_case(draw):
    d = draw(st.integers(1, 3))
    b = draw(st.integers(0, 2))
    trains = [[sorted(draw(st.lists(st.floats(0, 1, allow_nan=False), max_size=4)))
               for _ in range(d)] for _ in range(max(b, 1))]
    if draw(st.floats(0, 1)) < 0.2:
        trains[0][0] = trains[0][0] + [draw(st.sampled_from([math.nan, math.inf, -0.5, 2.0]))]
    neurons = draw(st.sampled_from([[0], list(range(d)), [d], [-1], [0, 0], [], [0.5]]))
    capacity = draw(st.sampled_from([None, None, 0, 1, 10]))
    return trains, neurons, capacity


def check_layout(case):
    trains, neurons, capacity = case
    names = ["times_per_neuron", "capacity", "neurons", "events", "duration"]
    x = named_call(names, pack_spikes, trains, 1.0, capacity=capacity)
    if x is None:
        return
    validate_events(x, 1.0, len(trains[0]))
    back = unpack_spikes(x)
    assert sum(t.numel() for t in back[0]) == sum(len(t) for t in trains[0])
    sub = named_call(names, select_neurons, x, neurons, 1.0)
    if sub is not None:
        validate_events(sub, 1.0, len(neurons))
        assert bool((trim_padding(sub, 1.0)[..., 1:].sum((-1, -2))
                     == sub[..., 1:].sum((-1, -2))).all())


GROUPS = {
    "thinning_loop": (loop_case(), check_thinning_loop),
    "relaxed_adjoint": (adjoint_case(), check_relaxed_adjoint),
    "exp_decay_scan": (scan_case(), check_scan),
    "spiking_terms": (terms_case(), check_spiking_terms),
    "hawkes_chunk": (hawkes_chunk_case(), check_hawkes_chunk),
    "hawkes_terms": (hawkes_terms_case(), check_hawkes_terms),
    "index_rows": (index_rows_case(), check_index_rows),
    "poisson": (poisson_case(), check_poisson),
    "hawkes": (hawkes_case(), check_hawkes),
    "spiking": (spiking_case(), check_spiking),
    "stochastic_lif": (slif_case(), check_slif),
    "layout": (layout_case(), check_layout),
}


def run(group, max_examples=MAX_EXAMPLES):
    strategy, check = GROUPS[group]
    settings_for(max_examples)(given(strategy)(check))()


if __name__ == "__main__":
    groups = sys.argv[1].split(",") if sys.argv[1] != "all" else list(GROUPS)
    n = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() else MAX_EXAMPLES
    failed = []
    for group in groups:
        print(f"{group}: ...", flush=True)
        try:
            run(group, n)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            failed.append(group)
            continue
        print(f"{group}: ok", flush=True)
    if failed:
        print("FAILED:", ", ".join(failed))
        sys.exit(1)
