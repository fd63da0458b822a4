import json
import os
import runpy
import sys

import pytest
from extras import need

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "grasshopper_stimulus.py")


def test_example_smoke(tmp_path, monkeypatch):
    need("nitime")
    argv = ["grasshopper_stimulus.py", "--num-steps", "3", "--train-duration", "0.5",
            "--test-duration", "0.5", "--out", str(tmp_path), "--quiet"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(EXAMPLE, run_name="__main__")
    assert (tmp_path / "grasshopper_stimulus.png").stat().st_size > 0
    record = json.loads((tmp_path / "grasshopper_stimulus.json").read_text())
    assert record["run"]["command"].startswith("python examples/grasshopper_stimulus.py")
    result = record["results"]
    # 3 L-BFGS iterations: stopped early, and the file says so
    assert result["fitter"] == "lbfgs" and result["converged"] is False
    assert "stopped at max_" in result["message"] and result["iterations"] <= 3
    # nitime's recording 1 (929 spikes in 10 s): the spikes of [0, 0.5) and [0.5, 1)
    import numpy as np
    spikes = mod_spikes()
    assert result["train_spikes"] == int((spikes < 0.5).sum())
    assert result["test_spikes"] == int(((spikes >= 0.5) & (spikes < 1.0)).sum())
    assert np.isfinite(result["heldout_loglik_model"])


def mod_spikes():
    mod = runpy.run_path(EXAMPLE, run_name="grasshopper_example")
    spikes, _, _ = mod["load_grasshopper"](1)
    assert spikes.shape == (929,)
    return spikes


@pytest.mark.parametrize("fitter", ["svi", "lbfgs"])
def test_example_windowed_training(tmp_path, fitter):
    need("nitime")
    mod = runpy.run_path(EXAMPLE, run_name="grasshopper_example")
    result = mod["main"](mod["parse_args"](
        ["--fitter", fitter, "--num-steps", "2", "--train-duration", "1", "--test-duration",
         "0.5", "--window-length", "0.25", "--windows-per-step", "2", "--out", str(tmp_path),
         "--quiet"]))
    assert result["test_spikes"] > 0 and (tmp_path / "grasshopper_stimulus.png").exists()
    assert result["fitter"] == fitter and ("converged" in result) == (fitter == "lbfgs")


def test_lbfgs_and_windows_fit_the_same_map():
    # the windows with their history partition the training likelihood: L-BFGS over all
    # windows reaches the MAP of the whole training part (to the fit's tolerance)
    need("nitime")
    import torch

    mod = runpy.run_path(EXAMPLE, run_name="grasshopper_example")
    spikes, values, times = mod["load_grasshopper"](1)
    glm = mod["StimulusGLM"](values, times, 400.0)
    train = mod["pack_spikes"]([spikes[spikes < 1.0]], 1.0, dtype=mod["DT"])
    fits = {}
    for length in (0.0, 0.25):
        args = mod["parse_args"](["--window-length", str(length), "--quiet"])
        fits[length] = mod["fit"](glm, train, 1.0, args)[0]
    for k in fits[0.0]:
        assert torch.allclose(fits[0.0][k], fits[0.25][k], rtol=1e-4, atol=1e-3), k


def test_bad_arguments():
    need("nitime")
    mod = runpy.run_path(EXAMPLE, run_name="grasshopper_example")
    with pytest.raises(ValueError, match="train-duration"):
        mod["main"](mod["parse_args"](["--train-duration", "10", "--num-steps", "1", "--quiet"]))
    with pytest.raises(ValueError, match="test-duration"):
        mod["main"](mod["parse_args"](["--train-duration", "8", "--test-duration", "3",
                                       "--num-steps", "1", "--quiet"]))
    with pytest.raises(ValueError, match="hold"):
        mod["load_grasshopper"](1, hold=0.3e-4)
