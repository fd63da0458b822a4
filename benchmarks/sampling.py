"""
Sampling and log_prob benchmarks of the exact point processes
==============================================================

Measures the throughput of :class:`~pyro_spikes.distributions.HawkesProcess` sampling against
the C++ simulator of `tick <https://x-datainitiative.github.io/tick/>`_
(``tick.hawkes.SimuHawkesExpKernels``) on the same 10-neuron model, checks that both produce the
same mean counts per neuron, and measures :class:`~pyro_spikes.distributions.SpikingPointProcess`
sampling and ``log_prob`` throughput for several network sizes. tick is only a benchmark peer
(install it in a separate virtual environment); without it the script reports our figures only.

Run with ``PYTHONPATH=. python benchmarks/sampling.py [--quick] [--out results.json]`` (the
results file, with the command, commit and machine, is what README's and the docs' tables are
rendered from: ``--out docs/results/sampling/sampling.json``); the
sequential loops run compiled when ``pyro_spikes._kernels`` is built (``PYRO_SPIKES_COMPILED=0``
times the PyTorch loops instead).
Timings are the best of ``--repeats`` runs with ``torch.set_num_threads(--threads)``.
"""

import argparse
import math
import os
import platform
import sys
import time

import numpy as np
import torch

try:
    import pyro_spikes  # noqa: F401
except ImportError:  # run from a checkout without PYTHONPATH
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pyro_spikes.distributions import HawkesProcess, SpikingPointProcess  # noqa: E402
from pyro_spikes.distributions.kernels import compiled_for  # noqa: E402
from pyro_spikes.provenance import write_results  # noqa: E402

from machine import cpu_model  # noqa: E402  (benchmarks/machine.py, beside this script)

try:
    import tick
    from tick.hawkes import SimuHawkesExpKernels, SimuHawkesMulti
except ImportError:
    tick = None


def machine_info(threads):
    cpu = cpu_model()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "tick": tick.__version__ if tick is not None else "missing",
        # sequential loops: the C extension, or PyTorch ops (PYRO_SPIKES_COMPILED=0 / not built)
        "loops": "compiled" if compiled_for(torch.zeros((), dtype=torch.float64)) else "torch",
        "load_average_at_start": round(os.getloadavg()[0], 1),
    }


def best_time(fn, repeats):
    """Best wall time over ``repeats`` calls of ``fn`` and the last result."""
    best, out = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


# ---------------------------------------------------------------------- Hawkes vs tick
def hawkes_model(num_neurons, radius, seed):
    rng = np.random.default_rng(seed)
    adjacency = rng.uniform(0.0, 1.0, (num_neurons, num_neurons))
    adjacency *= rng.uniform(size=(num_neurons, num_neurons)) < 0.5
    adjacency *= radius / np.abs(np.linalg.eigvals(adjacency)).max()
    baseline = rng.uniform(0.2, 0.8, num_neurons)
    decay = 2.0
    return baseline, adjacency, decay


def exact_mean_counts(baseline, adjacency, decay, duration):
    """
    :math:`E N(T)` of the linear Hawkes process started empty, uniform decay :math:`\\beta`:
    the mean excitation solves :math:`h' = \\beta (A - I) h + \\beta A \\mu`, :math:`h(0) = 0`,
    so :math:`E N(T) = \\mu T + [T I - M^{-1} (e^{M T} - I)] h^*` with :math:`M = \\beta (A - I)`
    and :math:`h^* = (I - A)^{-1} A \\mu`.
    """
    from scipy.linalg import expm

    eye = np.eye(len(baseline))
    m = decay * (adjacency - eye)
    h_star = np.linalg.solve(eye - adjacency, adjacency @ baseline)
    integral = duration * h_star - np.linalg.solve(m, (expm(m * duration) - eye) @ h_star)
    return baseline * duration + integral


def tick_counts(timestamps):
    return np.array([[len(ts) for ts in realisation] for realisation in timestamps], dtype=float)


def tick_loop(baseline, adjacency, decay, duration, batch, seed):
    timestamps = []
    for i in range(batch):
        sim = SimuHawkesExpKernels(adjacency, decay, baseline=baseline, end_time=duration,
                                   seed=seed + i, verbose=False)
        sim.simulate()
        timestamps.append(sim.timestamps)
    return tick_counts(timestamps)


def tick_multi(baseline, adjacency, decay, duration, batch, seed, threads):
    sim = SimuHawkesExpKernels(adjacency, decay, baseline=baseline, end_time=duration,
                               seed=seed, verbose=False)
    multi = SimuHawkesMulti(sim, n_simulations=batch, n_threads=threads)
    multi.simulate()
    return tick_counts(multi.timestamps)


