"""CIFAR-10 / CIFAR-100 from a local copy in the python-pickle format (Krizhevsky, 2009).

The layout of ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` once extracted:
``cifar-10-batches-py/{data_batch_1..5, test_batch}`` and ``cifar-100-python/{train, test}``; each
file a pickled dict with ``data`` (N x 3072 uint8, channel-major 32 x 32) and ``labels``
(CIFAR-10) or ``fine_labels`` / ``coarse_labels`` (CIFAR-100). Nothing is downloaded.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from attnbench.ablation.data import ArraySplit

__all__ = ["CIFAR_MEAN", "CIFAR_STD", "LAYOUT", "find_cifar", "load_cifar"]

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


def _read(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
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
