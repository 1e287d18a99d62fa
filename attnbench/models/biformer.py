"""BiFormer (Zhu et al., "BiFormer: Vision Transformer with Bi-Level Routing Attention", CVPR 2023).

The released classification models of github rayleizhu/BiFormer, built from attnbench's ``bra``
mechanism (the legacy variant every released model uses):

- ``BiFormer`` (``models/biformer.py``): a stem of two 3x3 stride-2 convs (BN, GELU between, BN
  after), 3x3 stride-2 conv + BN between stages, blocks ``x += DWConv3x3(x)`` then pre-norm
  ``x += BRA(LN(x))``, ``x += MLP(LN(x))`` (LayerNorm eps 1e-6, MLP ratio 3), stage 4 global
  attention with its own LePE (:class:`AttentionLePE`, 8 heads), final BatchNorm, average pool, head.
- ``BiFormerSTL`` (``models/biformer_stl.py``, the Swin-T layout of the paper's attention
  ablation): 4x4 stride-4 patch embedding + BN, BN + 2x2 stride-2 conv merging, no pre-attention
  dwconv, MLP ratio 4, depths 2-2-6-2, dims 96-768.

Both share: head_dim 32, ``n_win`` 7, top-k 1/4/16 in stages 1-3, LCE 5x5. Module names follow
the released code, so released checkpoints load through
:func:`attnbench.models.load_official_checkpoint` (the differing names are declared in
``official_names``). Registered in timm: ``timm.create_model("biformer_tiny")`` etc.
"""

from __future__ import annotations

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from torch import Tensor, nn

from attnbench import build_mechanism
from attnbench.models._base import StagedBackbone, attend_padded, region_min_size
from attnbench.models.layers import AttentionLePE, Mlp

__all__ = [
    "DENSE_PREDICTION",
    "BiFormer",
    "BiFormerBlock",
    "BiFormerSTL",
    "BiFormerSTLBlock",
    "make_attention",
]

GLOBAL_LEPE = -2  # the released code's topk value for "global attention with LePE"

#: The released dense-prediction backbones' settings of BiFormer (rayleizhu/BiFormer): COCO
#: detection (``object_detection/configs/coco/*``) and ADE20K segmentation
#: (``semantic_segmentation/configs/ade20k/*``, 512² crops) build the classification model with more
#: regions and padding, everything else unchanged: ``timm.create_model("biformer_small",
#: features_only=True, **DENSE_PREDICTION["detection"])``. See docs/seed-models.md.
DENSE_PREDICTION = {
    "detection": {"n_win": 16, "auto_pad": True},
    "segmentation": {"n_win": 8, "auto_pad": True},
}


def make_attention(
    dim: int,
    head_dim: int,
    topk: int,
    *,
    n_win: int,
    side_dwconv: int,
    auto_pad: bool,
    bra_backend: str,
) -> nn.Module:
    """BRA with ``topk`` routed regions, or (``topk == -2``) global attention with LePE, 8 heads."""
    if topk > 0:
        if dim % head_dim:
            raise ValueError(f"parameter 'head_dim' = {head_dim} does not divide the stage width {dim}")
        return build_mechanism(
            "bra",
            dim,
            dim // head_dim,
            n_win=n_win,
            topk=topk,
            side_dwconv=side_dwconv,
            auto_pad=auto_pad,
            backend=bra_backend,
        )
    if topk == GLOBAL_LEPE:
        return AttentionLePE(dim, 8, side_dwconv=side_dwconv)  # released: the default 8 heads at every width
    raise ValueError(f"parameter 'topks' has {topk}; allowed: a positive top-k (BRA) or -2 (global + LePE)")


def _check_stage_lists(**lists: tuple) -> None:
    for name, value in lists.items():
        if len(value) != 4:
            raise ValueError(f"parameter {name!r} = {value!r} must have 4 entries, one per stage")


