"""
Four gradient families on one task: tune a neuron to a target firing rate
=========================================================================

pyro_spikes offers four ways to get gradients through spiking (see :doc:`/concepts` and
:doc:`/gradient_families`). This example trains each of them on **one shared task**: tune the
drive :math:`\\theta` of a single neuron so that its firing rate over :math:`[0, T]` matches a
target :math:`r^*`, by minimising

.. math::

    \\mathcal L(\\theta) = \\mathbb E\\big[(\\hat r_\\theta - r^*)^2\\big],

where :math:`\\hat r_\\theta` is a rate estimate each family can differentiate:

* **REINFORCE** on the exact :class:`~pyro_spikes.SpikingPointProcess` (one neuron, no
  coupling, intensity :math:`a\\,\\sigma(b)`, parameter :math:`b`): :math:`\\hat r = N / T` with
  :math:`N` the spike count, gradient
  :math:`\\overline{(f - c)\\,\\nabla_b \\log p_b(J)}` with a leave-one-out baseline :math:`c`;
* **relaxed point process** (:class:`~pyro_spikes.RelaxedPointProcess` of the same process,
  temperature :math:`\\tau`): :math:`\\hat r = \\sum_k y_k / T`, the sum of the soft marks,
  differentiated path-wise;
* **exact event gradients** (:class:`~pyro_spikes.distributions.StochasticLIF`, parameter the
  input current :math:`c`): :math:`\\hat r = K / t_K` from the :math:`K`-th spike time,
  differentiated path-wise through the spike times. Two noise models: escape noise (spike
  times are smooth in :math:`c` for fixed noise) and threshold crossing of a membrane driven
  by Brownian noise;
* **smooth gate** (:class:`~pyro_spikes.nn.SmoothGateSNN`, one QIF neuron with constant
  input, parameter the input weight :math:`w`): :math:`\\hat r = \\frac{2}{T^2}\\int_0^T G(t)\\,dt`,
  the time integral of the smooth spike count :math:`G` (for a train of rate :math:`r`,
  :math:`\\int_0^T N(t)\\,dt \\approx r T^2 / 2`). The final count :math:`G(T)` itself would not
  do: it is flat between active zones, so its gradient vanishes unless a spike is in progress
  at :math:`T`.

The families are **different neurons** (a point-process neuron, a stochastic LIF, a
deterministic QIF); what is shared is the task, the target, the loss, the optimiser (Adam, same
learning rate and number of steps, ``--num-samples`` simulations per gradient estimate) and the
evaluation: the achieved rate is the *hard* spike count :math:`N / T` of each family's exact
model (exact thinning samples; the SLIF simulation; the hard-gate :math:`\\Delta \\to 0` QIF) at
the trained parameter, over held-out simulations. The gradient standard deviation is taken over
``--num-repeats`` independent estimates at the initial parameter (the bar chart divides it
by the magnitude of the reference gradient, as the parameters have different units). For the
point-process families :math:`N \\sim \\mathrm{Poisson}(\\lambda T)` with
:math:`\\lambda = a\\sigma(b)`, so
:math:`\\mathcal L = (\\lambda - r^*)^2 + \\lambda / T` and the exact gradient
:math:`(2(\\lambda - r^*) + 1/T)\\, a\\sigma(b)(1 - \\sigma(b))` is printed next to the
estimates as the reference; for the SLIF the reference is a central finite difference of the
Monte Carlo loss with common random numbers (``--num-reference`` paths, no path-wise derivative
involved), and for the smooth gate the derivative of :math:`(r(w) - r^*)^2` with the hard QIF's
rate :math:`r(w) = \\sqrt{w} / (\\pi \\tau_m)`. Comparing the mean estimate with the reference
measures each family's bias for *its own* neuron.

.. results: example-time-gradient_families

At its defaults this example runs in 2.7 min (peak memory 422 MB) on 2 cores (AMD EPYC), commit 1f76e9a2a9; measured by ``python benchmarks/examples.py``.

.. end results
"""

import argparse
import math
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from pyro_spikes.distributions import (  # noqa: E402
    RelaxedPointProcess,
    SpikingPointProcess,
    StochasticLIF,
)
from pyro_spikes.nn import SmoothGateSNN  # noqa: E402
from pyro_spikes.provenance import write_results  # noqa: E402

DTYPE = torch.float64


