"""DeBiFormer (Long et al., "DeBiFormer: Vision Transformer with Deformable Agent Bi-level Routing
Attention", ACCV 2024), the classification models of github maclong01/DeBiFormer.

Built from attnbench's ``bra`` and ``dbra`` mechanisms. The layout is BiFormer's (two 3x3 stride-2
conv stem, 3x3 stride-2 conv + BN downsampling, final BatchNorm, average pool, head), but every
block holds two attention sub-blocks, each ``x += DWConv3x3(x)`` (the second only), pre-norm
attention and a conv-MLP (1x1 conv, ``h + DWConv3x3(h)``, GELU, 1x1 conv)::

    x += pos_embed1(x); x += attn1(norm1(x)); x += mlp1(norm2(x))
    x += pos_embed2(x); x += attn2(norm3(x)); x += mlp2(norm4(x))

``attn1`` is BRA with top-k 1/4/16 in stages 1-3 and DBRA (top-k 49) in stage 4; ``attn2`` is
DBRA with top-k 4/8/16/49. DBRA's per-stage settings (offset groups 1/2/4/8, or 1/2/3/6 for the
base model; offset kernel 9/7/5/3 and stride 8/4/2/1; inner MLP ratio 3, the small model's stage 4
1; bias table sized for the 224² map of the stage) follow the released ``param_size`` tables.

The released file does not run as published (``uto_pad=`` typos; with ``auto_pad=False`` a
variable is undefined); as in docs/reference-numbers.md it is taken with those fixed, i.e.
``auto_pad=True`` in every attention. Module names equal the released ones (``pos_embed1``,
``attn1``, ``mlp1.linear1.0`` ...), so released checkpoints load through
:func:`attnbench.models.load_official_checkpoint`.
"""

from __future__ import annotations

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

from attnbench import build_mechanism
from attnbench.models._base import StagedBackbone, attend_padded, region_min_size
from attnbench.models.layers import ConvMlp

__all__ = ["DeBiFormer", "DeBiFormerBlock"]

DBRA_AS_ATTN1 = 0  # a ``bra_topks`` entry meaning "attn1 is DBRA too" (stage 4 of every model)


