"""Offline datasets for the ablation: ``pathfinder`` and ``reach`` (generated), ``cifar10`` / ``cifar100`` and
``imagefolder`` (read from a local copy). Nothing is ever downloaded.

:func:`load_dataset` takes the study's ``dataset:`` mapping and returns a :class:`Dataset` with a
train and a val split. Splits hand out whole batches of uint8 images ``(B, C, H, W)``; the training
loop moves them to the device, where :func:`augment` and :meth:`Dataset.normalize` run on tensors
(no torchvision transforms: torchvision's ops do not load on the CPU-only install).

``dataset:`` keys, by name (``name`` is required; ``augment`` is common to all):

- ``pathfinder``: ``resolution`` (32), ``train_size`` (8000), ``val_size`` (1000), ``seed`` (0),
  ``difficulty`` (``easy`` | ``medium`` | ``hard``, default ``medium``), any field of
  :class:`~attnbench.ablation.data.pathfinder.PathfinderConfig` to override the preset, and
  ``cache_dir``, and ``train_images`` (``shared`` | ``per_seed``, default ``shared``). The val
  split uses seed ``seed + 1_000_003``, so it never repeats a train image. With ``shared`` every
  training seed trains on the same images (generated with ``seed``); with ``per_seed`` each
  training seed draws its own train split (generator seed
  ``SeedSequence([seed, training seed, 7])``, see :func:`train_split_seed`) while the val split
  stays the same, so seeds vary the data as well as the initialisation and order.
- ``reach``: any field of :class:`~attnbench.ablation.data.reach.ReachConfig` (``resolution``,
  ``patch``, ``distances``, ...), ``train_size`` (8000), ``val_size`` (1200), ``seed`` (0) and
  ``train_images`` as for Pathfinder; generated in memory. The val split is stratified by distance
  and class, and ``info["val_distances"]`` gives each val image's distance.
- ``cifar10`` / ``cifar100``: ``root`` (the folder holding ``cifar-10-batches-py`` /
  ``cifar-100-python``, or that folder itself), optional ``train_size`` / ``val_size`` (the first
  images of the train / test set) and, for cifar100, ``label_type`` (``fine`` | ``coarse``).
- ``imagefolder``: ``root`` with ``train/`` and ``val/`` class-per-subfolder trees,
  ``resolution`` (64; images are resized, shorter side first, then centre-cropped), ``channels``
  (3 or 1), optional ``train_size`` / ``val_size`` (a fixed random subset of the files). Images are
  decoded once into memory.
- ``augment``: ``{crop_padding: int, hflip: bool, vflip: bool}`` over the dataset's defaults
  (CIFAR and imagefolder: padding 4 and horizontal flip; Pathfinder: both flips, which keep the
  label, and no crop, which could cut a contour off).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DATASETS",
    "TRAIN_IMAGES",
    "VAL_SEED_OFFSET",
    "ArraySplit",
    "Dataset",
    "Split",
    "augment",
    "check_available",
    "level_label",
    "reach_val_split",
    "dataset_shape",
    "load_dataset",
    "train_split_seed",
]

VAL_SEED_OFFSET = 1_000_003  # a generated val split uses the dataset's seed + this: never a train image
TRAIN_IMAGES = ("shared", "per_seed")  # pathfinder's train_images: one train split for all seeds, or one each

AUGMENT_KEYS = ("crop_padding", "hflip", "vflip")


class Split(Protocol):
    """One split: ``len`` images, fetched a batch at a time as ``(uint8 (B, C, H, W), int64 (B,))``."""

    def __len__(self) -> int: ...

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]: ...


class ArraySplit:
    """A split held in memory.

    Args:
        images: (N, C, H, W) uint8.
        labels: (N,) integer classes.
    """

    def __init__(self, images: np.ndarray | Tensor, labels: np.ndarray | Tensor) -> None:
        self.images = torch.as_tensor(images)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.labels[i]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return self.images[idx], self.labels[idx]


@dataclasses.dataclass
class Dataset:
    """Train and val splits with what the model and the training loop need to know.

    Attributes:
        name: the dataset's name in the study.
        train, val: the splits.
        num_classes: classes (2 for Pathfinder).
        in_chans: image channels.
        img_size: square image side.
        mean, std: per-channel normalization on [0, 1] images.
        augment: training augmentation, ``{crop_padding, hflip, vflip}``.
        info: facts to record with the results (sizes, cache file, difficulty, ...).
    """

    name: str
    train: Split
    val: Split
    num_classes: int
    in_chans: int
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: dict[str, Any]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 (B, C, H, W) -> float (B, C, H, W), scaled to [0, 1] then normalized."""
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        return (images.float() / 255 - mean) / std


