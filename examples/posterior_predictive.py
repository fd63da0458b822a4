"""
Posterior predictive checks for a Hawkes process
================================================

A fitted point-process model should reproduce the data it was fitted to. We simulate spike
trains from a two-neuron :class:`~pyro_spikes.distributions.HawkesProcess`, fit its baseline
:math:`\\mu` and branching matrix :math:`\\alpha` by stochastic variational inference with an
:class:`~pyro.infer.autoguide.AutoNormal` guide, and draw *posterior predictive* spike trains
with :class:`pyro_spikes.infer.Predictive` (Pyro's ``Predictive`` for spike trains):
parameters from the guide, then a fresh realisation of every sequence from the model. We then compare

* spike counts per neuron: observed counts against their posterior predictive distribution
  (with the predictive p-value :math:`P(N^{\\rm rep}_d \\ge N_d)`);
* inter-spike-interval (ISI) distributions: observed and predicted empirical CDFs;
* the time-rescaling Q-Q plot (Brown et al., 2002) of the observed trains under the fitted
  model (:func:`pyro_spikes.plot.qq_plot`): points inside the KS band mean the fitted
  intensity explains the spike timing.

Run ``python examples/posterior_predictive.py`` (figures in ``out/posterior_predictive/``).

.. results: example-time-posterior_predictive

At its defaults this example runs in 13 s (peak memory 382 MB) on 2 cores (AMD EPYC), commit 1f76e9a2a9; measured by ``python benchmarks/examples.py``.

.. end results
"""

import argparse
import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402
from pyro.infer import SVI, Trace_ELBO  # noqa: E402
from pyro.infer.autoguide import AutoNormal  # noqa: E402
from tqdm import tqdm  # noqa: E402

from pyro_spikes.diagnostics import ks_statistic, rescaled_intervals  # noqa: E402
from pyro_spikes.distributions import HawkesProcess  # noqa: E402
from pyro_spikes.infer import Predictive  # noqa: E402
from pyro_spikes.plot import intensity_plot, loss_plot, qq_plot, raster  # noqa: E402
from pyro_spikes.spikes import num_spikes, unpack_spikes  # noqa: E402

DESCRIPTION = "Posterior predictive checks for a Hawkes process"

BASELINE = torch.tensor([0.6, 0.3])
ADJACENCY = torch.tensor([[0.3, 0.1], [0.2, 0.2]])
DECAY = 2.0
MAX_BASELINE, MAX_ADJACENCY = 2.0, 0.35

# %%
# Model
# -----
# Priors :math:`\mu_i \sim \mathrm{Uniform}(0, 2)`, :math:`\alpha_{ij} \sim
# \mathrm{Uniform}(0, 0.35)`, decay fixed; a :class:`pyro.plate` over the independent
# sequences. The model says nothing about ``capacity`` (the number of rows of a sampled
# realisation): scoring the observed trains accepts any number of rows, and a sample has as many
# rows as it needs.
#
# Prediction uses :class:`pyro_spikes.infer.Predictive`, a drop-in for
# :class:`pyro.infer.Predictive`: realisations drawn with different parameters have different
# lengths, which it pads to one row count (Pyro's would fail to stack them), and it never
# simulates the process with parameters drawn from the prior (Pyro's does, once, to find the
# plates). The priors could as well be unbounded.


def model(num_sequences, duration, obs=None):
    baseline = pyro.sample("baseline", dist.Uniform(0.0, MAX_BASELINE).expand([2]).to_event(1))
    adjacency = pyro.sample("adjacency",
                            dist.Uniform(0.0, MAX_ADJACENCY).expand([2, 2]).to_event(2))
    process = HawkesProcess(baseline, adjacency, DECAY, duration)
    with pyro.plate("sequences", num_sequences):
        return pyro.sample("obs", process, obs=obs)


def isis(events):
    """Pooled inter-spike intervals per neuron of a batch of spike trains (numpy arrays)."""
    trains = unpack_spikes(events.reshape((-1,) + events.shape[-2:]))
    num_neurons = events.shape[-1] - 1
    return [
        np.concatenate([np.diff(seq[d].numpy()) for seq in trains] + [np.zeros(0)])
        for d in range(num_neurons)
    ]


def ecdf(ax, x, **kwargs):
    x = np.sort(x)
    ax.step(x, np.arange(1, x.size + 1) / max(x.size, 1), where="post", **kwargs)


