"""CIFAR-10 / CIFAR-100 from a local copy in the python-pickle format (Krizhevsky, 2009).

The layout of ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` once extracted:
``cifar-10-batches-py/{data_batch_1..5, test_batch}`` and ``cifar-100-python/{train, test}``; each
file a pickled dict with ``data`` (N x 3072 uint8, channel-major 32 x 32) and ``labels``
(CIFAR-10) or ``fine_labels`` / ``coarse_labels`` (CIFAR-100). Nothing is downloaded.

The pickles are read by :class:`CifarUnpickler`, which rebuilds only what that format holds (dicts,
lists, bytes, ints, and numpy arrays with their dtype) and refuses every other global, so a crafted
file under ``dataset.root`` cannot run code when it is loaded.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from attnbench.ablation.data import ArraySplit

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "LAYOUT",
    "CifarUnpickler",
    "UnsafePickleError",
    "find_cifar",
    "load_cifar",
]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

# name -> (folder, train files, test file, classes, archive)
LAYOUT = {
    "cifar10": (
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        10,
        "cifar-10-python.tar.gz",
    ),
    "cifar100": ("cifar-100-python", ("train",), "test", 100, "cifar-100-python.tar.gz"),
}


def find_cifar(name: str, root: str | Path | None) -> Path:
    """The folder holding the pickles: ``root`` itself or ``root/<cifar folder>``.

    Raises:
        FileNotFoundError: saying what to put where.
    """
    folder, train_files, test_file, _, archive = LAYOUT[name]
    needed = (*train_files, test_file)
    if root is not None:
        base = Path(root).expanduser()
        for candidate in (base, base / folder):
            if all((candidate / f).is_file() for f in needed):
                return candidate
    where = f"dataset.root = {str(root)!r}" if root is not None else "dataset.root is not set"
    raise FileNotFoundError(
        f"{name}: {where}; no local copy found. Get {archive} from "
        f"https://www.cs.toronto.edu/~kriz/cifar.html on a machine with network access, extract it "
        f"(tar xzf {archive}) and set dataset.root to the folder that contains {folder}/, so that "
        f"<root>/{folder}/ holds {', '.join(needed)}. attnbench never downloads data."
    )


try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy 1
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer


class UnsafePickleError(pickle.UnpicklingError):
    """A CIFAR file asked for a global that the CIFAR format never holds."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 pickles ``bytes`` at protocol <= 2, and for nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) refused")
    return text.encode("latin1")


# (module, name) a CIFAR pickle may reference -> what it is rebuilt with. The original files were
# written by Python 2 and numpy 1 (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``,
# ``numpy.dtype``); numpy 2 writes ``numpy._core``; protocol 5 writes ``_frombuffer`` instead of
# ``_reconstruct``; Python 3 at protocol <= 2 writes bytes as ``_codecs.encode(str, "latin1")``.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _latin1_encode,
}


class CifarUnpickler(pickle.Unpickler):
    """Reads one CIFAR python batch, admitting only the globals that rebuild a numpy array.

    Args:
        file: the open file.
        path: its path, for the error message.
    """

    def __init__(self, file: Any, path: str | Path) -> None:
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise UnsafePickleError(
                f"{self.path}: refused to load the global {module}.{name}, which a CIFAR batch never "
                "holds; a CIFAR python batch is a pickled dict of bytes keys to a uint8 numpy array "
                "(b'data') and lists of ints (the labels), and may reference only "
                f"{', '.join(sorted(f'{m}.{n}' for m, n in _ALLOWED))}. This file does not come from the "
                "CIFAR archive: replace it with the one in cifar-10/100-python.tar.gz"
            )
        return found


def _read(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = CifarUnpickler(f, path).load()
    keys = (b"data", label_key.encode())
    if not isinstance(batch, dict) or any(k not in batch for k in keys):
        held = list(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{path}: holds {held}; a CIFAR batch is a dict with the keys {list(keys)}")
    data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)  # (N, C, H, W)
    labels = np.asarray(batch[label_key.encode()], dtype=np.int64)
    return data, labels


def load_cifar(
    name: str, root: str | Path | None, label_type: str = "fine"
) -> tuple[ArraySplit, ArraySplit, int, Path]:
    """Train and test splits of ``cifar10`` or ``cifar100``.

    Args:
        name: "cifar10" or "cifar100".
        root: the folder holding the extracted archive's folder (or that folder itself).
        label_type: CIFAR-100's "fine" (100 classes) or "coarse" (20 superclasses) labels.

    Returns:
        train, test, number of classes, the folder read.
    """
    if name not in LAYOUT:
        raise ValueError(f"dataset.name = {name!r}; choose one of {list(LAYOUT)}")
    if label_type not in ("fine", "coarse"):
        raise ValueError(f"dataset.label_type = {label_type!r}; choose 'fine' or 'coarse' (cifar100 only)")
    folder = find_cifar(name, root)
    _, train_files, test_file, classes, _ = LAYOUT[name]
    key = "labels" if name == "cifar10" else f"{label_type}_labels"
    if name == "cifar100" and label_type == "coarse":
        classes = 20
    parts = [_read(folder / f, key) for f in train_files]
    train = ArraySplit(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    test = ArraySplit(*_read(folder / test_file, key))
    return train, test, classes, folder