def augment(
    images: Tensor,
    generator: torch.Generator,
    *,
    crop_padding: int = 0,
    hflip: bool = False,
    vflip: bool = False,
) -> Tensor:
    """Random crop after zero padding, and random flips, per image; (B, C, H, W) in, same out.

    The random draws come from ``generator`` (on CPU), so a seeded generator repeats them exactly.
    """
    B, C, H, W = images.shape
    dev = images.device
    if crop_padding > 0:
        p = crop_padding
        padded = torch.nn.functional.pad(images, (p, p, p, p))  # (B, C, H + 2p, W + 2p)
        dy = torch.randint(0, 2 * p + 1, (B,), generator=generator).to(dev)
        dx = torch.randint(0, 2 * p + 1, (B,), generator=generator).to(dev)
        rows = (dy[:, None] + torch.arange(H, device=dev))[:, None, :, None]  # (B, 1, H, 1)
        cols = (dx[:, None] + torch.arange(W, device=dev))[:, None, None, :]  # (B, 1, 1, W)
        batch = torch.arange(B, device=dev)[:, None, None, None]
        chans = torch.arange(C, device=dev)[None, :, None, None]
        images = padded[batch, chans, rows, cols]  # (B, C, H, W)
    for flip, dim in ((hflip, -1), (vflip, -2)):
        if flip:
            mask = (torch.rand(B, generator=generator) < 0.5).to(dev).view(B, 1, 1, 1)
            images = torch.where(mask, images.flip(dim), images)
    return images


