"""The look-ahead guide: its anticausal drive, its density and gradients, and agreement with the
particle filter's own look-ahead proposal."""

import pyro
import pytest
import torch

from pyro_spikes.models import SNN, kajino_ground_truth
from pyro_spikes.models.lookahead import LookaheadDrive
from pyro_spikes.models.smc import _boundaries, _lookahead_terms
from pyro_spikes.models.training import elbo_gradients

T = 6.0


def _data():
    torch.manual_seed(0)
    truth = kajino_ground_truth(0, num_observed=2, num_hidden=2, duration=T)
    obs, _ = truth.simulate(3)
    return obs.double()


def _direct(obs, weight, kappa, hidden, d, t):
    """s_h(t) = sum_m sum_o A_{m,h,o} sum_{t_o > t} exp(-(t_o - t)/kappa_m), O(n C)."""
    times, marks = obs[..., 0], obs[..., 1:]
    gap = times.unsqueeze(-2) - t.unsqueeze(-1)  # (B, n, C)
    future = (gap > 0).to(obs)
    dec = (torch.exp(-gap.clamp(min=0).unsqueeze(-3) / kappa.view(1, -1, 1, 1))
           * future.unsqueeze(-3))  # (B, M, n, C)
    trace = torch.matmul(dec, marks.unsqueeze(-3))  # (B, M, n, D_O)
    hid = torch.einsum("bmno,mho->bnh", trace, weight)
    out = torch.zeros(hid.shape[:-1] + (d,), dtype=obs.dtype)
    out[..., hidden] = hid
    return out


def test_drive_matches_direct_sum():
    obs = _data()
    torch.manual_seed(1)
    weight = torch.randn(2, 2, 2, dtype=torch.float64)
    kappa = torch.tensor([0.7, 2.0], dtype=torch.float64)
    drive = LookaheadDrive(obs, weight, kappa, [2, 3], 4, T)
    t = torch.rand(3, 50, dtype=torch.float64) * T
    t = torch.cat([t, obs[..., 0]], -1)  # exactly at observed spikes: those are not "after"
    assert torch.allclose(drive.drive(t), _direct(obs, weight, kappa, [2, 3], 4, t),
                          atol=1e-12, rtol=1e-10)
    batch = tuple(obs.shape[:-2])
    assert repr(drive) == f"LookaheadDrive(kernels=2, hidden=2, batch_shape={batch})"


def test_filter_lookahead_terms_equal_the_drive():
    """The particle filter's per-segment look-ahead potentials equal LookaheadDrive at any time
    inside the segment (the two implementations used by the guide and by the SMC proposal)."""
    obs = _data()
    torch.manual_seed(2)
    weight = torch.randn(2, 2, 2, dtype=torch.float64)
    kappa = torch.tensor([0.7, 2.0], dtype=torch.float64)
    ends, labels = _boundaries(obs, T, 0.5)
    g = _lookahead_terms(ends, labels, 2, weight, kappa)  # (B, M, Mk, D_H)
    starts = torch.cat([ends.new_zeros(ends.shape[0], 1), ends[:, :-1]], -1)
    frac = torch.rand(ends.shape, dtype=torch.float64)
    t = starts + frac * (ends - starts)
    inside = (ends > starts) & (t < ends)
    filt = (torch.exp(-(ends - t).unsqueeze(-1) / kappa) .unsqueeze(-1) * g).sum(-2)
    drive = LookaheadDrive(obs, weight, kappa, [2, 3], 4, T).drive(t)[..., 2:]
    assert torch.allclose(filt[inside], drive[inside], atol=1e-10, rtol=1e-8)


def test_lookahead_guide_starts_as_separate_guide_and_learns():
    obs = _data().float()
    pyro.clear_param_store()
    torch.manual_seed(3)
    snn = SNN(2, 2, T, guide_type="lookahead")
    q = snn.hidden_process(obs, guide=True)
    torch.manual_seed(4)
    hidden = q.sample()
    # zero look-ahead weights: the density of the same-architecture separate guide
    plain = snn._process(snn.hidden_neurons, obs, snn.guide_bias, snn.guide_weight)
    assert torch.allclose(q.log_prob(hidden), plain.log_prob(hidden), atol=1e-4, rtol=1e-5)
    for estimator in ("pathwise", "reinforce"):
        grads = elbo_gradients(snn, obs, estimator, 2)
        g = grads["lookahead_weight"]
        assert torch.isfinite(g).all() and float(g.abs().sum()) > 0


