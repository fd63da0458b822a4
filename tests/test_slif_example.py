import os
import runpy
import sys

import pyro
import torch

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "slif_input_current.py")


def _load():
    return runpy.run_path(EXAMPLE, run_name="slif_example")


def test_example_smoke(tmp_path, monkeypatch):
    argv = ["slif_input_current.py", "--num-steps", "2", "--sample-sizes", "4", "8", "--sigmas", "0.25",
            "--holdout", "16", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(EXAMPLE, run_name="__main__")
    assert (tmp_path / "slif_input_current.png").stat().st_size > 0
    assert (tmp_path / "slif_input_current.json").stat().st_size > 0


def test_input_current_estimate_converges():
    # sigma = 0.25, 64 observed samples, c from 2.5 towards the truth 1.5 in 60 Adam steps. The
    # sampling error of c from 64 samples is about 0.02-0.03, so we require |c_hat - 1.5| < 0.06
    # and that the hold-out error of the mean spike times drops well below its initial value.
    mod = _load()
    torch.manual_seed(2)
    args = mod["parse_args"](["--num-steps", "60"])
    truth = mod["StochasticLIF"](torch.tensor([1.5], dtype=torch.float64), noise_scale=torch.tensor(0.25, dtype=torch.float64),
                                 duration=args.duration, num_spikes=3, dt=args.dt)
    data, holdout = truth.sample((64,)), truth.sample((512,))
    model, traj = mod["fit_input_current"](data, 0.25, args)
    assert traj[0] == 2.5
    assert abs(traj[-1] - 1.5) < 0.06, traj
    mst = mod["mean_spike_times"]
    with torch.no_grad():
        fitted = model.distribution().sample((512,))
    pyro.clear_param_store()
    init = mod["SLIFNeuron"](2.5, 0.25, args.duration, 3, args.dt).distribution().sample((512,))
    err = (mst(fitted, 3) - mst(holdout, 3)).abs().mean()
    err0 = (mst(init, 3) - mst(holdout, 3)).abs().mean()
    assert err < 0.1 and err < 0.2 * err0, (err, err0)
