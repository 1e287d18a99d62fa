import pytest
import torch

import attnbench


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _no_plugin_trial(request, monkeypatch):
    """``attnbench run`` first validates a study with plugins in a watched child process (about 3 s:
    it imports torch). Tests marked ``plugin_trial`` keep that step (tests/test_hostile_studies.py
    checks what it catches); the other tests that run plugin studies check the run itself, so they
    skip it to keep the suite within its time."""
    if "plugin_trial" not in request.keywords:
        monkeypatch.setattr("attnbench.study._trial.has_plugins", lambda path: False)
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
