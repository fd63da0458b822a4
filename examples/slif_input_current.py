"""
Estimating the input current of a stochastic LIF neuron from spike times
========================================================================

A reproduction, at small scale, of the input-current experiment of Holberg & Salvi,
*Exact gradients for stochastic spiking neural networks driven by rough signals* (NeurIPS 2024).

One stochastic leaky integrate-and-fire neuron,
:math:`dv = (-v + c)\\,dt + \\sigma\\,dW`, threshold 1, reset 0, emits spikes; we observe only
its first three spike times on :math:`[0, T]`. The likelihood of these times is intractable, so
we fit the constant input current :math:`c` by minimising the signature-kernel scoring rule
(:func:`pyro_spikes.scoring.signature_kernel_score`) between samples of the model and the data,
with Adam. Gradients are path-wise: :meth:`StochasticLIF.rsample` differentiates the spike
times exactly through the solver's event roots (implicit function theorem).

For every noise level :math:`\\sigma` and data-set size :math:`n` we report the trajectory of the
estimate of :math:`c` and, on a hold-out set, the mean absolute error of the three average
spike times. Run the paper-size setting with, e.g.::

    python examples/slif_input_current.py --num-steps 300 --dt 0.005 --holdout 2048 \\
        --lr 0.05 --dyadic-order 1 --sample-sizes 16 32 64 128 --sigmas 0.25 0.5 --repeats 5

(memory of the kernel backward pass grows like :math:`n^2 4^{\\lambda}` for dyadic order
:math:`\\lambda`; the defaults are ``--dt 0.05 --dyadic-order 0`` and 60 steps).

.. results: example-time-slif_input_current

At its defaults this example runs in 74 s (peak memory 361 MB) on 2 cores (AMD EPYC), commit 1f76e9a2a9; measured by ``python benchmarks/examples.py``.

.. end results
"""

import argparse
import json
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from pyro.nn import PyroModule, PyroParam  # noqa: E402
from tqdm import tqdm  # noqa: E402

from pyro_spikes.distributions.stochastic_lif import StochasticLIF  # noqa: E402
from pyro_spikes.scoring import signature_kernel_score  # noqa: E402


class SLIFNeuron(PyroModule):
    """One SLIF neuron with a learnable constant input current; everything else fixed."""

    def __init__(self, input_current, noise_scale, duration, num_spikes=3, dt=0.01):
        super().__init__()
        self.input_current = PyroParam(torch.as_tensor(input_current, dtype=torch.float64).reshape(1))
        self.noise_scale = noise_scale
        self.duration = duration
        self.num_spikes = num_spikes
        self.dt = dt

    def distribution(self):
        return StochasticLIF(
            self.input_current,
            noise_scale=torch.tensor(self.noise_scale, dtype=torch.float64),
            duration=self.duration,
            num_spikes=self.num_spikes,
            dt=self.dt,
        )

    def forward(self, num_samples):
        """``num_samples`` reparameterised spike trains, events layout."""
        return self.distribution().rsample((num_samples,))


def mean_spike_times(events, num_spikes):
    """Average of the k-th spike time over samples, k = 1..num_spikes (one neuron; T if missing)."""
    return events[..., :num_spikes, 0].mean(0)


def fit_input_current(data, sigma, args, progress=None):
    """Adam on the signature-kernel score; returns the trajectory of the estimate of c."""
    pyro.clear_param_store()  # PyroParams live in the global param store: start every fit afresh
    model = SLIFNeuron(args.c_init, sigma, args.duration, args.num_spikes, args.dt)
    model.input_current  # materialise the parameter before handing it to the optimiser
    optim = torch.optim.Adam(model.parameters(), lr=args.lr)
    # decay the step size by args.lr_decay over the run: large steps first, then averaging out the noise
    sched = torch.optim.lr_scheduler.ExponentialLR(optim, gamma=args.lr_decay ** (1.0 / max(args.num_steps, 1)))
    kernel = dict(time_scale=args.time_scale, count_scale=args.count_scale, dyadic_order=args.dyadic_order)
    trajectory = [model.input_current.item()]
    model_samples = args.model_samples or data.shape[0]
    for _ in range(args.num_steps):
        optim.zero_grad()
        loss = signature_kernel_score(model(model_samples), data, args.duration, **kernel)
        loss.backward()
        optim.step()
        sched.step()
        trajectory.append(model.input_current.item())
        if progress is not None:
            progress.update(1)
    return model, trajectory


