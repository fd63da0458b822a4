"""
The compensator's adaptive quadrature (issue 12, item 3): each interval takes the fewest
Gauss-Legendre nodes whose error bound per unit length is at most the fixed rule's, so the
compensator keeps the fixed rule's accuracy while a busy recording's short intervals take
2-4 nodes.
"""

import math

import pytest
import torch

from pyro_spikes.distributions import SpikingPointProcess
from pyro_spikes.distributions.spiking import _log_rule_error, _quadrature_rules

DT = torch.float64


def _epsilon(q, length, scale):
    """The rule's error bound per unit length (see _quadrature_rules)."""
    return math.exp(2 * q * math.log(length / scale) + _log_rule_error(q))


@pytest.mark.parametrize("order,max_step,scale", [(8, 0.05, 0.05), (8, 0.2, 0.1), (4, 1.0, 1.0),
                                                  (12, 0.01, 0.02)])
def test_each_rule_keeps_the_fixed_rules_bound(order, max_step, scale):
    like = torch.zeros((), dtype=DT)
    nodes, weights, thresholds = _quadrature_rules(order, max_step, scale, True, like)
    assert nodes.shape == weights.shape == (order, order) and thresholds.shape == (order,)
    assert bool((thresholds[1:] >= thresholds[:-1]).all()) and math.isinf(thresholds[-1])
    reference = _epsilon(order, max_step, scale)
    for q in range(1, order):
        # rule q (q nodes, zero-padded, weights summing to one) is exact for degree 2q - 1 ...
        assert torch.allclose(weights[q - 1].sum(), like.new_tensor(1.0), atol=1e-14)
        assert bool((weights[q - 1, q:] == 0).all())
        x = nodes[q - 1]
        assert float((weights[q - 1] * x ** (2 * q - 1)).sum()) == pytest.approx(1 / (2 * q))
        # ... and on intervals up to its threshold its bound is at most the fixed rule's
        thr = float(thresholds[q - 1])
        if thr < max_step:
            assert _epsilon(q, thr, scale) <= reference * (1 + 1e-9)
    # without adaptive: the one rule of `order` nodes
    n1, w1, t1 = _quadrature_rules(order, max_step, scale, False, like)
    assert n1.shape == (1, order) and math.isinf(t1[0])


def _busy(d=20, duration=20.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    bias = torch.randn(d, generator=g, dtype=DT) - 1.0
    weight = 0.5 * torch.randn(2, d, d, generator=g, dtype=DT)
    tau = torch.tensor([0.05, 0.5], dtype=DT)
    proc = SpikingPointProcess(bias, weight, tau, duration, upper_bound=20.0)
    torch.manual_seed(seed)
    return bias, weight, tau, proc.sample()


def test_adaptive_compensator_keeps_the_accuracy_with_fewer_nodes(loop_backend):
    bias, weight, tau, x = _busy()
    spikes = int(x[..., 1:].sum())
    assert spikes > 2000  # mean spacing far below the shortest time constant (0.05)

    def run(**kw):
        p = SpikingPointProcess(bias, weight, tau, 20.0, upper_bound=20.0, **kw)
        return p.log_prob(x), p.compensator(x)[-1]

    adaptive, comp_a = run()
    fixed, comp_f = run(adaptive_quadrature=False)
    exact, comp_e = run(adaptive_quadrature=False, quadrature_order=16, max_step=0.005)
    # the fixed rule's accuracy (docstring: relative error of the compensator below 1e-8)
    rel = lambda a, b: float(((a - b).abs() / b.abs()).max())  # noqa: E731
    assert rel(comp_f, comp_e) < 1e-8 and rel(comp_a, comp_e) < 1e-8
    assert abs(float(adaptive - exact)) < 1e-8 * float(comp_e.sum())
    # and the nodes it spends: the rule of every interval between the merged rows
    p = SpikingPointProcess(bias, weight, tau, 20.0, upper_bound=20.0)
    times, _, _, _ = p._rows(x)
    _, w, thresholds = p._quadrature(times)
    rule = torch.searchsorted(thresholds, times.diff().contiguous()).clamp(max=w.shape[0] - 1)
    nodes_used = (w[rule] != 0).sum(-1).double().mean()
    assert nodes_used < 4.0, nodes_used  # against 8 for the fixed rule


def test_adaptive_gradients_equal_the_fixed_rules(loop_backend):
    bias, weight, tau, x = _busy(d=6, duration=10.0, seed=1)
    grads = []
    for adaptive in (True, False):
        b, w = bias.clone().requires_grad_(), weight.clone().requires_grad_()
        lp = SpikingPointProcess(b, w, tau, 10.0, upper_bound=20.0,
                                 adaptive_quadrature=adaptive).log_prob(x)
        grads.append(torch.autograd.grad(lp, [b, w]))
    for a, f in zip(*grads):
        assert torch.allclose(a, f, rtol=1e-7, atol=1e-8)


def test_expand_keeps_the_choice():
    p = SpikingPointProcess(torch.zeros(2), torch.zeros(1, 2, 2), torch.ones(1), 1.0,
                            adaptive_quadrature=False)
    assert p.expand((3,)).adaptive_quadrature is False
