"""
Data-parallel SVI on `PyTorch Lightning <https://lightning.ai>`_, after Pyro's
``examples/svi_lightning.py``: the loss is a Pyro ELBO module (``Trace_ELBO()(model, guide)``)
held by a :class:`~lightning.pytorch.LightningModule`, and ``pl.Trainer(strategy="ddp",
accelerator=..., devices=..., num_nodes=...)`` runs it on one or many processes.
"""

import numbers
import warnings

import pyro
import torch
from pyro.infer.elbo import ELBOModule
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from pyro_spikes.distributed.baseline import SequenceBaseline
from pyro_spikes.distributed.elbo import DifferentiableTraceGraph_ELBO
from pyro_spikes.distributed.seeding import mix_seed, seeded
from pyro_spikes.models.snn import temperature_schedule

try:
    import lightning.pytorch as pl
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "pyro_spikes.distributed needs PyTorch Lightning: pip install 'pyro-spikes[distributed]'"
        " (or pip install lightning)"
    ) from e

__all__ = ["SVIModule", "SequenceDataModule"]

_NOISE = ("rank", "shared", "sequence")


class SequenceDataModule(pl.LightningDataModule):
    """
    A data set of ``N`` event sequences, sharded over the workers by a
    :class:`~torch.utils.data.DistributedSampler` and batched as ``(index, events)``: the
    sequences' positions in the data set (for subsampled plates, per-sequence seeds and
    baselines) and their events.

    Every epoch the sampler permutes the ``N`` indices with seed ``seed + epoch`` (the same
    permutation on every worker) and worker :math:`r` of :math:`R` takes positions
    :math:`r, r + R, r + 2R, \\dots` (the permutation is padded by repeating its head to a
    multiple of :math:`R`), in minibatches of ``batch_size``. So the :math:`k`-th global
    batch, the union of the workers' :math:`k`-th minibatches, is the same set of sequences
    as the :math:`k`-th minibatch of one process with ``batch_size * R`` when :math:`R` divides
    ``N``: runs on different numbers of workers see the same global batches.

    :param torch.Tensor events: ``(N, capacity, 1 + D)`` sequences (one layout, padded; see
        :mod:`pyro_spikes.spikes`).
    :param int batch_size: sequences per worker and step (the global batch is
        ``batch_size * world_size``).
    :param bool shuffle: permute every epoch (else the data set's order).
    :param int seed: seed of the permutations.
    """

    def __init__(self, events, batch_size, shuffle=True, seed=0):
        super().__init__()
        if not isinstance(events, torch.Tensor) or events.dim() != 3:
            raise ValueError("events must be a tensor of shape (num_sequences, capacity, 1 + D)")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.events = events
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.dataset = TensorDataset(torch.arange(events.shape[0]), events)

    @property
    def num_sequences(self):
        return self.events.shape[0]

    def train_dataloader(self):
        """
        Minibatches ``(index, events)`` of this worker's shard: a ``DataLoader`` over a
        ``DistributedSampler`` with the trainer's world size and rank (one shard without a
        trainer).
        """
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = DistributedSampler(self.dataset, num_replicas=world, rank=rank,
                                     shuffle=self.shuffle, seed=self.seed)
        return DataLoader(self.dataset, batch_size=self.batch_size, sampler=sampler)


