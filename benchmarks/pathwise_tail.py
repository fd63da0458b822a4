"""
The tail of the path-wise ELBO gradient at Kajino's experiment-1 start
======================================================================

Measures what docs/pathwise_tail.rst reports: at the initial model of Kajino's code
(diffsnn ``tasks/synthetic/exp1``: biases U[-1, 1], weights U[-5, 5], self-weights U[-5, -0.1],
the data network's ranges; here :func:`~pyro_spikes.models.paper.kajino_ground_truth` of
``--model-seed``) on ``--num-sequences`` sequences of the network of ``--data-seed``, the
share of ``--num-draws`` path-wise gradient draws whose norm exceeds 10x the median, and
max / median, in float32 and float64 **on the same noise** (candidates and Gumbel variables
drawn in float64 and cast), for

* Kajino's guide (``guide_type="prior"``) and a separate guide at the same values (there the
  relaxed densities' gradients do not cancel), with the float32 density evaluated from the
  log marks carried by ``rsample`` ("log marks") or from the marks alone ("from y", what
  ``log_prob`` of a copy does);
* the temperatures of ``--temperatures``;
* the same start without excitatory hidden-to-hidden weights, and without either basis.

Run with ``PYTHONPATH=. python benchmarks/pathwise_tail.py [--quick]`` (a few minutes at the
defaults on one core); ``--out FILE`` writes every number (with the command, commit and
machine) to a results file, which ``docs/render_tables.py`` renders on
:doc:`pathwise_tail`.
"""

import argparse
import contextlib
import os
import sys
import time

import pyro
import torch
from pyro import poutine
from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
    import pyro_spikes  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

from pyro_spikes.models import SNN  # noqa: E402
from pyro_spikes.models.paper import kajino_ground_truth  # noqa: E402
from pyro_spikes.provenance import write_results  # noqa: E402


@contextlib.contextmanager
def pinned_noise(seed):
    """torch.rand / torch.poisson drawn in float64 from one generator, then cast."""
    gen = torch.Generator().manual_seed(seed)
    rand, poisson = torch.rand, torch.poisson

    def fake_rand(*shape, dtype=None, device=None, **kwargs):
        shape = shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape
        return rand(shape, generator=gen, dtype=torch.float64).to(dtype or torch.float32)

    def fake_poisson(rate, *args, **kwargs):
        return poisson(rate.double(), generator=gen).to(rate.dtype)

    torch.rand, torch.poisson = fake_rand, fake_poisson
    try:
        yield
    finally:
        torch.rand, torch.poisson = rand, poisson


@contextlib.contextmanager
def log_y_from_marks():
    """Make rsample values lose their log marks (log_prob then uses log y from y)."""
    import pyro_spikes.distributions.relaxed as relaxed

    rsample = relaxed.RelaxedPointProcess.rsample
    relaxed.RelaxedPointProcess.rsample = lambda self, *a, **k: rsample(self, *a, **k) * 1
    try:
        yield
    finally:
        relaxed.RelaxedPointProcess.rsample = rsample


def start(args, dtype, guide_type, weight_fn=None):
    pyro.set_rng_seed(0)
    observed, _ = kajino_ground_truth(args.data_seed, duration=args.duration).simulate(
        args.num_sequences)
    init = kajino_ground_truth(args.model_seed, duration=args.duration)
    bias, weight = init.bias.detach(), init.weight.detach()
    weight = weight if weight_fn is None else weight_fn(weight)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        snn = SNN(2, 4, args.duration, guide_type=guide_type, name=f"{dtype}{guide_type}")
    finally:
        torch.set_default_dtype(old)
    snn.bias, snn.weight = bias.to(dtype), weight.to(dtype)
    if guide_type == "separate":
        snn.guide_bias, snn.guide_weight = bias.to(dtype), weight.to(dtype)
    return snn, observed.to(dtype)


def draws(args, dtype, guide_type="prior", temperature=0.3, weight_fn=None, desc=""):
    """Gradient draws ``(num_draws, P)`` (float64) and the losses, on pinned noise."""
    pyro.clear_param_store()
    snn, observed = start(args, dtype, guide_type, weight_fn)
    params = [p for n, p in snn.named_parameters()]
    grads, log_q = [], []
    kwargs = dict(relaxed=True, temperature=temperature)
    with pinned_noise(args.noise_seed):
        for _ in tqdm(range(args.num_draws), desc=desc, leave=False):
            # the negative ELBO of Trace_ELBO, keeping log q (the guide's relaxed density)
            guide = poutine.trace(snn.guide).get_trace(observed, **kwargs)
            model = poutine.trace(poutine.replay(snn.model, trace=guide)).get_trace(
                observed, **kwargs)
            loss = guide.log_prob_sum() - model.log_prob_sum()
            g = torch.autograd.grad(loss, params)
            grads.append(torch.cat([x.reshape(-1) for x in g]).double())
            log_q.append(float(guide.log_prob_sum().detach()))
    return torch.stack(grads), torch.tensor(log_q, dtype=torch.float64)


