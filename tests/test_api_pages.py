"""Every public name of the package is documented on one of the API pages (docs/api/*.rst)."""

import glob
import importlib
import os
import re

import pytest
from extras import missing_extra

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = ["pyro_spikes", "pyro_spikes.spikes", "pyro_spikes.distributions",
           "pyro_spikes.distributions.kernels", "pyro_spikes.models", "pyro_spikes.nn",
           "pyro_spikes.scoring", "pyro_spikes.diagnostics", "pyro_spikes.plot",
           "pyro_spikes.provenance", "pyro_spikes.windows", "pyro_spikes.infer"]


def documented():
    """Objects documented by the API pages (automodule with bare :members: covers __all__)."""
    objects = set()
    for path in glob.glob(os.path.join(ROOT, "docs", "api", "*.rst")):
        text = open(path).read()
        for m in re.finditer(r"^\.\. auto(module|class|function):: (\S+)\n((?:   .*\n)*)", text,
                             re.M):
            kind, name, options = m.groups()
            try:
                obj = importlib.import_module(name) if kind == "module" else _get(name)
            except ImportError as e:
                if missing_extra(e):  # e.g. SVIModule without Lightning: not a name we check
                    continue
                raise
            objects.add(id(obj))
            members = re.search(r":members:(.*(?:\n {13}.*)*)", options)
            if members is None:
                continue
            listed = [n.strip() for n in members.group(1).replace("\n", ",").split(",")
                      if n.strip()]
            names = listed or getattr(obj, "__all__", [])
            for n in names:
                try:
                    objects.add(id(getattr(obj, n)))
                except ImportError as e:
                    if not missing_extra(e):
                        raise
    return objects


def _get(path):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("module", MODULES)
def test_public_names_are_on_the_api_pages(module):
    mod = importlib.import_module(module)
    docs = documented()
    missing = [n for n in mod.__all__
               if not isinstance(getattr(mod, n), type(mod)) and id(getattr(mod, n)) not in docs]
    assert not missing, f"{module}: not on docs/api/*.rst: {missing}"