class Family:
    """One gradient family: a parameter, a gradient estimate of the shared loss, an evaluation."""

    name = ""
    neuron = ""
    estimate = ""
    bias_note = ""
    stochastic = True

    def __init__(self, args):
        self.args = args
        self.duration = args.duration
        self.target = args.target_rate

    def parameters(self):
        return [self.param]

    def value(self):
        return float(self.param.detach().reshape(-1)[0])

    def loss(self):
        """Monte Carlo (or deterministic) loss and the mean rate estimate, differentiable."""
        raise NotImplementedError

    def gradient(self):
        """One gradient estimate of the loss: returns ``(loss, rate, grad)`` as floats."""
        self.param.grad = None
        loss, rate = self.loss()
        (grad,) = torch.autograd.grad(loss, [self.param])
        return float(loss.detach()), float(rate.detach()), float(grad.reshape(-1)[0])

    def hard_rates(self, num):
        """Rates :math:`N / T` of ``num`` held-out simulations of the exact (hard) model."""
        raise NotImplementedError


class _PointProcessFamily(Family):
    neuron = "point process, lambda = a sigmoid(b)"

    def __init__(self, args):
        super().__init__(args)
        a = args.upper_bound
        p = args.init_rate / a
        if not 0 < p < 1 or not 0 < args.target_rate < a:
            raise ValueError("--init-rate and --target-rate must lie in (0, --upper-bound)")
        self.param = torch.tensor([math.log(p / (1 - p))], dtype=DTYPE, requires_grad=True)

    def process(self, bias=None):
        bias = self.param if bias is None else bias
        return SpikingPointProcess(bias, bias.new_zeros(1, 1, 1), bias.new_ones(1),
                                   self.duration, upper_bound=self.args.upper_bound)

    def hard_rates(self, num):
        with torch.no_grad():
            events = self.process(self.param.detach()).sample((num,))
        return events[..., 1:].sum((-1, -2)) / self.duration

    def exact_gradient(self, bias=None):
        """:math:`d\\mathcal L/db` for :math:`N \\sim \\mathrm{Poisson}(a\\sigma(b) T)`."""
        b = self.value() if bias is None else bias
        s = 1 / (1 + math.exp(-b))
        lam = self.args.upper_bound * s
        return (2 * (lam - self.target) + 1 / self.duration) * self.args.upper_bound * s * (1 - s)


class Reinforce(_PointProcessFamily):
    name = "REINFORCE"
    estimate = "N / T (exact count)"
    bias_note = "unbiased (checked against the closed form)"

    def loss(self):
        m = self.args.num_samples
        proc = self.process()
        with torch.no_grad():
            events = proc.sample((m,))
        rate = events[..., 1:].sum((-1, -2)) / self.duration
        f = (rate - self.target) ** 2
        baseline = (f.sum() - f) / (m - 1)  # leave-one-out: independent of each sample
        surrogate = ((f - baseline) * proc.log_prob(events)).mean()
        # value f.mean(), gradient that of the surrogate
        return f.mean() + surrogate - surrogate.detach(), rate.mean()


class Relaxed(_PointProcessFamily):
    estimate = "sum of soft marks / T"

    def __init__(self, args):
        super().__init__(args)
        self.temperature = args.temperature
        self.name = f"relaxed (tau={args.temperature:g})"
        self.bias_note = (f"biased at tau={args.temperature:g} (relaxed objective), "
                          "-> 0 as tau -> 0")

    def loss(self):
        soft = RelaxedPointProcess(self.process(), self.temperature).rsample(
            (self.args.num_samples,))
        rate = soft[..., 1:].sum((-1, -2)) / self.duration
        return ((rate - self.target) ** 2).mean(), rate.mean()


