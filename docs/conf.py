"""Sphinx configuration of the pyro_spikes documentation."""

import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the package
sys.path.insert(0, HERE)  # gallery_argv

os.environ.setdefault("MPLBACKEND", "Agg")

from gallery_argv import EXAMPLE_ARGV  # noqa: E402

project = "pyro_spikes"
author = "pyro_spikes developers"
copyright = "2026, pyro_spikes developers"
release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
]

exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.json", "auto_examples/*.md5"]
templates_path = []
html_static_path = []  # figures in _static are referenced by .. image:: directly
html_theme = "alabaster"

autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": True}
napoleon_google_docstring = False
napoleon_numpy_docstring = True

# Run only the examples listed in docs/gallery_argv.py, with their small settings.
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": "/(" + "|".join(re.escape(name) for name in EXAMPLE_ARGV) + ")$",
    "ignore_pattern": r"__init__\.py",
    "reset_argv": "gallery_argv.reset_argv",
    "image_scrapers": ("matplotlib",),
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "matplotlib_animations": False,
}
