"""attnbench: benchmarking and ablation of vision attention mechanisms behind one interface."""

from attnbench._compat import patch_torchvision_without_ops

patch_torchvision_without_ops()

from attnbench.flops import FlopReport, count_flops, register_flop_handle  # noqa: E402
from attnbench.mechanism import AttentionMechanism, Param, check_param  # noqa: E402
from attnbench.registry import (  # noqa: E402
    available_mechanisms,
    build_mechanism,
    get_mechanism,
    load_plugin,
    register_mechanism,
)

__version__ = "0.1.0"

__all__ = [
    "AttentionMechanism",
    "FlopReport",
    "Param",
    "available_mechanisms",
    "build_mechanism",
    "check_param",
    "count_flops",
    "get_mechanism",
    "load_plugin",
    "register_flop_handle",
    "register_mechanism",
]

import attnbench.models  # noqa: E402, F401  (registers the seed models with timm)