class EventLIF(Family):
    estimate = "K / t_K (K-th spike time)"

    def __init__(self, args, escape):
        super().__init__(args)
        self.escape = escape
        # input current of the deterministic LIF (threshold 1, reset 0, tau 1) at --init-rate
        c0 = 1 / (1 - math.exp(-1 / args.init_rate))
        self.param = torch.tensor([c0], dtype=DTYPE, requires_grad=True)
        if escape:
            self.name = "event gradients, SLIF escape noise"
            self.neuron = "LIF, escape noise (lambda0=1, width 0.2)"
            self.bias_note = ("none: spike times are smooth in c for fixed noise "
                              "(K/t_K itself is a biased rate estimator)")
            self.kwargs = dict(escape_noise=True, escape_rate=1.0, escape_width=0.2)
        else:
            self.name = "event gradients, SLIF threshold + Brownian"
            self.neuron = f"LIF, threshold, sigma={args.noise_scale:g}"
            self.bias_note = ("strongly biased: misses threshold crossings that noise "
                              "creates or removes (worse as dt -> 0)")
            self.kwargs = dict(noise_scale=args.noise_scale)

    def model(self, current, num_spikes):
        return StochasticLIF(current, duration=self.duration, num_spikes=num_spikes,
                             dt=self.args.lif_dt, **self.kwargs)

    def loss(self):
        k = self.args.num_spikes
        times, _ = self.model(self.param, k).rsample_spike_times((self.args.num_samples,))
        rate = k / times[..., 0, k - 1]
        return ((rate - self.target) ** 2).mean(), rate.mean()

    def reference_gradient(self, num, step=0.05):
        """:math:`d\\mathcal L/dc` by a central finite difference of the Monte Carlo loss with
        common random numbers (``num`` paths per side, no path-wise derivative involved):
        ``(mean, standard error)``."""
        k, c = self.args.num_spikes, self.value()
        with torch.no_grad():
            noise = self.model(self.param.detach(), k).sample_noise((num,))
            f = []
            for sign in (1, -1):
                current = torch.tensor([c + sign * step], dtype=DTYPE)
                times, _ = self.model(current, k).rsample_spike_times((num,), noise=noise)
                f.append((k / times[..., 0, k - 1] - self.target) ** 2)
            diff = (f[0] - f[1]) / (2 * step)
        return float(diff.mean()), float(diff.std() / math.sqrt(num))

    def hard_rates(self, num):
        cap = int(4 * max(self.target, self.args.init_rate) * self.duration) + 20
        with torch.no_grad():
            times, counts = self.model(self.param.detach(), cap).rsample_spike_times((num,))
        if int(counts.max()) >= cap:
            raise ValueError(f"a neuron fired more than {cap} times: rates are out of range")
        return counts[..., 0].to(DTYPE) / self.duration


class SmoothGate(Family):
    name = "smooth gate (QIF)"
    estimate = "(2/T^2) int_0^T G dt (smooth count)"
    stochastic = False

    def __init__(self, args):
        super().__init__(args)
        self.net = SmoothGateSNN(1, 1, 1, gate_width=args.gate_width, neuron="qif",
                                 tau_mem=args.tau_mem, tau_syn=args.tau_mem).to(DTYPE)
        # QIF rate sqrt(I) / (pi tau_m) for a constant current I = w * 1
        w0 = (args.init_rate * math.pi * args.tau_mem) ** 2
        with torch.no_grad():
            self.net.input_weight.fill_(w0)
            self.net.bias.zero_()
            self.net.recurrent_weight.zero_()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.param = self.net.input_weight.requires_grad_(True)
        self.steps = int(round(self.duration / args.gate_dt))
        self.neuron = f"deterministic QIF, tau_m={args.tau_mem:g}, gate width {args.gate_width:g}"
        self.bias_note = "exact for the smoothed model; O(Delta) and phase bias vs hard count"

    def inputs(self):
        return torch.ones(1, self.steps, 1, dtype=DTYPE)

    def loss(self):
        _, traj = self.net(self.inputs(), self.args.gate_dt, return_trajectories=True)
        rate = 2 * traj.gate.sum() * self.args.gate_dt / self.duration ** 2
        return (rate - self.target) ** 2, rate

    def reference_gradient(self, num=None):
        """:math:`d\\mathcal L/dw` with the hard QIF's rate :math:`\\sqrt{w}/(\\pi\\tau_m)` in
        place of :math:`\\hat r` (the smooth-rate limit of the hard model): ``(value, 0)``."""
        w, tau = self.value(), self.args.tau_mem
        rate = math.sqrt(w) / (math.pi * tau)
        return 2 * (rate - self.target) / (2 * math.pi * tau * math.sqrt(w)), 0.0

    def hard_rates(self, num):
        with torch.no_grad():
            _, traj = self.net.hard_gate()(self.inputs(), self.args.gate_dt,
                                           return_trajectories=True)
        return (traj.raster.sum() / self.duration).reshape(1).expand(num)


