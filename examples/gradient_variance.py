"""
Variance of path-wise and REINFORCE gradients of the ELBO
==========================================================

Kajino (2021, "A Differentiable Point Process with Its Application to Spiking Neural
Networks", ICML, Section 5.1) compares the standard deviation of two unbiased-in-the-limit
estimators of the ELBO gradient of a spiking neural network with hidden neurons:

* the **path-wise** estimator, which samples the hidden spikes from the relaxed point process
  (:class:`~pyro_spikes.RelaxedPointProcess`, concrete marks at temperature 0.3) and
  differentiates through the sample (``Trace_ELBO``, ``relaxed=True``);
* the **score-function** (REINFORCE) estimator on the exact process (``Trace_ELBO``,
  ``relaxed=False``), and the same with a decaying-average baseline (``TraceGraph_ELBO``,
  ``baseline=True``).

The data are observed spikes of Kajino's synthetic network (2 observed + 4 hidden neurons,
fully connected, 2 basis functions, upper bound :math:`a = 5`, :math:`T = 50`, random
parameters; :func:`pyro_spikes.models.paper.kajino_ground_truth`). At the initial parameters
of a fresh model we draw ``--num-steps`` independent gradient estimates with each estimator,
take the standard deviation over repeats of every parameter entry, and report the mean over
entries (the paper reports 66.3 for path-wise vs 2,490 for REINFORCE). The bar chart shows the
per-entry standard deviations on a log scale.
"""

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from pyro_spikes.models import SNN  # noqa: E402
from pyro_spikes.models.paper import kajino_ground_truth  # noqa: E402
from pyro_spikes.models.training import ESTIMATORS, elbo_gradients  # noqa: E402

LABELS = {
    "pathwise": "path-wise (relaxed)",
    "reinforce": "REINFORCE",
    "reinforce_baseline": "REINFORCE + baseline",
}


def main(args):
    torch.set_num_threads(args.num_threads)
    if args.num_steps < 2:
        raise ValueError(f"--num-steps must be >= 2 to estimate a std, got {args.num_steps}")
    pyro.set_rng_seed(args.seed)
    truth = kajino_ground_truth(args.seed, duration=args.duration)
    observed, _ = truth.simulate(args.num_sequences)
    pyro.clear_param_store()
    model = SNN(truth.num_observed, truth.num_hidden, args.duration,
                upper_bound=float(truth.upper_bound))
    results = {}
    for name in tqdm(list(ESTIMATORS), desc="estimators"):
        pyro.set_rng_seed(args.seed + 1)
        grads = elbo_gradients(model, observed, name, args.num_steps,
                               temperature=args.temperature)
        results[name] = {k: g.std(0) for k, g in grads.items()}

    print(f"\nstd of the ELBO gradient over {args.num_steps} estimates "
          f"({args.num_sequences} sequences, T = {args.duration:g})")
    print("| parameter | " + " | ".join(LABELS[n] for n in results) + " |")
    print("|---|" + "---:|" * len(results))
    names = list(next(iter(results.values())))
    for p in names:
        print(f"| {p} (mean over entries) | "
              + " | ".join(f"{float(r[p].mean()):.4g}" for r in results.values()) + " |")
    overall = {n: float(torch.cat([s.reshape(-1) for s in r.values()]).mean())
               for n, r in results.items()}
    print("| **all parameters** | " + " | ".join(f"**{v:.4g}**" for v in overall.values()) + " |")
    ratio = overall["reinforce"] / overall["pathwise"]
    print(f"\nREINFORCE / path-wise std ratio: {ratio:.1f} (Kajino 2021: 2490 / 66.3 = 37.6)")

    os.makedirs(args.out, exist_ok=True)
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(results)
    for i, (name, r) in enumerate(results.items()):
        stds = torch.cat([r[p].reshape(-1) for p in names]).clamp(min=1e-12)
        x = torch.arange(stds.numel()) + i * width
        ax.bar(x.numpy(), stds.numpy(), width=width, label=f"{LABELS[name]} "
               f"(mean {overall[name]:.3g})")
    ax.set_yscale("log")
    ax.set_xlabel("parameter entry (bias, then weight[l, d, d'])")
    ax.set_ylabel("std of gradient estimate")
    ax.set_title(f"ELBO gradient std over {args.num_steps} estimates")
    ax.legend()
    fig.tight_layout()
    path = os.path.join(args.out, "gradient_variance.png")
    fig.savefig(path, dpi=100)
    print(f"saved {path}")
    return overall


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-steps", type=int, default=20,
                        help="number of repeated gradient estimates per estimator")
    parser.add_argument("--num-sequences", type=int, default=5)
    parser.add_argument("--duration", type=float, default=50.0)
    parser.add_argument("--temperature", type=float, default=0.3)
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--out", default="results/gradient_variance")
    main(parser.parse_args())
