"""Published ImageNet-1K numbers of the models table, with their sources.

Units: ``params_m`` millions of parameters; ``gflops`` billions of multiply-accumulates at 224²
(the papers' "FLOPs" are fvcore counts, one MAC = one FLOP); ``top1`` ImageNet-1K top-1 %.
``counted`` is what fvcore 0.1.5 counts on the *released code* at 224² (docs/reference-numbers.md),
the reference our own count is held to; it is absent where nobody counted the released code.
``studies/paper_table.yaml`` carries the same numbers for the runner (a test keeps them equal).
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["published_numbers"]

_BIFORMER_README = "github rayleizhu/BiFormer README, 'ImageNet-1K trained models' table"
_DEBIFORMER_README = "github maclong01/DeBiFormer README, 'ImageNet-1K trained models' table"
_RELEASED_COUNT = "fvcore 0.1.5 on the released code at 224x224 (docs/reference-numbers.md)"

_PUBLISHED: dict[str, dict[str, Any]] = {
    "biformer_tiny": {
        "params_m": 13.1,
        "gflops": 2.2,
        "top1": 81.4,
        "source": _BIFORMER_README,
        "counted": {"params_m": 13.14, "gflops": 2.228, "source": _RELEASED_COUNT},
    },
    "biformer_small": {
        "params_m": 25.5,
        "gflops": 4.5,
        "top1": 83.8,
        "source": _BIFORMER_README,
        "counted": {"params_m": 25.54, "gflops": 4.487, "source": _RELEASED_COUNT},
    },
    "biformer_base": {
        "params_m": 56.8,
        "gflops": 9.8,
        "top1": 84.3,
        "source": _BIFORMER_README,
        "counted": {"params_m": 56.80, "gflops": 9.795, "source": _RELEASED_COUNT},
    },
    "biformer_stl": {
        "params_m": 28.4,
        "gflops": 4.6,
        "top1": 82.7,
        "source": _BIFORMER_README + " (BiFormer-STL, the Swin-T layout of the paper's ablation)",
        "counted": {"params_m": 28.37, "gflops": 4.59, "source": _RELEASED_COUNT},
    },
    "debiformer_tiny": {
        "params_m": 21.4,
        "gflops": 2.6,
        "top1": 81.9,
        "source": _DEBIFORMER_README,
        "counted": {
            "params_m": 21.50,
            "gflops": 2.654,
            "source": _RELEASED_COUNT + ", after fixing the released file's 'uto_pad' typo (auto_pad=True)",
        },
    },
    "debiformer_small": {
        "params_m": 44.0,
        "gflops": 5.4,
        "top1": 83.9,
        "source": _DEBIFORMER_README,
        "counted": {
            "params_m": 44.01,
            "gflops": 5.440,
            "source": _RELEASED_COUNT + ", after fixing the released file's 'uto_pad' typo (auto_pad=True)",
        },
    },
    "debiformer_base": {
        "params_m": 77.0,
        "gflops": 11.8,
        "top1": 84.4,
        "source": _DEBIFORMER_README
        + "; its 77M disagrees with the 95.50M counted on the released code (kept as published)",
        "counted": {
            "params_m": 95.50,
            "gflops": 11.741,
            "source": _RELEASED_COUNT + ", after fixing the released file's 'uto_pad' typo (auto_pad=True)",
        },
    },
    "swin_tiny_patch4_window7_224": {
        "params_m": 28.0,
        "gflops": 4.5,
        "top1": 81.2,
        "source": "github microsoft/Swin-Transformer README, ImageNet-1K table (the Swin paper's "
        "Table 1(a) and the BiFormer paper quote 81.3)",
        "counted": {"params_m": 28.29, "gflops": 4.51, "source": "timm's count (docs/reference-numbers.md)"},
    },
    "maxvit_tiny_tf_224": {
        "params_m": 31.0,
        "gflops": 5.6,
        "top1": 83.6,
        "source": "MaxViT paper (Tu et al., ECCV 2022), ImageNet-1K table, MaxViT-T at 224 "
        "(docs/reference-numbers.md)",
        "counted": {"params_m": 30.92, "gflops": 5.42, "source": "timm's count (docs/reference-numbers.md)"},
    },
}


def published_numbers() -> dict[str, dict[str, Any]]:
    """Model name -> ``{params_m, gflops, top1, source, counted: {params_m, gflops, source}}`` (a copy)."""
    return copy.deepcopy(_PUBLISHED)