def main(args):
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    truth = dict(noise_scale=None, duration=args.duration, num_spikes=args.num_spikes, dt=args.dt)
    results = []
    start = time.time()
    total = len(args.sigmas) * len(args.sample_sizes) * args.repeats * args.num_steps
    with tqdm(total=total, desc="fitting c") as progress:
        for sigma in args.sigmas:
            truth["noise_scale"] = torch.tensor(sigma, dtype=torch.float64)
            true_dist = StochasticLIF(torch.tensor([args.c_true], dtype=torch.float64), **truth)
            holdout = true_dist.sample((args.holdout,))
            for n in args.sample_sizes:
                for rep in range(args.repeats):
                    data = true_dist.sample((n,))
                    model, traj = fit_input_current(data, sigma, args, progress)
                    with torch.no_grad():
                        fitted = model.distribution().sample((args.holdout,))
                    err = (mean_spike_times(fitted, args.num_spikes) - mean_spike_times(holdout, args.num_spikes))
                    results.append(dict(sigma=sigma, n=n, repeat=rep, c_hat=traj[-1], trajectory=traj,
                                        mae=err.abs().mean().item()))
                    tqdm.write(f"sigma={sigma:<5} n={n:<4} rep={rep}  c_hat={traj[-1]:.3f} "
                               f"(true {args.c_true})  hold-out MAE of mean spike times={results[-1]['mae']:.4f}")
    print(f"done in {time.time() - start:.1f} s")
    with open(os.path.join(args.out, "slif_input_current.json"), "w") as f:
        json.dump(dict(args=vars(args), results=results), f, indent=1)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.cm.viridis(torch.linspace(0, 0.9, len(args.sample_sizes)).tolist())
    for r in results:
        ls = "-" if r["sigma"] == args.sigmas[0] else "--"
        col = colors[args.sample_sizes.index(r["n"])]
        label = f"σ={r['sigma']}, n={r['n']}" if r["repeat"] == 0 else None
        axes[0].plot(r["trajectory"], ls=ls, color=col, label=label, alpha=0.8)
    axes[0].axhline(args.c_true, color="k", lw=1, label="true c")
    axes[0].set(xlabel="Adam step", ylabel="estimate of c", title="Input-current estimate")
    axes[0].legend(fontsize=7)
    for sigma in args.sigmas:
        mae = [sum(r["mae"] for r in results if r["sigma"] == sigma and r["n"] == n) / args.repeats
               for n in args.sample_sizes]
        axes[1].plot(args.sample_sizes, mae, "o-", label=f"σ={sigma}")
    axes[1].set(xscale="log", xlabel="sample size n", ylabel="MAE of mean spike times (hold-out)",
                title="Hold-out error")
    axes[1].minorticks_off()
    axes[1].set_xticks(args.sample_sizes, [str(n) for n in args.sample_sizes])
    axes[1].legend()
    fig.suptitle(f"stochastic LIF: the input current (true c = {args.c_true:g}) from spike times")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "slif_input_current.png"), dpi=120)
    return results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-steps", type=int, default=60, help="Adam steps per fit")
    p.add_argument("--out", default="out/slif_input_current")
    p.add_argument("--sample-sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.25, 0.5])
    p.add_argument("--repeats", type=int, default=1, help="independent data sets per setting")
    p.add_argument("--c-true", type=float, default=1.5)
    p.add_argument("--c-init", type=float, default=2.5)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--lr-decay", type=float, default=0.1, help="final lr / initial lr")
    p.add_argument("--duration", type=float, default=6.0)
    p.add_argument("--num-spikes", type=int, default=3)
    p.add_argument("--dt", type=float, default=0.05)
    p.add_argument("--holdout", type=int, default=256)
    p.add_argument("--model-samples", type=int, default=None, help="model samples per step (default: n)")
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--count-scale", type=float, default=1.0)
    p.add_argument("--dyadic-order", type=int, default=0)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
