"""Docstrings hold LaTeX: a single backslash before a, b, f, r, t or v makes a control
character, not a command (``\\frac`` written ``\frac`` is a form feed and ``rac``, ``\\tau``
written ``\tau`` a tab and ``au``)."""

import ast
import os
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = [
    os.path.join(folder, name)
    for top in ("pyro_spikes", "examples", "benchmarks")
    for folder, _, names in os.walk(os.path.join(ROOT, top))
    for name in names
    if name.endswith(".py")
]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: os.path.relpath(p, ROOT))
def test_docstrings_have_no_control_characters(path):
    with open(path) as f:
        source = f.read()
    # invalid escapes (``\mathcal`` written ``\m...`` with one backslash) warn at compile time
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compile(source, path, "exec")
    tree = ast.parse(source)
    nodes = [tree] + [n for n in ast.walk(tree)
                      if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    for node in nodes:
        doc = ast.get_docstring(node, clean=False) or ""
        bad = sorted({hex(ord(c)) for c in doc if c in "\a\b\f\v\r\t"})
        assert not bad, f"{getattr(node, 'name', 'module')}: {bad} (escape the backslash)"
