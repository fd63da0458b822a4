"""
Training-step time of the smooth-gate SNN against snnTorch
==========================================================

Seconds per training step (forward simulation, loss, backward) of a recurrent spiking network
with ``--hidden`` neurons, ``--inputs`` inputs and ``--outputs`` linear readouts over ``--steps``
time steps, batch ``--batch``:

* ours: :class:`~pyro_spikes.nn.SmoothGateSNN` (Huh & Sejnowski, 2018), LIF neurons with the
  smooth gate (exact gradients of the smoothed network), ``dt`` = 0.02 ``tau_mem``;
* peer: `snnTorch <https://snntorch.readthedocs.io>`_'s ``RLeaky`` (LIF with all-to-all
  recurrent weights, reset by subtraction, surrogate-gradient backward) between the same input
  and readout ``Linear`` layers, membrane decay ``beta = exp(-dt / tau_mem)``.

Both loop over time steps in Python with batched tensor operations, so the comparison is the
cost of one recurrent spiking step and its backward in each library (the neuron models and
gradients differ: exact gradients of a smoothed network against a surrogate gradient). snnTorch
is a benchmark peer only: install it beside pyro_spikes (``pip install snntorch``); without it
the script prints our figures alone.

On the CPU our LIF step runs as one compiled elementwise pass each way (the fused step of
:mod:`pyro_spikes.nn.smooth_gate`); ``--pytorch-step`` times the PyTorch step as well. Both
networks take their per-step input currents from one ``unbind`` (slicing ``drive[:, n]`` per
step would make the backward quadratic in the number of steps, for either library).

Run with ``PYTHONPATH=. python benchmarks/smooth_gate.py [--quick]``, with
``torch.set_num_threads(--threads)``. Ours and the peer alternate within each of ``--repeats``
rounds (after one warm-up each), so both see the same machine load; the table gives the median
times and the median of the per-round ratios.
"""

import argparse
import math
import os
import platform
import statistics
import sys
import time

import torch

try:
    import pyro_spikes  # noqa: F401
except ImportError:  # run from a checkout without PYTHONPATH
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pyro_spikes.distributions.kernels import compiled_loops  # noqa: E402
from pyro_spikes.nn import SmoothGateSNN  # noqa: E402
from pyro_spikes.provenance import write_results  # noqa: E402

from machine import cpu_model  # noqa: E402  (benchmarks/machine.py, beside this script)

try:
    import snntorch
except ImportError:
    snntorch = None


def interleaved(steps, repeats):
    """Per-round seconds of each callable in ``steps``, alternating within each round."""
    for step in steps:
        step()  # warm-up
    times = [[] for _ in steps]
    for _ in range(repeats):
        for step, ts in zip(steps, times):
            start = time.perf_counter()
            step()
            ts.append(time.perf_counter() - start)
    return times


def ours(batch, inputs, hidden, outputs, steps, seed, tau_mem=10.0, compiled=True):
    torch.manual_seed(seed)
    net = SmoothGateSNN(inputs, hidden, outputs, gate_width=0.5, neuron="lif", tau_mem=tau_mem,
                        tau_syn=5.0, input_scale=3.0)
    x = torch.rand(batch, steps, inputs)
    dt = 0.02 * tau_mem

    def step():
        net.zero_grad()
        with compiled_loops(compiled):
            out = net(x, dt)
        out.pow(2).mean().backward()

    return step


class SnnTorchNet(torch.nn.Module):
    def __init__(self, inputs, hidden, outputs, beta):
        super().__init__()
        import snntorch as snn

        self.fc_in = torch.nn.Linear(inputs, hidden)
        self.lif = snn.RLeaky(beta=beta, linear_features=hidden, reset_mechanism="subtract")
        self.fc_out = torch.nn.Linear(hidden, outputs)

    def forward(self, x):
        spk, mem = self.lif.init_rleaky()
        drive = self.fc_in(x).unbind(1)  # one backward node (drive[:, n] costs O(steps) each)
        outs = []
        for n in range(x.shape[1]):
            spk, mem = self.lif(drive[n], spk, mem)
            outs.append(self.fc_out(spk))
        return torch.stack(outs, 1)


def peer(batch, inputs, hidden, outputs, steps, seed, tau_mem=10.0):
    torch.manual_seed(seed)
    net = SnnTorchNet(inputs, hidden, outputs, beta=math.exp(-0.02))
    x = torch.rand(batch, steps, inputs)

    def step():
        net.zero_grad()
        out = net(x)
        out.pow(2).mean().backward()

    return step


def main(args):
    torch.set_num_threads(args.threads)
    sizes = [(8, 32, 50)] if args.quick else [(32, 100, 500), (128, 256, 200)]
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, {args.threads} torch thread(s), "
          f"Python {platform.python_version()}, torch {torch.__version__}, snntorch "
          f"{snntorch.__version__ if snntorch else 'missing'}; load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"float32, {args.inputs} inputs, {args.outputs} outputs, {args.repeats} interleaved "
          "rounds, medians")
    print()
    head = "| batch | neurons | steps | ours s/step | snnTorch s/step | ours / snnTorch |"
    rule = "|---:|---:|---:|---:|---:|---:|"
    if args.pytorch_step:
        head += " ours, PyTorch step s/step | PyTorch step / snnTorch |"
        rule += "---:|---:|"
    print(head)
    print(rule)
    rows = []
    for batch, hidden, steps in sizes:
        size = (batch, args.inputs, hidden, args.outputs, steps, args.seed)
        calls = [ours(*size)]
        if snntorch is not None:
            calls.append(peer(*size))
        if args.pytorch_step:
            calls.append(ours(*size, compiled=False))
        times = interleaved(calls, args.repeats)
        t_ours = statistics.median(times[0])
        t_peer = statistics.median(times[1]) if snntorch is not None else None
        line = f"| {batch} | {hidden} | {steps} | {t_ours:.3f} | "
        if t_peer:
            ratio = statistics.median(a / b for a, b in zip(times[0], times[1]))
            line += f"{t_peer:.3f} | {ratio:.2f} |"
        else:
            ratio = None
            line += "(missing) | - |"
        if args.pytorch_step:
            t_pt = statistics.median(times[-1])
            pt_ratio = (f"{statistics.median(a / b for a, b in zip(times[-1], times[1])):.2f}"
                        if t_peer else "-")
            line += f" {t_pt:.3f} | {pt_ratio} |"
        print(line)
        row = {"batch": batch, "neurons": hidden, "steps": steps, "ours_s": t_ours,
               "snntorch_s": t_peer, "ratio": ratio}
        if args.pytorch_step:
            row["pytorch_step_s"] = t_pt
            row["pytorch_step_ratio"] = (statistics.median(
                a / b for a, b in zip(times[-1], times[1])) if t_peer else None)
        rows.append(row)
    if snntorch is None:
        print("\nsnntorch is missing: install it beside pyro_spikes to compare")
    if args.out:  # values with the command, commit and machine (docs/render_tables.py)
        write_results(args.out, {
            "settings": {"inputs": args.inputs, "outputs": args.outputs,
                         "repeats": args.repeats, "threads": args.threads,
                         "load_average": list(os.getloadavg())},
            "snntorch": snntorch.__version__ if snntorch else None, "rows": rows})
        print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--inputs", type=int, default=10)
    parser.add_argument("--outputs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one small size, for smoke tests")
    parser.add_argument("--pytorch-step", action="store_true",
                        help="also time our network with the PyTorch (not compiled) step")
    parser.add_argument("--out", default=None,
                        help="results file (JSON with the command, commit and machine)")
    main(parser.parse_args())
