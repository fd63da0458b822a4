"""
Data-parallel SVI throughput (pyro_spikes.distributed on PyTorch Lightning, DDP, gloo) and
its scaling law for more workers.

Measured (the same process, so the ratios compare like with like):

1. steps/s and sequences/s of path-wise SVI of an SNN with hidden neurons (Kajino's
   2 observed + 4 hidden neurons, T = 20) for 1 and 2 CPU processes, Lightning's
   ``ddp_fork`` (one torch thread each), both *weak* scaling (the same minibatch per
   worker: the global batch doubles) and *strong* scaling (the same global batch, split);
2. the compute time of one step, :math:`t_c(b) = c_0 + c_1 b`, fitted on minibatches
   :math:`b = 1, 2, 4, 8` in one process (mean of loss + backward over minibatches cycling
   through the data, no Lightning);
3. the all-reduce time of a float32 vector of :math:`n` numbers between 2 gloo processes on
   this machine, fitted to the latency-bandwidth model :math:`t = \\alpha + \\beta\\,4n`.

Simulated, from these fits: the step time of :math:`R` workers,
:math:`T(R) = t_c(G/R) + 2(R-1)(\\alpha + \\beta\\,4n/R)` (ring all-reduce: :math:`2(R-1)`
messages of :math:`4n/R` bytes; Patarasuk & Yuan, 2009), with no overlap of communication and
computation (pessimistic: DDP overlaps bucketed all-reduces with the backward pass). It gives
the strong-scaling speed-up :math:`T(1)/T(R)` for a global batch :math:`G` and the number of
workers at which communication takes longer than computation. The loopback :math:`\\alpha,
\\beta` of one machine are far below a cluster's, so the table is also printed for a nominal
network (``--net-latency``, ``--net-bandwidth``; assumptions, not measurements).
The parameter count of a larger network (``--large-params``) is simulated with the compute of
the measured model, so its rows are a pessimistic bound (a larger network computes longer
per step, which helps scaling). ``--quick`` shrinks everything for smoke tests. With ``--out DIR``
the results file ``distributed.json`` (every number, with the command, commit and machine;
the Benchmarks page is rendered from it) and a figure of the simulated speed-up are written.
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

import pyro
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pyro.infer import Trace_ELBO

from pyro_spikes.distributed import SubsampledGuide, SubsampledModel
from pyro_spikes.models import SNN
from pyro_spikes.models.paper import kajino_ground_truth

from pyro_spikes.provenance import write_results

from machine import cpu_model  # benchmarks/machine.py, beside this script


def make_data(num_sequences, duration):
    truth = kajino_ground_truth(0, duration=duration)
    pyro.set_rng_seed(0)
    observed, _ = truth.simulate(num_sequences)
    return observed


def make_module(num_sequences, duration, num_steps):
    from pyro_spikes.distributed import SVIModule

    pyro.set_rng_seed(1)
    snn = SNN(2, 4, duration)
    loss_fn = Trace_ELBO()(SubsampledModel(snn, num_sequences), SubsampledGuide(snn, num_sequences))
    return SVIModule(loss_fn, lr=0.02, num_steps=num_steps, temperature=(1.0, 0.3))


# ---------------------------------------------------------------- 1. Lightning steps/s
def lightning_step_times(events, devices, batch_size, num_steps, warmup, duration):
    import lightning.pytorch as pl

    from pyro_spikes.distributed import SequenceDataModule

    class StepTimer(pl.Callback):
        def __init__(self, path):
            self.path, self.times = path, []

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.times.append(time.perf_counter() - self.t0)

        def on_train_end(self, trainer, module):
            if trainer.is_global_zero:
                with open(self.path, "w") as f:
                    json.dump(self.times, f)

    path = tempfile.mktemp(suffix=".json")
    module = make_module(events.shape[0], duration, num_steps)
    trainer = pl.Trainer(accelerator="cpu", devices=devices,
                         strategy="ddp_fork" if devices > 1 else "auto", max_steps=num_steps,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[StepTimer(path)])
    trainer.fit(module, datamodule=SequenceDataModule(events, batch_size, seed=0))
    with open(path) as f:
        times = json.load(f)[warmup:]
    os.unlink(path)
    return statistics.median(times), len(times)


# ---------------------------------------------------------------- 2. compute per step
def compute_times(events, duration, batches, repeats):
    """
    Mean seconds of loss + backward on minibatches of ``b`` sequences, the minibatches
    cycling through the data set (sequences differ in their spike counts, hence in cost).
    """
    module = make_module(events.shape[0], duration, 10)
    params = list(module.loss_fn.parameters())
    n = events.shape[0]
    module.step_loss(torch.arange(1), events[:1], step=0)  # warm-up
    out = {}
    for b in batches:
        samples = []
        for r in range(repeats):
            index = torch.arange(r * b, (r + 1) * b) % n
            t0 = time.perf_counter()
            loss, _ = module.step_loss(index, events[index], step=r)
            grads = torch.autograd.grad(loss, params)
            samples.append(time.perf_counter() - t0)
            del grads
        out[b] = statistics.fmean(samples)
    return out


def fit_line(xs, ys):
    """Least-squares intercept and slope (intercept clamped at 0)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return max(my - slope * mx, 0.0), max(slope, 0.0)


