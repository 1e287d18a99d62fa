"""attnbench: benchmarking and ablation of vision attention mechanisms behind one interface.

The public names below are imported on first use (PEP 562), so ``import attnbench`` and the
command line's ``--help`` do not import torch. ``from attnbench import count_flops`` and
``attnbench.count_flops`` work as usual and import what they need then.

Importing :mod:`attnbench` registers nothing with timm: ``import attnbench.models`` registers the
seed models (``biformer_tiny`` and the rest) with ``timm.create_model``. It does arrange for the
CPU-install torchvision workaround (:mod:`attnbench._compat`) to run before torchvision, and so
timm, is first imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from attnbench._compat import patch_before_torchvision_import

patch_before_torchvision_import()

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "FlopReport": "attnbench.flops",
    "count_flops": "attnbench.flops",
    "register_flop_handle": "attnbench.flops",
    "AttentionMap": "attnbench.mechanism",
    "AttentionMechanism": "attnbench.mechanism",
    "Region": "attnbench.mechanism",
    "Param": "attnbench.mechanism",
    "check_param": "attnbench.mechanism",
    "phase": "attnbench.phases",
    "available_mechanisms": "attnbench.registry",
    "build_mechanism": "attnbench.registry",
    "get_mechanism": "attnbench.registry",
    "load_plugin": "attnbench.registry",
    "register_mechanism": "attnbench.registry",
}

__all__ = [
    "AttentionMap",
    "AttentionMechanism",
    "FlopReport",
    "Param",
    "available_mechanisms",
    "build_mechanism",
    "check_param",
    "count_flops",
    "get_mechanism",
    "load_plugin",
    "Region",
    "phase",
    "register_flop_handle",
    "register_mechanism",
]

if TYPE_CHECKING:
    from attnbench.flops import FlopReport, count_flops, register_flop_handle
    from attnbench.mechanism import AttentionMap, AttentionMechanism, Param, Region, check_param
    from attnbench.phases import phase
    from attnbench.registry import (
        available_mechanisms,
        build_mechanism,
        get_mechanism,
        load_plugin,
        register_mechanism,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'attnbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
