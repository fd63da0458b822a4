"""Build the Sphinx documentation (with the gallery) with warnings as errors, and check it."""

import os
import pathlib
import re
import subprocess
import sys

import pytest
from extras import need

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FURO_ESCAPE = "this-will-duplicate-information-and-it-is-still-useful-here"


@pytest.mark.slow
def test_docs_build(tmp_path):
    need("sphinx")
    need("sphinx_gallery")
    pytest.importorskip("matplotlib")
    pytest.importorskip("arviz")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               MPLBACKEND="Agg")
    html = tmp_path / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "-n", "--keep-going", "-b", "html",
           "-d", str(tmp_path / "doctrees"), os.path.join(ROOT, "docs"), str(html)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    check_built_docs(html)


@pytest.mark.skipif(not os.environ.get("DOCS_HTML"), reason="set DOCS_HTML to a built docs folder")
def test_built_docs():
    """The checks of test_docs_build on docs built already (.ci/run: after its docs build)."""
    check_built_docs(pathlib.Path(os.environ["DOCS_HTML"]))


def check_built_docs(html):
    for page in ["index", "api/index", "api/distributions", "concepts", "auto_examples/index",
                 "auto_examples/hawkes_nuts", "auto_examples/posterior_predictive"]:
        assert (html / f"{page}.html").is_file(), page
    # the examples were executed: their figures and printed output are on the pages
    nuts = (html / "auto_examples" / "hawkes_nuts.html").read_text()
    assert "sphx_glr_hawkes_nuts_001.png" in nuts and "r_hat" in nuts
    pp = (html / "auto_examples" / "posterior_predictive.html").read_text()
    assert "sphx_glr_posterior_predictive_004.png" in pp
    assert "posterior predictive obs shape" in pp
    # API pages document the classes
    api = "".join((html / "api" / f"{m}.html").read_text()
                  for m in ["distributions", "diagnostics", "plot"])
    for name in ["HawkesProcess", "SpikingPointProcess", "rescaled_intervals", "qq_plot",
                 "default_capacity"]:
        assert name in api
    # offline: MathJax is shipped, and no page loads a script or style sheet from the network
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert (html / "_static" / "mathjax" / "output" / "chtml" / "fonts").is_dir()
    for path in html.rglob("*.html"):
        text = path.read_text()
        assert not re.search(r'<(script|link)[^>]*(src|href)="(https?:)?//', text), path
    assert "_static/mathjax/tex-chtml.js" in (html / "concepts.html").read_text()
    # links into Pyro and torch (intersphinx from docs/_inventories)
    dist_page = (html / "api" / "distributions.html").read_text()
    assert "https://docs.pyro.ai/en/stable/" in dist_page
    assert "https://docs.pytorch.org/docs/stable/tensors.html#torch.Tensor" in dist_page
    # the gallery in learning order: the quick start first
    index = (html / "auto_examples" / "index.html").read_text()
    order = [index.find(f"{n}.html") for n in ("quickstart", "posterior_predictive",
                                                 "spike_coding")]
    assert -1 < order[0] < order[1] < order[2], order
    # no page opens with an error or warning box: docutils system messages (a broken directive,
    # a bad reference) and Furo's red "ERROR: Adding a table of contents ..." on a page with
    # a ``.. contents::`` directive
    for path in html.rglob("*.html"):
        for classes in re.findall(r'class="([^"]*)"', path.read_text()):
            classes = classes.split()
            assert "system-message" not in classes, (path, "docutils system message")
            assert "contents" not in classes or FURO_ESCAPE in classes, (
                path, "Furo shows an error box for a `.. contents::` table of contents")
    # no progress bars and no local paths in the output boxes
    for path in (html / "auto_examples").glob("*.html"):
        text = path.read_text()
        assert "it/s]" not in text and ROOT not in text, path
