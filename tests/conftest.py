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
