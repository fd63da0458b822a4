"""
Write the intersphinx inventories (``objects.inv`` format) that the docs build reads offline.

Neither the Python, NumPy, PyTorch, Pyro nor Matplotlib packages ship their ``objects.inv``, and
the docs build must not use the network, so this script writes minimal inventories by hand:
the objects these docs refer to, with their pages in each project's documentation. Add a row
when a new reference to one of these projects does not resolve (the build runs with ``-n -W``),
then run ``python docs/_inventories/make_inventories.py``.
"""

import os
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))

_EXC = "library/exceptions.html#"
INVENTORIES = {
    "python": ("Python", "3", [
        ("int", "class", "library/functions.html#int"),
        ("float", "class", "library/functions.html#float"),
        ("bool", "class", "library/functions.html#bool"),
        ("callable", "function", "library/functions.html#callable"),
        ("str", "class", "library/stdtypes.html#str"),
        ("list", "class", "library/stdtypes.html#list"),
        ("tuple", "class", "library/stdtypes.html#tuple"),
        ("dict", "class", "library/stdtypes.html#dict"),
        ("None", "data", "library/constants.html#None"),
        ("contextlib.contextmanager", "function",
         "library/contextlib.html#contextlib.contextmanager"),
    ] + [(name, "exception", _EXC + name) for name in (
        "ValueError", "TypeError", "RuntimeError", "NotImplementedError", "KeyError")]),
    "numpy": ("NumPy", "2", [
        ("numpy.ndarray", "class", "reference/generated/numpy.ndarray.html#numpy.ndarray"),
    ]),
    "torch": ("PyTorch", "2", [
        ("torch.Tensor", "class", "tensors.html#torch.Tensor"),
        ("torch.Size", "class", "size.html#torch.Size"),
        ("torch.dtype", "class", "tensor_attributes.html#torch.dtype"),
        ("torch.device", "class", "tensor_attributes.html#torch.device"),
        ("torch.Generator", "class", "generated/torch.Generator.html#torch.Generator"),
        ("torch.stack", "function", "generated/torch.stack.html#torch.stack"),
        ("torch.no_grad", "class", "generated/torch.no_grad.html#torch.no_grad"),
        ("torch.nn.Module", "class", "generated/torch.nn.Module.html#torch.nn.Module"),
        ("torch.autograd.Function", "class", "autograd.html#torch.autograd.Function"),
        ("torch.distributions.Distribution", "class",
         "distributions.html#torch.distributions.distribution.Distribution"),
        ("torch.distributions.distribution.Distribution", "class",
         "distributions.html#torch.distributions.distribution.Distribution"),
        ("torch.distributions.Distribution.expand", "method",
         "distributions.html#torch.distributions.distribution.Distribution.expand"),
    ]),
    "pyro": ("Pyro", "1.9", [
        ("pyro.plate", "class", "primitives.html#pyro.primitives.plate"),
        ("pyro.sample", "function", "primitives.html#pyro.primitives.sample"),
        ("pyro.param", "function", "primitives.html#pyro.primitives.param"),
        ("pyro.infer.SVI", "class", "inference_algos.html#pyro.infer.svi.SVI"),
        ("pyro.infer.Trace_ELBO", "class",
         "inference_algos.html#pyro.infer.trace_elbo.Trace_ELBO"),
        ("pyro.infer.TraceGraph_ELBO", "class",
         "inference_algos.html#pyro.infer.tracegraph_elbo.TraceGraph_ELBO"),
        ("pyro.infer.Predictive", "class",
         "inference_algos.html#pyro.infer.predictive.Predictive"),
        ("pyro.infer.predictive.Predictive", "class",
         "inference_algos.html#pyro.infer.predictive.Predictive"),
        ("pyro.infer.NUTS", "class", "mcmc.html#pyro.infer.mcmc.NUTS"),
        ("pyro.infer.MCMC", "class", "mcmc.html#pyro.infer.mcmc.api.MCMC"),
        ("pyro.infer.autoguide.AutoNormal", "class",
         "infer.autoguide.html#pyro.infer.autoguide.AutoNormal"),
        ("pyro.infer.autoguide.AutoDelta", "class",
         "infer.autoguide.html#pyro.infer.autoguide.AutoDelta"),
        ("pyro.infer.autoguide.AutoMultivariateNormal", "class",
         "infer.autoguide.html#pyro.infer.autoguide.AutoMultivariateNormal"),
        ("pyro.nn.PyroModule", "class", "nn.html#pyro.nn.module.PyroModule"),
        ("pyro.nn.module.PyroModule", "class", "nn.html#pyro.nn.module.PyroModule"),
        ("pyro.nn.PyroSample", "class", "nn.html#pyro.nn.module.PyroSample"),
        ("pyro.nn.PyroParam", "class", "nn.html#pyro.nn.module.PyroParam"),
        ("pyro.distributions.TorchDistribution", "class",
         "distributions.html#pyro.distributions.torch_distribution.TorchDistribution"),
        ("pyro.distributions.torch_distribution.TorchDistribution", "class",
         "distributions.html#pyro.distributions.torch_distribution.TorchDistribution"),
    ]),
    "matplotlib": ("Matplotlib", "3", [
        ("matplotlib.axes.Axes", "class",
         "api/_as_gen/matplotlib.axes.Axes.html#matplotlib.axes.Axes"),
        ("matplotlib.figure.Figure", "class",
         "api/_as_gen/matplotlib.figure.Figure.html#matplotlib.figure.Figure"),
        ("matplotlib.collections.LineCollection", "class",
         "api/collections_api.html#matplotlib.collections.LineCollection"),
    ]),
}


def write(name, project, version, rows, directory=HERE):
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    body = "".join(f"{obj} py:{role} 1 {uri} -\n" for obj, role, uri in sorted(rows))
    with open(os.path.join(directory, f"{name}.inv"), "wb") as f:
        f.write(header.encode() + zlib.compress(body.encode()))


if __name__ == "__main__":
    for name, (project, version, rows) in INVENTORIES.items():
        write(name, project, version, rows)
        print(f"{name}.inv: {len(rows)} objects")
