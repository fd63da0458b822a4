"""
Data-parallel SVI (pyro_spikes.distributed) on two CPU processes (Lightning's ``ddp_fork``,
gloo): the DDP gradient equals the one-process gradient on the same global batch, two
processes reach the ELBO of one, a resumed run continues the uninterrupted one. Needs the
``[distributed]`` extra (skipped without it).
"""

import importlib.util
import json
import os
import subprocess
import sys

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoNormal

from extras import need
from test_distributed import (NUM_SEQ, ROOT, _hawkes_data, _module_local_params,  # noqa: F401
                              _snn_data, _snn_loss)

pl = need("lightning.pytorch")
from pyro_spikes.distributed import (HawkesWithPriors, SequenceBaseline,  # noqa: E402
                                     SequenceDataModule, SVIModule, seeded)

class _Record(pl.Callback):
    """Save every rank's gradients (after DDP's all-reduce) and final state to files."""

    def __init__(self, path):
        self.path, self.grads = str(path), []

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.grads.append({n: p.grad.detach().clone() for n, p in module.named_parameters()})

    def on_train_end(self, trainer, module):
        torch.save({"grads": self.grads, "state": module.state_dict()},
                   f"{self.path}.{trainer.global_rank}")


def _trainer(devices, callbacks=(), **kwargs):
    kwargs.setdefault("logger", False)
    kwargs.setdefault("enable_checkpointing", False)
    return pl.Trainer(accelerator="cpu", devices=devices,
                      strategy="ddp_fork" if devices > 1 else "auto",
                      enable_progress_bar=False, enable_model_summary=False,
                      callbacks=list(callbacks), **kwargs)


def _fit(make_module, events, devices, batch_size, max_steps, path):
    module = make_module()
    # forked workers must not inherit a live OpenMP pool (libgomp is not fork-safe): one
    # thread each (conftest sets two)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _trainer(devices, [_Record(path)], max_steps=max_steps).fit(
            module, datamodule=SequenceDataModule(events, batch_size, seed=4))
    finally:
        torch.set_num_threads(threads)
    return [torch.load(f"{path}.{r}") for r in range(devices)]


def _assert_same(a, b, rtol=1e-4):
    for name in a:
        scale = a[name].abs().max().clamp(min=1e-3)
        assert (a[name] - b[name]).abs().max() <= rtol * scale, name


@pytest.mark.parametrize("program", ["pathwise", "reinforce", "reinforce_baseline",
                                     "hawkes_autonormal"])
