"""
Long recordings: memory and time of the log-likelihood and its gradient
=======================================================================

Two measurements, written to one results file (``--out``, with the command, commit and
machine; ``docs/render_tables.py`` renders the tables of :doc:`recordings` from it):

1. :class:`~pyro_spikes.distributions.SpikingPointProcess` ``log_prob`` + gradient on a
   recording in the index layout, 5 Hz per neuron, :math:`L = 1`: seconds, microseconds per
   spike (and per spike and neuron: flat when the cost per spike grows linearly in :math:`D`)
   and peak resident memory, against the number of neurons :math:`D` at a fixed duration and
   against the duration at :math:`D = 300`; the dense layout once for comparison. Every
   configuration runs in a fresh process, so its peak RSS (``ru_maxrss``) is its own; the
   process's RSS before the evaluation (Python, torch and the data) is reported beside it.
   The compensator's fixed quadrature rule is timed once against the adaptive default.
2. :class:`~pyro_spikes.distributions.HawkesProcess` ``log_prob`` + gradient against tick's
   ``ModelHawkesExpKernLogLik`` ``loss`` + ``grad`` on the same events (a peer run in the same
   process; tick is a benchmark peer only, never a dependency): events per second of the
   first evaluation and of repeated ones, and the check that both compute the same function
   (tick's log-likelihood is relative to a unit-rate Poisson process: ours + :math:`D T`; its
   loss is minus that over the event count, its gradient likewise), both with ``--threads``
   threads (tick splits the neurons over them, ours the one long sequence in time). tick's
   first evaluation computes per-event weights at its fixed decay, two arrays of events x D
   numbers, that later evaluations reuse; the growth of the process's RSS over its evaluations
   is reported. Ours keeps O(D) state and differentiates in the decay too, so every evaluation
   is a first one.

Run ``python benchmarks/recordings.py`` (about 10 minutes on 2 cores; ``--hour`` adds the
one-hour recording of 300 neurons, about 8 more) or ``--quick`` for a smoke test.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
    import pyro_spikes  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

from pyro_spikes.distributions import HawkesProcess, SpikingPointProcess  # noqa: E402
from pyro_spikes.distributions.kernels import compiled_for  # noqa: E402
from pyro_spikes.provenance import write_results  # noqa: E402
from pyro_spikes.spikes import to_dense, unpack_spikes  # noqa: E402

RATE = 5.0  # spikes per second and neuron
TAU = 0.05  # the basis time constant (the quadrature's longest piece)


def rss_mb():
    """Peak resident set size of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb():
    """Resident set size of this process now, in MB (Linux; else the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):
        return rss_mb()


def recording(num_neurons, duration, seed):
    """Poisson spikes at RATE per neuron in the index layout: sorted times, uniform neurons."""
    g = torch.Generator().manual_seed(seed)
    n = int(RATE * num_neurons * duration)
    times = (torch.rand(n, generator=g, dtype=torch.float64) * duration).sort().values
    labels = torch.randint(0, num_neurons, (n,), generator=g).to(torch.float64)
    return torch.stack([times, labels], -1)


def spiking_worker(num_neurons, minutes, layout, seed, threads, adaptive=True):
    """One configuration, in this (fresh) process: a dict of its measurements."""
    torch.set_num_threads(threads)
    duration = 60.0 * minutes
    value = recording(num_neurons, duration, seed)
    if layout == "dense":
        value = to_dense(value, num_neurons)
    g = torch.Generator().manual_seed(seed + 1)
    bias = torch.full((num_neurons,), -2.0, dtype=torch.float64, requires_grad=True)
    weight = (0.01 * torch.randn(1, num_neurons, num_neurons, generator=g,
                                 dtype=torch.float64)).requires_grad_()
    before = rss_mb()
    t0 = time.perf_counter()
    process = SpikingPointProcess(bias, weight, torch.tensor([TAU], dtype=torch.float64),
                                  duration, upper_bound=20.0, layout=layout,
                                  adaptive_quadrature=adaptive)
    lp = process.log_prob(value)
    t1 = time.perf_counter()
    torch.autograd.grad(lp, [bias, weight])
    t2 = time.perf_counter()
    spikes = value.shape[-2]
    return {
        "D": num_neurons, "minutes": minutes, "layout": layout, "spikes": spikes,
        "quadrature": "adaptive" if adaptive else "fixed",
        "forward_s": t1 - t0, "backward_s": t2 - t1,
        "us_per_spike": (t2 - t0) / spikes * 1e6,
        "ns_per_spike_and_neuron": (t2 - t0) / spikes / num_neurons * 1e9,
        "rss_before_mb": before, "peak_rss_mb": rss_mb(), "log_prob": float(lp.detach()),
        "loops": "compiled" if compiled_for(bias) else "torch",
    }


def run_spiking(num_neurons, minutes, layout, args, adaptive=True):
    """:func:`spiking_worker` in a fresh process (its own peak RSS)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker",
           json.dumps([num_neurons, minutes, layout, args.seed, args.threads, adaptive])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    if proc.returncode != 0:
        raise RuntimeError(f"worker {num_neurons} {minutes} {layout} failed:\n{proc.stderr}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  spiking D={row['D']:5d} {row['minutes']:5g} min {row['layout']:5s} "
          f"{row['quadrature']:8s}: "
          f"{row['spikes']:8d} spikes, {row['forward_s'] + row['backward_s']:7.1f} s, "
          f"{row['us_per_spike']:7.1f} us/spike, peak RSS {row['peak_rss_mb']:6.0f} MB "
          f"(before {row['rss_before_mb']:.0f} MB)", flush=True)
    return row


