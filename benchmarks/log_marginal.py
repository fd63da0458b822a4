"""
Seconds and accuracy of the held-out yardstick log p(J_O) of an SNN with hidden neurons.

Kajino's synthetic network (2 observed + 4 hidden, a = 5, |W| <= 5) at T = ``--duration``: for
``--num-sequences`` test sequences and every particle count ``S``, each estimator of
:meth:`~pyro_spikes.models.SNN.log_marginal` is run ``--repeats`` times on the data-generating
network: sequential Monte Carlo, compiled (``pyro_spikes._smc``) and in PyTorch, and plain
importance sampling (the previous default). Printed per row: median seconds per evaluation,
the mean estimate per sequence, the Monte Carlo spread (standard deviation over repeats,
averaged over sequences) and the mean effective sample size fraction. All estimators target
the same number, log p(J_O) (each is the log of an unbiased estimate of p(J_O), biased low
by Jensen's inequality): a higher mean with a smaller spread is a tighter estimate.

Also prints the seconds per SVI step with Kajino's guide and with a separate guide (path-wise
and REINFORCE), 10 training sequences.
"""

import argparse
import os
import statistics
import time

import pyro
import torch

from pyro_spikes.distributions.kernels import compiled_loops
from pyro_spikes.models import SNN, kajino_ground_truth
from pyro_spikes.models.smc import _compiled as smc_compiled
from pyro_spikes.models.training import ESTIMATORS

from pyro_spikes.provenance import write_results
from machine import cpu_model  # benchmarks/machine.py, beside this script


def evaluate(snn, obs, method, particles, repeats, compiled):
    times, runs, ess = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        with compiled_loops(compiled):
            ll, e = snn.log_marginal(obs, particles, method=method, return_ess=True)
        times.append(time.perf_counter() - start)
        runs.append(ll)
        ess.append(float(e.mean()) / particles)
    runs = torch.stack(runs)
    spread = float(runs.std(0).mean()) if repeats > 1 else float("nan")
    return statistics.median(times), float(runs.mean()), spread, statistics.mean(ess)


def svi_step_seconds(guide, estimator, obs, duration, repeats):
    pyro.clear_param_store()
    torch.manual_seed(1)
    snn = SNN(2, 4, duration, guide_type=guide)
    elbo_class, kwargs = ESTIMATORS[estimator]
    elbo = elbo_class()
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        elbo.loss_and_grads(snn.model, snn.guide, obs, **kwargs)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(args):
    torch.set_num_threads(args.num_threads)
    pyro.set_rng_seed(args.seed)
    truth = kajino_ground_truth(args.seed, duration=args.duration)
    obs, _ = truth.simulate(args.num_sequences)
    print(f"machine: {cpu_model()}, torch {torch.__version__}, {args.num_threads} thread(s); "
          f"Kajino set-up, T = {args.duration:g}, {args.num_sequences} sequences, "
          f"{args.repeats} repeats")
    print("| estimator | particles | seconds | mean log p(J_O) | MC spread | ESS fraction |")
    print("|---|---:|---:|---:|---:|---:|")
    methods = [("SMC, compiled", "smc", True), ("SMC, PyTorch", "smc", False),
               ("importance sampling", "is", True)]
    if smc_compiled is None:
        methods = methods[1:]
    rows = []
    for particles in [int(p) for p in args.particles.split(",")]:
        for label, method, compiled in methods:
            if label == "SMC, PyTorch" and particles > args.max_torch_particles:
                continue
            sec, mean, spread, ess = evaluate(truth, obs, method, particles, args.repeats,
                                              compiled)
            print(f"| {label} | {particles} | {sec:.3f} | {mean:.2f} | {spread:.2f} | "
                  f"{ess:.3f} |")
            rows.append({"estimator": label, "particles": particles, "median_s": sec,
                         "mean_log_p": mean, "mc_spread": spread, "ess_fraction": ess})
    train_obs, _ = truth.simulate(10)
    print("\n| SVI step (10 sequences) | Kajino's guide (s) | separate guide (s) |")
    print("|---|---:|---:|")
    svi_rows = []
    for estimator in ("pathwise", "reinforce"):
        cells = [svi_step_seconds(g, estimator, train_obs, args.duration, args.repeats)
                 for g in ("prior", "separate")]
        print(f"| {estimator} | {cells[0]:.3f} | {cells[1]:.3f} |")
        svi_rows.append({"estimator": estimator, "prior_guide_s": cells[0],
                         "separate_guide_s": cells[1]})
    if args.out:  # values with the command, commit and machine (docs/render_tables.py)
        write_results(args.out, {
            "settings": {"duration": args.duration, "num_sequences": args.num_sequences,
                         "repeats": args.repeats, "seed": args.seed,
                         "load_average": list(os.getloadavg())},
            "rows": rows, "svi_steps": svi_rows})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duration", type=float, default=50.0)
    parser.add_argument("--num-sequences", type=int, default=10)
    parser.add_argument("--particles", default="64,256,1024")
    parser.add_argument("--max-torch-particles", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--out", default=None,
                        help="results file (JSON with the command, commit and machine)")
    main(parser.parse_args())