# ---------------------------------------------------------------- 3. all-reduce
def _allreduce_worker(rank, world, init_file, sizes, repeats, result_file):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    tensors = {n: torch.ones(n) for n in sizes}
    for _ in range(10):  # warm-up (connection set-up, buffers)
        for x in tensors.values():
            dist.all_reduce(x)
    samples = {n: [] for n in sizes}
    for _ in range(repeats):  # sizes interleaved, so that load bursts hit them alike
        for n, x in tensors.items():
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(x)
            samples[n].append(time.perf_counter() - t0)
    out = {n: statistics.median(v) for n, v in samples.items()}
    if rank == 0:
        with open(result_file, "w") as f:
            json.dump(out, f)
    dist.destroy_process_group()


def allreduce_times(sizes, repeats, world=2):
    init_file = tempfile.mktemp()
    result_file = tempfile.mktemp(suffix=".json")
    mp.start_processes(_allreduce_worker, args=(world, init_file, sizes, repeats, result_file),
                       nprocs=world, start_method="fork")
    with open(result_file) as f:
        out = {int(k): v for k, v in json.load(f).items()}
    os.unlink(result_file)
    if os.path.exists(init_file):
        os.unlink(init_file)
    return out


# ---------------------------------------------------------------- the scaling model
def step_time(workers, global_batch, c0, c1, alpha, beta, n):
    comm = 2 * (workers - 1) * (alpha + beta * 4 * n / workers) if workers > 1 else 0.0
    return c0 + c1 * global_batch / workers, comm


def scaling_table(workers, global_batch, c0, c1, alpha, beta, n):
    rows = []
    t1 = sum(step_time(1, global_batch, c0, c1, alpha, beta, n))
    for r in workers:
        comp, comm = step_time(r, global_batch, c0, c1, alpha, beta, n)
        rows.append({"workers": r, "compute_s": comp, "comm_s": comm,
                     "speedup": t1 / (comp + comm), "comm_dominates": comm > comp})
    return rows


def crossover(global_batch, c0, c1, alpha, beta, n, max_workers=1 << 20):
    """Smallest R (power of two) at which communication takes longer than computation."""
    r = 2
    while r <= max_workers:
        comp, comm = step_time(r, global_batch, c0, c1, alpha, beta, n)
        if comm > comp:
            return r
        r *= 2
    return None


def markdown_scaling(rows):
    lines = ["| workers | compute s | all-reduce s | speed-up | communication dominates |",
             "|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['workers']} | {r['compute_s']:.4f} | {r['comm_s']:.2e} | "
                     f"{r['speedup']:.1f} | {'yes' if r['comm_dominates'] else 'no'} |")
    return "\n".join(lines)


def main(args):
    with pyro.settings.context(module_local_params=True):  # parameters live in the modules
        return _main(args)


