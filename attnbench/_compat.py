"""Workarounds for the CPU-only install, applied before torchvision is first imported.

timm imports torchvision at import time. PyPI has no CPU build of torchvision: on a CPU-only
machine the install pins ``torchvision==0.28.0`` (the release matching ``torch==2.13.0``, so pip
keeps the CPU torch) whose compiled ops need CUDA libraries and do not load. torchvision then
imports without its ops, except for one unguarded ``register_fake("torchvision::nms")`` (and
``qnms``) that fails because the op was never defined. Defining those two schemas, without kernels,
lets torchvision (and so timm) import; calling ``torchvision.ops.nms`` still fails, and attnbench
never calls it. Nothing is done when torchvision's ops load normally (any CUDA machine).

``import attnbench`` must stay cheap (the command line answers ``--help`` without torch), so it
does not patch at once: it calls :func:`patch_before_torchvision_import`, which puts a finder at
the front of ``sys.meta_path`` that applies :func:`patch_torchvision_without_ops` the first time
anything looks torchvision up, then removes itself. So ``import timm`` works after
``import attnbench`` in any module and any order, as before. :mod:`attnbench.models` also calls
the patch directly before it imports timm.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_fragment: torch.library.Library | None = None
_loaded = False


def patch_torchvision_without_ops() -> None:
    """Load torchvision's ops, or define the two schemas its import needs when they do not load."""
    global _fragment, _loaded
    if _fragment is not None or _loaded:
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    import torch

    # importing torchvision.extension would run the failing package __init__: load _C directly
    for lib in Path(spec.submodule_search_locations[0]).glob("_C*.so"):
        try:
            torch.ops.load_library(str(lib))
            _loaded = True
            return
        except OSError:
            break
    _fragment = torch.library.Library("torchvision", "FRAGMENT")
    for op, schema in _SCHEMAS.items():
        if not hasattr(torch.ops.torchvision, op):
            _fragment.define(schema)


class _PatchFirst:
    """A ``sys.meta_path`` finder that finds nothing: it patches when torchvision is looked up."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname == "torchvision":
            try:
                sys.meta_path.remove(self)
            except ValueError:  # another thread got here first
                return None
            patch_torchvision_without_ops()
        return None  # the ordinary finders import it


def patch_before_torchvision_import() -> None:
    """Apply :func:`patch_torchvision_without_ops` when torchvision is first imported (not torch now)."""
    if "torchvision" in sys.modules or any(isinstance(f, _PatchFirst) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _PatchFirst())
