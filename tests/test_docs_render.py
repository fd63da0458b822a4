"""
The built pages render in a browser without the network: a headless Chromium loads a page with
math and a gallery page, runs their scripts (the shipped MathJax), and every formula is typeset
and every figure loads. Needs built docs (``DOCS_HTML``, as in .ci/run) and a Chromium binary;
skipped otherwise.
"""

import os
import pathlib
import re
import shutil
import subprocess

import pytest

HTML = os.environ.get("DOCS_HTML")
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
pytestmark = [
    pytest.mark.skipif(not HTML, reason="set DOCS_HTML to a built docs folder"),
    pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium"),
]

# a data: URL loads nothing; any http(s) request would fail fast, so rendering can't use it
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
         "--proxy-server=http://0.0.0.0:9", "--proxy-bypass-list=<-loopback>"]


def render(page, *extra):
    url = pathlib.Path(HTML, page).resolve().as_uri()
    proc = subprocess.run([CHROMIUM, *FLAGS, *extra, url], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.parametrize("page", ["concepts.html", "api/distributions.html"])
def test_math_is_typeset_offline(page):
    dom = render(page, "--dump-dom")
    maths = re.findall(r'<(span|div) class="math notranslate nohighlight"[^>]*>(.*?)</\1>',
                       dom, re.S)
    assert len(maths) > 5, "no math on the page"
    raw = [m[1][:80] for m in maths if "<mjx-container" not in m[1]]
    assert not raw, f"{len(raw)} of {len(maths)} formulas left as raw LaTeX: {raw[:3]}"


def test_gallery_page_screenshot(tmp_path):
    shot = tmp_path / "quickstart.png"
    dom = render("auto_examples/quickstart.html", "--dump-dom")
    assert "sphx_glr_quickstart_001.png" in dom
    render("auto_examples/quickstart.html", f"--screenshot={shot}", "--window-size=1200,1600")
    import matplotlib.image

    img = matplotlib.image.imread(shot)
    assert img.shape[:2] == (1600, 1200)
    # a rendered page, not a blank or an error page: many distinct colours
    assert len({tuple(p) for p in img[::8, ::8, :3].reshape(-1, 3).round(2).tolist()}) > 20