class BiFormerBlock(nn.Module):
    """``x += DWConv(x)``; ``x += attn(LN(x))``; ``x += MLP(LN(x))`` on (B, C, H, W) maps."""

    official_names = {"mlp.fc1": "mlp.0", "mlp.fc2": "mlp.3"}  # released: Linear, Identity, GELU, Linear

    def __init__(
        self,
        dim: int,
        attn: nn.Module,
        *,
        mlp_ratio: float,
        before_attn_dwconv: int,
        drop_path: float,
    ) -> None:
        super().__init__()
        k = before_attn_dwconv
        self.pos_embed = nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim) if k > 0 else None
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = attn
        self.attn_min_size = region_min_size(attn)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(mlp_ratio * dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.pos_embed is not None:
            x = x + self.pos_embed(x)  # (B, C, H, W)
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        x = x + self.drop_path(attend_padded(self.attn, self.norm1(x), self.attn_min_size))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x.permute(0, 3, 1, 2)  # (B, C, H, W)


class BiFormer(StagedBackbone):
    """BiFormer with a convolutional stem (the released tiny/small/base models).

    Args:
        depths: blocks per stage.
        dims: channels per stage (= qk_dim of BRA in every released model).
        in_chans: input image channels.
        num_classes: classifier outputs (0: no head).
        head_dim: channels per head of BRA (heads = dim / head_dim).
        mlp_ratio: MLP hidden width over dim.
        n_win: BRA regions per side S.
        topks: routed regions per stage; -2 = global attention with LePE.
        side_dwconv: kernel of BRA's LCE and of the stage-4 LePE.
        before_attn_dwconv: kernel of the depthwise conv added before each block (0: none).
        auto_pad: BRA pads maps not divisible by ``n_win`` (detection/segmentation inputs); maps
            smaller than ``n_win`` are padded up to it. Off in the classification models (the
            maps of stages 1-3 must then be multiples of ``n_win``: 112², 224², 336² ... inputs for
            ``n_win`` 7); on by default with ``features_only=True``.
        global_pool: "avg", or "" for no pooling (with ``num_classes=0``: unpooled output).
        drop_rate: dropout before the head.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        bra_backend: backend of the ``bra`` mechanism ("auto", "reference", "sdpa").
    """

    def __init__(
        self,
        depths: tuple[int, ...] = (2, 2, 8, 2),
        dims: tuple[int, ...] = (64, 128, 256, 512),
        *,
        in_chans: int = 3,
        num_classes: int = 1000,
        head_dim: int = 32,
        mlp_ratio: float = 3.0,
        n_win: int = 7,
        topks: tuple[int, ...] = (1, 4, 16, GLOBAL_LEPE),
        side_dwconv: int = 5,
        before_attn_dwconv: int = 3,
        auto_pad: bool = False,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        bra_backend: str = "auto",
    ) -> None:
        _check_stage_lists(depths=depths, dims=dims, topks=topks)
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
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            blocks = [
                BiFormerBlock(
                    dim,
                    make_attention(
                        dim,
                        head_dim,
                        topks[i],
                        n_win=n_win,
                        side_dwconv=side_dwconv,
                        auto_pad=auto_pad,
                        bra_backend=bra_backend,
                    ),
                    mlp_ratio=mlp_ratio,
                    before_attn_dwconv=before_attn_dwconv,
                    drop_path=rates[sum(depths[:i]) + j],
                )
                for j in range(depth)
            ]
            self.stages.append(nn.Sequential(*blocks))
        self.norm = nn.BatchNorm2d(dims[-1])
        self._finish()


class BiFormerSTLBlock(nn.Module):
    """``x += attn(LN(x))``; ``x += MLP(LN(x))`` on (B, H, W, C) maps (no pre-attention dwconv)."""

    official_names = {"mlp.fc1": "mlp.0", "mlp.fc2": "mlp.2"}  # released: Linear, GELU, Linear

    def __init__(self, dim: int, attn: nn.Module, *, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = attn
        self.attn_min_size = region_min_size(attn)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(mlp_ratio * dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(attend_padded(self.attn, self.norm1(x), self.attn_min_size))  # (B, H, W, C)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BiFormerSTLStage(nn.Module):
    """A stack of :class:`BiFormerSTLBlock` taking and returning (B, C, H, W) maps."""

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.grad_checkpointing = False  # set by BiFormerSTL.set_grad_checkpointing

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            for block in self.blocks:
                x = block(x)
        return x.permute(0, 3, 1, 2)  # (B, C, H, W)


class BiFormerSTL(StagedBackbone):
    """BiFormer in the Swin-T layout (the released ``biformer_stl`` of the attention ablation).

    Args:
        depths: blocks per stage.
        dims: channels per stage.
        in_chans: input image channels.
        num_classes: classifier outputs (0: no head).
        head_dim: channels per head of BRA.
        mlp_ratio: MLP hidden width over dim.
        n_win: BRA regions per side S.
        topks: routed regions per stage; -2 = global attention with LePE.
        side_dwconv: kernel of BRA's LCE and of the stage-4 LePE.
        auto_pad: BRA pads maps not divisible by ``n_win`` (and up to ``n_win`` when smaller); on by
            default with ``features_only=True``.
        global_pool: "avg", or "" for no pooling (with ``num_classes=0``: unpooled output).
        drop_rate: dropout before the head.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        bra_backend: backend of the ``bra`` mechanism.
    """

    def __init__(
        self,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        dims: tuple[int, ...] = (96, 192, 384, 768),
        *,
        in_chans: int = 3,
        num_classes: int = 1000,
        head_dim: int = 32,
        mlp_ratio: float = 4.0,
        n_win: int = 7,
        topks: tuple[int, ...] = (1, 4, 16, GLOBAL_LEPE),
        side_dwconv: int = 5,
        auto_pad: bool = False,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        bra_backend: str = "auto",
    ) -> None:
        _check_stage_lists(depths=depths, dims=dims, topks=topks)
        super().__init__(dims, num_classes, drop_rate, global_pool)
        self.downsample_layers.append(
            nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, stride=4), nn.BatchNorm2d(dims[0]))
        )
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(nn.BatchNorm2d(dims[i]), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2))
            )
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            blocks = [
                BiFormerSTLBlock(
                    dim,
                    make_attention(
                        dim,
                        head_dim,
                        topks[i],
                        n_win=n_win,
                        side_dwconv=side_dwconv,
                        auto_pad=auto_pad,
                        bra_backend=bra_backend,
                    ),
                    mlp_ratio=mlp_ratio,
                    drop_path=rates[sum(depths[:i]) + j],
                )
                for j in range(depth)
            ]
            self.stages.append(BiFormerSTLStage(blocks))
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
        # n_win 7 without auto_pad: the maps of stages 1-3 (1/4, 1/8, 1/16 of the input) must be
        # multiples of 7, as at 112², 224², 336² ...; 112² is the smallest (timm's model tests use it)
        "min_input_size": (3, 112, 112),
        "first_conv": "downsample_layers.0.0",
        "classifier": "head",
        "paper_name": "BiFormer: Vision Transformer with Bi-Level Routing Attention",
        "origin_url": "https://github.com/rayleizhu/BiFormer",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {name: _cfg() for name in ("biformer_tiny", "biformer_small", "biformer_base", "biformer_stl")}
)


