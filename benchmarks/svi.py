"""
Seconds per ELBO gradient estimate of an SNN with hidden neurons, path-wise vs REINFORCE.

The set-up is Kajino's (2021, ICML) synthetic experiment: 2 observed + 4 hidden neurons, fully
connected, 2 basis functions, upper bound a = 5, 10 sequences of T = 50 from the random
data-generating network (:func:`pyro_spikes.models.paper.kajino_ground_truth`). One gradient
estimate is ``elbo.loss_and_grads(model, guide, observed, ...)`` at the initial parameters of
a fresh model (the optimiser update, negligible, is left out). Kajino's published code takes
about 37 s (path-wise) and 15 s (score function) per gradient; the target here is <= 0.1 s.

Prints a markdown table (median and minimum over ``--repeats`` estimates after one warm-up, wall
clock and process CPU time) with the machine: CPU model, cores, torch version, threads. The
sequential thinning loops run compiled (``pyro_spikes._kernels``) or as PyTorch operations:
``--loops compiled,torch`` times both in the same process.
``--quick`` shrinks the problem (2 sequences, T = 10) for smoke tests.
"""

import argparse
import os
import platform
import statistics
import time

import pyro
import torch
from pyro.infer import Trace_ELBO

from pyro_spikes.distributions.kernels import compiled_loops, has_compiled_loops
from pyro_spikes.models import SNN
from pyro_spikes.models.paper import kajino_ground_truth
from pyro_spikes.models.training import ESTIMATORS

from pyro_spikes.provenance import write_results
from machine import cpu_model  # benchmarks/machine.py, beside this script

# the three estimators of pyro_spikes.models.training, and the path-wise one with the prior
# guide's identical hidden densities skipped (SNN.model/guide cancel_hidden=True)
BENCH_ESTIMATORS = dict(ESTIMATORS, pathwise_cancel=(Trace_ELBO, {"relaxed": True,
                                                                  "cancel_hidden": True}))
LABELS = {
    "pathwise": "path-wise (relaxed, Trace_ELBO)",
    "pathwise_cancel": "path-wise, cancel_hidden=True",
    "reinforce": "REINFORCE (Trace_ELBO)",
    "reinforce_baseline": "REINFORCE + baseline (TraceGraph_ELBO)",
}


def time_gradients(snn, observed, estimator, repeats, temperature=0.3):
    elbo_class, kwargs = BENCH_ESTIMATORS[estimator]
    elbo = elbo_class()
    model, guide = snn.model, snn.guide
    wall, cpu = [], []
    for i in range(repeats + 1):
        for p in snn.parameters():
            p.grad = None
        start, start_cpu = time.perf_counter(), time.process_time()
        elbo.loss_and_grads(model, guide, observed, temperature=temperature, **kwargs)
        if i:  # the first call is a warm-up
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def main(args):
    torch.set_num_threads(args.num_threads)
    num_sequences, duration = (2, 10.0) if args.quick else (args.num_sequences, args.duration)
    pyro.set_rng_seed(args.seed)
    truth = kajino_ground_truth(args.seed, duration=duration, upper_bound=args.upper_bound)
    observed, _ = truth.simulate(num_sequences)
    loops = args.loops.split(",")
    for loop in loops:
        if loop not in ("compiled", "torch"):
            raise ValueError(f"--loops: unknown {loop!r}, choose from compiled, torch")
        if loop == "compiled" and not has_compiled_loops():
            raise RuntimeError("--loops compiled: pyro_spikes._kernels was not built")
    rows = []
    for loop in loops:
        for name in args.estimators.split(","):
            if name not in BENCH_ESTIMATORS:
                raise ValueError(f"--estimators: unknown {name!r}, choose from "
                                 f"{sorted(BENCH_ESTIMATORS)}")
            pyro.clear_param_store()
            pyro.set_rng_seed(args.seed + 1)
            snn = SNN(truth.num_observed, truth.num_hidden, duration, upper_bound=args.upper_bound)
            with compiled_loops(loop == "compiled"):
                wall, cpu = time_gradients(snn, observed, name, args.repeats)
            rows.append((name, loop, wall, cpu))

    print(f"# SVI gradient estimate, {num_sequences} sequences, T = {duration:g}, "
          f"a = {args.upper_bound:g}, 2 observed + 4 hidden neurons")
    print()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"pyro {pyro.__version__}, {torch.get_num_threads()} torch thread(s), "
          f"Python {platform.python_version()}; load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print()
    print("| estimator | loops | median s (wall) | min s (wall) | median s (CPU) | repeats |")
    print("|---|---|---:|---:|---:|---:|")
    for name, loop, wall, cpu in rows:
        print(f"| {LABELS[name]} | {loop} | {statistics.median(wall):.3f} | {min(wall):.3f} | "
              f"{statistics.median(cpu):.3f} | {len(wall)} |")
    print()
    for loop in loops:
        med = {name: statistics.median(wall) for name, lp, wall, _ in rows if lp == loop}
        if "pathwise" in med and "reinforce" in med:
            print(f"path-wise / REINFORCE ({loop} loops): {med['pathwise'] / med['reinforce']:.2f}x")
    print()
    print("Kajino's published code: ~37 s (path-wise), ~15 s (score function); target <= 0.1 s.")
    if args.out:  # values with the command, commit and machine (docs/render_tables.py)
        write_results(args.out, {
            "settings": {"num_sequences": num_sequences, "duration": duration,
                         "upper_bound": args.upper_bound, "repeats": args.repeats,
                         "num_observed": truth.num_observed, "num_hidden": truth.num_hidden,
                         "load_average": list(os.getloadavg())},
            "rows": [{"estimator": name, "label": LABELS[name], "loops": loop,
                      "median_wall_s": statistics.median(wall), "min_wall_s": min(wall),
                      "median_cpu_s": statistics.median(cpu), "repeats": len(wall)}
                     for name, loop, wall, cpu in rows],
            # what Kajino (2021) reports for his published implementation (not run here)
            "kajino_reported_s": {"pathwise": 37.0, "reinforce": 15.0, "ratio": 2.8},
        })
        print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--num-sequences", type=int, default=10)
    parser.add_argument("--duration", type=float, default=50.0)
    parser.add_argument("--upper-bound", type=float, default=5.0)
    parser.add_argument("--estimators",
                        default="pathwise,pathwise_cancel,reinforce,reinforce_baseline")
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--loops", default="compiled" if has_compiled_loops() else "torch",
                        help="comma-separated: compiled (C extension, CPU) and/or torch")
    parser.add_argument("--quick", action="store_true", help="2 sequences, T = 10 (smoke test)")
    parser.add_argument("--out", default=None,
                        help="results file (JSON with the command, commit and machine)")
    main(parser.parse_args())
