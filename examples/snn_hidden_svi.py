"""
Learning a spiking neural network with hidden neurons by SVI
=============================================================

Kajino (2021, "A Differentiable Point Process with Its Application to Spiking Neural
Networks", ICML, Section 5.2) fits a probabilistic SNN whose hidden neurons are never observed
by maximising the ELBO, and compares the path-wise gradient of the relaxed point process with
the score-function (REINFORCE) gradient by the predictive performance on held-out data:
"smaller variance leads to better predictive performance".

Here each estimator is plain Pyro SVI on :class:`~pyro_spikes.models.SNN`
(:data:`pyro_spikes.models.training.ESTIMATORS`): ``Trace_ELBO`` with ``relaxed=True``
(path-wise, with the temperature annealed geometrically from ``--anneal-from`` to
``--temperature``), ``Trace_ELBO`` with ``relaxed=False`` (REINFORCE) and ``TraceGraph_ELBO``
with a decaying-average baseline, each with Kajino's guide (``prior``: the hidden neurons' own
dynamics driven by the observed spikes, sharing the model's parameters) and, with ``--guides
prior,separate,lookahead``, a guide of the same form with its own parameters and one that also
sees the observed spikes ahead (``guide_type="lookahead"``). Data come from Kajino's
synthetic network (:func:`pyro_spikes.models.paper.kajino_ground_truth`: 2 observed + 4 hidden
neurons, fully connected, 2 exponential basis functions, :math:`a = 5`). For every run seed
(``--seeds``) a fresh training pool is drawn from that network and a fresh initial model is
trained with every estimator and guide on the first ``n`` sequences of the pool, for every
training size ``n``.

Every model, the data-generating network (the **ceiling**: by the KL argument no model beats
it in expectation) and the untrained models (the **floor**) are scored on the same held-out
sequences by :math:`\\log p(J_O)` per sequence, estimated by sequential Monte Carlo
(:meth:`~pyro_spikes.models.SNN.log_marginal`, an unbiased estimate of :math:`p(J_O)` whose log
is consistent; ``--num-particles`` per sequence). The table and the figure give the mean over
seeds with its standard error; the estimator's own Monte Carlo spread is printed too (two
independent SMC runs of the data-generating network).

The default run is small (``T = 20``, training sizes 5 and 20, 30 steps, 2 seeds). The documentation's "Reproducing Kajino (2021)" page shows a larger run and says
which of the paper's claims hold here.

.. results: example-time-snn_hidden_svi

At its defaults this example runs in 55 s (peak memory 382 MB) on 2 cores (AMD EPYC), commit 1f76e9a2a9; measured by ``python benchmarks/examples.py``.

.. end results
"""

import argparse
import math
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from pyro_spikes.models import SNN  # noqa: E402
from pyro_spikes.models.paper import kajino_ground_truth  # noqa: E402
from pyro_spikes.models.training import ESTIMATORS, train  # noqa: E402
from pyro_spikes.provenance import write_results  # noqa: E402

LABELS = {
    "pathwise": "path-wise (relaxed)",
    "reinforce": "REINFORCE",
    "reinforce_baseline": "REINFORCE + baseline",
}


def held_out(snn, test_obs, num_particles, seed):
    """
    SMC estimates of :math:`\\log p(J_O)` of every test sequence (a tensor), and the mean
    effective sample size fraction of the particles over segments (1: perfect).
    """
    torch.manual_seed(seed)
    log_p, ess = snn.log_marginal(test_obs, num_particles, return_ess=True)
    return log_p, float(ess.mean()) / num_particles


def mean_se(values):
    """Mean and standard error of a list of numbers (s.e. 0 for a single value)."""
    x = torch.tensor(values, dtype=torch.float64)
    se = float(x.std() / math.sqrt(x.numel())) if x.numel() > 1 else 0.0
    return float(x.mean()), se


