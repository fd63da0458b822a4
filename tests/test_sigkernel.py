"""
The signature-kernel solver: compiled solver and adjoint sweep against the PyTorch reference
and a naive dense reference, the default path scaling on long spike trains (truncated
signatures, a Richardson-extrapolated high-order solution, float32), the RBF static kernel,
and pysiglib as an optional cross-check.
"""

import math
import warnings

import pytest
import torch

from pyro_spikes.distributions.kernels import compiled_for
from pyro_spikes.scoring import (
    default_count_scale,
    signature_kernel,
    signature_kernel_gram,
    signature_mmd,
    spike_train_paths,
)
from pyro_spikes.spikes import pack_spikes

DT = torch.float64
needs_compiled = pytest.mark.skipif(
    not compiled_for(torch.zeros(1, dtype=DT)), reason="compiled loops not built or switched off"
)


def _walks(n, length, d, seed, scale=0.3, dtype=DT):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(n, length, d, generator=g, dtype=DT)).cumsum(1).to(dtype)


def _trains(n, rate, duration, seed, dtype=DT, num_neurons=2):
    """n Poisson spike trains per neuron (rate per neuron), as events."""
    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(n):
        trains = []
        for _ in range(num_neurons):
            c = int(torch.poisson(torch.tensor(rate * duration), generator=g))
            trains.append(torch.sort(torch.rand(c, generator=g, dtype=DT) * duration).values.tolist())
        batch.append(trains)
    return pack_spikes(batch, duration=duration, dtype=dtype)


def _dense_reference(x, y, lam, kappa):
    """Naive per-cell loops of the scheme for one pair, any static kernel ``kappa(u, v)``."""
    r = 2**lam
    M, N = (x.shape[0] - 1) * r, (y.shape[0] - 1) * r
    k = [[1.0] * (N + 1) for _ in range(M + 1)]
    for i in range(M):
        for j in range(N):
            p, q = i // r, j // r
            z = (kappa(x[p + 1], y[q + 1]) - kappa(x[p + 1], y[q]) - kappa(x[p], y[q + 1]) + kappa(x[p], y[q])) / r**2
            k[i + 1][j + 1] = (k[i + 1][j] + k[i][j + 1]) * (1 + z / 2 + z * z / 12) - k[i][j] * (1 - z * z / 12)
    return k[M][N]


@pytest.mark.parametrize("static_kernel", ["linear", "rbf"])
@pytest.mark.parametrize("backend", ["torch", pytest.param("compiled", marks=needs_compiled)])
def test_matches_dense_per_cell_reference(static_kernel, backend):
    x, y = _walks(2, 5, 3, 0), _walks(3, 4, 3, 1)
    sigma = 0.8
    if static_kernel == "linear":
        kappa = lambda u, v: float(u @ v)  # noqa: E731
    else:
        kappa = lambda u, v: math.exp(-float((u - v).pow(2).sum()) / sigma)  # noqa: E731
    K = signature_kernel_gram(x, y, 1, static_kernel=static_kernel, sigma=sigma, backend=backend)
    for a in range(2):
        for b in range(3):
            assert K[a, b].item() == pytest.approx(_dense_reference(x[a], y[b], 1, kappa), rel=1e-12)


@needs_compiled
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
@pytest.mark.parametrize("lam", [0, 2])
@pytest.mark.parametrize("static_kernel", ["linear", "rbf"])
def test_compiled_matches_reference_values_and_gradients(dtype, tol, lam, static_kernel):
    # 11 y-paths: one full group of 8 lanes and a partial one; unequal lengths. The reference
    # runs in float64 on the same (rounded) inputs: the compiled solver works in float64 too
    x, y = _walks(3, 9, 3, 2, 0.2, dtype), _walks(11, 6, 3, 3, 0.2, dtype)
    w = torch.randn(3, 11, generator=torch.Generator().manual_seed(4), dtype=DT)
    out = {}
    for backend, dt in (("compiled", dtype), ("torch", DT)):
        xa, ya = x.detach().to(dt).clone().requires_grad_(), y.detach().to(dt).clone().requires_grad_()
        K = signature_kernel_gram(xa, ya, lam, static_kernel=static_kernel, sigma=1.0, backend=backend)
        (K * w.to(dt)).sum().backward()
        out[backend] = (K.detach(), xa.grad, ya.grad)
    for c, t in zip(out["compiled"], out["torch"]):
        assert c.dtype == dtype
        assert (c.double() - t).abs().max() <= tol * t.abs().max()


@needs_compiled
@pytest.mark.parametrize("static_kernel", ["linear", "rbf"])
def test_compiled_gradcheck(static_kernel):
    x = _walks(2, 4, 2, 5).requires_grad_()
    y = _walks(9, 3, 2, 6).requires_grad_()
    f = lambda a, b: signature_kernel_gram(a, b, 1, static_kernel=static_kernel, sigma=0.7, backend="compiled")  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, y))


