"""Dilated Neighborhood Attention (DiNAT, Hassani & Shi, "Dilated Neighborhood Attention
Transformer", 2022).

Neighborhood attention whose ``kernel_size x kernel_size`` window takes every ``dilation``-th token:
the map splits into ``dilation x dilation`` interleaved sub-grids and each query attends within its
own sub-grid, with NATTEN's inward shift at that sub-grid's borders. DiNAT alternates dilated and
non-dilated (``neighborhood``) layers; this module is the dilated layer alone. The body, backends,
FLOP count and the absence of relative position bias are those of ``mechanisms/neighborhood.py``.

Peers (docs/peers.md): ``natten.na2d``; on CPU ours / natten 0.01-0.23 forward, natten having no CPU
backward (CPU, 1 thread, fp32, batch 4, quiet machine, results/peers).
"""

from __future__ import annotations

from typing import Literal

from attnbench import register_mechanism
from mechanisms.neighborhood import NeighborhoodAttentionBase


@register_mechanism("dilated")
class DilatedNeighborhoodAttention(NeighborhoodAttentionBase):
    """Dilated Neighborhood Attention (DiNAT) without relative position bias, through NATTEN.

    Args:
        dim: channels C.
        num_heads: attention heads (DiNAT uses head_dim 32).
        kernel_size: window side k, odd and >= 3 (DiNAT: 7).
        dilation: step d >= 1 between window tokens; k·d must not exceed H or W. DiNAT at 224²
            alternates d = 1 with d = map side // k: 8, 4, 2, 1 in stages 1-4 (56² ... 7²); the
            default 2 fits every map from 14² up.
        qkv_bias: bias in the q/k/v projection.
        backend: "auto" (natten on CUDA where it can run, else tiled), "natten", "tiled" or "torch".
    """

    display_name = "DiNAT"
    color = "#E69F00"
    marker = "X"
    bibtex = (
        "@article{hassani2022dinat,\n  title = {Dilated Neighborhood Attention Transformer},\n  author = "
        "{Hassani, Ali and Shi, Humphrey},\n  journal = {arXiv preprint arXiv:2209.15001},\n"
        "  year = {2022}\n}"
    )
    param_symbols = {"kernel_size": "k", "dilation": "δ"}

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        kernel_size: int = 7,
        dilation: int = 2,
        qkv_bias: bool = True,
        backend: Literal["auto", "natten", "tiled", "torch"] = "auto",
    ) -> None:
        super().__init__(
            dim, num_heads, kernel_size=kernel_size, dilation=dilation, qkv_bias=qkv_bias, backend=backend
        )
