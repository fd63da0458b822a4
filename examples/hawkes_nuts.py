"""
Bayesian inference for a Hawkes process with NUTS and ArviZ
===========================================================

We simulate spike trains from a two-neuron Hawkes process with known baseline rates
:math:`\\mu` and branching matrix :math:`\\alpha` (decay :math:`\\beta` fixed, or inferred with
``--infer-decay``), put priors on the parameters and sample their posterior with the No-U-Turn
sampler (:class:`pyro.infer.NUTS`, Hoffman & Gelman 2014). The exact log-likelihood of
:class:`~pyro_spikes.distributions.HawkesProcess` is differentiable in all parameters, so
Hamiltonian Monte Carlo applies directly. The samples go to ArviZ (``az.from_pyro``) for the
summary table (posterior mean, 94% HDI, :math:`\\hat R`, effective sample size) and a posterior
plot with the ground truth as reference value; finally we check which true values fall inside
their 94% highest-density interval.

With ``--model spiking`` the same workflow runs on Kajino's (2021)
:class:`~pyro_spikes.distributions.SpikingPointProcess` with :math:`D = 2` neurons and
:math:`L = 1` basis function, with priors on the bias :math:`b` and the weights :math:`W`.

Run ``python examples/hawkes_nuts.py`` (figures in ``out/hawkes_nuts/``).

.. results: example-time-hawkes_nuts

At its defaults this example runs in 32 s (peak memory 509 MB) on 2 cores (AMD EPYC), commit 1f76e9a2a9; measured by ``python benchmarks/examples.py``.

.. end results
"""

import argparse
import logging
import os

import matplotlib

matplotlib.use("Agg")

import arviz as az  # noqa: E402
import numpy as np  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402
from pyro.infer import MCMC, NUTS  # noqa: E402

from pyro_spikes.distributions import HawkesProcess, SpikingPointProcess  # noqa: E402
from pyro_spikes.spikes import num_spikes  # noqa: E402

# %%
# Ground truth and models
# -----------------------
# The Hawkes intensity is
# :math:`\lambda_i(t) = \mu_i + \sum_j \sum_{t_j^{(k)} < t}
# \alpha_{ij}\beta e^{-\beta(t - t_j^{(k)})}`;
# :math:`\alpha_{ij}` is the expected number of spikes of neuron :math:`i` triggered by one
# spike of neuron :math:`j`. Priors: :math:`\mu_i \sim \mathrm{Gamma}(2, 2)`,
# :math:`\alpha_{ij} \sim \mathrm{HalfNormal}(0.5)` and, optionally,
# :math:`\beta \sim \mathrm{LogNormal}(0, 1)`. The observed sequences are conditionally
# independent given the parameters: a :class:`pyro.plate` over sequences.

DESCRIPTION = "Bayesian inference for a Hawkes process with NUTS and ArviZ"

HAWKES_TRUTH = {
    "baseline": torch.tensor([0.5, 0.3]),
    "adjacency": torch.tensor([[0.3, 0.2], [0.1, 0.4]]),
    "decay": torch.tensor(2.0),
}
SPIKING_TRUTH = {
    "bias": torch.tensor([-1.0, -0.5]),
    "weight": torch.tensor([[[0.5, 1.5], [-1.0, 0.0]]]),
}
TIME_CONSTANTS = torch.tensor([1.0])
UPPER_BOUND = 2.0


def hawkes_model(num_sequences, duration, obs=None, infer_decay=False):
    """Hawkes process with priors on baseline, adjacency and (optionally) decay."""
    d = 2
    baseline = pyro.sample("baseline", dist.Gamma(2.0, 2.0).expand([d]).to_event(1))
    adjacency = pyro.sample("adjacency", dist.HalfNormal(0.5).expand([d, d]).to_event(2))
    if infer_decay:
        decay = pyro.sample("decay", dist.LogNormal(0.0, 1.0))
        decay = decay.unsqueeze(-1).unsqueeze(-1)
    else:
        decay = HAWKES_TRUTH["decay"]
    process = HawkesProcess(baseline, adjacency, decay, duration)
    with pyro.plate("sequences", num_sequences):
        return pyro.sample("obs", process, obs=obs)


def spiking_model(num_sequences, duration, obs=None, infer_decay=False):
    """Kajino's spiking point process (D=2, L=1) with Normal priors on bias and weights."""
    bias = pyro.sample("bias", dist.Normal(0.0, 2.0).expand([2]).to_event(1))
    weight = pyro.sample("weight", dist.Normal(0.0, 1.0).expand([1, 2, 2]).to_event(3))
    process = SpikingPointProcess(bias, weight, TIME_CONSTANTS, duration,
                                  upper_bound=UPPER_BOUND)
    with pyro.plate("sequences", num_sequences):
        return pyro.sample("obs", process, obs=obs)


