"""Workarounds for the CPU-only install, applied once when attnbench is imported.

timm imports torchvision at import time. PyPI has no CPU build of torchvision: on a CPU-only
machine the install pins ``torchvision==0.28.0`` (the release matching ``torch==2.13.0``, so pip
keeps the CPU torch) whose compiled ops need CUDA libraries and do not load. torchvision then
imports without its ops, except for one unguarded ``register_fake("torchvision::nms")`` (and
``qnms``) that fails because the op was never defined. Defining those two schemas, without kernels,
lets torchvision (and so timm) import; calling ``torchvision.ops.nms`` still fails, and attnbench
never calls it. Nothing is done when torchvision's ops load normally (any CUDA machine).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_fragment: torch.library.Library | None = None


def patch_torchvision_without_ops() -> None:
    global _fragment
    spec = importlib.util.find_spec("torchvision")
    if _fragment is not None or spec is None or not spec.submodule_search_locations:
        return
    # importing torchvision.extension would run the failing package __init__: load _C directly
    for lib in Path(spec.submodule_search_locations[0]).glob("_C*.so"):
        try:
            torch.ops.load_library(str(lib))
            return
        except OSError:
            break
    _fragment = torch.library.Library("torchvision", "FRAGMENT")
    for op, schema in _SCHEMAS.items():
        if not hasattr(torch.ops.torchvision, op):
            _fragment.define(schema)
