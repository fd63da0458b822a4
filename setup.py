"""
Build script for the optional C extension ``pyro_spikes._kernels`` (the compiled sequential
loops of thinning). Everything else is in pyproject.toml. Without a C compiler the extension is
skipped and pyro_spikes runs the same loops in PyTorch.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pyro_spikes._kernels",
            sources=["pyro_spikes/_kernels.c"],
            depends=["pyro_spikes/_kernels_impl.h", "pyro_spikes/_sigkernel_impl.h",
                     "pyro_spikes/_smooth_gate_impl.h"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
        Extension(
            "pyro_spikes._smc",
            sources=["pyro_spikes/_smc.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
    ]
)
