"""A local image folder in the class-per-subfolder layout, decoded once into memory with PIL.

Layout: ``root/train/<class>/<image>`` and ``root/val/<class>/<image>``; class names are the
sorted subfolder names of ``train``, and every class of ``val`` must be one of them. Each image is
converted to RGB (or L for ``channels=1``), resized so that its shorter side is ``resolution``
(bilinear), and centre-cropped to ``resolution x resolution``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from attnbench.ablation.data import ArraySplit

__all__ = ["EXTENSIONS", "load_imagefolder", "missing_folder", "scan"]

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")


def missing_folder(root: str | Path | None, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"imagefolder: {what}. Set dataset.root to a folder laid out as <root>/train/<class>/<image> "
        f"and <root>/val/<class>/<image> (one subfolder per class, images {', '.join(EXTENSIONS[:5])} ...); "
        f"dataset.root = {str(root)!r}. attnbench never downloads data."
    )


def scan(folder: Path) -> dict[str, list[Path]]:
    """Class name -> sorted image files, for every subfolder of ``folder`` holding images."""
    out = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in sub.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
        if files:
            out[sub.name] = files
    return out


def _decode(path: Path, resolution: int, mode: str) -> np.ndarray:
    with Image.open(path) as img:
        img = img.convert(mode)
        w, h = img.size
        scale = resolution / min(w, h)
        size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
        img = img.resize(size, Image.Resampling.BILINEAR)
        left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
        img = img.crop((left, top, left + resolution, top + resolution))
        arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # (C, H, W)


def _split(
    files: dict[str, list[Path]], classes: list[str], resolution: int, mode: str, size: int | None, key: str
) -> ArraySplit:
    items = [(path, classes.index(name)) for name, paths in files.items() for path in paths]
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= len(items):
            raise ValueError(f"dataset.{key} = {size!r}; expected an int in [1, {len(items)}] or null")
        keep = np.sort(np.random.default_rng(0).permutation(len(items))[:size])  # a fixed random subset
        items = [items[i] for i in keep]
    images = np.stack([_decode(path, resolution, mode) for path, _ in items])
    return ArraySplit(images, np.array([label for _, label in items], dtype=np.int64))


def load_imagefolder(
    root: str | Path | None,
    resolution: int,
    channels: int = 3,
    *,
    train_size: int | None = None,
    val_size: int | None = None,
) -> tuple[ArraySplit, ArraySplit, list[str]]:
    """Train and val splits of a local image folder.

    Returns:
        train, val, class names (index = label).

    Raises:
        FileNotFoundError: the folder or its train/val trees are missing, saying what to put where.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 8:
        raise ValueError(f"dataset.resolution = {resolution!r}; expected an int >= 8")
    if channels not in (1, 3):
        raise ValueError(f"dataset.channels = {channels!r}; choose 3 (RGB) or 1 (grayscale)")
    if root is None:
        raise missing_folder(root, "dataset.root is not set")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise missing_folder(root, f"{str(base)!r} is not a folder")
    trees = {}
    for split in ("train", "val"):
        folder = base / split
        if not folder.is_dir():
            raise missing_folder(root, f"{str(folder)!r} is missing")
        trees[split] = scan(folder)
        if not trees[split]:
            raise missing_folder(root, f"{str(folder)!r} has no class subfolders with images")
    classes = sorted(trees["train"])
    extra = sorted(set(trees["val"]) - set(classes))
    if extra:
        raise ValueError(f"imagefolder: val classes {extra} have no train folder; train classes: {classes}")
    mode = "RGB" if channels == 3 else "L"
    train = _split(trees["train"], classes, resolution, mode, train_size, "train_size")
    val = _split(trees["val"], classes, resolution, mode, val_size, "val_size")
    return train, val, classes