def main(args):
    pyro.set_rng_seed(args.seed)
    torch.set_num_threads(args.num_threads)
    os.makedirs(args.out, exist_ok=True)

    # Data and fit
    truth = HawkesProcess(BASELINE, ADJACENCY, DECAY, args.duration)
    obs = truth.sample((args.num_sequences,))
    obs = obs[..., : max(1, int(num_spikes(obs).sum(-1).max())), :]  # trim the padding
    counts = num_spikes(obs)  # (num_sequences, D)
    print("observed spike counts per sequence and neuron:", counts.long().tolist())

    pyro.clear_param_store()
    guide = AutoNormal(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": args.learning_rate}), Trace_ELBO())
    losses = []
    for _ in tqdm(range(args.num_steps), desc="SVI", disable=args.no_progress):
        losses.append(svi.step(args.num_sequences, args.duration, obs))
    fig, ax = plt.subplots(figsize=(5, 3))
    loss_plot(losses, ax=ax, smooth=max(1, args.num_steps // 20))
    ax.set_title("SVI loss (negative ELBO)")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "loss.png"), dpi=80)

    median = guide.median()
    for name, value in [("baseline", BASELINE), ("adjacency", ADJACENCY)]:
        fit = median[name].detach().double().numpy().round(3).tolist()
        print(f"posterior median {name}: {fit}  truth: {value.double().numpy().round(3).tolist()}")

    # Posterior predictive spike trains
    # ``Predictive`` draws parameters from the guide and runs the model without observations;
    # the ``obs`` site then has shape ``(num_samples, num_sequences, rows, 1 + D)``, every draw
    # padded to the longest one's rows.
    predictive = Predictive(model, guide=guide, num_samples=args.num_samples,
                            return_sites=["obs"])
    with torch.no_grad():
        replicated = predictive(args.num_sequences, args.duration)["obs"]
    print("posterior predictive obs shape:", tuple(replicated.shape))
    rep_counts = num_spikes(replicated)  # (S, num_sequences, D)

    # Spike counts
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for d, ax in enumerate(axes):
        pred = rep_counts[..., d].reshape(-1).numpy()
        ax.hist(pred, bins=20, color=f"C{d}", alpha=0.6, density=True,
                label="posterior predictive")
        for i, c in enumerate(counts[:, d].tolist()):
            ax.axvline(c, color="k", linewidth=1, label="observed" if i == 0 else None)
        p_value = float((rep_counts[..., d] >= counts[:, d]).double().mean())
        print(f"neuron {d}: observed mean count {counts[:, d].mean():.1f}, predictive "
              f"{pred.mean():.1f} +- {pred.std():.1f}, p-value P(rep >= obs) = {p_value:.2f}")
        ax.set_title(f"neuron {d}: spike count per sequence")
        ax.set_xlabel("count")
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "counts.png"), dpi=80)

    # Inter-spike intervals
    # Self-excitation makes ISIs burstier than exponential: an excess of short intervals.
    obs_isi, rep_isi = isis(obs), isis(replicated)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for d, ax in enumerate(axes):
        ecdf(ax, rep_isi[d], color=f"C{d}", label="posterior predictive")
        ecdf(ax, obs_isi[d], color="k", label="observed")
        ax.set_xscale("log")
        ax.set_title(f"neuron {d}: ISI distribution")
        ax.set_xlabel("inter-spike interval")
        ax.set_ylabel("ECDF")
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "isi.png"), dpi=80)

    # Time rescaling and intensity under the fitted model
    fitted = HawkesProcess(median["baseline"].detach(), median["adjacency"].detach(), DECAY,
                           args.duration)
    ks = ks_statistic(rescaled_intervals(fitted, obs))
    print(f"KS distance of the rescaled intervals from Exp(1): {ks:.3f}")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), gridspec_kw={"width_ratios": [1, 1.6]})
    qq_plot(fitted, obs, ax=axes[0])
    axes[0].set_title("time-rescaling QQ plot")
    window = min(args.duration, 30.0)
    intensity_plot(fitted, obs[0], ax=axes[1], num_points=1000)
    axes[1].set_xlim(0, window)
    axes[1].set_title("fitted intensity of sequence 0")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "time_rescaling.png"), dpi=80)

    fig, axes = plt.subplots(2, 1, figsize=(8, 3), sharex=True)
    raster(obs[0], ax=axes[0], duration=args.duration, neuron_names=["0", "1"])
    axes[0].set_title("observed (top) and one posterior predictive (bottom) spike train")
    raster(replicated[0, 0], ax=axes[1], duration=args.duration, neuron_names=["0", "1"])
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "rasters.png"), dpi=80)
    print(f"figures saved to {args.out}")
    return {"obs": obs, "replicated": replicated, "losses": losses, "median": median, "ks": ks}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-steps", type=int, default=400, help="SVI steps")
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--num-samples", type=int, default=100,
                        help="posterior predictive draws")
    parser.add_argument("--num-sequences", type=int, default=4)
    parser.add_argument("--duration", type=float, default=100.0)
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--out", default="out/posterior_predictive")
    return parser.parse_args(argv)


# %%
# Run
# ---
# The gallery runs this example with a short fit (see ``docs/gallery_argv.py``).

# sphinx_gallery_thumbnail_number = 4
if __name__ == "__main__":
    main(parse_args())
