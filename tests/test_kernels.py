"""The compiled thinning loops agree with the PyTorch loops, and the switch between them works."""

import pytest
import torch

from pyro_spikes import pack_spikes
from pyro_spikes.distributions import RelaxedPointProcess, SpikingPointProcess
from pyro_spikes.distributions import kernels
from pyro_spikes.distributions.kernels import compiled_loops, has_compiled_loops

needs_compiled = pytest.mark.skipif(not has_compiled_loops(), reason="_kernels not built")
# roundoff differs between the two paths (summation order, exp/log1p implementations) and the
# recursion carries it along the rows: agreement to this fraction of the largest entry
TOL = {torch.float64: 1e-8, torch.float32: 1e-4}


def close(a, b, dtype):
    return (a - b).abs().max() <= TOL[dtype] * (1 + b.abs().max())


def loop_inputs(n, r, l, d, dtype, per_row, batched, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn((n, r, d) if per_row else (n, d), generator=g, dtype=dtype)
    gaps = torch.rand(n, r, 1, generator=g, dtype=dtype) * 0.3
    decay = torch.exp(-gaps * torch.tensor([2.0, 0.5, 1.0][:l], dtype=dtype))
    weight = torch.randn(((n,) if batched else ()) + (d, l, d), generator=g, dtype=dtype) * 2
    mask = (torch.arange(r) < torch.tensor([r, r - 7, r // 2][:n]).unsqueeze(-1)).to(dtype)
    return base, decay, weight, mask, g


def both(fn):
    with compiled_loops(True):
        fast = fn()
    with compiled_loops(False):
        slow = fn()
    return fast, slow


@needs_compiled
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("per_row,batched", [(False, False), (True, False), (True, True)])
def test_relaxed_loop_and_adjoint_agree(dtype, per_row, batched):
    n, r, l, d = 3, 150, 2, 4
    base, decay, weight, mask, g = loop_inputs(n, r, l, d, dtype, per_row, batched)
    u = torch.rand(n, r, d + 1, generator=g, dtype=dtype).clamp(1e-6, 1 - 1e-6)
    noise = -torch.log(-torch.log(u)) / 0.3
    fast, slow = both(lambda: kernels.thinning_loop(base, decay, weight, mask, kernels.RELAXED,
                                                    noise, 1 / 0.3))
    for a, b in zip(fast, slow):
        assert close(a, b, dtype)
    potentials, marks, probs = fast
    assert close(probs.sum(-1), torch.ones((), dtype=dtype), dtype)
    assert (marks[mask == 0] == 0).all() and (marks[mask == 1].sum(-1) > 0).all()
    # adjoint coefficients of the size the relaxed backward makes (bounded by 1/tau)
    coefs = [torch.randn(n, r, d, generator=g, dtype=dtype)]
    coefs += [torch.rand(n, r, d, generator=g, dtype=dtype) * s for s in (1.0, 0.2, 0.2)]
    fast, slow = both(lambda: kernels.relaxed_adjoint(decay, weight, *coefs))
    assert close(fast, slow, dtype)


@needs_compiled
@pytest.mark.parametrize("batched", [False, True])
def test_exact_loop_agrees(batched):
    n, r, l, d = 3, 400, 2, 3
    base, decay, weight, mask, g = loop_inputs(n, r, l, d, torch.float64, True, batched)
    draws = torch.rand(n, r, generator=g, dtype=torch.float64) * d
    fast, slow = both(lambda: kernels.thinning_loop(base, decay, weight, mask, kernels.EXACT,
                                                    draws))
    assert fast[0] is fast[2] is slow[0] is slow[2] is None
    # identical one-hot decisions, though the compiled loop decays its traces lazily
    assert torch.equal(fast[1], slow[1])
    spikes = fast[1].sum(-1)
    assert set(spikes.unique().tolist()) <= {0.0, 1.0} and 0 < spikes.mean() < 1
    assert (spikes[mask == 0] == 0).all()
    # the decision rule: U picks neuron floor(U), accepted with probability sigma(u): at the
    # first candidate (empty history) the spike frequency of neuron j is sigma(b_j) / D
    n, r = 20000, 1
    base1 = torch.tensor([[-1.0, 0.0, 2.0]], dtype=torch.float64).expand(n, 3)
    draws = torch.rand(n, r, generator=g, dtype=torch.float64) * 3
    ones = torch.ones(n, r, dtype=torch.float64)
    _, marks, _ = kernels.thinning_loop(base1, ones.unsqueeze(-1).expand(n, r, l),
                                        weight[0] if batched else weight, ones, kernels.EXACT,
                                        draws)
    freq = marks[:, 0].mean(0)
    expected = torch.sigmoid(base1[0]) / 3
    assert ((freq - expected).abs() < 4 * (expected * (1 - expected) / n).sqrt()).all()


@needs_compiled
def test_rsample_and_gradients_agree_end_to_end():
    g = torch.Generator().manual_seed(4)
    bias = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    weight = (torch.rand(2, 4, 4, generator=g, dtype=torch.float64) * 4 - 2).requires_grad_()
    tau = torch.tensor([0.5, 2.0], dtype=torch.float64, requires_grad=True)
    context = pack_spikes([[0.3, 1.1, 4.0], [0.5, 2.2, 2.8]], 5.0, dtype=torch.float64)

    def run():
        torch.manual_seed(9)
        proc = SpikingPointProcess(bias, weight, tau, 5.0, 3.0, neurons=[0, 2], context=context)
        x = RelaxedPointProcess(proc, 0.4).rsample((3,))
        loss = (x[..., 1:].sum(-2) ** 2).sum() + proc.log_prob(x).sum()
        return (x, *torch.autograd.grad(loss, (bias, weight, tau)))

    fast, slow = both(run)
    for a, b in zip(fast, slow):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-10)


def test_switch_and_device_dispatch():
    like = torch.zeros(1, dtype=torch.float64)
    with compiled_loops(False):
        assert not kernels.compiled_for(like)
    with compiled_loops(True):
        assert kernels.compiled_for(like) == has_compiled_loops()
        assert not kernels.compiled_for(like.to(torch.float16))  # the PyTorch loops take the rest
    with pytest.raises(ValueError, match="weight must have shape"):
        kernels.thinning_loop(torch.zeros(2, 3), torch.ones(2, 5, 2), torch.zeros(3, 1, 3),
                              torch.ones(2, 5), kernels.EXACT, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="draws must have shape"):
        kernels.thinning_loop(torch.zeros(2, 3), torch.ones(2, 5, 1), torch.zeros(3, 1, 3),
                              torch.ones(2, 5), kernels.RELAXED, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="weight must have dtype torch.float64"):
        kernels.relaxed_adjoint(torch.ones(1, 2, 1, dtype=torch.float64),
                                torch.ones(1, 1, 1), *[torch.ones(1, 2, 1,
                                                                  dtype=torch.float64)] * 4)


def test_stale_build_is_refused_with_a_warning():
    import types

    with pytest.warns(RuntimeWarning, match="another version of _kernels.c"):
        assert kernels._checked(types.SimpleNamespace(VERSION=kernels.VERSION - 1)) is None
    fresh = types.SimpleNamespace(VERSION=kernels.VERSION)
    assert kernels._checked(fresh) is fresh and kernels._checked(None) is None


def test_switch_is_per_thread():
    import threading

    default = kernels._enabled.get()  # PYRO_SPIKES_COMPILED decides it
    seen = []
    with compiled_loops(not default):
        worker = threading.Thread(target=lambda: seen.append(kernels._enabled.get()))
        worker.start()
        worker.join()
        assert kernels._enabled.get() is (not default)
    assert seen == [default] and kernels._enabled.get() is default


@needs_compiled
def test_threaded_split_gives_identical_results(monkeypatch):
    # sequences are split over a thread pool for large batches: the same numbers as one thread
    from pyro_spikes.distributions import HawkesProcess, exp_decay_scan

    def run():
        torch.manual_seed(11)
        g = torch.Generator().manual_seed(1)
        bias = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
        weight = torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64) * 0.5
        weight.requires_grad_()
        tau = torch.tensor([0.5, 2.0], dtype=torch.float64)
        proc = SpikingPointProcess(bias, weight, tau, 5.0, 2.0, neurons=[0, 2],
                                   context=pack_spikes([[0.4, 1.9]], 5.0, dtype=torch.float64))
        x = RelaxedPointProcess(proc, 0.4).rsample((5,))
        exact = proc.sample((5,))
        loss = (x[..., 1:] ** 2).sum() + proc.log_prob(exact).sum()
        hawkes = HawkesProcess(torch.rand(5, 2, generator=g, dtype=torch.float64),
                               torch.full((2, 2), 0.3, dtype=torch.float64),
                               torch.rand(5, 2, 2, generator=g, dtype=torch.float64) + 1,
                               20.0).sample()
        times = (torch.rand(7, 30, generator=g, dtype=torch.float64) * 5).sort(-1).values
        scan = exp_decay_scan(times, torch.randn(7, 2, 30, 3, generator=g, dtype=torch.float64),
                              tau)
        return (x, exact, hawkes, scan, *torch.autograd.grad(loss, (bias, weight)))

    threads = torch.get_num_threads()
    monkeypatch.setattr(kernels, "_PARALLEL_WORK", 0)
    try:
        torch.set_num_threads(1)
        alone = run()
        torch.set_num_threads(3)
        split = run()
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(alone, split):
        assert torch.equal(a, b)


@needs_compiled
@pytest.mark.parametrize("case", ["network", "subnetwork", "batched", "float32", "soft"])
def test_compiled_log_likelihood_terms_agree(case):
    # without autograd SpikingPointProcess.log_prob sums its terms in the compiled loop: the
    # same values as the PyTorch path (scan + batched quadrature)
    dtype = torch.float32 if case == "float32" else torch.float64
    g = torch.Generator().manual_seed(5)
    d = 4
    bias = torch.rand(2, d, generator=g, dtype=dtype) - 0.5 if case == "batched" else \
        torch.rand(d, generator=g, dtype=dtype) - 0.5
    weight = torch.rand(2, d, d, generator=g, dtype=dtype) * 3 - 1.5
    tau = torch.tensor([0.5, 2.0], dtype=dtype)
    kw = {}
    if case == "subnetwork":
        kw = dict(neurons=[0, 2], context=pack_spikes([[0.4, 1.9, 3.3], [2.5]], 6.0,
                                                      dtype=dtype))
    proc = SpikingPointProcess(bias, weight, tau, 6.0, 3.0, **kw)
    torch.manual_seed(1)
    value = proc.sample((3,))
    if case == "soft":
        value = RelaxedPointProcess(proc, 0.5).rsample((3,)).detach()
    fast, slow = both(lambda: proc.log_prob(value))
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert fast.shape == slow.shape and torch.allclose(fast, slow, rtol=tol, atol=tol)
    # with autograd the PyTorch path runs (and gives the same value)
    bias_grad = bias.clone().requires_grad_()
    with_grad = SpikingPointProcess(bias_grad, weight, tau, 6.0, 3.0, **kw).log_prob(value)
    assert with_grad.requires_grad and torch.allclose(with_grad.detach(), slow, rtol=tol,
                                                      atol=tol)


@needs_compiled
@pytest.mark.parametrize("rules", ["one", "table"])
@pytest.mark.parametrize("marks_kind", ["soft", "labels"])
@pytest.mark.parametrize("batched", [False, True])
def test_compiled_spiking_terms_gradients(batched, marks_kind, rules):
    # the compiled reverse sweep equals autograd through the PyTorch formulas, for every input
    # (times, soft marks or int64 labels, bias, shared or per-sequence weights, rates, upper
    # bound, the carried initial traces) and every output (mark sums, compensators, the final
    # traces), with one quadrature rule or an adaptive table of them; gradcheck and
    # gradgradcheck (second derivatives go through the PyTorch formulas)
    from pyro_spikes.distributions.spiking import (_gauss_legendre, _likelihood_sums_torch,
                                                   _quadrature_rules)

    g = torch.Generator().manual_seed(8)
    n, r, l, d = 3, 9, 2, 3
    dt = torch.float64
    times = (torch.rand(n, r, generator=g, dtype=dt) * 4).sort(-1).values
    if marks_kind == "soft":
        marks = torch.rand(n, r, d, generator=g, dtype=dt) * 0.3
        marks[:, ::3] = 0  # zero-mark rows (grid, padding) too
    else:
        marks = torch.randint(-1, d, (n, r), generator=g)
    bias = torch.randn(n, d, generator=g, dtype=dt) * 0.5
    weight = torch.randn(((n,) if batched else ()) + (l, d, d), generator=g, dtype=dt)
    rates = torch.rand(n, l, generator=g, dtype=dt) + 0.3
    upper = torch.rand(n, generator=g, dtype=dt) + 1
    initial = torch.randn(n, l, d, generator=g, dtype=dt)
    if rules == "one":
        nodes, qweights = _gauss_legendre(4, times)
        thresholds = None
    else:  # rules of 1..4 nodes, the intervals spread over several of them
        nodes, qweights, thresholds = _quadrature_rules(4, 3.0, 3.0, True, times)
        used = torch.searchsorted(thresholds, times.diff().contiguous()).unique()
        assert used.numel() >= 2, used
    leaves = [times, bias, weight, rates, upper, initial]
    if marks_kind == "soft":
        leaves.append(marks)
    leaves = [x.clone().requires_grad_() for x in leaves]
    w_m, w_i = torch.randn(n, d, generator=g, dtype=dt), torch.randn(n, d, generator=g, dtype=dt)
    w_f = torch.randn(n, l, d, generator=g, dtype=dt)

    def args_of(xs):
        t, b, w, ra, a, h0 = xs[:6]
        return t, (xs[6] if marks_kind == "soft" else marks), b, w, ra, a, h0

    def compiled(t, m, b, w, ra, a, h0):
        return kernels.spiking_terms(t, m, b, w, ra, a, nodes, qweights, _likelihood_sums_torch,
                                     initial=h0, thresholds=thresholds)

    def reference(t, m, b, w, ra, a, h0):
        return _likelihood_sums_torch(t, m, b, w, ra, a, h0, nodes, qweights, thresholds)

    def loss(fn, xs):
        mark_sum, integral, final = fn(*args_of(xs))
        return (mark_sum * w_m).sum() + (integral * w_i).sum() + (final * w_f).sum()

    with compiled_loops(True):  # also under PYRO_SPIKES_COMPILED=0
        fast = torch.autograd.grad(loss(compiled, leaves), leaves)
    ref_leaves = [x.detach().clone().requires_grad_() for x in leaves]
    with compiled_loops(False):  # the reference entirely in PyTorch (blocked scan too)
        slow = torch.autograd.grad(loss(reference, ref_leaves), ref_leaves)
    for a, b in zip(fast, slow):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-9, atol=1e-10)
    # gradcheck on one sequence (labels: the marks are not an input)
    one = [x[:1] if x is not leaves[2] or batched else x for x in leaves]
    one = [x.detach().clone().requires_grad_() for x in one]
    m1 = marks[:1]

    def fn(t, b, w, ra, a, h0, *soft):
        return compiled(t, soft[0] if soft else m1, b, w, ra, a, h0)

    with compiled_loops(True):
        assert torch.autograd.gradcheck(fn, one)
        assert torch.autograd.gradgradcheck(fn, one)


@needs_compiled
def test_compiled_spiking_terms_chunks_carry_the_traces():
    # scoring rows in two chunks, the second starting from the first's final traces, gives the
    # sums of one pass (the closing row of the first chunk has no mark)
    from pyro_spikes.distributions.spiking import _gauss_legendre, _likelihood_sums_torch

    g = torch.Generator().manual_seed(9)
    n, r, l, d = 2, 12, 2, 4
    dt = torch.float64
    times = (torch.rand(n, r, generator=g, dtype=dt) * 4).sort(-1).values
    labels = torch.randint(-1, d, (n, r), generator=g)
    bias = torch.randn(n, d, generator=g, dtype=dt)
    weight = torch.randn(l, d, d, generator=g, dtype=dt)
    rates, upper = torch.rand(n, l, generator=g, dtype=dt) + 0.3, torch.full((n,), 3.0, dtype=dt)
    nodes, qweights = _gauss_legendre(5, times)
    args = (bias, weight, rates, upper, nodes, qweights, _likelihood_sums_torch)
    with compiled_loops(True):
        whole = kernels.spiking_terms(times, labels, *args)
        cut = 5
        first = kernels.spiking_terms(times[:, :cut + 1],
                                      torch.cat([labels[:, :cut], labels.new_full((n, 1), -1)], 1),
                                      *args)
        second = kernels.spiking_terms(times[:, cut:], labels[:, cut:], *args, initial=first[2])
    assert torch.allclose(first[0] + second[0], whole[0], rtol=1e-12, atol=1e-12)
    assert torch.allclose(first[1] + second[1], whole[1], rtol=1e-12, atol=1e-12)
    assert torch.allclose(second[2], whole[2], rtol=1e-12, atol=1e-12)


@needs_compiled
@pytest.mark.parametrize("batched", [False, True])
def test_compiled_hawkes_terms_equal_the_pytorch_formulas(batched):
    # the one-pass likelihood with forward-mode derivatives equals autograd through the
    # PyTorch formulas: values, first derivatives in mu, alpha (shared or per sequence), beta,
    # and second derivatives (gradgradcheck); padding (-1) and simultaneous events included
    from pyro_spikes.distributions.hawkes import _hawkes_sums_torch

    g = torch.Generator().manual_seed(11)
    n, k, d = 3, 40, 4
    dt = torch.float64
    times = (torch.rand(n, k, generator=g, dtype=dt) * 10).sort(-1).values
    times[:, 5] = times[:, 4]  # a tie
    labels = torch.randint(0, d, (n, k), generator=g)
    labels[:, -3:] = -1  # padding rows at the end
    times[:, -3:] = 10.0
    mu = torch.rand(n, d, generator=g, dtype=dt) + 0.2
    alpha = torch.rand(((n,) if batched else ()) + (d, d), generator=g, dtype=dt) * 0.3
    beta = torch.rand(n, generator=g, dtype=dt) + 0.5
    w_m, w_i = torch.randn(n, d, generator=g, dtype=dt), torch.randn(n, d, generator=g, dtype=dt)
    leaves = [x.clone().requires_grad_() for x in (mu, alpha, beta)]

    def loss(fn, params):
        mark_sum, integral = fn(times, labels, *params, (0.0, 10.0))
        return (mark_sum * w_m).sum() + (integral * w_i).sum(), mark_sum, integral

    def compiled(t, lab, m, a, b, window):
        return kernels.hawkes_terms(t, lab, m, a, b, window, _hawkes_sums_torch)

    with compiled_loops(True):
        fast, fm, fi = loss(compiled, leaves)
        g_fast = torch.autograd.grad(fast, leaves)
    ref = [x.detach().clone().requires_grad_() for x in leaves]
    with compiled_loops(False):
        slow, sm, si = loss(_hawkes_sums_torch, ref)
        g_slow = torch.autograd.grad(slow, ref)
    assert torch.allclose(fm, sm, rtol=1e-12) and torch.allclose(fi, si, rtol=1e-12)
    for a, b in zip(g_fast, g_slow):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    one = [x[:1].detach().clone().requires_grad_() if x is not leaves[1] or batched
           else x.detach().clone().requires_grad_() for x in leaves]

    def fn(m, a, b):
        return compiled(times[:1], labels[:1], m, a, b, (0.0, 10.0))

    with compiled_loops(True):
        assert torch.autograd.gradcheck(fn, one)
        assert torch.autograd.gradgradcheck(fn, one)


@needs_compiled
def test_compiled_hawkes_terms_refuse_bad_labels():
    from pyro_spikes.distributions.hawkes import _hawkes_sums_torch

    times = torch.rand(1, 3, dtype=torch.float64).sort(-1).values
    args = (torch.ones(1, 2, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64),
            torch.ones(1, dtype=torch.float64), (0.0, 1.0), _hawkes_sums_torch)
    with compiled_loops(True), pytest.raises(ValueError, match="labels must lie in"):
        kernels.hawkes_terms(times, torch.tensor([[0, 2, -1]]), *args)
    with compiled_loops(True), pytest.raises(TypeError, match="labels must be an int64"):
        kernels.hawkes_terms(times, torch.zeros(1, 3), *args)


@needs_compiled
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compiled_hawkes_terms_over_a_long_window(dtype):
    # the kernel keeps its traces relative to a reference time that it moves forward when
    # beta (t - ref) grows large (200 in float64, 30 in float32): over a window of 400 decay
    # times it does so many times, and still equals the PyTorch formulas, beta's derivative too
    from pyro_spikes.distributions.hawkes import _hawkes_sums_torch

    g = torch.Generator().manual_seed(12)
    n, k, d = 2, 600, 3
    times = (torch.rand(n, k, generator=g, dtype=torch.float64) * 400).sort(-1).values.to(dtype)
    labels = torch.randint(0, d, (n, k), generator=g)
    mu = (torch.rand(n, d, generator=g, dtype=torch.float64) + 0.2).to(dtype)
    alpha = (torch.rand(d, d, generator=g, dtype=torch.float64) * 0.3).to(dtype)
    beta = torch.tensor([1.5, 0.7], dtype=dtype)
    leaves = [x.clone().requires_grad_() for x in (mu, alpha, beta)]
    with compiled_loops(True):
        fast = kernels.hawkes_terms(times, labels, *leaves, (0.0, 400.0), _hawkes_sums_torch)
        g_fast = torch.autograd.grad(sum(x.sum() for x in fast), leaves)
    ref = [x.detach().double().requires_grad_() for x in leaves]
    with compiled_loops(False):
        slow = _hawkes_sums_torch(times.double(), labels, *ref, (0.0, 400.0))
        g_slow = torch.autograd.grad(sum(x.sum() for x in slow), ref)
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    for a, b in list(zip(fast, slow)) + list(zip(g_fast, g_slow)):
        assert torch.allclose(a.double(), b, rtol=tol, atol=tol), (a, b)


@needs_compiled
@pytest.mark.parametrize("beta", [0.3, 40.0])
@pytest.mark.parametrize("threads", [2, 3])
def test_one_long_sequence_split_in_time_equals_one_pass(beta, threads, monkeypatch):
    # one long sequence runs as chunks in parallel, each starting from the traces that the
    # earlier chunks leave (computed in a first pass): values and first derivatives (in beta
    # too) equal the one-thread pass and the PyTorch formulas; with beta = 40 the traces are
    # re-referenced many times within a chunk, and the last chunk holds padding only
    from pyro_spikes.distributions.hawkes import _hawkes_sums_torch

    monkeypatch.setattr(kernels, "_HAWKES_CHUNK", 64)
    g = torch.Generator().manual_seed(13)
    k, d, dt = 1200, 3, torch.float64
    times = (torch.rand(1, k, generator=g, dtype=dt) * 300).sort(-1).values
    times[0, 11] = times[0, 10]  # a tie
    labels = torch.randint(0, d, (1, k), generator=g)
    labels[:, 750:], times[:, 750:] = -1, 300.0
    mu = torch.rand(1, d, generator=g, dtype=dt) + 0.2
    alpha = torch.rand(d, d, generator=g, dtype=dt) * 0.3
    params = (mu, alpha, torch.tensor([beta], dtype=dt))
    w = torch.randn(2, 1, d, generator=g, dtype=dt)

    def run(fn, num_threads):
        leaves = [x.clone().requires_grad_() for x in params]
        old = torch.get_num_threads()
        torch.set_num_threads(num_threads)
        try:
            mark_sum, integral = fn(times, labels, *leaves, (0.0, 300.0))
        finally:
            torch.set_num_threads(old)
        loss = (mark_sum * w[0]).sum() + (integral * w[1]).sum()
        return [mark_sum.detach(), integral.detach(), *torch.autograd.grad(loss, leaves)]

    def compiled(*args):
        return kernels.hawkes_terms(*args, _hawkes_sums_torch)

    with compiled_loops(True):
        split, one = run(compiled, threads), run(compiled, 1)
    with compiled_loops(False):
        ref = run(_hawkes_sums_torch, 1)
    for a, b, c in zip(split, one, ref):
        assert torch.allclose(a, b, rtol=1e-11, atol=1e-11)
        assert torch.allclose(a, c, rtol=1e-10, atol=1e-10)


@needs_compiled
def test_compiled_hawkes_sums_accumulate_in_float64_for_float32():
    # 100,000 events: a float32 running sum of 1 / lambda would be off by ~1e-2 relative;
    # the kernel sums over events in double whatever the dtype, so float32 parameters get the
    # float64 answer to float32's own rounding of each term
    from pyro_spikes.distributions.hawkes import _hawkes_sums_torch

    g = torch.Generator().manual_seed(14)
    k, d = 100_000, 3
    times = (torch.rand(1, k, generator=g, dtype=torch.float64) * 1e4).sort(-1).values
    labels = torch.randint(0, d, (1, k), generator=g)
    params = (torch.rand(1, d, generator=g, dtype=torch.float64) + 0.5,
              torch.rand(d, d, generator=g, dtype=torch.float64) * 0.2,
              torch.tensor([2.0], dtype=torch.float64))
    out = {}
    for dt in (torch.float32, torch.float64):
        leaves = [x.to(dt).requires_grad_() for x in params]
        with compiled_loops(True):
            mark_sum, integral = kernels.hawkes_terms(times.to(dt), labels, *leaves,
                                                      (0.0, 1e4), _hawkes_sums_torch)
        grads = torch.autograd.grad((mark_sum - integral).sum(), leaves)
        out[dt] = [mark_sum.detach(), *grads]
    for a, b in zip(out[torch.float32], out[torch.float64]):
        assert torch.allclose(a.double(), b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["compiled", "pytorch"])
def test_spiking_sums_accumulate_in_float64_for_float32(backend):
    # 100,000 rows: float32 running sums of the mark terms, compensator pieces and adjoints
    # lost up to 7e-4 relative (a 120k-spike recording's log-likelihood was off by 118 nats;
    # the PyTorch path's scatter_add of the mark terms 1.7e-5); the kernel, its reverse sweep
    # and mark_sum's scatter_add sum over rows in double whatever the dtype, so float32
    # parameters get the float64 answer to float32's rounding of each term
    from pyro_spikes.distributions.spiking import _gauss_legendre, _likelihood_sums_torch

    g = torch.Generator().manual_seed(15)
    r, l, d = 100_000, 2, 3
    times = (torch.rand(1, r, generator=g, dtype=torch.float64) * 1e4).sort(-1).values
    times = times.float().double()  # the same times in both dtypes
    labels = torch.randint(-1, d, (1, r), generator=g)
    params = (torch.randn(1, d, generator=g, dtype=torch.float64) * 0.5,
              torch.randn(l, d, d, generator=g, dtype=torch.float64) * 0.3,
              torch.tensor([[1.0, 0.2]], dtype=torch.float64),
              torch.tensor([5.0], dtype=torch.float64))
    out = {}
    for dt in (torch.float32, torch.float64):
        leaves = [x.to(dt).requires_grad_() for x in params]
        nodes, qweights = _gauss_legendre(4, times.to(dt))
        if backend == "compiled":
            if not kernels.has_compiled_loops():
                pytest.skip("compiled loops not built")
            with compiled_loops(True):
                mark_sum, integral, _ = kernels.spiking_terms(
                    times.to(dt), labels, *leaves, nodes, qweights, _likelihood_sums_torch)
        else:  # the PyTorch formulas (the labels' mark sums are a scatter_add)
            mark_sum, integral, _ = _likelihood_sums_torch(times.to(dt), labels, *leaves, None,
                                                           nodes, qweights)
        loss = (mark_sum - integral).sum()
        grads = torch.autograd.grad(loss, leaves)
        out[dt] = [mark_sum.detach(), integral.detach(), *grads]
    for name, a, b in zip(["mark_sum", "integral", "bias", "weight", "rates", "upper"],
                          out[torch.float32], out[torch.float64]):
        # measured: at most 1.2e-7 of the largest entry (float32 sums: 2e-5 to 7e-4); the
        # PyTorch path's weight and rate gradients 4e-6 and 7e-6 (the float32 trace scan's
        # backward, not a sum over rows)
        tol = 2e-5 if backend == "pytorch" and name in ("weight", "rates") else 1e-6
        assert torch.allclose(a.double(), b, rtol=tol, atol=tol * float(b.abs().max())), (
            name, (a.double() - b).abs().max(), b.abs().max())
