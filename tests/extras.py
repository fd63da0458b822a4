"""
Optional extras in the tests: a test that needs one skips, with a reason naming the extra, when
the extra is not installed, so README's ``pip install -e ".[test]" && python -m pytest -q``
passes on a fresh machine. ``.ci/run`` then installs every extra and reruns exactly the tests
that skipped for one (the conftest hook writes their ids to ``$PYRO_SPIKES_EXTRA_SKIPS``).
"""

import importlib
import importlib.util

import pytest

#: top-level import name -> the extra of pyproject.toml that installs it
EXTRAS = {
    "lightning": "distributed",
    "neo": "io",
    "quantities": "io",
    "pynapple": "io",
    "pynwb": "io",
    "nitime": "examples",
    "sphinx": "docs",
    "sphinx_gallery": "docs",
    "furo": "docs",
    "sphinx_mathjax_offline": "docs",
}

#: the words every such skip reason starts with (the conftest hook looks for them)
PREFIX = "needs the extra"


def reason(module):
    top = module.split(".")[0]
    return f"{PREFIX} [{EXTRAS[top]}]: {top} is not installed"


def need(module):
    """Import ``module`` (from an optional extra) or skip the test, naming the extra."""
    top = module.split(".")[0]
    if top not in EXTRAS:
        raise KeyError(f"{top!r} is not the import name of an optional extra: add it to EXTRAS")
    if importlib.util.find_spec(top) is None:
        pytest.skip(reason(module), allow_module_level=True)
    return importlib.import_module(module)


def missing_extra(exc):
    """The import name of an absent extra's module that ``exc`` (or an error it was raised from,
    as the library's "pip install 'pyro-spikes[distributed]'" errors are) failed on, or None."""
    while exc is not None:
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            top = exc.name.split(".")[0]
            if top in EXTRAS and importlib.util.find_spec(top) is None:
                return top
        exc = exc.__cause__
    return None