def _augment_config(cfg: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    given = cfg.get("augment") or {}
    if not isinstance(given, dict):
        raise ValueError(f"dataset.augment = {given!r}; expected a mapping with keys {list(AUGMENT_KEYS)}")
    unknown = sorted(set(given) - set(AUGMENT_KEYS))
    if unknown:
        raise ValueError(f"dataset.augment: unknown keys {unknown}; allowed: {list(AUGMENT_KEYS)}")
    out = {**defaults, **given}
    pad = out["crop_padding"]
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(f"dataset.augment.crop_padding = {pad!r}; expected an int >= 0")
    for key in ("hflip", "vflip"):
        if not isinstance(out[key], bool):
            raise ValueError(f"dataset.augment.{key} = {out[key]!r}; expected true or false")
    return out


def check_keys(cfg: dict[str, Any], allowed: tuple[str, ...], name: str) -> None:
    """ValueError naming unknown keys of a ``dataset:`` mapping."""
    unknown = sorted(set(cfg) - set(allowed) - {"name", "augment"})
    if unknown:
        raise ValueError(
            f"dataset {name!r}: unknown keys {unknown}; allowed: {sorted(allowed)} (and augment)"
        )


def subset(split: ArraySplit, size: int | None, key: str) -> ArraySplit:
    """The first ``size`` images of a split (all when None)."""
    if size is None:
        return split
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= len(split):
        raise ValueError(f"dataset.{key} = {size!r}; expected an int in [1, {len(split)}] or null")
    return ArraySplit(split.images[:size], split.labels[:size])


def train_split_seed(seed: int, train_seed: int) -> int:
    """The generator seed of a ``train_images: per_seed`` train split, from the dataset's ``seed``
    and the training seed (never ``seed + VAL_SEED_OFFSET`` in practice: a 32-bit hash)."""
    return int(np.random.SeedSequence([seed, train_seed, 7]).generate_state(1)[0])


def _train_images(cfg: dict[str, Any]) -> str:
    value = cfg.get("train_images", "shared")
    if value not in TRAIN_IMAGES:
        raise ValueError(f"dataset.train_images = {value!r}; choose one of {list(TRAIN_IMAGES)}")
    return value


def _split_seeds(cfg: dict[str, Any], train_seed: int | None) -> tuple[int, int, dict[str, Any]]:
    """(the dataset's seed, the generator seed of the train split, what to record of it) for a
    generated dataset: with ``train_images: per_seed`` the train split follows the training seed
    (which must be given), with ``shared`` it is the dataset's seed."""
    seed = cfg.get("seed", 0)
    if _train_images(cfg) != "per_seed":
        return seed, seed, {}
    if isinstance(train_seed, bool) or not isinstance(train_seed, int) or train_seed < 0:
        raise ValueError(
            f"dataset.train_images = 'per_seed' needs the training seed (an int >= 0), got "
            f"train_seed = {train_seed!r}"
        )
    train_split = train_split_seed(seed, train_seed)
    return seed, train_split, {"train_images": "per_seed", "train_split_seed": train_split}


def _sizes(cfg: dict[str, Any], *, train: int, val: int) -> dict[str, int]:
    """``{"train_size": n, "val_size": m}`` of a generated dataset (defaults ``train``, ``val``)."""
    sizes = {key: cfg.get(key, default) for key, default in (("train_size", train), ("val_size", val))}
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(f"dataset.{key} = {value!r}; expected an int >= 2")
    return sizes


def _pathfinder(cfg: dict[str, Any], train_seed: int | None = None) -> Dataset:
    from attnbench.ablation.data.pathfinder import PathfinderConfig, load_pathfinder

    fields = tuple(f.name for f in dataclasses.fields(PathfinderConfig))
    check_keys(
        cfg,
        (*fields, "train_size", "val_size", "seed", "difficulty", "cache_dir", "train_images"),
        "pathfinder",
    )
    pf = PathfinderConfig.from_dataset(cfg)
    seed, train_split, split_info = _split_seeds(cfg, train_seed)
    sizes = _sizes(cfg, train=8000, val=1000)
    splits, files = {}, {}
    for key, split_seed in (("train_size", train_split), ("val_size", seed + VAL_SEED_OFFSET)):
        images, labels, path = load_pathfinder(pf, sizes[key], split_seed, cfg.get("cache_dir"))
        splits[key] = ArraySplit(images[:, None], labels)  # (N, 1, R, R)
        files[key.replace("_size", "_file")] = str(path)
    return Dataset(
        name="pathfinder",
        train=splits["train_size"],
        val=splits["val_size"],
        num_classes=2,
        in_chans=1,
        img_size=pf.resolution,
        mean=(0.5,),
        std=(0.5,),
        augment=_augment_config(cfg, {"crop_padding": 0, "hflip": True, "vflip": True}),
        info={
            "difficulty": cfg.get("difficulty", "medium"),
            **dataclasses.asdict(pf),
            **sizes,
            **files,
            **split_info,
        },
    )


REACH_EXTRA = ("train_size", "val_size", "seed", "train_images")
REACH_SIZES = {"train": 8000, "val": 1200}  # the reach splits' default image counts


def reach_val_split(cfg: dict[str, Any]) -> tuple[Any, Any]:
    """``(ReachConfig, ReachImages)`` of the validation split of a study's reach ``dataset:`` entry:
    the same for every training seed, stratified by distance and class. The loader, ``attnbench
    maps`` and the report's distance readings all take it from here."""
    from attnbench.ablation.data.reach import ReachConfig, generate

    rc = ReachConfig.from_dataset(cfg)
    size = _sizes(cfg, **REACH_SIZES)["val_size"]
    return rc, generate(rc, size, cfg.get("seed", 0) + VAL_SEED_OFFSET, stratified=True)


def _reach(cfg: dict[str, Any], train_seed: int | None = None) -> Dataset:
    """The reach task (:mod:`attnbench.ablation.data.reach`): generated in memory (fast, no cache);
    the val split is stratified by distance and class. ``info["val_distances"]`` lists the distance
    of every val image, in order, so accuracy against distance can be read from ``val_correct``."""
    from attnbench.ablation.data.reach import ReachConfig, generate

    fields = tuple(f.name for f in dataclasses.fields(ReachConfig))
    check_keys(cfg, (*fields, *REACH_EXTRA), "reach")
    _, train_split, split_info = _split_seeds(cfg, train_seed)
    sizes = _sizes(cfg, **REACH_SIZES)
    rc, val = reach_val_split(cfg)
    train = generate(rc, sizes["train_size"], train_split)
    return Dataset(
        name="reach",
        train=ArraySplit(train.images[:, None], train.labels),
        val=ArraySplit(val.images[:, None], val.labels),
        num_classes=2,
        in_chans=1,
        img_size=rc.resolution,
        mean=(0.5,),
        std=(0.5,),
        augment=_augment_config(cfg, {"crop_padding": 0, "hflip": False, "vflip": False}),
        info={
            **dataclasses.asdict(rc),
            **sizes,
            "val_distances": val.distances.tolist(),
            **split_info,
        },
    )


def _cifar(cfg: dict[str, Any]) -> Dataset:
    from attnbench.ablation.data.cifar import CIFAR_MEAN, CIFAR_STD, load_cifar

    name = cfg["name"]
    check_keys(cfg, ("root", "train_size", "val_size", "label_type"), name)
    train, val, num_classes, folder = load_cifar(name, cfg.get("root"), cfg.get("label_type", "fine"))
    train, val = (
        subset(train, cfg.get("train_size"), "train_size"),
        subset(val, cfg.get("val_size"), "val_size"),
    )
    return Dataset(
        name=name,
        train=train,
        val=val,
        num_classes=num_classes,
        in_chans=3,
        img_size=32,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        augment=_augment_config(cfg, {"crop_padding": 4, "hflip": True, "vflip": False}),
        info={"root": str(folder), "train_size": len(train), "val_size": len(val)},
    )


def _imagefolder(cfg: dict[str, Any]) -> Dataset:
    from attnbench.ablation.data.imagefolder import load_imagefolder

    check_keys(cfg, ("root", "resolution", "channels", "train_size", "val_size"), "imagefolder")
    resolution, channels = cfg.get("resolution", 64), cfg.get("channels", 3)
    train, val, classes = load_imagefolder(
        cfg.get("root"), resolution, channels, train_size=cfg.get("train_size"), val_size=cfg.get("val_size")
    )
    mean, std = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) if channels == 3 else ((0.5,), (0.5,))
    return Dataset(
        name="imagefolder",
        train=train,
        val=val,
        num_classes=len(classes),
        in_chans=channels,
        img_size=resolution,
        mean=mean,
        std=std,
        augment=_augment_config(cfg, {"crop_padding": resolution // 8, "hflip": True, "vflip": False}),
        info={
            "root": str(cfg.get("root")),
            "classes": classes,
            "train_size": len(train),
            "val_size": len(val),
        },
    )


DATASETS: dict[str, Callable[..., Dataset]] = {
    "pathfinder": _pathfinder,
    "reach": _reach,
    "cifar10": _cifar,
    "cifar100": _cifar,
    "imagefolder": _imagefolder,
}


def _check_name(cfg: Any) -> str:
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise ValueError(f"dataset = {cfg!r}; expected a mapping with 'name', one of {list(DATASETS)}")
    if cfg["name"] not in DATASETS:
        raise ValueError(f"dataset.name = {cfg['name']!r}; choose one of {list(DATASETS)}")
    return cfg["name"]


def load_dataset(cfg: dict[str, Any], train_seed: int | None = None) -> Dataset:
    """Build the dataset described by a study's ``dataset:`` mapping (see the module docstring).

    Args:
        cfg: the ``dataset:`` mapping.
        train_seed: the training run's seed; chooses the train split of a Pathfinder mapping with
            ``train_images: per_seed`` (which needs it) and is ignored otherwise.
    """
    name = _check_name(cfg)
    if name in ("pathfinder", "reach"):
        return DATASETS[name](cfg, train_seed)
    return DATASETS[name](cfg)


def dataset_shape(cfg: dict[str, Any]) -> tuple[int, int, int]:
    """``(num_classes, in_chans, img_size)`` of a ``dataset:`` mapping without loading the images
    (an image folder's class subfolders are listed)."""
    name = _check_name(cfg)
    if name in ("pathfinder", "reach"):
        return 2, 1, cfg.get("resolution", 32)
    if name in ("cifar10", "cifar100"):
        classes = 10 if name == "cifar10" else (20 if cfg.get("label_type", "fine") == "coarse" else 100)
        return classes, 3, 32
    from attnbench.ablation.data.imagefolder import missing_folder, scan

    root = cfg.get("root")
    train = Path(root).expanduser() / "train" if root is not None else None
    if train is None or not train.is_dir():
        raise missing_folder(root, f"{str(train)!r} is missing" if train else "dataset.root is not set")
    return len(scan(train)), cfg.get("channels", 3), cfg.get("resolution", 64)


def check_available(cfg: dict[str, Any]) -> None:
    """Raise ``FileNotFoundError`` (saying what to put where) if a local dataset is not there;
    nothing is read. Pathfinder is always available (it is generated); its ``train_images`` is
    checked (``ValueError``)."""
    name = _check_name(cfg)
    if name in ("pathfinder", "reach"):
        _train_images(cfg)
    elif name in ("cifar10", "cifar100"):
        from attnbench.ablation.data.cifar import find_cifar

        find_cifar(name, cfg.get("root"))
    elif name == "imagefolder":
        dataset_shape(cfg)


_NOT_KNOBS = (
    *("name", "difficulty", "resolution", "train_size", "val_size", "seed", "cache_dir", "augment"),
    *("train_images", "version"),
)
_KNOB_WORDS = {"contour_length": "contour {}", "n_distractors": "{} distractors", "paddle_gap": "gap {} px"}


def level_label(dataset: dict[str, Any]) -> str:
    """A dataset entry in words: the name unless Pathfinder, its difficulty preset and the knobs it
    overrides ("easy, contour 8"), and the resolution where it is not 32 (the generator's version is
    the rows' ``generator_version``)."""
    if dataset["name"] != "pathfinder":
        extra = [f"{k}={v}" for k, v in dataset.items() if k in ("train_size", "label_type")]
        return ", ".join([dataset["name"], *extra])
    words = [str(dataset.get("difficulty", "medium"))]
    words += [
        ("1 distractor" if k == "n_distractors" and v == 1 else _KNOB_WORDS.get(k, f"{k}={{}}").format(v))
        for k, v in dataset.items()
        if k not in _NOT_KNOBS
    ]
    if dataset.get("resolution", 32) != 32:
        words.append(f"{dataset['resolution']} px")
    return ", ".join(words)