def _main(args):
    torch.set_num_threads(1)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    load_start = list(load)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"pyro {pyro.__version__}, Python {platform.python_version()}, 1 torch thread per "
          f"process; load average {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}")
    quick = args.quick
    duration = 5.0 if quick else args.duration
    per_worker = 2 if quick else args.batch_size
    num_seq = 8 if quick else args.num_sequences
    steps = 4 if quick else args.num_steps
    warmup = 1 if quick else 3
    events = make_data(num_seq, duration)
    num_params = sum(p.numel() for p in make_module(num_seq, duration, 1).loss_fn.parameters())

    # 1. Lightning, 1 and 2 processes
    rows = []
    for label, devices, batch in (("1 process", 1, per_worker),
                                  ("2 processes, weak (same batch per worker)", 2, per_worker),
                                  ("1 process, global batch x2", 1, 2 * per_worker),
                                  ("2 processes, strong (same global batch)", 2, per_worker)):
        median, count = lightning_step_times(events, devices, batch, steps, warmup, duration)
        rows.append({"setup": label, "processes": devices, "batch_per_worker": batch,
                     "global_batch": devices * batch, "step_s": median,
                     "steps_per_s": 1 / median, "sequences_per_s": devices * batch / median,
                     "steps_timed": count})
    print(f"\npath-wise SVI of an SNN (2 observed + 4 hidden neurons, T = {duration:g}), "
          f"{num_seq} sequences, {num_params} parameters; median step over "
          f"{rows[0]['steps_timed']} steps after {warmup} warm-up (Lightning, ddp_fork, gloo)\n")
    print("| set-up | processes | batch / worker | global batch | step s | steps/s | "
          "sequences/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['setup']} | {r['processes']} | {r['batch_per_worker']} | "
              f"{r['global_batch']} | {r['step_s']:.3f} | {r['steps_per_s']:.2f} | "
              f"{r['sequences_per_s']:.1f} |")
    weak = rows[1]["sequences_per_s"] / rows[0]["sequences_per_s"]
    strong = rows[2]["step_s"] / rows[3]["step_s"]
    print(f"\nweak scaling, sequences/s 2 processes / 1: {weak:.2f}x (ideal 2); strong scaling "
          f"(global batch {2 * per_worker}), step time 1 process / 2: {strong:.2f}x (ideal 2)")

    # 2. compute per step, 3. all-reduce
    batches = [1, 2] if quick else [1, 2, 4, 8]
    comp = compute_times(events, duration, batches, 2 if quick else args.repeats)
    c0, c1 = fit_line(list(comp), list(comp.values()))
    sizes = [num_params, 10_000, 100_000] if quick else [num_params, 1_000, 10_000, 100_000,
                                                          1_000_000]
    ar = allreduce_times(sizes, 5 if quick else 30)
    alpha, per_byte = fit_line([4 * n for n in ar], list(ar.values()))
    print("\ncompute per step (mean loss + backward, one process): " + ", ".join(
        f"b={b}: {t:.4f} s" for b, t in comp.items())
        + f"; fit t_c(b) = {c0:.4f} + {c1:.4f} b s")
    print("all-reduce of n float32 (2 gloo processes, this machine): " + ", ".join(
        f"n={n}: {t * 1e6:.0f} us" for n, t in ar.items())
        + f"; fit t = {alpha * 1e6:.1f} us + 4n bytes / "
        + (f"{1 / per_byte / 1e9:.2f} GB/s" if per_byte > 0 else "(no size dependence resolved)"))
    print(f"this model's parameter vector (n = {num_params}): all-reduce "
          f"{ar[num_params] * 1e6:.0f} us = {ar[num_params] / comp[batches[0]]:.1%} of the "
          f"compute of a 1-sequence step")

    workers = [1, 2, 4, 8, 16, 32, 64, 128, 256]
    global_batch = args.global_batch
    result = {"lightning": rows, "compute": comp, "allreduce": ar, "fit": {
        "c0": c0, "c1": c1, "alpha": alpha, "beta": per_byte}, "num_params": num_params,
        "scaling": {}}
    networks = [("loopback (measured)", alpha, per_byte),
                (f"nominal network ({args.net_latency * 1e6:.0f} us, "
                 f"{args.net_bandwidth / 1e9:g} GB/s; assumed)",
                 args.net_latency, 1 / args.net_bandwidth)]
    cap = (c0 + c1 * global_batch) / c0 if c0 > 0 else float("inf")
    print(f"\nthe fixed cost per step c0 caps the strong-scaling speed-up at "
          f"t_c(G) / c0 = {cap:.0f} for G = {global_batch}, whatever the network")
    result["speedup_cap"] = cap
    for n in (num_params, args.large_params):
        for name, a, b in networks:
            rows_s = scaling_table(workers, global_batch, c0, c1, a, b, n)
            cross = crossover(global_batch, c0, c1, a, b, n)
            label = f"{name}, n={n}" + ("" if n == num_params else
                                        " (with this model's compute: pessimistic)")
            result["scaling"][label] = {"rows": rows_s, "crossover": cross}
            print(f"\nsimulated strong scaling, global batch {global_batch}, n = {n} "
                  f"parameters{'' if n == num_params else ' with the compute of this model'}, "
                  f"{name}: communication dominates from R = {cross}")
            print(markdown_scaling(rows_s))
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"\nload average at the end: {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}")
    import lightning

    result["settings"] = {
        "duration": duration, "num_sequences": num_seq, "batch_per_worker": per_worker,
        "steps": steps, "warmup": warmup, "repeats": 2 if quick else args.repeats,
        "global_batch": global_batch, "large_params": args.large_params,
        "net_latency": args.net_latency, "net_bandwidth": args.net_bandwidth, "quick": quick,
        "lightning": lightning.__version__, "dtype": str(torch.get_default_dtype()),
        "load_average_start": load_start, "load_average_end": list(load)}
    if args.out:
        # the numbers of the Benchmarks page (docs/render_tables.py renders them from this file)
        write_results(os.path.join(args.out, "distributed.json"), result)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 4))
        for key, value in result["scaling"].items():
            ax.plot([r["workers"] for r in value["rows"]], [r["speedup"] for r in value["rows"]],
                    marker="o", label=key)
        ax.plot(workers, workers, "k:", label="ideal")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlabel("workers R")
        ax.set_ylabel(f"speed-up, global batch {global_batch}")
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "distributed_scaling.png"), dpi=120)
    return result


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--num-sequences", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=4, help="sequences per worker")
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--num-steps", type=int, default=15)
    p.add_argument("--repeats", type=int, default=8, help="minibatches per size (compute)")
    p.add_argument("--global-batch", type=int, default=256,
                   help="global batch of the simulated strong scaling")
    p.add_argument("--large-params", type=int, default=2 * 256 * 256 + 256,
                   help="parameter count of a second, larger network (default D = 256, L = 2)")
    p.add_argument("--net-latency", type=float, default=25e-6, help="seconds (assumed)")
    p.add_argument("--net-bandwidth", type=float, default=1.25e9, help="bytes/s (assumed)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=None)
    return p


if __name__ == "__main__":
    main(parser().parse_args())