# ---------------------------------------------------------------- Hawkes against tick


def tick_model():
    """tick's ``ModelHawkesExpKernLogLik``, or ``None`` when tick is not installed."""
    try:
        from tick.hawkes import ModelHawkesExpKernLogLik
    except ImportError:
        return None
    # tick 0.8.0.2 on Python 3.11 refuses its own ``dtype`` attribute (its attribute table is
    # parsed from docstrings): declare it, changing nothing else
    for cls in ModelHawkesExpKernLogLik.__mro__:
        info = cls.__dict__.get("_attrinfos")
        if isinstance(info, dict):
            info.setdefault("dtype", {})
    return ModelHawkesExpKernLogLik


def bench_hawkes(num_neurons, events, model_cls, seed, repeats, threads):
    """Our log_prob + gradient and tick's loss + grad on the same ~``events`` events, both
    with ``threads`` threads (ours splits the sequence in time, tick's its neurons)."""
    rng = np.random.default_rng(seed)
    adjacency = rng.uniform(0.0, 1.0, (num_neurons, num_neurons))
    adjacency *= 0.5 / np.abs(np.linalg.eigvals(adjacency)).max()  # branching ratio 0.5
    baseline = np.full(num_neurons, 0.5)
    decay = 2.0
    duration = events / (2 * baseline.sum())  # the stationary rate is twice the baseline's
    mu = torch.tensor(baseline)
    alpha = torch.tensor(adjacency)
    torch.manual_seed(seed)
    value = HawkesProcess(mu, alpha, decay, duration, layout="index").sample()
    value = value[:int((value[:, 1] >= 0).sum())]  # the spikes, no padding
    n = value.shape[0]
    row = {"D": num_neurons, "events": n, "duration": duration}

    def ours():
        m, a = mu.clone().requires_grad_(), alpha.clone().requires_grad_()
        lp = HawkesProcess(m, a, decay, duration, layout="index").log_prob(value)
        gm, ga = torch.autograd.grad(lp, [m, a])
        return float(lp.detach()), np.concatenate([gm.numpy(), ga.numpy().ravel()])

    def timed(fn):
        """(seconds of the first call, best seconds of ``repeats`` later ones, last result)"""
        t0 = time.perf_counter()
        out = fn()
        first, best = time.perf_counter() - t0, float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t0)
        return first, best, out

    first, best, (lp, grad) = timed(ours)
    row.update(ours_first_events_per_s=n / first, ours_events_per_s=n / best)
    if model_cls is not None:
        trains = [np.ascontiguousarray(t.numpy()) for t in
                  unpack_spikes(value, layout="index", num_neurons=num_neurons)]
        coeffs = np.concatenate([baseline, adjacency.ravel()])
        model = model_cls(decay, n_threads=threads)
        model.fit(trains, end_times=duration)
        before = current_rss_mb()
        first, best, (loss, tick_grad) = timed(lambda: (model.loss(coeffs), model.grad(coeffs)))
        want = -(lp + num_neurons * duration) / n
        row.update(tick_first_events_per_s=n / first, tick_events_per_s=n / best,
                   tick_rss_growth_mb=current_rss_mb() - before,
                   ratio_first=row["ours_first_events_per_s"] / (n / first),
                   ratio_repeated=row["ours_events_per_s"] / (n / best),
                   loss_rel_diff=abs(loss - want) / abs(want),
                   grad_max_abs_diff=float(np.abs(tick_grad + grad / n).max()))
    print(f"  hawkes D={num_neurons:4d}: {n} events, ours {row['ours_first_events_per_s']:,.0f}"
          f" / {row['ours_events_per_s']:,.0f} per s (first / repeated)"
          + (f", tick {row['tick_first_events_per_s']:,.0f} / {row['tick_events_per_s']:,.0f}"
             f" (its evaluations grew the RSS by {row['tick_rss_growth_mb']:.0f} MB), loss rel."
             f" diff "
             f"{row['loss_rel_diff']:.1e}, grad diff {row['grad_max_abs_diff']:.1e}"
             if "tick_events_per_s" in row else ", tick is missing"), flush=True)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="Hawkes timings: best of")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--hour", action="store_true",
                        help="also one hour of 300 neurons (5.4M spikes, about 8 minutes)")
    parser.add_argument("--out", default="out/recordings/recordings.json",
                        help="the results file (JSON)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(spiking_worker(*json.loads(args.worker))))
        return 0
    torch.set_num_threads(args.threads)
    if args.quick:
        sizes, minutes, duration_d, durations, hawkes = [4, 8], 0.1, 8, [0.05, 0.1], [(3, 2000)]
    else:
        sizes, minutes, duration_d = [30, 100, 300, 1000], 1.0, 300
        durations = [1.0, 4.0, 10.0] + ([60.0] if args.hour else [])
        hawkes = [(10, 1_000_000), (100, 1_000_000)]
    print("SpikingPointProcess log_prob + gradient, index layout:", flush=True)
    by_neurons = [run_spiking(d, minutes, "index", args) for d in sizes]
    by_duration = [run_spiking(duration_d, m, "index", args) for m in durations]
    dense = run_spiking(duration_d, durations[0], "dense", args)
    fixed = run_spiking(duration_d, durations[0], "index", args, adaptive=False)
    print("HawkesProcess log_prob + gradient against tick:", flush=True)
    model_cls = tick_model()
    hawkes_rows = [bench_hawkes(d, e, model_cls, args.seed, args.repeats, args.threads)
                   for d, e in hawkes]
    results = {
        "settings": {"rate_hz": RATE, "tau": TAU, "num_basis": 1, "threads": args.threads,
                     "quick": args.quick},
        "spiking_by_neurons": by_neurons,
        "spiking_by_duration": by_duration,
        "spiking_dense": dense,
        "spiking_fixed_quadrature": fixed,
        "hawkes": hawkes_rows,
        "tick": "missing" if model_cls is None else __import__("tick").__version__,
    }
    write_results(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
