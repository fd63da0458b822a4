"""Build the Sphinx documentation (with the gallery) with warnings as errors."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_docs_build(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("sphinx_gallery")
    pytest.importorskip("matplotlib")
    pytest.importorskip("arviz")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               MPLBACKEND="Agg")
    html = tmp_path / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html",
           "-d", str(tmp_path / "doctrees"), os.path.join(ROOT, "docs"), str(html)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    for page in ["index", "api", "concepts", "auto_examples/index",
                 "auto_examples/hawkes_nuts", "auto_examples/posterior_predictive"]:
        assert (html / f"{page}.html").is_file(), page
    # the examples were executed: their figures and printed output are on the pages
    nuts = (html / "auto_examples" / "hawkes_nuts.html").read_text()
    assert "sphx_glr_hawkes_nuts_001.png" in nuts and "r_hat" in nuts
    pp = (html / "auto_examples" / "posterior_predictive.html").read_text()
    assert "sphx_glr_posterior_predictive_004.png" in pp
    assert "posterior predictive obs shape" in pp
    # API pages document the classes
    api = (html / "api.html").read_text()
    for name in ["HawkesProcess", "SpikingPointProcess", "rescaled_intervals", "qq_plot"]:
        assert name in api
