"""Smoke tests of the SNN examples and the SVI benchmark (tiny settings, into tmp_path)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, *args):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_gradient_variance(tmp_path):
    out = _run("examples/gradient_variance.py", "--num-steps", 4, "--num-sequences", 1,
               "--duration", 5, "--seeds", "0,1", "--num-bootstrap", 20, "--init", "kajino",
               "--out", tmp_path)
    assert "robust std" in out and "tail share" in out and "| 1 |" in out
    assert "REINFORCE / path-wise std ratio" in out and "seed 1:" in out
    assert (tmp_path / "gradient_variance.png").stat().st_size > 0
    # the results file holds what was printed, with where it came from
    record = json.load(open(tmp_path / "gradient_variance.json"))
    assert record["run"]["command"].startswith("python examples/gradient_variance.py")
    assert record["run"]["commit"] != "unknown" and record["run"]["machine"]["cores"] >= 1
    seeds = record["results"]["seeds"]
    assert sorted(seeds) == ["0", "1"] and record["results"]["settings"]["num_steps"] == 4
    est, lo, hi = seeds["1"]["reinforce"]["std"]
    assert f"{est:.4g} [{lo:.4g}, {hi:.4g}]" in out


def test_gradient_variance_needs_four_repeats(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples/gradient_variance.py"),
                           "--num-steps", "3", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "--num-steps" in proc.stderr


def test_snn_hidden_svi(tmp_path):
    out = _run("examples/snn_hidden_svi.py", "--num-steps", 2, "--train-sizes", "1,2",
               "--num-test", 2, "--num-particles", 8, "--duration", 5, "--seeds", "0,1",
               "--guides", "prior,separate,lookahead", "--no-progress", "--out", tmp_path)
    assert "| 1 |" in out and "| 2 |" in out and "data-generating network (ceiling)" in out
    assert "separate guide" in out and "lookahead guide" in out and " ± " in out
    assert (tmp_path / "test_log_likelihood.png").stat().st_size > 0
    assert (tmp_path / "loss_curves.png").stat().st_size > 0
    # the results file holds the printed table's numbers
    r = json.load(open(tmp_path / "snn_hidden_svi.json"))["results"]
    assert [c["guide"] for c in r["columns"]][:3] == ["prior", "separate", "lookahead"]
    assert len(r["scores"]["2"]) == 9 and all(len(s) == 2 for s in r["scores"]["2"])
    mean = sum(r["scores"]["1"][0]) / 2
    assert f"| 1 | {mean:.2f} ± " in out
    assert f"ceiling): {r['truth']['mean']:.2f} ± {r['truth']['se']:.2f}" in out


def test_training_time(tmp_path):
    out = _run("examples/training_time.py", "--num-steps", 1, "--upper-bounds", "1,2",
               "--num-sequences", 2, "--duration", 5, "--out", tmp_path)
    assert "| 1 |" in out and "| 2 |" in out
    assert (tmp_path / "training_time.png").stat().st_size > 0
    rows = json.load(open(tmp_path / "training_time.json"))["results"]["rows"]
    assert [r["upper_bound"] for r in rows] == [1, 2]
    assert f"| 2 | {rows[1]['pathwise']['wall']:.3f} / {rows[1]['pathwise']['cpu']:.3f}" in out


def test_benchmark_svi_quick():
    from pyro_spikes.distributions.kernels import has_compiled_loops

    loops = "compiled,torch" if has_compiled_loops() else "torch"
    out = _run("benchmarks/svi.py", "--repeats", 1, "--quick", "--loops", loops,
               "--estimators", "pathwise,reinforce,reinforce_baseline")
    assert "| estimator |" in out
    for loop in loops.split(","):
        for label in ("path-wise (relaxed, Trace_ELBO)", "REINFORCE (Trace_ELBO)",
                      "REINFORCE + baseline (TraceGraph_ELBO)"):
            assert f"| {label} | {loop} |" in out
        assert f"path-wise / REINFORCE ({loop} loops)" in out
