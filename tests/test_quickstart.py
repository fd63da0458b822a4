import importlib.util
import os
import sys

import pytest
import torch

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "quickstart.py")


def load():
    spec = importlib.util.spec_from_file_location("quickstart", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_fits_and_plots(tmp_path):
    qs = load()
    args = qs.parse_args(["--num-steps", "150", "--num-sequences", "10", "--out", str(tmp_path),
                          "--quiet"])
    result = qs.main(args)
    assert os.path.exists(tmp_path / "quickstart.png")
    losses = result["losses"]
    assert sum(losses[-10:]) < sum(losses[:10])
    # MAP estimates from 10 sequences of 50 time units land near the truth
    assert torch.allclose(result["fit"]["bias"], qs.TRUE_BIAS, atol=0.6)
    assert torch.allclose(result["fit"]["weight"], qs.TRUE_WEIGHT, atol=1.0)
    assert result["ks_pvalue"] > 0.01


def test_quickstart_script_entry_point(tmp_path):
    import subprocess

    out = subprocess.run(
        [sys.executable, EXAMPLE, "--num-steps", "3", "--num-sequences", "2", "--duration", "10",
         "--out", str(tmp_path), "--quiet"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert out.returncode == 0, out.stderr
    assert "time-rescaling KS test" in out.stdout


def test_the_gallery_settings_do_what_their_comment_says(tmp_path):
    """
    docs/gallery_argv.py: the quick start's gallery run (seed 0, compiled loops, as the docs
    build runs it; the PyTorch loops draw other data from the same seed) fits as its comment
    states.
    """
    import runpy

    from pyro_spikes.distributions.kernels import compiled_loops, has_compiled_loops

    if not has_compiled_loops():
        pytest.skip("the gallery runs the compiled loops, which are not built here")
    argv = runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "docs",
                                       "gallery_argv.py"))["EXAMPLE_ARGV"]["quickstart.py"]
    qs = load()
    with compiled_loops(True):
        result = qs.main(qs.parse_args(list(argv) + ["--out", ""]))
        longer = qs.main(qs.parse_args(list(argv) + ["--out", "", "--num-steps", "600"]))
    assert (result["fit"]["bias"] - qs.TRUE_BIAS).abs().max() < 0.4
    assert (result["fit"]["weight"] - qs.TRUE_WEIGHT).abs().max() < 0.6
    assert result["ks_pvalue"] > 0.05
    assert torch.allclose(result["fit"]["bias"], longer["fit"]["bias"], atol=0.06)  # converged
