"""
The failure cases of issue 13, each pinned by a known answer: named errors instead of crashes,
hangs or unbounded allocations; torch broadcasting of the Hawkes decay; float32 sampling
counts; NaN checks of user noise and query times; argument names in messages.
"""

import math
import os
import subprocess
import sys

import pytest
import torch

from pyro_spikes import select_neurons
from pyro_spikes.distributions import (
    HawkesProcess,
    PoissonProcess,
    RelaxedPointProcess,
    SpikingPointProcess,
    StochasticLIF,
    exp_decay_scan,
    kernels,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def in_subprocess(code, compiled=True, timeout=120):
    """Run ``code`` in a fresh interpreter: (returncode, output); a crash cannot kill pytest."""
    env = dict(os.environ, PYRO_SPIKES_COMPILED="1" if compiled else "0", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", "import torch\n" + code], env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


# the calls that used to segfault (compiled) or fail inside torch: now a named ValueError
CRASHERS = {
    "exp_decay_scan no rows": (
        "from pyro_spikes.distributions import exp_decay_scan as s\n"
        "print(s(torch.zeros(3, 0), torch.zeros(3, 1, 0, 2), torch.ones(3, 1)).shape)",
        "torch.Size([3, 1, 0, 2])"),
    "SpikingPointProcess D=0": (
        "from pyro_spikes.distributions import SpikingPointProcess as S\n"
        "S(torch.zeros(0), torch.zeros(1, 0, 0), torch.ones(1), 1.0).sample()", "bias"),
    "SpikingPointProcess L=0": (
        "from pyro_spikes.distributions import SpikingPointProcess as S\n"
        "S(torch.zeros(2), torch.zeros(0, 2, 2), torch.ones(0), 1.0)", "time_constants"),
    "thinning_loop bad mode": (
        "from pyro_spikes.distributions import kernels as k\n"
        "k.thinning_loop(torch.zeros(2, 3), torch.ones(2, 4, 1), torch.zeros(3, 1, 3),"
        " torch.ones(2, 4), 7, torch.zeros(2, 4))", "mode"),
    "thinning_loop no neurons": (
        "from pyro_spikes.distributions import kernels as k\n"
        "k.thinning_loop(torch.zeros(2, 0), torch.ones(2, 4, 1), torch.zeros(0, 1, 0),"
        " torch.ones(2, 4), k.EXACT, torch.zeros(2, 4))", "weight"),
    "hawkes_chunk state of another batch size": (
        "from pyro_spikes.distributions import kernels as k\n"
        "mu = torch.ones(3, 2)\n"
        "k.hawkes_chunk(mu, mu.cumsum(-1), -torch.ones(3, 1), torch.zeros(3, 2),"
        " torch.zeros(1, 2), torch.zeros(3, dtype=torch.float64), torch.ones(3, 10),"
        " torch.rand(3, 10), 1.0)", "state"),
    "spiking_terms quadrature tables of different lengths": (
        "from pyro_spikes.distributions import kernels as k\n"
        "from pyro_spikes.distributions.spiking import _likelihood_sums_torch as f\n"
        "k.spiking_terms(torch.rand(2, 5).sort(-1).values, torch.zeros(2, 5, 2),"
        " torch.zeros(2, 2), torch.zeros(1, 2, 2), torch.ones(2, 1), torch.ones(2),"
        " torch.rand(8), torch.rand(3), f)", "qweights"),
    "spiking_terms labels out of range": (
        "from pyro_spikes.distributions import kernels as k\n"
        "from pyro_spikes.distributions.spiking import _likelihood_sums_torch as f\n"
        "k.spiking_terms(torch.rand(2, 5).sort(-1).values, torch.full((2, 5), 7),"
        " torch.zeros(2, 2), torch.zeros(1, 2, 2), torch.ones(2, 1), torch.ones(2),"
        " torch.rand(3), torch.rand(3), f)", "marks"),
}


@pytest.mark.skipif(not kernels.has_compiled_loops(), reason="_kernels not built")
def test_former_crashes_raise_named_errors():
    """All cases in one subprocess (one interpreter start): each prints its outcome."""
    lines = []
    for i, (name, (code, _)) in enumerate(sorted(CRASHERS.items())):
        body = "\n".join("    " + line for line in code.splitlines())
        lines.append(f"try:\n{body}\nexcept (ValueError, TypeError) as e:\n"
                     f"    print('CASE{i}', type(e).__name__, e)\nelse:\n    print('CASE{i} ok')")
    rc, out = in_subprocess("\n".join(lines))
    assert rc == 0, f"exit status {rc} (negative: killed by that signal):\n{out}"
    for i, (name, (_, expected)) in enumerate(sorted(CRASHERS.items())):
        got = [line for line in out.splitlines() if line.startswith(f"CASE{i} ")]
        assert got, f"{name}: no outcome\n{out}"
        # an error names the argument; a success printed the expected result
        assert expected in got[0] or (got[0].endswith(" ok") and expected in out), (name, out)


def test_negative_decay_without_validation_ends():
    """A negative decay made Ogata's thinning run forever (validation off): now refused."""
    p = HawkesProcess(torch.ones(2), 0.3 * torch.ones(2, 2), -1.0, 10.0, capacity=100,
                      validate_args=False)
    with pytest.raises(ValueError, match="decay"):
        p.sample()


@pytest.mark.parametrize("param", ["decay", "baseline"])
def test_infinite_parameters_rejected(param):
    kwargs = dict(baseline=torch.ones(2), adjacency=0.3 * torch.ones(2, 2), decay=1.0)
    kwargs[param] = kwargs[param] * math.inf if param == "baseline" else math.inf
    with pytest.raises(ValueError, match=param):
        HawkesProcess(duration=10.0, capacity=50, validate_args=True, **kwargs)
    with pytest.raises(ValueError, match="time_constants"):
        SpikingPointProcess(torch.zeros(2), torch.zeros(1, 2, 2), torch.tensor([math.inf]), 1.0,
                            validate_args=True)


def test_hopeless_allocations_fail_early():
    # a quadrature grid of T / tau rows for tau = 1e-9 (1e10 rows)
    p = SpikingPointProcess(torch.zeros(2), torch.zeros(1, 2, 2), torch.tensor([1e-9]), 10.0,
                            capacity=10)
    x = torch.tensor([[10.0, 0.0, 0.0]]).expand(10, 3)
    with pytest.raises(ValueError, match="time_constants"):
        p.log_prob(x)
    # a Poisson draw of ~1e10 events
    with pytest.raises(ValueError, match="rate"):
        PoissonProcess(torch.tensor([1e10]), 1.0).sample()
    # a Hawkes process whose default capacity cannot be allocated
    with pytest.raises(ValueError, match="capacity"):
        HawkesProcess(torch.tensor([1e30]), torch.zeros(1, 1), 1.0, 1.0).sample()


@pytest.mark.parametrize("decay_shape", [(2,), (2, 1), (1, 2), (3, 1, 2)])
def test_hawkes_decay_broadcasts_like_torch(decay_shape):
    g = torch.Generator().manual_seed(0)
    decay = 0.5 + torch.rand(decay_shape, generator=g, dtype=torch.float64) * 3
    baseline = torch.tensor([0.8, 0.5], dtype=torch.float64)
    adjacency = torch.tensor([[0.2, 0.3], [0.1, 0.4]], dtype=torch.float64)
    explicit = decay.expand(torch.broadcast_shapes(decay.shape, (2, 2)))
    p = HawkesProcess(baseline, adjacency, decay, 20.0, capacity=200)
    q = HawkesProcess(baseline, adjacency, explicit.contiguous(), 20.0, capacity=200)
    assert p.batch_shape == q.batch_shape
    assert torch.equal(p.decay, q.decay)
    x = q.sample()
    assert torch.allclose(p.log_prob(x), q.log_prob(x), rtol=1e-12)
    with pytest.raises(ValueError, match="decay"):
        HawkesProcess(baseline, adjacency, torch.ones(3, dtype=torch.float64), 20.0)


@pytest.mark.parametrize("process", ["poisson", "hawkes"])
def test_float32_counts_match_theory(process, loop_backend):
    """Long float32 runs (times accumulated in float64): the mean count per sequence is within
    5 standard errors of theory, and every train is sorted with times in [0, T]."""
    torch.manual_seed(0)
    duration = 2000.0
    if process == "poisson":
        p = PoissonProcess(torch.tensor([3.0, 2.0]), duration)
        mean, var = 5.0 * duration, 5.0 * duration
    else:
        mu, alpha = torch.tensor([1.5, 1.0]), torch.tensor([[0.2, 0.1], [0.1, 0.2]])
        p = HawkesProcess(mu, alpha, 3.0, duration if loop_backend == "compiled" else 200.0)
        duration = p.duration
        rate = torch.linalg.solve(torch.eye(2, dtype=torch.float64) - alpha.double(),
                                  mu.double())
        mean = float(rate.sum()) * duration
        var = mean / (1 - 0.3) ** 2  # the Hawkes count variance (branching ratio 0.3)
    x = p.sample((8,))
    assert x.dtype == torch.float32
    counts = x[..., 1:].sum((-1, -2)).double()
    assert abs(float(counts.mean()) - mean) < 5 * math.sqrt(var / 8), (counts, mean)
    t = x[..., 0]
    assert bool((t[..., 1:] >= t[..., :-1]).all()) and bool((t >= 0).all() & (t <= duration).all())


def test_slif_noise_must_be_finite():
    p = StochasticLIF(torch.tensor([2.0, 1.5]), duration=1.0, noise_scale=0.1)
    for bad in (math.nan, math.inf):
        noise = p.sample_noise()
        noise["brownian"][3, 1] = bad
        with pytest.raises(ValueError, match=r"noise\['brownian'\]"):
            p.rsample(noise=noise)


def test_intensity_refuses_nan_query_times():
    p = PoissonProcess(torch.ones(2), 1.0)
    x = p.sample()
    with pytest.raises(ValueError, match="t must"):
        p.intensity(x, torch.tensor([0.5, math.nan]))


def test_select_neurons_indices():
    x = PoissonProcess(torch.ones(3), 1.0).sample((2,))
    for bad in ([3], [-1], [0, 0]):
        with pytest.raises(ValueError, match="neurons"):
            select_neurons(x, bad, 1.0)
    with pytest.raises(TypeError, match="neurons"):
        select_neurons(x, [0.5], 1.0)
    assert torch.equal(select_neurons(x, [0, 1, 2], 1.0), x)


def test_parameter_dtypes_must_agree():
    with pytest.raises(TypeError, match="weight"):
        SpikingPointProcess(torch.zeros(2), torch.zeros(1, 2, 2, dtype=torch.float64),
                            torch.ones(1), 1.0)
    with pytest.raises(TypeError, match="decay"):
        HawkesProcess(torch.ones(2), torch.zeros(2, 2), torch.ones(2, 2, dtype=torch.float64),
                      1.0)


def test_caller_names_in_messages():
    """A caller (the SNN model) can have errors name its own arguments."""
    bad = torch.tensor([[[-1.0, 1.0, 0.0]]])
    with pytest.raises(ValueError, match="observed"):
        SpikingPointProcess(torch.zeros(3), torch.zeros(1, 3, 3), torch.ones(1), 1.0,
                            neurons=[2], context=bad, validate_args=True,
                            arg_names={"context": "observed"})
    p = SpikingPointProcess(torch.zeros(2), torch.full((1, 2, 2), 0.0), torch.ones(1), 10.0,
                            capacity=2, arg_names={"capacity": "hidden_capacity"})
    with pytest.raises(ValueError, match="hidden_capacity=2 exceeded"):
        p.sample()
    r = RelaxedPointProcess(SpikingPointProcess(torch.zeros(2), torch.zeros(1, 2, 2),
                                                torch.ones(1), 1.0), 0.5)
    assert torch.isfinite(r.log_prob(r.rsample())).all()


def test_empty_batches():
    """A batch of size zero is legal: samples and log densities of shape (0,)."""
    for p in (PoissonProcess(torch.ones(0, 2), 1.0, validate_args=True),
              HawkesProcess(torch.ones(0, 2), torch.zeros(0, 2, 2), 1.0, 1.0, capacity=5,
                            validate_args=True),
              SpikingPointProcess(torch.zeros(0, 2), torch.zeros(1, 2, 2), torch.ones(1), 1.0,
                                  validate_args=True)):
        x = p.sample()
        assert x.shape[0] == 0 and p.log_prob(x).shape == (0,)


def test_exp_decay_scan_shapes_named():
    with pytest.raises(ValueError, match="rows"):
        exp_decay_scan(torch.zeros(3, 4), torch.zeros(3, 1, 5, 2), torch.ones(3, 1))
    with pytest.raises(TypeError, match="rates"):
        exp_decay_scan(torch.zeros(3, 4), torch.zeros(3, 1, 4, 2),
                       torch.ones(3, 1, dtype=torch.float64))