def test_lookahead_density_gradient_matches_finite_differences():
    obs = _data()
    torch.manual_seed(5)
    weight = (0.5 * torch.randn(2, 2, 2, dtype=torch.float64)).requires_grad_()
    kappa = torch.tensor([0.7, 2.0], dtype=torch.float64)
    snn = kajino_ground_truth(1, num_observed=2, num_hidden=2, duration=T)
    bias, w = snn.bias.detach().double(), snn.weight.detach().double()
    from pyro_spikes.distributions import SpikingPointProcess

    def make(a):
        return SpikingPointProcess(bias, w, snn.time_constants.double(), T, 5.0, neurons=[2, 3],
                                   context=obs, stimulus=LookaheadDrive(obs, a, kappa, [2, 3],
                                                                        4, T))
    torch.manual_seed(6)
    hidden = make(weight.detach()).sample()
    assert torch.autograd.gradcheck(lambda a: make(a).log_prob(hidden).sum(), (weight,),
                                    eps=1e-6, atol=1e-5)


def test_smc_with_lookahead_guide_matches_importance_sampling():
    """Both estimators use the look-ahead guide as proposal and are unbiased for p(J_O): on a
    short window their mean estimates agree within 4 combined standard errors."""
    import math
    obs = _data()[:2, :, :].float()
    pyro.clear_param_store()
    torch.manual_seed(7)
    snn = SNN(2, 2, T, guide_type="lookahead")
    snn.lookahead_weight = 0.5 * torch.randn(2, 2, 2)

    def mean_se(runs):
        z = runs.double().exp()
        return math.log(float(z.mean())), float(z.std() / z.mean()) / math.sqrt(z.numel())

    torch.manual_seed(8)
    smc = torch.stack([snn.log_marginal(obs, 1000) for _ in range(6)])
    is_ = torch.stack([snn.log_marginal(obs, 2000, method="is") for _ in range(3)])
    for k in range(obs.shape[0]):
        (a, sa), (b, sb) = mean_se(smc[:, k]), mean_se(is_[:, k])
        assert abs(a - b) < 4 * math.hypot(sa, sb) + 0.02, (k, a, b, sa, sb)


def test_drive_inputs_shapes_and_derived_drives():
    obs = _data()  # (3, C, 3): 3 sequences, 2 observed neurons
    torch.manual_seed(2)
    weight = torch.randn(2, 2, 2, dtype=torch.float64)
    kappa = torch.tensor([0.7, 2.0], dtype=torch.float64)
    drive = LookaheadDrive(obs, weight, kappa, [2, 3], 4, T)
    t = torch.rand(3, 20, dtype=torch.float64) * T
    want = drive.drive(t)
    # Python numbers and float32 spikes are taken in the weight's dtype
    loose = LookaheadDrive(obs.float(), weight, [0.7, 2.0], (2, 3), 4, T)
    assert torch.equal(loose.drive(t.tolist()), want)
    assert drive.batch_shape == (3,)
    # one set of query times for every sequence broadcasts against the batch
    assert torch.equal(drive.drive(t[0]), drive.drive(t[0].expand(3, -1)))
    assert torch.allclose(drive.with_tensors(2 * weight).drive(t), 2 * want, rtol=1e-14)
    # the breakpoints are the observed spike times (clipped to a duration when given)
    assert torch.equal(drive.breakpoints(), obs[..., 0])
    inner = drive.breakpoints(T / 2)
    assert float(inner.max()) <= T / 2 and inner.shape[0] == 3
    for bad in ([0.0, 1.0], [float("inf"), 1.0], [-1.0, 1.0]):
        with pytest.raises(ValueError, match="^time_constants must be positive and finite"):
            LookaheadDrive(obs, weight, bad, [2, 3], 4, T)