class DeBiFormerBlock(nn.Module):
    """Two attention sub-blocks with conv-MLPs on (B, C, H, W) maps (see the module docstring)."""

    def __init__(
        self,
        dim: int,
        attn1: nn.Module,
        attn2: nn.Module,
        *,
        mlp_ratio: int,
        before_attn_dwconv: int,
        drop_path: float,
    ) -> None:
        super().__init__()
        k = before_attn_dwconv
        self.pos_embed1 = nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim) if k > 0 else None
        self.pos_embed2 = nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim) if k > 0 else None
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn1 = attn1
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp1 = ConvMlp(dim, mlp_ratio)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)
        self.attn2 = attn2
        self.attn1_min_size, self.attn2_min_size = region_min_size(attn1), region_min_size(attn2)
        self.norm4 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp2 = ConvMlp(dim, mlp_ratio)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    @staticmethod
    def _conv_on_last(layer: nn.Module, x: Tensor) -> Tensor:
        return layer(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # NCHW layer on (B, H, W, C)

    def forward(self, x: Tensor) -> Tensor:
        if self.pos_embed1 is not None:
            x = x + self.pos_embed1(x)  # (B, C, H, W)
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        x = x + self.drop_path1(attend_padded(self.attn1, self.norm1(x), self.attn1_min_size))
        x = x + self.drop_path1(self._conv_on_last(self.mlp1, self.norm2(x)))
        if self.pos_embed2 is not None:
            x = x + self._conv_on_last(self.pos_embed2, x)
        x = x + self.drop_path2(attend_padded(self.attn2, self.norm3(x), self.attn2_min_size))
        x = x + self.drop_path2(self._conv_on_last(self.mlp2, self.norm4(x)))
        return x.permute(0, 3, 1, 2)  # (B, C, H, W)


class DeBiFormer(StagedBackbone):
    """DeBiFormer (the released tiny/small/base models).

    Args:
        depths: blocks per stage (each block has two attention sub-blocks).
        dims: channels per stage.
        in_chans: input image channels.
        num_classes: classifier outputs (0: no head).
        head_dim: channels per head of BRA and DBRA.
        mlp_ratios: hidden ratio of the blocks' conv-MLPs, per stage.
        n_win: regions per side S of BRA and DBRA.
        bra_topks: top-k of ``attn1`` (BRA) per stage; 0 makes ``attn1`` DBRA (stage 4).
        dbra_topks: top-k of DBRA per stage.
        n_groups: DBRA offset groups per stage.
        offset_kernels: DBRA offset conv kernel per stage.
        offset_strides: DBRA offset conv stride per stage (agent grid = map / stride).
        q_sizes: side of the map DBRA's bias table is built for, per stage (the 224² maps).
        dbra_mlp_ratios: hidden ratio of DBRA's inner conv-MLP per stage.
        side_dwconv: kernel of the LCE convs.
        before_attn_dwconv: kernel of the depthwise convs before the sub-blocks (0: none).
        auto_pad: BRA and DBRA pad maps (and agent grids) not divisible by ``n_win``, and maps
            smaller than ``n_win`` up to it.
        global_pool: "avg", or "" for no pooling (with ``num_classes=0``: unpooled output).
        drop_rate: dropout before the head.
        drop_path_rate: stochastic depth, linearly increasing over the blocks.
        bra_backend: backend of the ``bra`` mechanism.
    """

    def __init__(
        self,
        depths: tuple[int, ...] = (1, 1, 4, 1),
        dims: tuple[int, ...] = (64, 128, 256, 512),
        *,
        in_chans: int = 3,
        num_classes: int = 1000,
        head_dim: int = 32,
        mlp_ratios: tuple[int, ...] = (3, 3, 3, 3),
        n_win: int = 7,
        bra_topks: tuple[int, ...] = (1, 4, 16, DBRA_AS_ATTN1),
        dbra_topks: tuple[int, ...] = (4, 8, 16, 49),
        n_groups: tuple[int, ...] = (1, 2, 4, 8),
        offset_kernels: tuple[int, ...] = (9, 7, 5, 3),
        offset_strides: tuple[int, ...] = (8, 4, 2, 1),
        q_sizes: tuple[int, ...] = (56, 28, 14, 7),
        dbra_mlp_ratios: tuple[int, ...] = (3, 3, 3, 3),
        side_dwconv: int = 5,
        before_attn_dwconv: int = 3,
        auto_pad: bool = True,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        bra_backend: str = "auto",
    ) -> None:
        per_stage = dict(
            depths=depths,
            dims=dims,
            mlp_ratios=mlp_ratios,
            bra_topks=bra_topks,
            dbra_topks=dbra_topks,
            n_groups=n_groups,
            offset_kernels=offset_kernels,
            offset_strides=offset_strides,
            q_sizes=q_sizes,
            dbra_mlp_ratios=dbra_mlp_ratios,
        )
        for name, value in per_stage.items():
            if len(value) != 4:
                raise ValueError(f"parameter {name!r} = {value!r} must have 4 entries, one per stage")
        for dim in dims:
            if dim % head_dim:
                raise ValueError(f"parameter 'head_dim' = {head_dim} does not divide the stage width {dim}")
        super().__init__(dims, num_classes, drop_rate, global_pool)
        self.downsample_layers.append(
            nn.Sequential(
                nn.Conv2d(in_chans, dims[0] // 2, 3, stride=2, padding=1),
                nn.BatchNorm2d(dims[0] // 2),
                nn.GELU(),
                nn.Conv2d(dims[0] // 2, dims[0], 3, stride=2, padding=1),
                nn.BatchNorm2d(dims[0]),
            )
        )
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(
                    nn.Conv2d(dims[i], dims[i + 1], 3, stride=2, padding=1), nn.BatchNorm2d(dims[i + 1])
                )
            )

        def dbra(i: int) -> nn.Module:
            return build_mechanism(
                "dbra",
                dims[i],
                dims[i] // head_dim,
                n_win=n_win,
                topk=dbra_topks[i],
                n_groups=n_groups[i],
                offset_kernel=offset_kernels[i],
                offset_stride=offset_strides[i],
                side_dwconv=side_dwconv,
                mlp_ratio=dbra_mlp_ratios[i],
                q_size=q_sizes[i],
                auto_pad=auto_pad,
            )

        def attn1(i: int) -> nn.Module:
            if bra_topks[i] == DBRA_AS_ATTN1:
                return dbra(i)
            return build_mechanism(
                "bra",
                dims[i],
                dims[i] // head_dim,
                n_win=n_win,
                topk=bra_topks[i],
                side_dwconv=side_dwconv,
                auto_pad=auto_pad,
                backend=bra_backend,
            )

        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        for i, depth in enumerate(depths):
            blocks = [
                DeBiFormerBlock(
                    dims[i],
                    attn1(i),
                    dbra(i),
                    mlp_ratio=mlp_ratios[i],
                    before_attn_dwconv=before_attn_dwconv,
                    drop_path=rates[sum(depths[:i]) + j],
                )
                for j in range(depth)
            ]
            self.stages.append(nn.Sequential(*blocks))
        self.norm = nn.BatchNorm2d(dims[-1])
        self._finish()


def _cfg(**kwargs: object) -> dict:
    return {
        "url": "",  # released weights are not downloadable through timm: see load_official_checkpoint
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "downsample_layers.0.0",
        "classifier": "head",
        "paper_name": "DeBiFormer: Vision Transformer with Deformable Agent Bi-level Routing Attention",
        "origin_url": "https://github.com/maclong01/DeBiFormer",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {name: _cfg() for name in ("debiformer_tiny", "debiformer_small", "debiformer_base")}
)


def _create(variant: str, pretrained: bool, **kwargs: object) -> DeBiFormer:
    if pretrained:
        raise ValueError(
            f"{variant}: pretrained=True is not supported (attnbench downloads nothing). Download "
            f"{variant}_in1k_224.pth from the model links of the DeBiFormer README "
            f"(github.com/maclong01/DeBiFormer), build with pretrained=False, then "
            f"attnbench.models.load_official_checkpoint(model, '{variant}_in1k_224.pth'); "
            "see docs/seed-models.md"
        )
    return build_model_with_cfg(
        DeBiFormer,
        variant,
        pretrained,
        feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3)),
        **kwargs,
    )


@register_model
def debiformer_tiny(pretrained: bool = False, **kwargs: object) -> DeBiFormer:
    """DeBiFormer-T: depths 1-1-4-1, dims 64-512 (21.5M params, 2.65 GMACs at 224² counted)."""
    return _create("debiformer_tiny", pretrained, **{"depths": (1, 1, 4, 1), **kwargs})


@register_model
def debiformer_small(pretrained: bool = False, **kwargs: object) -> DeBiFormer:
    """DeBiFormer-S: depths 2-2-9-3, dims 64-512, block MLP ratio 2 and DBRA MLP ratio 1 in stage 4."""
    args = dict(depths=(2, 2, 9, 3), mlp_ratios=(3, 3, 3, 2), dbra_mlp_ratios=(3, 3, 3, 1))
    return _create("debiformer_small", pretrained, **{**args, **kwargs})


@register_model
def debiformer_base(pretrained: bool = False, **kwargs: object) -> DeBiFormer:
    """DeBiFormer-B: depths 2-2-9-2, dims 96-768, offset groups 1-2-3-6."""
    args = dict(depths=(2, 2, 9, 2), dims=(96, 192, 384, 768), n_groups=(1, 2, 3, 6))
    return _create("debiformer_base", pretrained, **{**args, **kwargs})
