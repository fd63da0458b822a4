"""
Data-parallel SVI on PyTorch Lightning
======================================

When a data set of spike trains outgrows one process, SVI can run data-parallel: every
worker holds a shard of the sequences (:class:`~pyro_spikes.distributed.SequenceDataModule`,
a ``DistributedSampler``), evaluates the ELBO loss on its minibatch scaled to the whole data
set, and DDP averages the gradients, following Pyro's ``examples/svi_lightning.py``:
``Trace_ELBO()(model, guide)`` is the loss module of a LightningModule
(:class:`~pyro_spikes.distributed.SVIModule`) and ``pl.Trainer(strategy="ddp",
accelerator=..., devices=..., num_nodes=...)`` decides where it runs.

Two programs:

- ``--model snn``: an :class:`~pyro_spikes.models.SNN` with hidden neurons, fitted to the
  observed spikes of Kajino's synthetic network
  (:func:`~pyro_spikes.models.paper.kajino_ground_truth`), with the path-wise estimator
  (relaxed hidden spikes, temperature annealed) or REINFORCE (exact hidden spikes), with or
  without a per-sequence baseline (:class:`~pyro_spikes.distributed.SequenceBaseline`,
  kept the same on every worker);
- ``--model hawkes``: a :class:`~pyro_spikes.distributions.HawkesProcess` with Gamma priors
  on its parameters (:class:`~pyro_spikes.distributed.HawkesWithPriors`) under an
  ``AutoNormal`` guide.

It runs on one CPU process by default; ``--devices 2`` runs two CPU processes (gloo), and
``--accelerator gpu --devices 8 --num-nodes 4`` the same script on 32 GPUs (launched by
``torchrun`` or SLURM's ``srun``, see the "Distributed SVI" page of the docs). Checkpoints
are written to ``--out`` at the end of every epoch; ``--resume PATH`` continues a run. The
figure shows the loss (negative ELBO of the whole data set per sequence) against the step.

.. results: example-time-distributed_svi

At its defaults this example runs in 20 s (peak memory 437 MB) on 2 cores (AMD EPYC), commit 1f76e9a2a9; measured by ``python benchmarks/examples.py``.

.. end results
"""

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from pyro.infer import Trace_ELBO  # noqa: E402
from pyro.infer.autoguide import AutoNormal  # noqa: E402

from pyro_spikes.distributions import HawkesProcess  # noqa: E402
from pyro_spikes.models import SNN  # noqa: E402
from pyro_spikes.models.paper import kajino_ground_truth  # noqa: E402

try:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from pyro_spikes.distributed import (DifferentiableTraceGraph_ELBO, HawkesWithPriors,
                                         SequenceBaseline, SequenceDataModule, SubsampledGuide,
                                         SubsampledModel, SVIModule)
except ImportError as e:  # pragma: no cover
    raise SystemExit(f"{e}\nthis example needs the extra: pip install 'pyro-spikes[distributed]'")


def snn_program(args, events):
    """The SNN's loss module and the SVIModule options of ``--estimator``."""
    n = events.shape[0]
    snn = SNN(args.num_observed, args.num_hidden, args.duration)
    model, guide = SubsampledModel(snn, n), SubsampledGuide(snn, n)
    if args.estimator == "pathwise":
        return Trace_ELBO()(model, guide), dict(temperature=(args.anneal_from,
                                                             args.temperature))
    options = dict(program_kwargs={"relaxed": False})
    if args.estimator == "reinforce":
        return Trace_ELBO()(model, guide), options
    return DifferentiableTraceGraph_ELBO()(model, guide), dict(
        options, baseline=SequenceBaseline(n, beta=0.9))


def make_data(args):
    """The same data on every worker (every process runs this with the same seed)."""
    pyro.set_rng_seed(args.seed)
    if args.model == "snn":
        truth = kajino_ground_truth(args.seed, num_observed=args.num_observed,
                                    num_hidden=args.num_hidden, duration=args.duration)
        observed, _ = truth.simulate(args.num_sequences)
        return observed
    truth = HawkesProcess(torch.tensor([0.5, 0.3]), torch.tensor([[0.3, 0.2], [0.1, 0.4]]),
                          1.0, args.duration)
    return truth.sample((args.num_sequences,))