def test_second_derivatives_through_reference():
    x = _walks(2, 4, 2, 7).requires_grad_()
    y = _walks(2, 3, 2, 8).requires_grad_()
    for sk in ("linear", "rbf"):
        f = lambda a, b: signature_kernel_gram(a, b, 1, static_kernel=sk, backend="torch")  # noqa: E731
        assert torch.autograd.gradgradcheck(f, (x, y))


@needs_compiled
def test_compiled_backward_refuses_double_backward():
    x = _walks(2, 4, 2, 7).requires_grad_()
    K = signature_kernel_gram(x, x, backend="compiled").sum()
    with pytest.raises(RuntimeError, match="backend=.torch."):
        torch.autograd.grad(K, x, create_graph=True)


def test_default_scaling_keeps_long_trains_bounded_and_accurate():
    # ~100-200 spikes per train (2 neurons, 25-50 Hz over 2 s)
    X, Y = _trains(3, 25.0, 2.0, 0), _trains(3, 50.0, 2.0, 1)
    counts = torch.cat([X[..., 1:].sum((-2, -1)), Y[..., 1:].sum((-2, -1))])
    assert counts.min() >= 80 and counts.max() >= 180
    assert default_count_scale(X, Y) == pytest.approx(1 / counts.max().item())
    K1 = signature_kernel(X, Y, 2.0)  # defaults: count_scale=None, dyadic_order=1
    assert torch.isfinite(K1).all() and K1.max() <= 11.31  # I_0(4)
    # Richardson extrapolation of the second-order scheme from dyadic orders 3 and 4
    K3, K4 = (signature_kernel(X, Y, 2.0, dyadic_order=lam) for lam in (3, 4))
    ref = (4 * K4 - K3) / 3
    assert ((K4 - ref).abs() / ref).max() < 1e-5  # the extrapolation has converged
    assert ((K1 - ref).abs() / ref).max() < 1e-5  # 2e-6 observed (8e-6 at dyadic order 0)
    # float32: finite; the compiled solver works in float64 (input rounding only), the
    # PyTorch reference in float32 accumulates O(eps k) per cell over the ~10^5 cells
    compiled = compiled_for(X.float())
    for backend, tol in (("auto", 1e-5 if compiled else 2e-3), ("torch", 2e-3)):
        K32 = signature_kernel(X.float(), Y.float(), 2.0, backend=backend)
        assert K32.dtype == torch.float32 and torch.isfinite(K32).all()
        assert ((K32.double() - K1).abs() / K1).max() < tol


def _truncated_signature_kernel(x, y, level):
    """
    sum_k <S^k(x), S^k(y)>, levels 0..level, by Chen's identity over the segments. Spike-train
    paths move along one axis per segment (time, or one neuron's count): then
    exp(c e_i) has levels c^j / j! e_i^(x j) and the product only touches the slices
    [..., i, ..., i] of each level.
    """
    def sig(path):
        d = path.shape[-1]
        s = [torch.ones((), dtype=path.dtype)] + [torch.zeros((d,) * k, dtype=path.dtype) for k in range(1, level + 1)]
        for inc in torch.diff(path, dim=0):
            axes = inc.nonzero().flatten().tolist()
            if not axes:
                continue
            assert len(axes) == 1, "segments along one axis only"
            i, c = axes[0], inc[axes[0]].item()
            for k in range(level, 0, -1):  # top down: level k uses the old lower levels
                for j in range(1, k + 1):
                    s[k][(Ellipsis,) + (i,) * j] += s[k - j] * (c**j / math.factorial(j))
        return s

    return sum((p * q).sum() for p, q in zip(sig(x), sig(y))).item()


def test_default_scaling_matches_truncated_signatures_on_long_trains():
    # 2 trains of ~100 spikes: with the default scaling each path has 1-variation <= 2, so
    # the level-10 truncation error is below sum_{k > 10} 4^k / (k!)^2 < 3e-9
    X = _trains(2, 25.0, 2.0, 2)
    a = default_count_scale(X)
    paths = spike_train_paths(X, 2.0, 1.0, a)
    exact = _truncated_signature_kernel(paths[0], paths[1], 10)
    K = signature_kernel(X[:1], X[1:], 2.0, count_scale=a, dyadic_order=4)
    assert K.item() == pytest.approx(exact, rel=2e-7)  # 3e-8 observed
    # the default dyadic order 1: 2e-6 observed
    assert signature_kernel(X[:1], X[1:], 2.0, count_scale=a).item() == pytest.approx(exact, rel=1e-5)


def test_unscaled_long_trains_warn_and_overflow_raises():
    X = _trains(2, 25.0, 2.0, 3)
    with pytest.warns(RuntimeWarning, match="1-variation"):
        K = signature_kernel(X, X, 2.0, count_scale=1.0, dyadic_order=0)
    assert K.max() > 1e30  # the growth the default scaling avoids
    with pytest.warns(RuntimeWarning, match="1-variation"), pytest.raises(ValueError, match="overflow"):
        signature_kernel(X.float(), X.float(), 2.0, count_scale=1.0, dyadic_order=0)


