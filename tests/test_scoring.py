import functools
import math

import pytest
import torch
from scipy.special import i0

from pyro_spikes.distributions.stochastic_lif import StochasticLIF
from pyro_spikes.scoring import (
    signature_kernel,
    signature_kernel_gram,
    signature_kernel_score,
    signature_mmd,
    spike_time_mmd,
    spike_time_vectors,
    spike_train_paths,
)
from pyro_spikes.spikes import pack_spikes

DT = torch.float64


def _truncated_signature(path, level):
    """Signature levels 0..level of a piecewise-linear path (L, d) by Chen's identity."""
    d = path.shape[-1]
    sig = [torch.ones((), dtype=path.dtype)] + [torch.zeros((d,) * k, dtype=path.dtype) for k in range(1, level + 1)]
    for inc in torch.diff(path, dim=0):
        seg = [torch.ones((), dtype=path.dtype)]
        for k in range(1, level + 1):
            seg.append(torch.tensordot(seg[-1], inc, dims=0) / k)
        sig = [sum(torch.tensordot(sig[i], seg[k - i], dims=0) for i in range(k + 1)) for k in range(level + 1)]
    return sig


@pytest.mark.parametrize("a, b", [(1.3, 2.1), (0.5, -0.7)])
def test_linear_1d_paths_match_bessel_closed_form(a, b):
    # k = sum_k (ab)^k / (k!)^2 = I_0(2 sqrt(ab)) (J_0(2 sqrt(-ab)) for ab < 0); the scheme is
    # second order in the grid size 2^-lambda: at lambda = 6 the error is < 3e-4 (relative).
    x = torch.tensor([[[0.0], [a]]], dtype=DT)
    y = torch.tensor([[[0.0], [b]]], dtype=DT)
    series = sum((a * b) ** k / math.factorial(k) ** 2 for k in range(40))
    if a * b > 0:
        assert series == pytest.approx(i0(2 * math.sqrt(a * b)), rel=1e-12)
    errs = [abs(signature_kernel_gram(x, y, lam).item() - series) for lam in (4, 5, 6)]
    assert errs[2] < 3e-4 * abs(series)
    assert errs[1] / errs[2] > 3.0 and errs[0] / errs[1] > 3.0  # second-order convergence


def test_matches_truncated_signature_inner_product_2d():
    g = torch.Generator().manual_seed(0)
    x = (0.4 * torch.randn(4, 2, generator=g, dtype=DT)).cumsum(0)
    y = (0.4 * torch.randn(6, 2, generator=g, dtype=DT)).cumsum(0)
    sx, sy = _truncated_signature(x, 12), _truncated_signature(y, 12)
    exact = sum((p * q).sum() for p, q in zip(sx, sy)).item()
    pde = signature_kernel_gram(x[None], y[None], dyadic_order=6).item()
    assert pde == pytest.approx(exact, rel=1e-3)


def test_gram_symmetric_and_vectorised_over_pairs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 2, generator=g, dtype=DT).cumsum(1) * 0.5
    y = torch.randn(4, 7, 2, generator=g, dtype=DT).cumsum(1) * 0.5
    kxy = signature_kernel_gram(x, y, 2)
    assert kxy.shape == (3, 4)
    assert torch.allclose(kxy, signature_kernel_gram(y, x, 2).T, rtol=1e-12)
    for i in range(3):
        for j in range(4):
            assert kxy[i, j].item() == pytest.approx(signature_kernel_gram(x[i : i + 1], y[j : j + 1], 2).item(), rel=1e-12)
    kxx = signature_kernel_gram(x, x, 2)
    assert torch.allclose(kxx, kxx.T, rtol=1e-12)
    # a kernel of (refined, second-order accurate) signatures: the Gram matrix is numerically PSD
    assert torch.linalg.eigvalsh(kxx).min() > -1e-6 * kxx.diagonal().max()


def test_spike_train_paths_vertices():
    ev = pack_spikes([[0.5], [1.0]], duration=2.0, capacity=3, dtype=DT)  # neuron 0 at 0.5, neuron 1 at 1.0
    p = spike_train_paths(ev, 2.0)
    expected = torch.tensor(
        [[0, 0, 0], [0.25, 0, 0], [0.25, 1, 0], [0.5, 1, 0], [0.5, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1]],
        dtype=DT,
    )
    assert torch.equal(p, expected)


def _samples(c, n, seed, sigma=0.3):
    d = StochasticLIF(torch.tensor([c], dtype=DT), noise_scale=sigma, duration=4.0, num_spikes=3, dt=0.02)
    return d.rsample((n,), noise=d.sample_noise((n,), generator=torch.Generator().manual_seed(seed)))


@functools.lru_cache(maxsize=None)
def _groups(c, seed, num_groups=20, n=48):
    """num_groups independent sample sets of size n, drawn in one vectorised call."""
    return _samples(c, num_groups * n, seed).reshape(num_groups, n, 3, 2)