def make_families(args):
    return [Reinforce(args), Relaxed(args), EventLIF(args, escape=True),
            EventLIF(args, escape=False), SmoothGate(args)]


def gradient_statistics(family, repeats):
    """Mean and std of ``repeats`` gradient estimates at the current parameter, and the
    seconds per estimate."""
    start = time.perf_counter()
    grads = [family.gradient()[2] for _ in range(repeats if family.stochastic else 2)]
    seconds = (time.perf_counter() - start) / len(grads)
    g = torch.tensor(grads, dtype=DTYPE)
    return float(g.mean()), float(g.std()) if family.stochastic else 0.0, seconds


def relative_std(result):
    """Gradient std over the magnitude of the reference gradient (NaN if the latter is 0)."""
    ref = abs(result["ref_grad"][0])
    return result["grad_std"] / ref if ref > 0 else float("nan")


def train(family, args, progress):
    opt = torch.optim.Adam(family.parameters(), lr=args.lr)
    decay = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 1 - 0.9 * step / max(args.num_steps, 1))
    history = {"loss": [], "rate": [], "param": []}
    for _ in tqdm(range(args.num_steps), desc=family.name, disable=not progress, leave=False):
        opt.zero_grad()
        loss, rate = family.loss()
        loss.backward()
        opt.step()
        decay.step()
        history["loss"].append(float(loss.detach()))
        history["rate"].append(float(rate.detach()))
        history["param"].append(family.value())
    return history


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Four gradient families on one rate task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-steps", type=int, default=60, help="Adam steps per family")
    parser.add_argument("--num-samples", type=int, default=32,
                        help="simulations per gradient estimate (stochastic families)")
    parser.add_argument("--num-repeats", type=int, default=30,
                        help="gradient estimates at the initial parameter for the std")
    parser.add_argument("--num-eval", type=int, default=200, help="held-out simulations")
    parser.add_argument("--num-reference", type=int, default=2000,
                        help="paths per side of the finite-difference reference gradient (SLIF)")
    parser.add_argument("--target-rate", type=float, default=2.0)
    parser.add_argument("--init-rate", type=float, default=0.6,
                        help="rate that sets every family's initial parameter")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--upper-bound", type=float, default=5.0,
                        help="a of the point-process neuron")
    parser.add_argument("--temperature", type=float, default=0.3)
    parser.add_argument("--num-spikes", type=int, default=5, help="K of the SLIF estimate")
    parser.add_argument("--noise-scale", type=float, default=0.3,
                        help="sigma of the threshold-crossing SLIF")
    parser.add_argument("--lif-dt", type=float, default=0.02)
    parser.add_argument("--gate-width", type=float, default=0.3)
    parser.add_argument("--gate-dt", type=float, default=0.02)
    parser.add_argument("--tau-mem", type=float, default=0.1)
    parser.add_argument("--families", default="all",
                        help="comma-separated subset of: reinforce,relaxed,escape,threshold,gate")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--out", default="out/gradient_families")
    return parser.parse_args(argv)


KEYS = ["reinforce", "relaxed", "escape", "threshold", "gate"]


