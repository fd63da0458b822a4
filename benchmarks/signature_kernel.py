"""
Signature-kernel Gram matrices against pysiglib
===============================================

Seconds and peak memory of a ``--n`` x ``--n`` Gram matrix of signature kernels
(:func:`pyro_spikes.scoring.signature_kernel_gram`, dyadic order ``--dyadic-order``) of
spike-train paths (2 neurons, time-augmented counting paths of dimension 3 with the default
count scaling of :func:`~pyro_spikes.scoring.signature_kernel`) of ``--lengths`` vertices,
forward only and forward + backward (gradients of the sum of the Gram in both path sets):

* ours: the compiled Goursat solver with its adjoint sweep (``backend="compiled"``);
* ours, PyTorch reference (``backend="torch"``, the GPU path), up to ``--reference-max-length``;
* peer: `pysiglib <https://pypi.org/project/pysiglib/>`_ (C++/CUDA), ``sig_kernel_gram`` for
  the forward and ``pysiglib.torch_api.sig_kernel_gram`` (its autograd path, which rebuilds the
  PDE grids in the backward) for forward + backward, ``n_jobs=1``.

pysiglib is a benchmark peer only (``pip install pysiglib``); without it the script prints our
figures alone. The values of ours and pysiglib are compared (largest relative difference).

Memory is the peak resident set size above the baseline (the peak after start-up and making
the paths, tens of MB) of a fresh subprocess that runs the call once, under an address-space limit of ``--memory-limit-gb`` (a call that does not fit is
reported as ``> limit`` and not timed). Times: the calls alternate within each of ``--rounds``
rounds in this process (after one warm-up), so all see the same machine load; the tables give
the median times and the median of the per-round ratios ours / pysiglib.

Run with ``PYTHONPATH=. python benchmarks/signature_kernel.py [--quick]``.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

try:
    import pyro_spikes  # noqa: F401
except ImportError:  # run from a checkout without PYTHONPATH
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pyro_spikes.scoring import default_count_scale, signature_kernel_gram, spike_train_paths  # noqa: E402
from pyro_spikes.provenance import write_results  # noqa: E402
from pyro_spikes.spikes import pack_spikes  # noqa: E402

from machine import cpu_model  # noqa: E402  (benchmarks/machine.py, beside this script)

try:
    import pysiglib
except ImportError:
    pysiglib = None

IMPLS = ("ours", "reference", "pysiglib")


def paths(n, length, seed, duration=10.0):
    """n spike-train paths of exactly ``length`` vertices (2 neurons, (length - 2) / 2 spikes)."""
    g = torch.Generator().manual_seed(seed)
    spikes = (length - 2) // 2
    batch = []
    for _ in range(n):
        t = torch.sort(torch.rand(spikes, generator=g, dtype=torch.float64) * duration).values
        who = torch.rand(spikes, generator=g) < 0.5
        batch.append([t[who].tolist(), t[~who].tolist()])
    events = pack_spikes(batch, duration=duration, capacity=spikes, dtype=torch.float64)
    return spike_train_paths(events, duration, 1.0, default_count_scale(events))


def call(impl, backward, x, y, lam):
    """A function running one Gram (and its backward)."""
    def run():
        a, b = (x.clone().requires_grad_(), y.clone().requires_grad_()) if backward else (x, y)
        if impl == "pysiglib":
            gram = (pysiglib.torch_api.sig_kernel_gram if backward else pysiglib.sig_kernel_gram)
            K = gram(a, b, dyadic_order=lam, n_jobs=1)
        else:
            backend = "compiled" if impl == "ours" else "torch"
            with torch.set_grad_enabled(backward):
                K = signature_kernel_gram(a, b, lam, backend=backend)
        if backward:
            K.sum().backward()
        return K.detach()

    return run


def child(args):
    """Subprocess mode: run one call, print seconds and peak RSS above baseline (bytes)."""
    torch.set_num_threads(1)
    x, y = paths(args.n, args.child_length, 0), paths(args.n, args.child_length, 1)
    run = call(args.child_impl, bool(args.child_backward), x, y, args.dyadic_order)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024
    print(json.dumps({"seconds": seconds, "peak_bytes": peak}))


def measure_memory(impl, length, backward, args):
    limit = int(args.memory_limit_gb * 2**30)

    def set_limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    cmd = [sys.executable, os.path.abspath(__file__), "--n", str(args.n), "--dyadic-order",
           str(args.dyadic_order), "--child-impl", impl, "--child-length", str(length),
           "--child-backward", str(int(backward))]
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=set_limit,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_bytes"]


def fmt_bytes(b, limit_gb):
    if b is None:
        return f"> {limit_gb:g} GB"
    if b < 2**20:  # below the resolution of the peak above the start-up peak
        return "< 1 MB"
    return f"{b / 2**30:.2f} GB" if b >= 2**30 else f"{b / 2**20:.0f} MB"


def main(args):
    torch.set_num_threads(1)
    lengths = [50] if args.quick else args.lengths
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, 1 thread, Python "
          f"{platform.python_version()}, torch {torch.__version__}, pysiglib "
          f"{pysiglib.__version__ if pysiglib else 'missing'}; load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"float64, {args.n} x {args.n} Gram, path dimension 3 (2 neurons), dyadic order "
          f"{args.dyadic_order}; times: medians of {args.rounds} interleaved rounds")
    impls = [i for i in IMPLS if i != "pysiglib" or pysiglib is not None]
    rows = []
    for length in lengths:
        x, y = paths(args.n, length, 0), paths(args.n, length, 1)
        todo = [(i, bw) for i in impls for bw in (False, True)
                if i != "reference" or length <= args.reference_max_length]
        memory = {key: measure_memory(key[0], length, key[1], args) for key in todo}
        runnable = [key for key in todo if memory[key] is not None]
        runs = {key: call(key[0], key[1], x, y, args.dyadic_order) for key in runnable}
        values = {key: run() for key, run in runs.items()}  # warm-up, and the values compared
        times = {key: [] for key in runnable}
        for _ in range(args.rounds):
            for key in runnable:
                start = time.perf_counter()
                runs[key]()
                times[key].append(time.perf_counter() - start)
        for key in todo:
            row = {"length": length, "impl": key[0], "backward": key[1],
                   "peak_bytes": memory[key]}
            if key in times:
                row["seconds"] = statistics.median(times[key])
                peer = ("pysiglib", key[1])
                if key[0] != "pysiglib" and peer in times:
                    row["ratio_over_pysiglib"] = statistics.median(
                        a / b for a, b in zip(times[key], times[peer]))
                    ref = values[peer]
                    row["max_rel_diff_pysiglib"] = ((values[key] - ref).abs().max()
                                                    / ref.abs().max()).item()
            rows.append(row)
    print()
    print("| length | implementation | forward s | f+b s | fwd / pysiglib | f+b / pysiglib "
          "| f+b peak memory | max rel. diff |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    names = {"ours": "ours (compiled, adjoint)", "reference": "ours (PyTorch reference)",
             "pysiglib": "pysiglib"}
    for length in lengths:
        for impl in impls:
            got = {r["backward"]: r for r in rows if r["length"] == length and r["impl"] == impl}
            if not got:
                continue
            f, b = got.get(False, {}), got.get(True, {})
            sec = lambda r: f"{r['seconds']:.4f}" if "seconds" in r else "-"  # noqa: E731
            rat = lambda r: (f"{r['ratio_over_pysiglib']:.3f}"  # noqa: E731
                             if "ratio_over_pysiglib" in r else "-")
            diff = f.get("max_rel_diff_pysiglib")
            print(f"| {length} | {names[impl]} | {sec(f)} | {sec(b)} | {rat(f)} | {rat(b)} | "
                  f"{fmt_bytes(b.get('peak_bytes'), args.memory_limit_gb) if b else '-'} | "
                  f"{f'{diff:.1e}' if diff is not None else '-'} |")
    if pysiglib is None:
        print("\npysiglib is missing: install it beside pyro_spikes to compare")
    if args.out:  # values with the command, commit and machine (docs/render_tables.py)
        settings = {k: v for k, v in vars(args).items() if not k.startswith("child")}
        settings["load_average"] = list(os.getloadavg())
        write_results(args.out, {"settings": settings, "rows": rows,
                                 "pysiglib": pysiglib.__version__ if pysiglib else None})
        print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--seed", type=int, default=0, help="unused: the paths are fixed")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 200, 800])
    parser.add_argument("--dyadic-order", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reference-max-length", type=int, default=200)
    parser.add_argument("--memory-limit-gb", type=float, default=8.0)
    parser.add_argument("--out", default=None, help="write the rows as JSON")
    parser.add_argument("--quick", action="store_true", help="length 50 only, for smoke tests")
    parser.add_argument("--child-impl", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-length", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child-backward", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_impl:
        child(args)
    else:
        main(args)
