"""CIFAR pickles are read by an unpickler that rebuilds numpy arrays and nothing else: a crafted
file under ``dataset.root`` is refused with an error naming it, and its payload never runs."""

import pickle

import numpy as np
import pytest

from attnbench.ablation.data.cifar import UnsafePickleError, load_cifar


def _write_cifar10(folder, batch_of, protocol):
    folder.mkdir(parents=True)
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        with open(folder / name, "wb") as f:
            pickle.dump(batch_of(name), f, protocol=protocol)


def _batch(n, seed):
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"made by the test",
        b"labels": rng.integers(0, 10, size=n).tolist(),
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [b"img_%d.png" % i for i in range(n)],
    }


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_valid_batch_loads(tmp_path, protocol):
    batches = {}

    def batch_of(name):
        batches[name] = _batch(4, seed=len(batches))
        return batches[name]

    _write_cifar10(tmp_path / "cifar-10-batches-py", batch_of, protocol)
    train, test, classes, _ = load_cifar("cifar10", tmp_path)
    assert classes == 10
    want = batches["data_batch_1"]
    np.testing.assert_array_equal(train.images[:4], want[b"data"].reshape(4, 3, 32, 32))
    assert train.labels[:4].tolist() == want[b"labels"]
    assert len(train.labels) == 20 and len(test.labels) == 4


class _Payload:
    """Unpickled by plain ``pickle``, this calls ``func(arg)``: the test's marker file would appear."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("how", ["os.system", "builtins.eval"])
def test_a_crafted_pickle_is_refused_and_does_not_run(tmp_path, how):
    import builtins
    import os

    marker = tmp_path / "pwned"
    if how == "os.system":
        payload = _Payload(os.system, f"touch {marker}")
    else:
        payload = _Payload(builtins.eval, f"open({str(marker)!r}, 'w').close()")

    def batch_of(name):
        batch = _batch(4, seed=0)
        if name == "data_batch_3":
            batch[b"labels"] = payload
        return batch

    _write_cifar10(tmp_path / "cifar-10-batches-py", batch_of, protocol=4)
    with pytest.raises(UnsafePickleError) as raised:
        load_cifar("cifar10", tmp_path)
    message = str(raised.value)
    assert "data_batch_3" in message
    expected = "posix.system" if how == "os.system" and os.name == "posix" else how
    assert expected in message
    assert "numpy" in message and "CIFAR" in message
    assert not marker.exists()

    # the same file, read by plain pickle, would have run it: the test's payload is live
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "rb") as f:
        pickle.load(f)
    assert marker.exists()


def test_a_pickle_of_the_wrong_shape_says_what_a_batch_holds(tmp_path):
    _write_cifar10(tmp_path / "cifar-10-batches-py", lambda name: [1, 2, 3], protocol=4)
    with pytest.raises(ValueError, match=r"data_batch_1: holds list; a CIFAR batch is a dict"):
        load_cifar("cifar10", tmp_path)