def bench_hawkes(args, rows, checks):
    d = 10
    baseline, adjacency, decay = hawkes_model(d, 0.6, args.seed)
    mean_rate = np.linalg.solve(np.eye(d) - adjacency, baseline).sum()
    target = 600 if args.quick else 3000
    duration = round(target / mean_rate, 1)
    process = HawkesProcess(torch.tensor(baseline), torch.tensor(adjacency), decay, duration)
    print(f"\nHawkes: D={d}, spectral radius 0.6, decay={decay}, T={duration} "
          f"(~{mean_rate * duration:.0f} events per sequence), float64")
    ours_counts = tick_all = None
    for batch in ([1, 64] if args.quick else [1, 64, 256]):
        torch.manual_seed(args.seed)
        t_ours, x = best_time(lambda: process.sample((batch,)), args.repeats)
        counts = x[..., 1:].sum(-2).numpy()
        row = {"process": "Hawkes", "D": d, "batch": batch, "T": duration,
               "events_per_seq": float(counts.sum(-1).mean()),
               "ours_events_per_s": counts.sum() / t_ours}
        if tick is not None:
            t_loop, c_loop = best_time(
                lambda: tick_loop(baseline, adjacency, decay, duration, batch, args.seed + 1),
                args.repeats)
            t_multi, c_multi = best_time(
                lambda: tick_multi(baseline, adjacency, decay, duration, batch, args.seed + 1,
                                   args.threads), args.repeats)
            row["tick_loop_events_per_s"] = c_loop.sum() / t_loop
            row["tick_multi_events_per_s"] = c_multi.sum() / t_multi
            fastest = "loop" if t_loop <= t_multi else f"SimuHawkesMulti(n_threads={args.threads})"
            row["tick_best"] = fastest
            row["ratio_ours_over_tick"] = row["ours_events_per_s"] / max(
                row["tick_loop_events_per_s"], row["tick_multi_events_per_s"])
            tick_all = c_loop
        ours_counts = counts
        rows.append(row)
        print(" | ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in row.items()))
    if tick is None:
        print("tick is missing: reporting our sampler only (pip install tick in a separate venv)")
        return
    # agreement: mean counts per neuron of independent samples from both simulators
    n_check = 256 if args.quick else 1024
    torch.manual_seed(args.seed + 7)
    ours = process.sample((n_check,))[..., 1:].sum(-2).numpy()
    theirs = tick_loop(baseline, adjacency, decay, duration, n_check, args.seed + 10_000)
    se = np.sqrt(ours.var(0, ddof=1) / len(ours) + theirs.var(0, ddof=1) / len(theirs))
    z = (ours.mean(0) - theirs.mean(0)) / se
    ok = bool(np.abs(z).max() < 4.0)
    exact = exact_mean_counts(baseline, adjacency, decay, duration)
    z_ours = (ours.mean(0) - exact) / np.sqrt(ours.var(0, ddof=1) / len(ours))
    z_tick = (theirs.mean(0) - exact) / np.sqrt(theirs.var(0, ddof=1) / len(theirs))
    print(f"agreement with tick ({n_check} sequences each): mean counts ours "
          f"{np.round(ours.mean(0), 1).tolist()}\n  tick {np.round(theirs.mean(0), 1).tolist()}"
          f"\n  exact {np.round(exact, 1).tolist()}"
          f"\n  z(ours - tick) {np.round(z, 2).tolist()} -> max |z| = {np.abs(z).max():.2f} "
          f"({'PASS' if ok else 'FAIL'}, threshold 4)"
          f"\n  max |z| vs exact mean: ours {np.abs(z_ours).max():.2f}, "
          f"tick {np.abs(z_tick).max():.2f}")
    checks.append({"check": "hawkes mean counts vs tick", "sequences": n_check,
                   "ours_mean": ours.mean(0).tolist(), "tick_mean": theirs.mean(0).tolist(),
                   "exact_mean": exact.tolist(), "max_abs_z": float(np.abs(z).max()),
                   "max_abs_z_ours_vs_exact": float(np.abs(z_ours).max()),
                   "max_abs_z_tick_vs_exact": float(np.abs(z_tick).max()), "pass": ok})


# ---------------------------------------------------------------------- spiking process
SPIKING_SETTINGS = {
    # D: (duration, batch); a = 5, L = 2, tau = (0.5, 2.0)
    6: (400.0, 128),
    64: (40.0, 32),
    256: (5.0, 8),
}


def spiking_model(d, seed):
    g = torch.Generator().manual_seed(seed)
    bias = torch.rand(d, generator=g, dtype=torch.float64) - 1.0
    weight = (torch.rand(2, d, d, generator=g, dtype=torch.float64) * 2 - 1) * (2 / math.sqrt(d))
    weight[:, range(d), range(d)] = -1.0
    tau = torch.tensor([0.5, 2.0], dtype=torch.float64)
    return bias, weight, tau


def bench_spiking(args, rows):
    a = 5.0
    print(f"\nSpikingPointProcess: a={a}, L=2, tau=(0.5, 2.0), float64")
    for d, (duration, batch) in SPIKING_SETTINGS.items():
        if args.quick:
            duration, batch = duration / 4, max(batch // 4, 1)
        bias, weight, tau = spiking_model(d, args.seed)
        process = SpikingPointProcess(bias, weight, tau, duration, a)
        torch.manual_seed(args.seed)
        t_sample, x = best_time(lambda: process.sample((batch,)), args.repeats)
        num_events = float(x[..., 1:].sum())
        with torch.no_grad():
            t_lp, lp = best_time(lambda: process.log_prob(x), args.repeats)
        assert torch.isfinite(lp).all()
        row = {"process": "Spiking", "D": d, "batch": batch, "T": duration, "a": a,
               "capacity": process.capacity, "events_per_seq": num_events / batch,
               "sample_s": t_sample, "sample_events_per_s": num_events / t_sample,
               "log_prob_s": t_lp, "log_prob_evals_per_s": batch / t_lp,
               "log_prob_events_per_s": num_events / t_lp}
        rows.append(row)
        print(" | ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in row.items()))


def fmt(v):
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return str(v)


def markdown(info, rows, checks):
    lines = ["**Machine:** " + ", ".join(f"{k} {v}" for k, v in info.items()), ""]
    hawkes = [r for r in rows if r["process"] == "Hawkes"]
    if hawkes:
        with_tick = "tick_loop_events_per_s" in hawkes[0]
        head = ["batch", "T", "events/seq", "ours events/s"]
        if with_tick:
            head += ["tick loop events/s", "tick Multi events/s", "ours / best tick"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in hawkes:
            vals = [r["batch"], r["T"], r["events_per_seq"], r["ours_events_per_s"]]
            if with_tick:
                vals += [r["tick_loop_events_per_s"], r["tick_multi_events_per_s"],
                         f"{r['ratio_ours_over_tick']:.2f}"]
            lines.append("| " + " | ".join(fmt(v) for v in vals) + " |")
        if not with_tick:
            lines.append("\n(tick missing: no comparison)")
        for c in checks:
            lines.append(f"\nAgreement with tick: max |z| of mean counts per neuron = "
                         f"{c['max_abs_z']:.2f} over {c['sequences']} sequences each "
                         f"({'PASS' if c['pass'] else 'FAIL'}, threshold 4); against the exact "
                         f"mean: ours {c['max_abs_z_ours_vs_exact']:.2f}, "
                         f"tick {c['max_abs_z_tick_vs_exact']:.2f}")
        lines.append("")
    spiking = [r for r in rows if r["process"] == "Spiking"]
    if spiking:
        head = ["D", "T", "batch", "capacity", "events/seq", "sample events/s", "sample s",
                "log_prob evals/s", "log_prob events/s", "log_prob s"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in spiking:
            vals = [r["D"], r["T"], r["batch"], r["capacity"], r["events_per_seq"],
                    r["sample_events_per_s"], r["sample_s"], r["log_prob_evals_per_s"],
                    r["log_prob_events_per_s"], r["log_prob_s"]]
            lines.append("| " + " | ".join(fmt(v) for v in vals) + " |")
    return "\n".join(lines)


def main(args):
    torch.set_num_threads(args.threads)
    info = machine_info(args.threads)
    print("machine:", info)
    if tick is None:
        print("tick is missing: the comparison with tick is skipped")
    rows, checks = [], []
    if not args.skip_hawkes:
        bench_hawkes(args, rows, checks)
    if not args.skip_spiking:
        bench_spiking(args, rows)
    info["load_average_at_end"] = round(os.getloadavg()[0], 1)
    table = markdown(info, rows, checks)
    print("\n" + table)
    if args.out:  # values with the command, commit and machine (docs/render_tables.py)
        write_results(args.out, {"machine": info, "rows": rows, "checks": checks})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="small sizes, for smoke tests")
    parser.add_argument("--skip-hawkes", action="store_true")
    parser.add_argument("--skip-spiking", action="store_true")
    parser.add_argument("--out", default=None, help="write the results as JSON to this file")
    main(parser.parse_args())