def _create(cls: type[StagedBackbone], variant: str, pretrained: bool, **kwargs: object) -> StagedBackbone:
    if pretrained:
        raise ValueError(
            f"{variant}: pretrained=True is not supported (attnbench downloads nothing). Download "
            f"{variant}_in1k.pth from the model links of the BiFormer README "
            f"(github.com/rayleizhu/BiFormer), build with pretrained=False, then "
            f"attnbench.models.load_official_checkpoint(model, '{variant}_in1k.pth'); "
            "see docs/seed-models.md"
        )
    if kwargs.get("features_only"):
        kwargs.setdefault("auto_pad", True)  # a backbone takes any input size (released dense code)
    return build_model_with_cfg(
        cls, variant, pretrained, feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3)), **kwargs
    )


@register_model
def biformer_tiny(pretrained: bool = False, **kwargs: object) -> BiFormer:
    """BiFormer-T: depths 2-2-8-2, dims 64-512 (13.1M params, 2.2 GMACs at 224²)."""
    return _create(
        BiFormer, "biformer_tiny", pretrained, depths=(2, 2, 8, 2), dims=(64, 128, 256, 512), **kwargs
    )


@register_model
def biformer_small(pretrained: bool = False, **kwargs: object) -> BiFormer:
    """BiFormer-S: depths 4-4-18-4, dims 64-512 (25.5M params, 4.5 GMACs at 224²)."""
    return _create(
        BiFormer, "biformer_small", pretrained, depths=(4, 4, 18, 4), dims=(64, 128, 256, 512), **kwargs
    )


@register_model
def biformer_base(pretrained: bool = False, **kwargs: object) -> BiFormer:
    """BiFormer-B: depths 4-4-18-4, dims 96-768 (56.8M params, 9.8 GMACs at 224²)."""
    return _create(
        BiFormer, "biformer_base", pretrained, depths=(4, 4, 18, 4), dims=(96, 192, 384, 768), **kwargs
    )


@register_model
def biformer_stl(pretrained: bool = False, **kwargs: object) -> BiFormerSTL:
    """BiFormer-STL: the Swin-T layout with BRA, depths 2-2-6-2, dims 96-768 (28.4M, 4.6 GMACs)."""
    return _create(BiFormerSTL, "biformer_stl", pretrained, **kwargs)
