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
parameters; :func:`pyro_spikes.models.paper.kajino_ground_truth`). For every seed of
``--seeds`` (a new data network, data set and initial model) we draw ``--num-steps``
independent gradient estimates with each estimator at the parameters of the initial model
(``--init fresh``: a new :class:`~pyro_spikes.models.SNN`, weights
:math:`\\mathcal N(0, 0.1^2)`; ``--init kajino``: the initial model of Kajino's code, drawn from
the data network's ranges) and report, per estimator:

* **std** -- the standard deviation over repeats of every parameter entry, averaged over the
  entries (the paper's statistic: 66.3 for path-wise against 2,490 for REINFORCE);
* **robust std** -- the same with the interquartile range over repeats divided by 1.349 (equal
  to the std for Gaussian draws, insensitive to a few extreme draws);
* **tail share** -- the share of draws whose gradient norm exceeds 10x the median norm.

Gradient draws are heavy-tailed (the path-wise ones through steep transitions of the relaxed
hidden path, REINFORCE through the log-likelihood ratio), so a std from a few tens of draws is
uncertain: every statistic comes with a 95% percentile-bootstrap confidence interval
(``--num-bootstrap`` resamples of the draws; for the REINFORCE / path-wise ratio both sets of
draws are resampled). The interval is about the estimate from these draws at this seed; the
spread between seeds is the variation between data sets and initial models.

The figure shows, for the first seed, the per-entry std with its interval for each estimator
(log scale), and, for every seed, the mean std and the robust std with their intervals.

.. results: example-time-gradient_variance

At its defaults this example runs in 67 s (peak memory 490 MB) on 2 cores (AMD EPYC), commit 1f76e9a2a9; measured by ``python benchmarks/examples.py``.

.. end results
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
from pyro_spikes.provenance import write_results  # noqa: E402

LABELS = {
    "pathwise": "path-wise (relaxed)",
    "reinforce": "REINFORCE",
    "reinforce_baseline": "REINFORCE + baseline",
}
IQR_TO_STD = 1.349  # interquartile range of the standard normal
KAJINO_INIT_OFFSET = 1000  # --init kajino: the initial model of seed s is network 1000 + s


def entry_std(g):
    """Per-entry std over the draws (dim -2): ``(..., n, P) -> (..., P)``."""
    return g.std(-2)


def entry_robust_std(g):
    """Per-entry interquartile range over the draws / 1.349: ``(..., n, P) -> (..., P)``."""
    q = torch.quantile(g, torch.tensor([0.25, 0.75], dtype=g.dtype), dim=-2)
    return (q[1] - q[0]) / IQR_TO_STD


def tail_share(g, factor=10.0):
    """Share of draws whose gradient norm exceeds ``factor`` times the median norm."""
    norm = g.norm(dim=-1)
    return (norm > factor * norm.median(-1, keepdim=True).values).to(g.dtype).mean(-1)


def bootstrap(g, statistic, num_bootstrap, generator):
    """Resamples ``(B,) + statistic shape`` of ``statistic`` over the draws (rows) of ``g``."""
    n = g.shape[0]
    idx = torch.randint(n, (num_bootstrap, n), generator=generator)
    return statistic(g[idx])


def interval(samples, level=0.95):
    lo, hi = torch.quantile(samples, torch.tensor([(1 - level) / 2, (1 + level) / 2],
                                                  dtype=samples.dtype), dim=0)
    return lo, hi


def summarise(g, num_bootstrap, generator):
    """Point estimates and bootstrap intervals of the statistics of the draws ``(n, P)``."""
    stats = {
        "std": lambda x: entry_std(x).mean(-1),
        "robust std": lambda x: entry_robust_std(x).mean(-1),
        "tail share": tail_share,
    }
    out = {}
    for name, f in stats.items():
        out[name] = (float(f(g)),) + tuple(float(v) for v in interval(
            bootstrap(g, f, num_bootstrap, generator)))
    per_entry = bootstrap(g, entry_std, num_bootstrap, generator)
    out["per entry"] = (entry_std(g),) + interval(per_entry)
    out["std resamples"] = bootstrap(g, lambda x: entry_std(x).mean(-1), num_bootstrap,
                                     generator)
    return out


def gradients(seed, args):
    """``{estimator: (num_steps, P)}`` gradient draws at the initial model of ``seed``."""
    pyro.set_rng_seed(seed)
    truth = kajino_ground_truth(seed, duration=args.duration)
    observed, _ = truth.simulate(args.num_sequences)
    pyro.clear_param_store()
    if args.init == "kajino":  # diffsnn's exp1 initial model: the data network's ranges
        model = kajino_ground_truth(KAJINO_INIT_OFFSET + seed, duration=args.duration)
    else:
        model = SNN(truth.num_observed, truth.num_hidden, args.duration,
                    upper_bound=float(truth.upper_bound))
    draws = {}
    for name in ESTIMATORS:
        pyro.set_rng_seed(seed + 1)
        grads = elbo_gradients(model, observed, name, args.num_steps,
                               temperature=args.temperature)
        draws[name] = torch.cat([g.reshape(args.num_steps, -1) for g in grads.values()],
                                1).double()
    return draws, {k: g.shape[1:].numel() for k, g in grads.items()}


def fmt(triple, digits=4):
    est, lo, hi = triple
    return f"{est:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}]"


def main(args):
    torch.set_num_threads(args.num_threads)
    if args.num_steps < 4:
        raise ValueError(f"--num-steps must be >= 4 to estimate a std and quartiles, got "
                         f"{args.num_steps}")
    if args.num_bootstrap < 10:
        raise ValueError(f"--num-bootstrap must be >= 10, got {args.num_bootstrap}")
    seeds = [args.seed] if args.seeds is None else [int(s) for s in args.seeds.split(",")]
    generator = torch.Generator().manual_seed(args.seed)
    results = {}
    for seed in tqdm(seeds, desc="seeds"):
        draws, sizes = gradients(seed, args)
        results[seed] = {n: summarise(g, args.num_bootstrap, generator)
                         for n, g in draws.items()}
        ratio = results[seed]["reinforce"]["std resamples"] / \
            results[seed]["pathwise"]["std resamples"]
        results[seed]["ratio"] = (results[seed]["reinforce"]["std"][0]
                                  / results[seed]["pathwise"]["std"][0],) + tuple(
            float(v) for v in interval(ratio[torch.isfinite(ratio)]))

    print(f"\nELBO gradient at the initial parameters ({args.init}): {args.num_steps} draws "
          f"per estimator and seed ({args.num_sequences} sequences, T = {args.duration:g}); estimate "
          f"[95% bootstrap interval, {args.num_bootstrap} resamples]")
    for stat in ("std", "robust std", "tail share"):
        print(f"\n{stat}" + (" (mean over parameter entries)" if "std" in stat else
                             " (gradient norm > 10x median)"))
        print("| seed | " + " | ".join(LABELS[n] for n in ESTIMATORS) + " |")
        print("|---|" + "---:|" * len(ESTIMATORS))
        for seed, r in results.items():
            print(f"| {seed} | " + " | ".join(fmt(r[n][stat], 3 if stat == "tail share" else 4)
                                            for n in ESTIMATORS) + " |")
    print("\nREINFORCE / path-wise std ratio (Kajino 2021: 2490 / 66.3 = 37.6):")
    for seed, r in results.items():
        print(f"  seed {seed}: {fmt(r['ratio'], 3)}")

    os.makedirs(args.out, exist_ok=True)
    # the numbers of the docs' tables (docs/render_tables.py renders them from this file)
    path = os.path.join(args.out, "gradient_variance.json")
    write_results(path, {
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "parameters": int(sum(sizes.values())),
        "seeds": {str(seed): {
            **{name: {stat: list(r[name][stat]) for stat in ("std", "robust std", "tail share")}
               for name in ESTIMATORS},
            "ratio": list(r["ratio"]),
        } for seed, r in results.items()},
    })
    print(f"saved {path}")
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    first = results[seeds[0]]
    width = 0.8 / len(ESTIMATORS)
    for i, name in enumerate(ESTIMATORS):
        est, lo, hi = (t.clamp(min=1e-12) for t in first[name]["per entry"])
        x = torch.arange(est.numel()) + (i - 1) * width
        # the percentile interval of a std from few draws need not contain the estimate
        ax0.vlines(x.numpy(), lo.numpy(), hi.numpy(), color=f"C{i}", lw=0.8)
        ax0.plot(x.numpy(), est.numpy(), "o", ms=2.5, color=f"C{i}", label=LABELS[name])
    ax0.axvline(sizes["bias"] - 0.5, color="0.7", lw=0.8)
    ax0.set_yscale("log")
    ax0.set_xlabel("parameter entry (bias, then weight[l, d, d'])")
    ax0.set_ylabel("std of gradient estimate")
    ax0.set_title(f"seed {seeds[0]}: per-entry std, 95% bootstrap intervals "
                  f"({args.num_steps} draws)")
    ax0.legend(fontsize=8)
    for i, name in enumerate(ESTIMATORS):
        for j, (stat, marker) in enumerate((("std", "o"), ("robust std", "s"))):
            est = torch.tensor([results[s][name][stat][0] for s in seeds])
            lo = torch.tensor([results[s][name][stat][1] for s in seeds])
            hi = torch.tensor([results[s][name][stat][2] for s in seeds])
            x = torch.arange(len(seeds)) + (i - 1) * 0.25 + (j - 0.5) * 0.1
            ax1.vlines(x.numpy(), lo.numpy(), hi.numpy(), color=f"C{i}", lw=1)
            ax1.plot(x.numpy(), est.numpy(), marker, ms=4, color=f"C{i}",
                     mfc="none" if j else f"C{i}", label=f"{LABELS[name]}, {stat}")
    ax1.set_yscale("log")
    ax1.set_xticks(range(len(seeds)))
    ax1.set_xticklabels([str(s) for s in seeds])
    ax1.set_xlabel("seed (data network, data, initial model)")
    ax1.set_ylabel("mean over entries")
    ax1.set_title("std (filled) and IQR/1.349 (open)")
    ax1.legend(fontsize=6)
    fig.tight_layout()
    path = os.path.join(args.out, "gradient_variance.png")
    fig.savefig(path, dpi=100)
    print(f"saved {path}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n")[0])
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the bootstrap, and the only seed if --seeds is not given")
    parser.add_argument("--seeds", default="0,1,2",
                        help="comma-separated seeds (data network, data, initial model)")
    parser.add_argument("--num-steps", type=int, default=100,
                        help="number of repeated gradient estimates per estimator and seed")
    parser.add_argument("--num-bootstrap", type=int, default=1000)
    parser.add_argument("--num-sequences", type=int, default=5)
    parser.add_argument("--duration", type=float, default=50.0)
    parser.add_argument("--temperature", type=float, default=0.3)
    parser.add_argument("--init", choices=("fresh", "kajino"), default="fresh",
                        help="initial model: a fresh SNN (weights N(0, 0.1^2), zero biases) or "
                        "diffsnn's exp1 initial model (biases U[-1, 1], weights U[-5, 5], "
                        "self-weights U[-5, -0.1], as the data network)")
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--out", default="out/gradient_variance",
                        help="folder for the figure and the results file gradient_variance.json")
    main(parser.parse_args())