@pytest.mark.parametrize("mmd", ["signature", "spike_time"])
def test_mmd_near_zero_for_same_law_and_positive_for_different(mmd):
    def f(X, Y):
        if mmd == "signature":
            return signature_mmd(X, Y, 4.0).item()
        return spike_time_mmd(X, Y, bandwidth=0.5, duration=4.0).item()

    # Same law (c = 1.5 vs 1.5): the unbiased estimator is 0 in expectation, so the mean over 20
    # independent pairs of sample sets lies within 3 standard errors of 0. Different law
    # (c = 1.5 vs 1.8): positive in every pair and much larger than the same-law mean.
    A, B, C = _groups(1.5, 0), _groups(1.5, 1), _groups(1.8, 2)
    same = torch.tensor([f(A[g], B[g]) for g in range(20)])
    diff = torch.tensor([f(A[g], C[g]) for g in range(20)])
    se = same.std() / math.sqrt(20)
    assert same.mean().abs() < 3 * se
    assert diff.min() > 0
    assert diff.mean() > 10 * same.mean().abs()
    assert diff.mean() > 5 * se
    # identical sample sets: only the O(1/n) diagonal correction remains
    assert abs(f(A[0], A[0])) < 0.1 * diff.mean()


def test_score_is_mmd_minus_data_term():
    X, Y = _samples(1.5, 8, 0), _samples(1.7, 6, 1)
    kyy = signature_kernel(Y, Y, 4.0)
    const = (kyy.sum() - kyy.diagonal().sum()) / (6 * 5)
    assert signature_kernel_score(X, Y, 4.0).item() == pytest.approx((signature_mmd(X, Y, 4.0) - const).item(), rel=1e-12)


@pytest.mark.parametrize("loss", ["signature_mmd", "signature_score", "spike_time_mmd"])
def test_gradients_wrt_spike_times_match_finite_differences(loss):
    X, Y = _samples(1.5, 5, 0), _samples(1.8, 4, 1)
    fn = {
        "signature_mmd": lambda a: signature_mmd(a, Y, 4.0, count_scale=0.7, dyadic_order=1),
        "signature_score": lambda a: signature_kernel_score(a, Y, 4.0, time_scale=2.0),
        "spike_time_mmd": lambda a: spike_time_mmd(a, Y, bandwidth=0.6, duration=4.0),
    }[loss]
    t = X[..., 0].clone().requires_grad_(True)
    fn(torch.cat([t.unsqueeze(-1), X[..., 1:]], -1)).backward()
    eps = 1e-6
    fd = torch.zeros_like(t)
    real = X[..., 1:].sum(-1) > 0  # perturb spikes, not padding (which must stay at T)
    for idx in real.nonzero().tolist():
        e = torch.zeros_like(t)
        e[tuple(idx)] = eps
        up = fn(torch.cat([(X[..., 0] + e).unsqueeze(-1), X[..., 1:]], -1))
        dn = fn(torch.cat([(X[..., 0] - e).unsqueeze(-1), X[..., 1:]], -1))
        fd[tuple(idx)] = (up - dn) / (2 * eps)
    assert fd[real].abs().max() > 1e-4  # the check is not vacuous
    assert torch.allclose(t.grad[real], fd[real], rtol=1e-5, atol=1e-8)


def test_spike_time_vectors():
    ev = pack_spikes([[[0.5, 1.5], [1.0]], [[0.2], []]], duration=2.0, capacity=3, dtype=DT)
    v = spike_time_vectors(ev, 2.0, num_spikes=2)
    assert torch.equal(v, torch.tensor([[0.5, 1.5, 1.0, 2.0], [0.2, 2.0, 2.0, 2.0]], dtype=DT))


def test_bad_input_raises():
    X = _samples(1.5, 4, 0)
    with pytest.raises(ValueError, match="at least 2"):
        signature_mmd(X[:1], X, 4.0)
    with pytest.raises(ValueError, match="dyadic_order"):
        signature_kernel(X, X, 4.0, dyadic_order=-1)
    with pytest.raises(ValueError, match="duration"):
        signature_kernel(X, X, 0.0)
    with pytest.raises(ValueError, match="Y has D=2"):
        signature_mmd(X, torch.zeros(3, 3, 3, dtype=DT), 4.0)
    with pytest.raises(ValueError, match="bandwidth"):
        spike_time_mmd(X, X, bandwidth=0.0, duration=4.0)
    with pytest.raises(ValueError, match="same path dimension"):
        signature_kernel_gram(torch.zeros(2, 3, 2), torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="num_samples"):
        signature_kernel(X[0], X, 4.0)


def test_float32_follows_input_dtype():
    X = _samples(1.5, 6, 0).float()
    Y = _samples(1.6, 5, 1).float()
    assert signature_kernel(X, Y, 4.0).dtype == torch.float32
    assert signature_mmd(X, Y, 4.0).dtype == torch.float32
    assert spike_time_mmd(X, Y, 0.5, 4.0).dtype == torch.float32
    assert torch.allclose(signature_kernel(X, Y, 4.0).double(), signature_kernel(X.double(), Y.double(), 4.0), rtol=1e-4)
