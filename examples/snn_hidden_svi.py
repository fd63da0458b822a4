"""
Learning a spiking neural network with hidden neurons by SVI
=============================================================

Kajino (2021, "A Differentiable Point Process with Its Application to Spiking Neural
Networks", ICML, Section 5.2) fits a probabilistic SNN whose hidden neurons are never observed
by maximising the ELBO, and compares the path-wise gradient of the relaxed point process with
the score-function (REINFORCE) gradient by the predictive performance on held-out data.

Here each estimator is plain Pyro SVI on :class:`~pyro_spikes.models.SNN`
(:data:`pyro_spikes.models.training.ESTIMATORS`): ``Trace_ELBO`` with ``relaxed=True``
(path-wise, with the temperature annealed geometrically from ``--anneal-from`` to
``--temperature`` by :func:`~pyro_spikes.models.temperature_schedule`), ``Trace_ELBO`` with
``relaxed=False`` (REINFORCE) and ``TraceGraph_ELBO`` with a decaying-average baseline. Data
come from Kajino's synthetic network (:func:`pyro_spikes.models.paper.kajino_ground_truth`:
2 observed + 4 hidden neurons, fully connected, 2 basis functions, :math:`a = 5`, random
parameters); for every training-set size the same initial model is trained with every
estimator, and scored by the held-out log-likelihood of the observed spikes per sequence,
:math:`\\log p(J_O)`, estimated by importance sampling with the guide
(:meth:`~pyro_spikes.models.SNN.log_marginal`). The figures show the test log-likelihood
against the training size (one line per estimator; dotted: the initial model) and the loss
curves.

The importance-sampling estimate is a stochastic lower bound of :math:`\\log p(J_O)` (in
expectation), tight only when the guide (the hidden neurons driven by the observed spikes, but
blind to the future ones) is close to the posterior. For the data-generating network, whose
strong weights (:math:`|W| \\le 5`) tie the hidden neurons tightly to the observed ones, it is
very loose (e.g. 26 against 105 for the trained models at ``T = 50``), so it is printed for
reference but not plotted: it is a lower bound, not a ceiling. The script also prints the mean
effective sample size of the importance weights per model: close to the number of samples for
a tight estimate, near 1 for the data-generating network.

The default run is small (``T = 20``, training sizes 5 and 20, 30 steps; about a minute of CPU
time, two on busy cores). ``--duration 50 --train-sizes 10,50,200 --num-test 50 --num-steps
300`` takes about 14 minutes on one core (its results are in the documentation's "Reproducing
Kajino (2021)" page); the paper's setting, ``--duration 50 --train-sizes 10,50,100,150,200
--num-test 100 --num-steps 1000``, about an hour and a half.
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
from pyro_spikes.models.training import ESTIMATORS, train  # noqa: E402

LABELS = {
    "pathwise": "path-wise (relaxed)",
    "reinforce": "REINFORCE",
    "reinforce_baseline": "REINFORCE + baseline",
}


def held_out(snn, test_obs, num_samples, seed):
    """
    Mean over test sequences of the importance-sampled :math:`\\log p(J_O)`, and the mean
    effective sample size of its importance weights (near ``num_samples``: a tight estimate).
    """
    torch.manual_seed(seed)
    with torch.no_grad():
        log_p, ess = snn.log_marginal(test_obs, num_samples, return_ess=True)
    return float(log_p.mean()), float(ess.mean())


def main(args):
    torch.set_num_threads(args.num_threads)
    sizes = sorted(int(s) for s in args.train_sizes.split(","))
    estimators = args.estimators.split(",")
    for name in estimators:
        if name not in ESTIMATORS:
            raise ValueError(f"--estimators: unknown {name!r}, choose from {sorted(ESTIMATORS)}")
    pyro.set_rng_seed(args.seed)
    truth = kajino_ground_truth(args.seed, duration=args.duration)
    train_pool, _ = truth.simulate(max(sizes))
    test_obs, _ = truth.simulate(args.num_test)
    truth_ll, truth_ess = held_out(truth, test_obs, args.num_samples, args.seed)

    def fresh_model():
        pyro.clear_param_store()
        torch.manual_seed(args.seed + 1)
        return SNN(truth.num_observed, truth.num_hidden, args.duration,
                   upper_bound=float(truth.upper_bound))

    init_ll, init_ess = held_out(fresh_model(), test_obs, args.num_samples, args.seed)
    anneal = args.anneal_from if args.anneal_from > 0 else None
    results, ess, curves = {}, {}, {}
    runs = [(n, e) for n in sizes for e in estimators]
    for size, name in tqdm(runs, desc="runs"):
        # the training set: the first `size` sequences, cut to their own largest count
        obs = train_pool[:size]
        count = int((obs[..., 1:].sum(-1) > 0).sum(-1).max())
        obs = obs[:, : max(count, 1)]
        snn = fresh_model()
        pyro.set_rng_seed(args.seed + 2)
        losses = train(snn, obs, name, args.num_steps, lr=args.learning_rate,
                       temperature=args.temperature, anneal_from=anneal)
        curves[size, name] = [loss / size for loss in losses]
        results[size, name], ess[size, name] = held_out(snn, test_obs, args.num_samples,
                                                        args.seed)

    print(f"\nheld-out log-likelihood per sequence ({args.num_test} test sequences, "
          f"T = {args.duration:g}, {args.num_samples} importance samples, "
          f"{args.num_steps} SVI steps)")
    print("| training sequences | " + " | ".join(LABELS[e] for e in estimators) + " |")
    print("|---:|" + "---:|" * len(estimators))
    for size in sizes:
        print(f"| {size} | " + " | ".join(f"{results[size, e]:.2f}" for e in estimators) + " |")
    print(f"initial model: {init_ll:.2f}   data-generating network: {truth_ll:.2f} "
          "(a loose importance-sampling lower bound, see the docstring)")
    print(f"mean effective sample size of the importance weights (of {args.num_samples}): "
          + ", ".join(f"{size}/{LABELS[e]} {ess[size, e]:.1f}" for size in sizes
                      for e in estimators)
          + f"; initial {init_ess:.1f}; data-generating {truth_ess:.1f}")

    os.makedirs(args.out, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for e in estimators:
        ax.plot(sizes, [results[s, e] for s in sizes], "o-", label=LABELS[e])
    ax.axhline(init_ll, color="gray", ls=":", lw=1, label="initial model")
    ax.set_xlabel("number of training sequences")
    ax.set_ylabel("test log-likelihood per sequence")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "test_log_likelihood.png"), dpi=100)
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 3.5), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for e in estimators:
            ax.plot(curves[size, e], label=LABELS[e])
        ax.set_title(f"{size} training sequences")
        ax.set_xlabel("SVI step")
        ax.set_ylabel("loss per sequence (−ELBO)")
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "loss_curves.png"), dpi=100)
    print(f"saved figures in {args.out}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-steps", type=int, default=30, help="SVI steps per run")
    parser.add_argument("--train-sizes", default="5,20")
    parser.add_argument("--num-test", type=int, default=20)
    parser.add_argument("--num-samples", type=int, default=20,
                        help="importance samples of the held-out log-likelihood")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--estimators", default="pathwise,reinforce,reinforce_baseline")
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--temperature", type=float, default=0.3)
    parser.add_argument("--anneal-from", type=float, default=1.0,
                        help="initial temperature of the annealing (<= 0: no annealing)")
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--out", default="results/snn_hidden_svi")
    main(parser.parse_args())
