"""
Training time of path-wise and REINFORCE SVI against the upper bound
=====================================================================

The relaxed point process of Kajino (2021, "A Differentiable Point Process with Its
Application to Spiking Neural Networks", ICML, Section 5.3) replaces every accept/reject
decision of thinning by a concrete mark, so a relaxed sample keeps *all* candidates of the
homogeneous bound process, about :math:`a D_H T` of them, while an exact sample keeps only
the accepted spikes. Both samplers step through the candidates one by one, but the path-wise
estimator also back-propagates through this loop and evaluates the hidden factor at every
candidate, so its cost grows with the upper bound :math:`a`. The paper reports a 2.8-fold
overhead of the path-wise estimator over REINFORCE.

For each upper bound in ``--upper-bounds`` this script simulates 10 sequences of Kajino's
synthetic network (2 observed + 4 hidden neurons, :math:`T = 50`, that bound) and times
``--num-steps`` SVI steps (after one warm-up step) of each estimator from the same initial
model; it prints the median seconds per step (wall clock and CPU) and plots them against
:math:`a`. The paper sweeps :math:`a = 1, 3, \\dots, 19`
(``--upper-bounds 1,3,5,7,9,11,13,15,17,19``); that sweep's table is on the page
:doc:`/kajino`.

The output below is the docs build's smoke run (2 sequences, :math:`T = 10`, one timed step,
``docs/gallery_argv.py``): a few milliseconds of CPU per step, so its ratios are noise on a
shared machine; they are not the measurement.

.. results: example-time-training_time

At its defaults this example runs in 10 s (peak memory 386 MB) on 2 cores (AMD EPYC), commit 1f76e9a2a9; measured by ``python benchmarks/examples.py``.

.. end results
"""

import argparse
import os
import statistics
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from pyro.infer import SVI  # noqa: E402
from pyro.optim import Adam  # noqa: E402
from tqdm import tqdm  # noqa: E402

from pyro_spikes.models import SNN  # noqa: E402
from pyro_spikes.models.paper import kajino_ground_truth  # noqa: E402
from pyro_spikes.models.training import ESTIMATORS  # noqa: E402
from pyro_spikes.provenance import write_results  # noqa: E402

LABELS = {
    "pathwise": "path-wise (relaxed)",
    "reinforce": "REINFORCE",
    "reinforce_baseline": "REINFORCE + baseline",
}


def seconds_per_step(snn, observed, estimator, num_steps, temperature=0.3):
    """
    Median seconds of one ``svi.step`` (after one warm-up step): ``(wall, cpu)``, the
    wall-clock time and the process CPU time (less sensitive to other load on the machine
    when torch runs on one thread).
    """
    elbo_class, kwargs = ESTIMATORS[estimator]
    model, guide = snn.model, snn.guide
    svi = SVI(model, guide, Adam({"lr": 0.01}), elbo_class())
    svi.step(observed, temperature=temperature, **kwargs)
    wall, cpu = [], []
    for _ in range(num_steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        svi.step(observed, temperature=temperature, **kwargs)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main(args):
    torch.set_num_threads(args.num_threads)
    bounds = [float(a) for a in args.upper_bounds.split(",")]
    estimators = args.estimators.split(",")
    for name in estimators:
        if name not in ESTIMATORS:
            raise ValueError(f"--estimators: unknown {name!r}, choose from {sorted(ESTIMATORS)}")
    results = {}
    for a in tqdm(bounds, desc="upper bounds"):
        pyro.set_rng_seed(args.seed)
        truth = kajino_ground_truth(args.seed, duration=args.duration, upper_bound=a)
        observed, _ = truth.simulate(args.num_sequences)
        for name in estimators:
            pyro.clear_param_store()
            pyro.set_rng_seed(args.seed + 1)
            snn = SNN(truth.num_observed, truth.num_hidden, args.duration, upper_bound=a)
            results[a, name] = seconds_per_step(snn, observed, name, args.num_steps)

    print(f"\nseconds per SVI step ({args.num_sequences} sequences, T = {args.duration:g}, "
          f"median of {args.num_steps}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s))")
    print("wall-clock / CPU seconds")
    print("| a | " + " | ".join(LABELS[e] for e in estimators)
          + " | path-wise / REINFORCE (CPU) |")
    print("|---:|" + "---:|" * (len(estimators) + 1))
    for a in bounds:
        ratio = (results[a, "pathwise"][1] / results[a, "reinforce"][1]
                 if {"pathwise", "reinforce"} <= set(estimators) else float("nan"))
        print(f"| {a:g} | " + " | ".join(f"{results[a, e][0]:.3f} / {results[a, e][1]:.3f}"
                                         for e in estimators) + f" | {ratio:.2f} |")

    os.makedirs(args.out, exist_ok=True)
    # the numbers of the docs' table (docs/render_tables.py renders them from this file)
    path = os.path.join(args.out, "training_time.json")
    write_results(path, {
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "rows": [{"upper_bound": a, **{e: {"wall": results[a, e][0], "cpu": results[a, e][1]}
                                       for e in estimators}} for a in bounds],
    })
    print(f"saved {path}")
    fig, ax = plt.subplots(figsize=(6, 4))
    for e in estimators:
        ax.plot(bounds, [results[a, e][0] for a in bounds], "o-", label=f"{LABELS[e]} (wall)")
        ax.plot(bounds, [results[a, e][1] for a in bounds], "s--", label=f"{LABELS[e]} (CPU)")
    ax.set_xlabel("upper bound a")
    ax.set_ylabel("seconds per SVI step")
    ax.set_title("cost of an SVI step vs the upper bound a")
    ax.legend()
    fig.tight_layout()
    path = os.path.join(args.out, "training_time.png")
    fig.savefig(path, dpi=100)
    print(f"saved {path}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-steps", type=int, default=3, help="timed SVI steps per setting")
    parser.add_argument("--upper-bounds", default="1,5,9")
    parser.add_argument("--num-sequences", type=int, default=10)
    parser.add_argument("--duration", type=float, default=50.0)
    parser.add_argument("--estimators", default="pathwise,reinforce")
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--out", default="out/training_time")
    main(parser.parse_args())
