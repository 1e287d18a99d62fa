import pytest
import torch

import attnbench


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


MECHANISMS = attnbench.available_mechanisms()


@pytest.fixture
def temp_registry():
    """Registrations made inside the test are removed afterwards."""
    from attnbench import registry

    saved = dict(registry._REGISTRY)
    yield registry
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)