def main(args):
    start = time.perf_counter()
    torch.set_num_threads(args.num_threads)
    sizes = sorted(int(s) for s in args.train_sizes.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    estimators = args.estimators.split(",")
    guides = args.guides.split(",")
    for name in estimators:
        if name not in ESTIMATORS:
            raise ValueError(f"--estimators: unknown {name!r}, choose from {sorted(ESTIMATORS)}")
    for guide in guides:
        if guide not in ("prior", "separate", "lookahead"):
            raise ValueError(f"--guides: unknown {guide!r}, choose from prior, separate, "
                             "lookahead")
    pyro.set_rng_seed(args.seed)
    truth = kajino_ground_truth(args.seed, duration=args.duration)
    test_obs, _ = truth.simulate(args.num_test)
    truth_ll, truth_ess = held_out(truth, test_obs, args.num_particles, args.seed)
    truth_again, _ = held_out(truth, test_obs, args.num_particles, args.seed + 1000)
    mc_spread = float((truth_ll - truth_again).abs().mean())
    truth_mean = float(truth_ll.mean())
    truth_se = float(truth_ll.std() / math.sqrt(truth_ll.numel()))

    def fresh_model(seed, guide):
        pyro.clear_param_store()
        torch.manual_seed(seed + 1)
        return SNN(truth.num_observed, truth.num_hidden, args.duration,
                   upper_bound=float(truth.upper_bound), guide_type=guide)

    anneal = args.anneal_from if args.anneal_from > 0 else None
    scores, ess, curves, floor = {}, {}, {}, []
    runs = [(r, n, e, g) for r in seeds for n in sizes for e in estimators for g in guides]
    bar = tqdm(runs, desc="runs", disable=args.no_progress)
    pools = {}
    for seed, size, name, guide in bar:
        if seed not in pools:
            pyro.set_rng_seed(seed + 100)
            pools[seed], _ = truth.simulate(max(sizes))
            init_ll, _ = held_out(fresh_model(seed, "prior"), test_obs, args.num_particles,
                                  seed)
            floor.append(float(init_ll.mean()))
        # the training set: the first `size` sequences of this seed's pool
        obs = pools[seed][:size]
        count = int((obs[..., 1:].sum(-1) > 0).sum(-1).max())
        obs = obs[:, : max(count, 1)]
        snn = fresh_model(seed, guide)
        pyro.set_rng_seed(seed + 2)
        losses = train(snn, obs, name, args.num_steps, lr=args.learning_rate,
                       temperature=args.temperature, anneal_from=anneal)
        curves[seed, size, name, guide] = [loss / size for loss in losses]
        ll, frac = held_out(snn, test_obs, args.num_particles, seed)
        scores.setdefault((size, name, guide), []).append(float(ll.mean()))
        ess.setdefault((size, name, guide), []).append(frac)

    floor_mean, floor_se = mean_se(floor)
    cols = [(e, g) for e in estimators for g in guides]
    label = {(e, g): LABELS[e] + ("" if len(guides) == 1 else f", {g} guide") for e, g in cols}
    print(f"\nheld-out log p(J_O) per sequence, mean ± s.e. over {len(seeds)} seed(s) "
          f"({args.num_test} test sequences, T = {args.duration:g}, SMC with "
          f"{args.num_particles} particles, {args.num_steps} SVI steps)")
    print("| training sequences | " + " | ".join(label[c] for c in cols) + " |")
    print("|---:|" + "---:|" * len(cols))
    for size in sizes:
        cells = []
        for e, g in cols:
            m, se = mean_se(scores[size, e, g])
            cells.append(f"{m:.2f} ± {se:.2f}")
        print(f"| {size} | " + " | ".join(cells) + " |")
    print(f"data-generating network (ceiling): {truth_mean:.2f} ± {truth_se:.2f} (s.e. over "
          f"test sequences); initial models (floor): {floor_mean:.2f} ± {floor_se:.2f}")
    print(f"SMC Monte Carlo spread: two runs of the data-generating network differ by "
          f"{mc_spread:.3f} nats per sequence on average; mean ESS fraction "
          f"{truth_ess:.2f} (truth), "
          + ", ".join(f"{size}/{label[c]} {mean_se(ess[(size,) + c])[0]:.2f}"
                      for size in sizes for c in cols))

    os.makedirs(args.out, exist_ok=True)
    # the numbers of the docs' table (docs/render_tables.py renders them from this file)
    path = os.path.join(args.out, "snn_hidden_svi.json")
    write_results(path, {
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "no_progress")},
        "columns": [{"estimator": e, "guide": g, "label": label[e, g]} for e, g in cols],
        # per training size and column: the held-out mean of each run seed, in --seeds order
        "scores": {str(size): [scores[size, e, g] for e, g in cols] for size in sizes},
        "ess_fraction": {str(size): [ess[size, e, g] for e, g in cols] for size in sizes},
        "truth": {"mean": truth_mean, "se": truth_se, "ess_fraction": truth_ess,
                  "smc_spread": mc_spread},
        "floor": {"per_seed": floor, "mean": floor_mean, "se": floor_se},
        "seconds": time.perf_counter() - start,
    })
    print(f"saved {path}")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    width = 0.03 * (max(sizes) - min(sizes) + 1)
    for k, c in enumerate(cols):
        stats = [mean_se(scores[(s,) + c]) for s in sizes]
        shift = (k - (len(cols) - 1) / 2) * width
        ax.errorbar([s + shift for s in sizes], [m for m, _ in stats],
                    yerr=[se for _, se in stats], fmt="o-", capsize=3, label=label[c])
    ax.axhline(truth_mean, color="black", ls="--", lw=1, label="data-generating network")
    lows = [mean_se(v)[0] - 2 * mean_se(v)[1] for v in scores.values()]
    low, high = min(lows + [truth_mean]), truth_mean
    margin = 0.15 * (high - low) + 0.5
    if floor_mean > low - 3 * margin:  # the floor is near: show it
        ax.axhspan(floor_mean - floor_se, floor_mean + floor_se, color="gray", alpha=0.3)
        ax.axhline(floor_mean, color="gray", ls=":", lw=1, label="initial models")
        low = min(low, floor_mean - floor_se)
    else:  # far below: zoom on the trained models and say where it is
        ax.plot([], [], color="gray", ls=":",
                label=f"initial models: {floor_mean:.1f} ± {floor_se:.1f} (off scale)")
    ax.set_ylim(low - margin, high + margin)
    ax.set_xlabel("number of training sequences")
    ax.set_ylabel("held-out log p(J_O) per sequence (SMC)")
    ax.set_title(f"Kajino's synthetic network, T = {args.duration:g}, {len(seeds)} seed(s)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "test_log_likelihood.png"), dpi=100)
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 3.5), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for c in cols:
            ax.plot(curves[(seeds[0], size) + c], label=label[c])
        ax.set_title(f"{size} training sequences (seed {seeds[0]})")
        ax.set_xlabel("SVI step")
        ax.set_ylabel("loss per sequence (−ELBO)")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "loss_curves.png"), dpi=100)
    print(f"saved figures in {args.out}")
    return scores, (truth_mean, truth_se), (floor_mean, floor_se)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the data-generating network")
    parser.add_argument("--seeds", default="0,1",
                        help="run seeds (training pool, initial model, SVI noise)")
    parser.add_argument("--num-steps", type=int, default=30, help="SVI steps per run")
    parser.add_argument("--train-sizes", default="5,20")
    parser.add_argument("--num-test", type=int, default=20)
    parser.add_argument("--num-particles", type=int, default=256,
                        help="SMC particles per sequence of the held-out log-likelihood")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--estimators", default="pathwise,reinforce,reinforce_baseline")
    parser.add_argument("--guides", default="prior",
                        help="comma list of prior, separate, lookahead")
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--temperature", type=float, default=0.3)
    parser.add_argument("--anneal-from", type=float, default=1.0,
                        help="initial temperature of the annealing (<= 0: no annealing)")
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", default="out/snn_hidden_svi")
    main(parser.parse_args())