def main(args):
    torch.set_num_threads(args.num_threads)
    if args.num_samples < 2 or args.num_repeats < 2:
        raise ValueError("--num-samples and --num-repeats must be >= 2")
    families = make_families(args)
    if args.families != "all":
        wanted = args.families.split(",")
        unknown = set(wanted) - set(KEYS)
        if unknown:
            raise ValueError(f"--families: unknown {sorted(unknown)}; choose from {KEYS}")
    else:
        wanted = KEYS
    results = []
    chosen = [(i, f) for i, (key, f) in enumerate(zip(KEYS, families)) if key in wanted]
    for i, fam in tqdm(chosen, desc="families", disable=args.no_progress):
        torch.manual_seed(args.seed + 1000 * i)  # by family, so that subsets reproduce
        init_rates = fam.hard_rates(args.num_eval)
        init_param = fam.value()
        g_mean, g_std, seconds = gradient_statistics(fam, args.num_repeats)
        if isinstance(fam, _PointProcessFamily):
            exact = (fam.exact_gradient(), 0.0)
        else:
            exact = fam.reference_gradient(args.num_reference)
        history = train(fam, args, not args.no_progress)
        rates = fam.hard_rates(args.num_eval)
        results.append(dict(family=fam, history=history, init_rate=float(init_rates.mean()),
                            init_param=init_param, final_param=fam.value(),
                            rate_mean=float(rates.mean()),
                            rate_sd=float(rates.std()) if fam.stochastic else 0.0,
                            grad_mean=g_mean, grad_std=g_std, ref_grad=exact,
                            seconds=seconds))

    print(f"\nTarget rate r* = {args.target_rate:g} on [0, {args.duration:g}], "
          f"{args.num_steps} Adam steps (lr {args.lr:g}), {args.num_samples} simulations per "
          f"estimate; rates over {args.num_eval} held-out hard simulations; gradient std over "
          f"{args.num_repeats} estimates at the initial parameter.\n")
    print("| family | neuron | rate estimate in the loss | parameter (init -> final) | "
          "initial rate | final rate (mean ± sd) | dL/dθ at init (mean ± std) | "
          "reference dL/dθ | std / abs(reference) | s / estimate | bias |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        fam = r["family"]
        ref, ref_se = r["ref_grad"]
        exact = f"{ref:.3g}" + (f" ± {ref_se:.2g}" if ref_se > 0 else "")
        print(f"| {fam.name} | {fam.neuron} | {fam.estimate} | "
              f"{r['init_param']:.3g} -> {r['final_param']:.3g} | {r['init_rate']:.3g} | "
              f"{r['rate_mean']:.3g} ± {r['rate_sd']:.2g} | "
              f"{r['grad_mean']:.3g} ± {r['grad_std']:.2g} | {exact} | "
              f"{relative_std(r):.2g} | "
              f"{r['seconds']:.3g} | {fam.bias_note} |")

    os.makedirs(args.out, exist_ok=True)
    # the numbers of the docs' tables (docs/render_tables.py renders them from this file)
    path = os.path.join(args.out, "gradient_families.json")
    write_results(path, {
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "no_progress")},
        "families": [{
            "key": KEYS[i], "name": r["family"].name, "init_param": r["init_param"],
            "final_param": r["final_param"], "init_rate": r["init_rate"],
            "rate_mean": r["rate_mean"], "rate_sd": r["rate_sd"],
            "stochastic": r["family"].stochastic, "grad_mean": r["grad_mean"],
            "grad_std": r["grad_std"], "reference": r["ref_grad"][0],
            "reference_se": r["ref_grad"][1], "relative_std": relative_std(r),
            "seconds_per_estimate": r["seconds"],
        } for (i, _), r in zip(chosen, results)],
    })
    print(f"saved {path}")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for r in results:
        h = r["history"]
        axes[0].plot(h["loss"], label=r["family"].name)
        axes[1].plot(h["rate"], label=r["family"].name)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("Adam step")
    axes[0].set_ylabel("training loss (own rate estimate)")
    axes[1].axhline(args.target_rate, color="k", ls="--", lw=1, label="target")
    axes[1].set_xlabel("Adam step")
    axes[1].set_ylabel("rate estimate in the loss (batch mean)")
    axes[1].legend(fontsize=7)
    names = [r["family"].name for r in results]
    # relative std: the parameters of the families have different units
    stds = [relative_std(r) for r in results]
    floor = min([s for s in stds if s > 0], default=1.0) * 1e-2
    bars = axes[2].bar(range(len(stds)), [max(s, floor) for s in stds],
                       color=[f"C{i}" for i in range(len(stds))])
    for bar, s in zip(bars, stds):
        if s == 0:
            bar.set_hatch("//")
            bar.set_alpha(0.4)
            axes[2].text(bar.get_x() + bar.get_width() / 2, floor, "0\n(determ.)",
                         ha="center", va="bottom", fontsize=7)
    axes[2].set_yscale("log")
    axes[2].set_xticks(range(len(names)))
    axes[2].set_xticklabels(names, rotation=30, ha="right", fontsize=7)
    axes[2].set_ylabel("std of dL/dθ at init / |reference dL/dθ|")
    fig.suptitle(f"one neuron, target rate {args.target_rate:g}")
    fig.tight_layout()
    path = os.path.join(args.out, "gradient_families.png")
    fig.savefig(path, dpi=100)
    print(f"saved {path}")
    return results


if __name__ == "__main__":
    main(parse_args())