def main(args):
    """Train; on the first worker, print and plot the loss, and return a summary dict."""
    threads = torch.get_num_threads()
    torch.set_num_threads(args.num_threads)
    # parameters live in the modules (Pyro's setting for PyTorch-native training, DDP)
    try:
        with pyro.settings.context(module_local_params=True):
            return run(args)
    finally:
        torch.set_num_threads(threads)


def run(args):
    events = make_data(args)
    n = events.shape[0]
    pyro.set_rng_seed(args.seed + 1)  # the initial parameters (the same on every worker)
    if args.model == "snn":
        loss_fn, options = snn_program(args, events)
    else:
        model = HawkesWithPriors(2, args.duration, n)
        loss_fn, options = Trace_ELBO()(model, AutoNormal(model)), {}
    loss_fn(torch.arange(min(2, n)), events[:2])  # create lazy (autoguide) parameters
    module = SVIModule(loss_fn, lr=args.lr, num_steps=args.num_steps, noise=args.noise,
                       seed=args.seed, **options)
    data = SequenceDataModule(events, batch_size=args.batch_size, seed=args.seed)
    strategy = args.strategy
    if strategy == "auto" and (args.devices > 1 or args.num_nodes > 1):
        strategy = "ddp"
    os.makedirs(args.out, exist_ok=True)
    trainer = pl.Trainer(
        accelerator=args.accelerator, devices=args.devices, num_nodes=args.num_nodes,
        strategy=strategy, max_steps=args.num_steps, default_root_dir=args.out,
        logger=CSVLogger(args.out, name="distributed_svi"), log_every_n_steps=1,
        callbacks=[ModelCheckpoint(dirpath=os.path.join(args.out, "checkpoints"),
                                   save_last=True, every_n_epochs=1)],
        enable_progress_bar=not args.no_progress, enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data, ckpt_path=args.resume)
    if not trainer.is_global_zero:
        return None
    metrics = os.path.join(trainer.logger.log_dir, "metrics.csv")
    steps, losses = [], []
    with open(metrics) as f:
        header = f.readline().strip().split(",")
        for line in f:
            row = dict(zip(header, line.strip().split(",")))
            if row.get("loss"):
                steps.append(int(row["step"]))
                losses.append(float(row["loss"]) / n)
    print(f"model {args.model}, estimator {args.estimator}, {trainer.world_size} worker(s) x "
          f"{args.batch_size} sequences per step, {n} sequences")
    print(f"steps run: {trainer.global_step}; loss per sequence (negative ELBO / N): "
          f"first {losses[0]:.3f}, last {losses[-1]:.3f}")
    print(f"last checkpoint: {os.path.join(args.out, 'checkpoints', 'last.ckpt')}")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(steps, losses)
    ax.set_xlabel("step")
    ax.set_ylabel("negative ELBO per sequence")
    ax.set_title(f"{args.model}, {trainer.world_size} worker(s)")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "distributed_svi_loss.png"), dpi=120)
    plt.close(fig)
    return {"steps": trainer.global_step, "world_size": trainer.world_size, "losses": losses}


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--model", choices=["snn", "hawkes"], default="snn")
    p.add_argument("--estimator", choices=["pathwise", "reinforce", "reinforce_baseline"],
                   default="pathwise", help="SNN gradient estimator")
    p.add_argument("--accelerator", default="cpu", help="cpu, gpu, auto, ... (Lightning)")
    p.add_argument("--devices", type=int, default=1, help="processes (or GPUs) per node")
    p.add_argument("--num-nodes", type=int, default=1)
    p.add_argument("--strategy", default="auto",
                   help="Lightning strategy; 'auto' is ddp when more than one device")
    p.add_argument("--num-steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-sequences", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8, help="sequences per worker and step")
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--num-observed", type=int, default=2)
    p.add_argument("--num-hidden", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--temperature", type=float, default=0.3)
    p.add_argument("--anneal-from", type=float, default=1.0)
    p.add_argument("--noise", choices=["rank", "shared", "sequence"], default="rank")
    p.add_argument("--resume", default=None, help="checkpoint to continue from")
    p.add_argument("--num-threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", default="out/distributed_svi")
    return p


if __name__ == "__main__":
    args = parser().parse_args()
    for name in ("num_steps", "num_sequences", "batch_size", "devices", "num_nodes"):
        if getattr(args, name) < 1:
            parser().error(f"--{name.replace('_', '-')} must be >= 1")
    main(args)
