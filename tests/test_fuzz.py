"""
Property-based fuzzing of the public API (cases in tests/fuzz_cases.py, with hypothesis).

Each run is a subprocess with a timeout, so that a segfault in the compiled loops or a sampling
loop that never ends fails this test (with the child's output) instead of killing the test
run. The examples are derandomised (a fixed seed per property): a failure reproduces with
``python tests/fuzz_cases.py GROUP 60`` (``--trace`` prints every call).
"""

import os
import subprocess
import sys

import pytest

from pyro_spikes.distributions.kernels import has_compiled_loops

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXAMPLES = 60
KERNEL_GROUPS = ("thinning_loop,relaxed_adjoint,exp_decay_scan,spiking_terms,hawkes_chunk,"
                 "hawkes_terms,index_rows")
PROCESS_GROUPS = "poisson,hawkes,spiking,stochastic_lif,layout"


def run_cases(groups, compiled, timeout=240):
    env = dict(os.environ, PYRO_SPIKES_COMPILED="1" if compiled else "0", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    try:
        proc = subprocess.run([sys.executable, os.path.join(HERE, "fuzz_cases.py"), groups,
                               str(EXAMPLES)], env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        pytest.fail(f"fuzz run {groups} did not finish in {timeout} s (a hang?):\n{out[-4000:]}")
    out = proc.stdout + proc.stderr
    if proc.returncode < 0:
        pytest.fail(f"fuzz run {groups} was killed by signal {-proc.returncode} (a crash in "
                    f"the compiled loops?):\n{out[-6000:]}")
    assert proc.returncode == 0, out[-8000:]
    for group in groups.split(","):
        assert f"{group}: ok" in proc.stdout, out[-4000:]


@pytest.mark.skipif(not has_compiled_loops(), reason="pyro_spikes._kernels was not built")
def test_fuzz_compiled_entry_points():
    """Every function in kernels.__all__ on random shapes (zeros included), dtypes, strides,
    enums: named ValueError/TypeError or the PyTorch loop's result."""
    run_cases(KERNEL_GROUPS, compiled=True)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "torch"])
def test_fuzz_processes(compiled):
    """Constructors, sample, log_prob, intensity, compensator, rsample and the layout helpers
    on random shapes, dtypes, NaN/inf/huge/negative values, validation on and off."""
    if compiled and not has_compiled_loops():
        pytest.skip("pyro_spikes._kernels was not built")
    run_cases(PROCESS_GROUPS, compiled=compiled)
