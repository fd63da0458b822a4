"""Smoke tests of the docs-gallery examples (tiny settings) and a NUTS recovery check."""

import importlib.util
import os
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pyro_spikes.spikes import num_spikes, validate_events  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_hawkes_nuts_smoke(tmp_path):
    ex = load("hawkes_nuts")
    args = ex.parse_args(["--num-steps", "10", "--warmup-steps", "10", "--duration", "20",
                          "--num-sequences", "2", "--no-progress", "--out", str(tmp_path)])
    assert args.num_samples == 10  # --num-steps is the alias of --num-samples
    res = ex.main(args)
    assert (tmp_path / "hawkes_nuts_posterior.png").stat().st_size > 0
    assert set(res["inside"]) == {"baseline", "adjacency"}
    assert res["idata"].posterior["adjacency"].shape == (2, 5, 2, 2)  # split single chain
    assert {"r_hat", "ess_bulk", "mean"} <= set(res["summary"].columns)


def test_hawkes_nuts_spiking_smoke(tmp_path):
    ex = load("hawkes_nuts")
    res = ex.main(ex.parse_args(["--model", "spiking", "--num-steps", "6", "--warmup-steps",
                                 "6", "--duration", "10", "--num-sequences", "2",
                                 "--no-progress", "--out", str(tmp_path)]))
    assert (tmp_path / "spiking_nuts_posterior.png").stat().st_size > 0
    assert res["inside"]["weight"].shape == (1, 2, 2)


def test_posterior_predictive_smoke(tmp_path):
    ex = load("posterior_predictive")
    res = ex.main(ex.parse_args(["--num-steps", "5", "--num-samples", "3", "--duration", "20",
                                 "--num-sequences", "2", "--no-progress",
                                 "--out", str(tmp_path)]))
    for name in ["loss", "counts", "isi", "time_rescaling", "rasters"]:
        assert (tmp_path / f"{name}.png").stat().st_size > 0
    rep = res["replicated"]  # padded to the longest draw (or the largest default capacity)
    assert rep.shape[:2] == (3, 2) and rep.shape[-1] == 3
    assert rep.shape[2] >= int(num_spikes(rep).sum(-1).max())
    validate_events(rep, 20.0, 2)
    assert len(res["losses"]) == 5


def test_examples_run_as_scripts(tmp_path):
    """The command-line entry point (argparse, __main__ guard) of the fastest configuration."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               MPLBACKEND="Agg")
    cmd = [sys.executable, os.path.join(EXAMPLES, "posterior_predictive.py"), "--num-steps",
           "2", "--num-samples", "2", "--duration", "10", "--num-sequences", "1",
           "--no-progress", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "posterior predictive obs shape: (2, 1," in proc.stdout


def test_hawkes_nuts_recovers_baseline(tmp_path):
    """
    Easy, data-rich case (4 sequences on [0, 150], ~600 spikes): the posterior mean of each
    baseline rate from a short NUTS run is within 3 posterior standard deviations of the
    truth, and the posterior is informative (sd < 0.1, the prior Gamma(2, 2) has sd 0.71).
    """
    ex = load("hawkes_nuts")
    res = ex.main(ex.parse_args(["--num-steps", "100", "--warmup-steps", "100",
                                 "--duration", "150", "--seed", "1", "--no-progress",
                                 "--out", str(tmp_path)]))
    post = res["idata"].posterior["baseline"].values.reshape(-1, 2)
    mean, sd = post.mean(0), post.std(0)
    truth = ex.HAWKES_TRUTH["baseline"].double().numpy()
    assert (sd < 0.1).all(), sd
    assert (np.abs(mean - truth) < 3 * sd).all(), (mean, sd, truth)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["hawkes", "spiking"])
def test_nuts_ground_truth_in_hdi(tmp_path, model):
    """Default settings: at least all but one true parameter lie in their 94% HDI."""
    ex = load("hawkes_nuts")
    res = ex.main(ex.parse_args(["--model", model, "--no-progress", "--out", str(tmp_path)]))
    inside = np.concatenate([m.reshape(-1) for m in res["inside"].values()])
    assert inside.sum() >= inside.size - 1, res["inside"]
    assert (res["summary"]["r_hat"] < 1.1).all()
