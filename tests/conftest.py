import pyro
import pytest
import torch

# Two cores on CI: keep torch from oversubscribing them.
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _fresh_pyro():
    pyro.clear_param_store()
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()


@pytest.fixture(params=["compiled", "torch"])
def loop_backend(request):
    """Run a test with the compiled CPU loops and with the PyTorch loops."""
    from pyro_spikes.distributions.kernels import compiled_loops, has_compiled_loops

    if request.param == "compiled" and not has_compiled_loops():
        pytest.skip("pyro_spikes._kernels was not built")
    with compiled_loops(request.param == "compiled"):
        yield request.param


@pytest.fixture
def float64_default():
    """Run a test with float64 as torch's default dtype (restored afterwards)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _record_extra_skip(report):
    """Append the id of a test (or module) that skipped for a missing extra to the file named by
    ``$PYRO_SPIKES_EXTRA_SKIPS``: .ci/run reruns exactly those after installing the extras."""
    import os

    from extras import PREFIX

    path = os.environ.get("PYRO_SPIKES_EXTRA_SKIPS")
    if not path or not report.skipped or not isinstance(report.longrepr, tuple):
        return
    if str(report.longrepr[2]).startswith(("Skipped: " + PREFIX, PREFIX)):
        with open(path, "a") as f:
            f.write(report.nodeid + "\n")


def pytest_runtest_logreport(report):
    _record_extra_skip(report)


def pytest_collectreport(report):
    _record_extra_skip(report)