def test_two_process_gradient_equals_one_process_full_batch(program, tmp_path):
    """
    Global batch = the whole data set (8 sequences): one process with batch 8 against two
    with 4 each (DDP averages gradients), per-sequence seeds (noise="sequence"; "shared" for
    the Hawkes model's global latents), two steps: the second step's gradient also checks the
    parameters after one update, the temperature and (for REINFORCE + baseline) that the
    baseline, updated from both workers' costs, is the one-process baseline.
    """
    if program == "hawkes_autonormal":
        events = _hawkes_data()

        def make():
            pyro.set_rng_seed(1)
            model = HawkesWithPriors(2, 20.0, NUM_SEQ)
            loss_fn = Trace_ELBO()(model, AutoNormal(model))
            loss_fn(torch.arange(2), events[:2])
            return SVIModule(loss_fn, lr=0.05, noise="shared", seed=7)
    else:
        events = _snn_data()

        def make():
            loss_fn, options = _snn_loss(program, NUM_SEQ)
            if program == "pathwise":
                options["temperature"] = (1.0, 0.5)
            return SVIModule(loss_fn, lr=0.05, num_steps=2, noise="sequence", seed=7,
                             **options)

    (one,) = _fit(make, events, 1, NUM_SEQ, 2, tmp_path / "one")
    two = _fit(make, events, 2, NUM_SEQ // 2, 2, tmp_path / "two")
    assert len(one["grads"]) == len(two[0]["grads"]) == 2
    for step in range(2):
        _assert_same(one["grads"][step], two[0]["grads"][step])
        for name, g in two[0]["grads"][step].items():  # DDP: every rank holds the average
            assert torch.equal(g, two[1]["grads"][step][name])
    _assert_same(one["state"], two[0]["state"])
    if program == "reinforce_baseline":
        assert torch.equal(two[0]["state"]["baseline.average"], two[1]["state"]["baseline.average"])
        assert two[0]["state"]["baseline.visits"].tolist() == [2.0] * NUM_SEQ


def _exact_elbo(module, events, num_particles=16):
    """Full-data ELBO of the exact (unrelaxed) SNN, fixed seed, averaged over particles."""
    model, guide = module.loss_fn.model, module.loss_fn.guide
    index = torch.arange(events.shape[0])
    with seeded(123), torch.no_grad():
        loss = Trace_ELBO(num_particles=num_particles).loss(model, guide, index, events,
                                                            relaxed=False)
    return -loss


def test_two_processes_reach_the_elbo_of_one(tmp_path):
    """
    Path-wise SVI of an SNN with 2 hidden neurons, 16 sequences, global batch 8, 25 steps,
    independent noise per worker (noise="rank"): the runs differ in their noise only, so
    the gain in the exact ELBO over training (16 particles, the same for both; about 80
    nats) must agree within 3 % (observed: below 1 % for five seeds).
    """
    events = _snn_data(16)

    def make():
        loss_fn, _ = _snn_loss("pathwise", 16)
        return SVIModule(loss_fn, lr=0.05, num_steps=25, temperature=(1.0, 0.5), seed=3)

    initial = _exact_elbo(make(), events)
    results = {}
    for devices in (1, 2):
        state = _fit(make, events, devices, 8 // devices, 25, tmp_path / f"d{devices}")[0]
        module = make()
        module.load_state_dict(state["state"])
        results[devices] = _exact_elbo(module, events)
    gain = results[1] - initial
    assert gain > 0.2 * abs(initial)  # training did something
    assert abs(results[2] - results[1]) <= 0.03 * gain, (initial, results)


@pytest.mark.parametrize("program", ["pathwise", "reinforce_baseline"])
def test_resume_from_checkpoint_continues_the_run(program, tmp_path):
    """
    2 epochs of 2 steps in one go, against 1 epoch, a checkpoint, and a resumed fit to 2
    epochs (a fresh module): same parameters, Adam state and baseline. The noise (rank
    streams) and the annealed temperature come from the restored step counter.
    """
    events = _snn_data()

    def make():
        loss_fn, options = _snn_loss(program, NUM_SEQ)
        if program == "pathwise":
            options["temperature"] = (1.0, 0.3)
        return SVIModule(loss_fn, lr=0.05, num_steps=4, seed=5, **options)

    def data():
        return SequenceDataModule(events, 4, seed=2)

    full = make()
    _trainer(1, max_epochs=2).fit(full, datamodule=data())
    first = make()
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    _trainer(1, [ckpt], max_epochs=1, enable_checkpointing=True).fit(first, datamodule=data())
    resumed = make()
    trainer = _trainer(1, max_epochs=2)
    trainer.fit(resumed, datamodule=data(), ckpt_path=str(tmp_path / "last.ckpt"))
    assert trainer.global_step == 4
    _assert_same(full.state_dict(), resumed.state_dict(), rtol=1e-6)
    assert not torch.allclose(first.state_dict()["loss_fn.model.program.weight_unconstrained"],
                              resumed.state_dict()["loss_fn.model.program.weight_unconstrained"])


def test_svimodule_validates_arguments():
    loss_fn, _ = _snn_loss("pathwise", NUM_SEQ)
    with pytest.raises(TypeError, match="ELBO module"):
        SVIModule(lambda *a: 0.0)
    with pytest.raises(ValueError, match="noise"):
        SVIModule(loss_fn, noise="per-rank")
    with pytest.raises(ValueError, match="num_steps"):
        SVIModule(loss_fn, temperature=(1.0, 0.3))
    with pytest.raises(ValueError, match="DifferentiableTraceGraph_ELBO"):
        SVIModule(loss_fn, baseline=SequenceBaseline(NUM_SEQ))
    with pytest.raises(ValueError, match="program_kwargs"):
        SVIModule(loss_fn, program_kwargs={"temperature": 0.5})
    with pytest.raises(ValueError, match="SequenceBaseline"):
        SVIModule(loss_fn, program_kwargs={"relaxed": False, "baseline": True})
    model = HawkesWithPriors(2, 20.0, NUM_SEQ)
    with pytest.raises(ValueError, match="no parameters yet"):
        SVIModule(Trace_ELBO()(model, AutoNormal(model))).configure_optimizers()
    with pytest.raises(ValueError, match="batch_size"):
        SequenceDataModule(_snn_data(), 0)


def _run_example(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples/distributed_svi.py"),
                           *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _example():
    spec = importlib.util.spec_from_file_location(
        "distributed_svi", os.path.join(ROOT, "examples", "distributed_svi.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_smoke_and_resume(tmp_path, capsys):
    # in this process (one CPU worker): the script's main() with its parser
    example = _example()
    threads = torch.get_num_threads()
    common = ["--num-sequences", "4", "--batch-size", "2", "--duration", "5", "--no-progress",
              "--out", str(tmp_path)]
    first = example.main(example.parser().parse_args(["--num-steps", "2", *common]))
    assert first["steps"] == 2 and first["world_size"] == 1 and len(first["losses"]) == 2
    assert "steps run: 2" in capsys.readouterr().out
    assert (tmp_path / "distributed_svi_loss.png").stat().st_size > 0
    resumed = example.main(example.parser().parse_args(
        ["--num-steps", "4", "--resume", str(tmp_path / "checkpoints" / "last.ckpt"), *common]))
    assert resumed["steps"] == 4 and len(resumed["losses"]) == 2  # steps 3 and 4 only
    assert torch.get_num_threads() == threads  # restored


@pytest.mark.slow
def test_example_two_cpu_processes(tmp_path):
    out = _run_example("--devices", 2, "--num-steps", 2, "--num-sequences", 4, "--batch-size",
                       1, "--duration", 5, "--no-progress", "--model", "hawkes", "--out",
                       tmp_path)
    assert "2 worker(s)" in out and "steps run: 2" in out


@pytest.mark.slow
def test_benchmark_quick(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "distributed.py"),
                           "--quick", "--out", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| 2 processes, weak (same batch per worker) | 2 |" in proc.stdout
    assert "communication dominates from R =" in proc.stdout
    assert (tmp_path / "distributed_scaling.png").stat().st_size > 0
    # the results file holds the printed numbers, with where they came from
    record = json.load(open(tmp_path / "distributed.json"))
    assert record["run"]["command"].startswith("python benchmarks/distributed.py --quick")
    rows = record["results"]["lightning"]
    assert [r["processes"] for r in rows] == [1, 2, 1, 2]
    assert f"| {rows[1]['step_s']:.3f} | {rows[1]['steps_per_s']:.2f} |" in proc.stdout
    assert record["results"]["settings"]["quick"] is True