class SVIModule(pl.LightningModule):
    """
    Stochastic variational inference of a Pyro model and guide as a LightningModule: every
    training step evaluates the differentiable ELBO loss module ``loss_fn`` on the worker's
    minibatch ``(index, events)`` (the program scales it to the whole data set, through
    ``pyro.plate(..., size, subsample=index)`` or
    :class:`~pyro_spikes.distributed.SubsampledModel`), Lightning back-propagates it, DDP
    averages the gradients over the workers, and Adam updates the parameters
    (``loss_fn.parameters()``). The loss is logged as ``"loss"`` (the negative ELBO of the
    whole data set, averaged over the workers' estimates: ``sync_dist``) on the progress bar
    and the loggers, with ``"temperature"`` when it is annealed.

    What the workers must agree on, they compute from the step counter
    (``self.global_step``, the same on every worker and restored from checkpoints):

    - the relaxation temperature, :func:`~pyro_spikes.models.temperature_schedule` of the step
      when ``temperature=(start, end)``;
    - the noise: each step runs under :func:`~pyro_spikes.distributed.seeded` with the seed
      :func:`~pyro_spikes.distributed.mix_seed` of ``(seed, step, stream)``. With
      ``noise="rank"`` (default) the stream is the worker's rank: independent noise on each
      worker, the lowest variance for a given number of workers. With ``noise="shared"``
      every worker uses the same stream: for programs whose latent sites are all global
      (exact processes with priors under an autoguide) every worker draws the same
      parameters, and the run does not depend on the number of workers (up to rounding);
      local latents would then reuse the same uniforms on every worker (still unbiased, but
      correlated across workers). With ``noise="sequence"`` global sites get the shared
      stream and each sequence's local latents their own, ``(seed, step, index)``, passed to
      the guide as ``seeds=`` (:class:`~pyro_spikes.distributed.SubsampledGuide`), so a
      program with local latents (the SNN's hidden spikes) also runs the same on any number
      of workers, at the cost of one guide call per sequence (the model and guide must
      accept ``seeds=``, as :class:`~pyro_spikes.distributed.SubsampledModel` and
      :class:`~pyro_spikes.distributed.SubsampledGuide` do);
    - the REINFORCE baseline (``baseline=``
      :class:`~pyro_spikes.distributed.SequenceBaseline`, with a
      :class:`~pyro_spikes.distributed.DifferentiableTraceGraph_ELBO` loss): passed to the
      guide as ``baseline_value=`` and updated after the step from the all-gathered costs.

    Build the program under ``pyro.settings.set(module_local_params=True)`` (Pyro's setting for
    PyTorch-native training loops; the parameters then live in the modules only), and make
    every worker build the same data and initial parameters (same seeds), as
    ``examples/distributed_svi.py`` does.

    Either way a run resumed from a checkpoint (parameters, Adam state, baseline buffers,
    step counter; ``trainer.fit(..., ckpt_path=...)``) draws the same noise as the
    uninterrupted run.

    :param loss_fn: a Pyro ELBO module, e.g. ``Trace_ELBO()(model, guide)``, called as
        ``loss_fn(index, events, **kwargs)``; its parameters must exist (run it once on a
        minibatch first when the guide is an autoguide).
    :param float lr: Adam's learning rate.
    :param int num_steps: length of the run (for the temperature schedule).
    :param temperature: ``None`` (not passed to the program), a number, or ``(start, end)``
        annealed geometrically over ``num_steps``.
    :param dict program_kwargs: further keyword arguments of every model and guide call
        (e.g. ``{"relaxed": False}``).
    :param str noise: ``"rank"``, ``"shared"`` or ``"sequence"``.
    :param SequenceBaseline baseline: per-sequence REINFORCE baseline, or ``None``.
    :param int seed: seed of the run's noise.
    """

    def __init__(self, loss_fn, lr=0.01, num_steps=None, temperature=None, program_kwargs=None,
                 noise="rank", baseline=None, seed=0):
        super().__init__()
        if not isinstance(loss_fn, ELBOModule):
            raise TypeError("loss_fn must be a Pyro ELBO module, e.g. Trace_ELBO()(model, guide)")
        if not float(lr) > 0:
            raise ValueError(f"lr must be positive, got {lr!r}")
        if noise not in _NOISE:
            raise ValueError(f"noise must be one of {_NOISE}, got {noise!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        if temperature is not None:
            if isinstance(temperature, numbers.Real):
                temperature = (float(temperature), float(temperature))
            else:
                try:
                    temperature = tuple(float(t) for t in temperature)
                except TypeError:
                    temperature = ()
                if len(temperature) != 2:
                    raise ValueError("temperature must be a number or a pair (start, end)")
                if temperature[0] != temperature[1] and not (
                        isinstance(num_steps, int) and num_steps >= 1):
                    raise ValueError("an annealed temperature needs num_steps (a positive int)")
            if not min(temperature) > 0:
                raise ValueError(f"temperature must be positive, got {temperature!r}")
        if baseline is not None:
            if not isinstance(baseline, SequenceBaseline):
                raise TypeError("baseline must be a SequenceBaseline or None")
            if not isinstance(loss_fn.elbo, DifferentiableTraceGraph_ELBO):
                raise ValueError("baseline needs a DifferentiableTraceGraph_ELBO loss "
                                 "(Trace_ELBO ignores baselines)")
        program_kwargs = dict(program_kwargs or {})
        reserved = {"seeds", "baseline_value", "temperature"} & set(program_kwargs)
        if reserved:
            raise ValueError(f"program_kwargs must not set {sorted(reserved)} (set by SVIModule)")
        if program_kwargs.get("baseline"):
            raise ValueError(
                "program_kwargs baseline=True asks for Pyro's decaying-average baseline, which "
                "every worker would keep for itself (per minibatch position): pass "
                "baseline=SequenceBaseline(num_sequences) to SVIModule instead"
            )
        if not pyro.settings.get("module_local_params"):
            warnings.warn(
                "SVIModule: pyro.settings module_local_params is off, so the program's "
                "parameters are also entries of Pyro's global param store, shared by name: a "
                "program built after another with the same parameter names starts from the "
                "other's values. Build programs under "
                "pyro.settings.set(module_local_params=True) (Pyro's setting for "
                "PyTorch-native training) or after pyro.clear_param_store().",
                stacklevel=2,
            )
        self.loss_fn = loss_fn
        self.lr = float(lr)
        self.num_steps = num_steps
        self.temperature = temperature
        self.program_kwargs = program_kwargs
        self.noise = noise
        self.baseline = baseline
        self.seed = seed

    def temperature_at(self, step):
        """The relaxation temperature of step ``step`` (``None`` if not annealed)."""
        if self.temperature is None:
            return None
        start, end = self.temperature
        if start == end:
            return start
        return temperature_schedule(step, self.num_steps, start=start, end=end)

    def _param_like(self):
        return next(self.loss_fn.parameters())

    def step_loss(self, index, events, step, rank=0):
        """
        The loss of step ``step`` on the minibatch ``(index, events)`` as worker ``rank``
        computes it (with the run's noise and temperature), and the keyword arguments passed
        to the program.
        """
        kwargs = dict(self.program_kwargs)
        tau = self.temperature_at(step)
        if tau is not None:
            kwargs["temperature"] = tau
        if self.noise == "sequence":
            kwargs["seeds"] = [mix_seed(self.seed, step, i) for i in index.tolist()]
            stream = mix_seed(self.seed, step, -1)
        elif self.noise == "shared":
            stream = mix_seed(self.seed, step, -1)
        else:
            stream = mix_seed(self.seed, step, -2 - int(rank))
        if self.baseline is not None:
            kwargs["baseline_value"] = self.baseline(index).to(self._param_like().dtype)
        with seeded(stream, events.device):
            loss = self.loss_fn(index, events, **kwargs)
        return loss, kwargs

    def training_step(self, batch, batch_idx):
        index, events = batch
        loss, kwargs = self.step_loss(index, events, int(self.global_step), self.global_rank)
        if self.baseline is not None:
            costs = self.loss_fn.elbo.site_costs
            if len(costs) != 1:
                raise ValueError(
                    "a SequenceBaseline needs exactly one non-reparameterised latent site with "
                    f"a baseline_value in the guide, found {sorted(costs)}"
                )
            (cost,) = costs.values()
            self.baseline.update(index, cost)
        self.log("loss", loss.detach(), prog_bar=True, sync_dist=True, batch_size=len(index))
        if "temperature" in kwargs and self.temperature[0] != self.temperature[1]:
            self.log("temperature", kwargs["temperature"], prog_bar=True, batch_size=len(index))
        return loss

    def configure_optimizers(self):
        params = list(self.loss_fn.parameters())
        if not params:
            raise ValueError("loss_fn has no parameters yet: run it once on a minibatch before "
                             "fitting (autoguides create their parameters on the first call)")
        return torch.optim.Adam(params, lr=self.lr)