def tail(g):
    norm = g.norm(dim=1)
    med = norm.median()
    return float((norm > 10 * med).double().mean()), float(norm.max() / med), float(med)


def main(args):
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    print(f"data network {args.data_seed}, start {args.model_seed}, {args.num_sequences} "
          f"sequences, T = {args.duration:g}, {args.num_draws} draws on the same noise\n")
    print("| case | share > 10x median | max / median | median norm |")
    print("|---|---:|---:|---:|")
    rows = []

    def row(label, g):
        share, ratio, med = tail(g)
        rows.append({"case": label, "share_over_10x_median": share, "max_over_median": ratio,
                     "median_norm": med})
        print(f"| {label} | {share:.3f} | {ratio:.3g} | {med:.4g} |", flush=True)

    g64, l64 = draws(args, torch.float64, desc="prior f64")
    g32, l32 = draws(args, torch.float32, desc="prior f32")
    row("Kajino's guide, float64", g64)
    row("Kajino's guide, float32", g32)
    s64, sl64 = draws(args, torch.float64, "separate", desc="separate f64")
    s32, sl32 = draws(args, torch.float32, "separate", desc="separate f32")
    with log_y_from_marks():
        y32, yl32 = draws(args, torch.float32, "separate", desc="separate f32 from y")
    row("separate guide (same values), float64", s64)
    row("separate guide, float32, densities from the log marks (now)", s32)
    row("separate guide, float32, densities from y (before)", y32)
    for tau in args.temperatures:
        row(f"Kajino's guide, float64, temperature {tau:g}",
            draws(args, torch.float64, temperature=tau, desc=f"tau {tau}")[0])

    def no_hidden_excitation(w):
        w = w.clone()
        w[:, 2:, 2:] = w[:, 2:, 2:].clamp(max=0)
        return w

    def without(basis):
        def f(w):
            w = w.clone()
            w[basis] = 0
            return w
        return f

    row("no excitatory hidden-to-hidden weight, float64",
        draws(args, torch.float64, weight_fn=no_hidden_excitation, desc="no excitation")[0])
    row("slow basis (tau_l = 5) weights set to 0, float64",
        draws(args, torch.float64, weight_fn=without(1), desc="no slow basis")[0])
    row("fast basis (tau_l = 1) weights set to 0, float64",
        draws(args, torch.float64, weight_fn=without(0), desc="no fast basis")[0])

    def rel(a, b):
        return (a - b).norm(dim=1) / b.norm(dim=1)

    print("\nfloat32 against float64 on the same noise (median [max] over draws)")
    pairs = []
    for label, a, b, la, lb in (
        ("Kajino's guide", g32, g64, l32, l64),
        ("separate guide, densities from the log marks (now)", s32, s64, sl32, sl64),
        ("separate guide, densities from y (before)", y32, s64, yl32, sl64),
    ):
        r, dl = rel(a, b), (la - lb).abs()
        pairs.append({"case": label, "grad_rel_error_median": float(r.median()),
                      "grad_rel_error_max": float(r.max()),
                      "log_q_diff_median": float(dl.median()),
                      "log_q_diff_max": float(dl.max())})
        print(f"  {label}: gradient relative error {float(r.median()):.3g} "
              f"[{float(r.max()):.3g}], |log q difference| {float(dl.median()):.3g} "
              f"[{float(dl.max()):.3g}] nats (summed over the sequences)")
    seconds = time.perf_counter() - t0
    print(f"\n{seconds:.0f} s")
    if args.out:
        settings = {k: getattr(args, k) for k in ("data_seed", "model_seed", "noise_seed",
                                                  "num_sequences", "duration", "num_draws",
                                                  "temperatures", "threads", "quick")}
        write_results(args.out, {"settings": settings, "tail": rows, "float32_vs_float64": pairs,
                                 "seconds": seconds})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n")[0])
    parser.add_argument("--data-seed", type=int, default=43)
    parser.add_argument("--model-seed", type=int, default=4)
    parser.add_argument("--noise-seed", type=int, default=1)
    parser.add_argument("--num-sequences", type=int, default=10)
    parser.add_argument("--duration", type=float, default=50.0)
    parser.add_argument("--num-draws", type=int, default=200)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="1 sequence, T = 5, 4 draws (a smoke test)")
    parser.add_argument("--out", default=None, help="write the results file (JSON) here")
    args = parser.parse_args()
    if args.quick:
        args.num_sequences, args.duration, args.num_draws = 1, 5.0, 4
    main(args)