def test_rbf_large_sigma_limit_is_linear_kernel_of_scaled_paths():
    # exp(-|u - v|^2 / sigma) = 1 - |u|^2/sigma - |v|^2/sigma + 2 <u, v>/sigma + O(sigma^-2):
    # its second differences are those of the linear kernel of sqrt(2 / sigma) x, up to O(1/sigma^2)
    x, y = _walks(2, 6, 3, 9, scale=1.0), _walks(3, 5, 3, 10, scale=1.0)
    errs = []
    for sigma in (500.0, 5000.0):
        c = (2 / sigma) ** 0.5
        lin = signature_kernel_gram(c * x, c * y, 2)
        rbf = signature_kernel_gram(x, y, 2, static_kernel="rbf", sigma=sigma)
        errs.append(((rbf - lin).abs().max() / (lin - 1).abs().max()).item())
    assert errs[1] < 1e-2 and errs[0] / errs[1] > 5  # relative to the non-constant part, O(1/sigma)


def test_rbf_kernel_of_spike_trains_default_scaling_is_a_kernel():
    # RBF features move by at most min(sqrt(2), sqrt(2 / sigma) |dx|) per segment: with the
    # default scaling the paths stay in the accurate range (no warning) and the Gram is PSD
    X = _trains(6, 20.0, 2.0, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        K = signature_kernel(X, X, 2.0, static_kernel="rbf", sigma=0.5)
    assert torch.isfinite(K).all()
    assert torch.linalg.eigvalsh(K).min() > -1e-8 * K.diagonal().max()


def test_bad_arguments_name_the_argument():
    x = _walks(2, 4, 2, 0)
    with pytest.raises(ValueError, match="backend"):
        signature_kernel_gram(x, x, backend="cuda")
    with pytest.raises(ValueError, match="static_kernel"):
        signature_kernel_gram(x, x, static_kernel="poly")
    with pytest.raises(ValueError, match="sigma"):
        signature_kernel_gram(x, x, static_kernel="rbf", sigma=0.0)
    with pytest.raises(ValueError, match="dtype"):
        signature_kernel_gram(x, x.float())
    with pytest.raises(ValueError, match="non-finite"):
        signature_kernel_gram(x, torch.full_like(x, float("nan")))
    with pytest.raises(ValueError, match="num_paths"):
        signature_kernel_gram(x[:0], x)
    with pytest.raises(TypeError, match="floating"):
        signature_kernel_gram(x.long(), x.long())
    X = _trains(2, 2.0, 1.0, 0)
    with pytest.raises(ValueError, match="count_scale"):
        signature_kernel(X, X, 1.0, count_scale=-1.0)
    with pytest.raises(TypeError, match="unknown kernel arguments"):
        signature_mmd(X, X, 1.0, countscale=0.1)


@needs_compiled
@pytest.mark.parametrize("static_kernel", ["linear", "rbf"])
def test_pysiglib_cross_check(static_kernel):
    pysiglib = pytest.importorskip("pysiglib")
    x, y = _walks(3, 7, 3, 11), _walks(4, 5, 3, 12)
    kwargs = {} if static_kernel == "linear" else {"static_kernel": pysiglib.RBFKernel(sigma=0.6)}
    xa, ya = x.clone().requires_grad_(), y.clone().requires_grad_()
    xb, yb = x.clone().requires_grad_(), y.clone().requires_grad_()
    ours = signature_kernel_gram(xa, ya, 1, static_kernel=static_kernel, sigma=0.6, backend="compiled")
    theirs = pysiglib.torch_api.sig_kernel_gram(xb, yb, dyadic_order=1, **kwargs)
    assert torch.allclose(ours, theirs, rtol=1e-10)
    ours.sum().backward()
    theirs.sum().backward()
    assert torch.allclose(xa.grad, xb.grad, rtol=1e-8, atol=1e-12)
    assert torch.allclose(ya.grad, yb.grad, rtol=1e-8, atol=1e-12)


def test_signature_mmd_float32_on_realistic_trains():
    # the case of issue 13: 2 neurons, 10 s at 5 Hz (~100 spikes per train) gave NaN in float32
    # and 1e75 in float64 with unit jumps; with the default scaling it is finite and O(1)
    X, Y = _trains(4, 5.0, 10.0, 5), _trains(4, 6.0, 10.0, 6)
    m64 = signature_mmd(X, Y, 10.0)
    m32 = signature_mmd(X.float(), Y.float(), 10.0)
    assert torch.isfinite(m32) and m32.dtype == torch.float32
    assert abs(m64.item()) < 10
    assert m32.item() == pytest.approx(m64.item(), abs=1e-4)