def simulate(args):
    """Observed spike trains from the ground truth, trimmed to the largest spike count."""
    if args.model == "hawkes":
        t = HAWKES_TRUTH
        process = HawkesProcess(t["baseline"], t["adjacency"], t["decay"], args.duration)
    else:
        t = SPIKING_TRUTH
        process = SpikingPointProcess(t["bias"], t["weight"], TIME_CONSTANTS, args.duration,
                                      upper_bound=UPPER_BOUND)
    events = process.sample((args.num_sequences,))
    capacity = max(1, int(num_spikes(events).sum(-1).max()))
    return events[..., :capacity, :]


def truth(args):
    if args.model == "hawkes":
        out = {k: HAWKES_TRUTH[k] for k in ("baseline", "adjacency")}
        if args.infer_decay:
            out["decay"] = HAWKES_TRUTH["decay"]
        return out
    return dict(SPIKING_TRUTH)


def split_chain(idata):
    """Split a single chain into two halves so that ArviZ can compute split-:math:`\\hat R`."""
    posterior = {}
    for name, value in idata.posterior.data_vars.items():
        draws = np.asarray(value.values)[0]
        half = draws.shape[0] // 2
        posterior[name] = draws[: 2 * half].reshape((2, half) + draws.shape[1:])
    return az.from_dict(posterior=posterior)


def main(args):
    pyro.set_rng_seed(args.seed)
    torch.set_num_threads(args.num_threads)
    os.makedirs(args.out, exist_ok=True)
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)  # ArviZ's semibold

    # Simulate the data
    obs = simulate(args)
    print(f"{args.num_sequences} sequences on [0, {args.duration}], spike counts per neuron:")
    print(num_spikes(obs).long().tolist())

    # Sample the posterior with NUTS
    model = hawkes_model if args.model == "hawkes" else spiking_model
    kernel = NUTS(model, target_accept_prob=0.8, max_tree_depth=args.max_tree_depth)
    mcmc = MCMC(kernel, num_samples=args.num_samples, warmup_steps=args.warmup_steps,
                num_chains=args.num_chains, disable_progbar=args.no_progress)
    mcmc.run(args.num_sequences, args.duration, obs=obs,
             infer_decay=args.infer_decay)

    # Diagnostics with ArviZ
    # R-hat close to 1 and a few hundred effective samples indicate a reliable fit (with a
    # single chain, R-hat is computed from its two halves).
    # (log_likelihood=False: ArviZ would re-run the model vectorised over draws through
    # Predictive, which reshapes global samples of shape (S, D) without the singleton dim of
    # the sequence plate, so it only warns and drops the group.)
    idata = az.from_pyro(mcmc, log_likelihood=False)
    if args.num_chains == 1:
        idata = split_chain(idata)
    summary = az.summary(idata, hdi_prob=0.94)
    print(summary.to_string())

    # Is the ground truth inside the 94% HDI?
    ref = truth(args)
    hdi = az.hdi(idata, hdi_prob=0.94)
    inside = {}
    for name, value in ref.items():
        bounds = np.asarray(hdi[name].values)  # shape (..., 2)
        v = value.double().numpy()
        inside[name] = (bounds[..., 0] <= v) & (v <= bounds[..., 1])
        print(f"{name}: truth {v.round(3).tolist()}  in 94% HDI: {inside[name].tolist()}")
    total = sum(int(m.sum()) for m in inside.values())
    count = sum(m.size for m in inside.values())
    print(f"{total}/{count} true values inside their 94% HDI")

    # Posterior plot
    # Marginal posteriors with their 94% HDI, the ground truth as reference line.
    ref_val = {}
    for name, value in ref.items():
        dims = idata.posterior[name].dims[2:]  # after (chain, draw)
        v = value.double().numpy()
        ref_val[name] = [
            {**dict(zip(dims, idx)), "ref_val": float(v[idx])} for idx in np.ndindex(v.shape)
        ]
    axes = az.plot_posterior(idata, var_names=list(ref), hdi_prob=0.94, ref_val=ref_val,
                             textsize=8)
    fig = np.asarray(axes).reshape(-1)[0].figure
    fig.suptitle(f"{args.model}: posterior (NUTS) vs ground truth")
    path = os.path.join(args.out, f"{args.model}_nuts_posterior.png")
    fig.savefig(path, dpi=80)
    print(f"saved {path}")
    return {"mcmc": mcmc, "idata": idata, "summary": summary, "inside": inside, "obs": obs}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--model", choices=["hawkes", "spiking"], default="hawkes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-samples", "--num-steps", dest="num_samples", type=int,
                        default=300, help="NUTS samples per chain (--num-steps is an alias)")
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--num-chains", type=int, default=1)
    parser.add_argument("--max-tree-depth", type=int, default=6)
    parser.add_argument("--num-sequences", type=int, default=4)
    parser.add_argument("--duration", type=float, default=100.0)
    parser.add_argument("--infer-decay", action="store_true", help="put a prior on the decay")
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--out", default="out/hawkes_nuts")
    return parser.parse_args(argv)


# %%
# Run
# ---
# The gallery runs this example with short chains (see ``docs/gallery_argv.py``); the default
# settings (300 samples after 200 warmup steps, four sequences on :math:`[0, 100]`) put every
# true parameter inside its 94% HDI.

if __name__ == "__main__":
    main(parse_args())
