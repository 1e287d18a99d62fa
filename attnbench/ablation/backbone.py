"""The fixed backbone of the ablation: a 4-stage pyramid whose attention is any registered mechanism.

The layout is BiFormer-STL's, the Swin-T layout of the BiFormer paper's attention ablation
(``biformer_stl``): a ``p x p`` stride-``p`` patch embedding + BatchNorm, stages of pre-norm blocks
``x + attn(LN(x))``, ``x + MLP(LN(x))`` (LayerNorm eps 1e-6, GELU MLP, DropPath), BatchNorm + 2x2
stride-2 conv merging between stages, a final BatchNorm, average pooling and a linear head. An
optional depthwise conv before each block (``x + DWConv(x)``, BiFormer's ``before_attn_dwconv``)
is off in the STL layout. Heads per stage are ``dim // head_dim``.

Only the attention differs between runs. Each stage builds its mechanism with parameters from, in
increasing precedence:

1. the preset's table for that mechanism and stage (:data:`PRESETS`), chosen for the preset's
   stage map sizes;
2. ``stage_params[mechanism]``: four mappings, one per stage, from the backbone config;
3. ``params``: the study's parameters, applied to every stage that runs the mechanism.

A value that is a list is cycled over the blocks of the stage (Swin's W-MSA / SW-MSA alternation
is ``shift_size: [0, null]``, DiNAT's is ``dilation: [1, 8]``). Stages listed in
``global_stages`` run global attention (``vanilla``) whatever the mechanism: on ``stl-nano`` the last
stage is a 2x2 map where no local mechanism has room (neighborhood attention needs kernel >= 3), and
in BiFormer-STL, Swin-T, NAT-T and DAT-T the last stage is global or nearly so anyway.

Presets (``stage maps`` for the default input; the patch size is ``img_size / stage-1 map``):

- ``stl``: dims 96-768, depths 2-2-6-2, head_dim 32, MLP 4, maps 56/28/14/7 at 224 (patch 4); the
  papers' stage settings: BRA n_win 7, top-k 1/4/16/49 (49 = all: global, as BiFormer-STL's stage 4);
  Swin window 7 alternating shift; NAT kernel 7; DiNAT kernel 7, dilation 1/8, 1/4, 1/2, 1/1; DAT and
  DBRA offset kernels 9/7/5/3 and strides 8/4/2/1 (7x7 sampled keys / agents per stage), DBRA
  top-k 4/8/16/49.
- ``stl-s32``: the ``stl`` network with stage maps 32/16/8/4 (128 px input, patch 4; 64 px patch 2;
  32 px patch 1), settings scaled to those maps (for GPU studies on Pathfinder-64/128 and CIFAR).
- ``stl-nano``: dims 32-256, depths 1-1-2-1, maps 16/8/4/2 (32 px input, patch 2), stage 4 global; in
  stages 1-3 each local or sparse mechanism sees about a quarter of the map or less per query
  (BRA n_win 4, top-k 4; Swin windows 8/4/2; NAT kernel 7/5/3; DiNAT kernel 7/3/3 dilation 2/2/1;
  DAT and DBRA sampling strides 2 and 4/2/1). For CPU studies.
- ``iso-16`` and ``iso-8``: isotropic, for the reach task: 4 blocks on one 16x16 map (32 px, patch 2)
  and 2 blocks on one 8x8 map (32 px, patch 4), dim 64, no merging, no global stage, no
  convolution. With ``readout: bright`` the head averages only the tokens holding a marked glyph.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from timm.layers import DropPath
from torch import Tensor, nn

from attnbench.mechanism import AttentionMechanism
from attnbench.models._base import StagedBackbone
from attnbench.models.layers import Mlp
from attnbench.registry import build_mechanism, get_mechanism

__all__ = ["PRESETS", "AblationBackbone", "Block", "Preset", "build_backbone", "resolve_stage_params"]

GLOBAL = "vanilla"  # the attention of global_stages


@dataclasses.dataclass(frozen=True)
class Preset:
    """A backbone layout and the per-stage parameters of every mechanism for its map sizes.

    Attributes:
        depths, dims: blocks and channels per stage.
        head_dim: channels per head.
        mlp_ratio: MLP hidden width over dim.
        stage1_map: side of the stage-1 map the stage parameters are chosen for.
        img_size: default input side (patch size = img_size / stage1_map).
        before_attn_dwconv: kernel of the depthwise conv before each block (0: none).
        global_stages: stages (0-based) that run global attention whatever the mechanism.
        stage_params: mechanism -> four mappings of its parameters, one per stage.
    """

    depths: tuple[int, ...]
    dims: tuple[int, ...]
    head_dim: int
    mlp_ratio: float
    stage1_map: int
    img_size: int
    before_attn_dwconv: int = 0
    global_stages: tuple[int, ...] = ()
    stage_params: dict[str, tuple[dict[str, Any], ...]] = dataclasses.field(default_factory=dict)


def _per_stage(**columns: tuple[Any, ...]) -> tuple[dict[str, Any], ...]:
    """Four stage mappings from per-parameter columns: ``_per_stage(n_win=(7,) * 4, topk=(1, 4, 16, 49))``."""
    return tuple({k: v[i] for k, v in columns.items()} for i in range(4))


_STL_PARAMS = {
    "bra": _per_stage(n_win=(7, 7, 7, 7), topk=(1, 4, 16, 49)),
    "swin": _per_stage(window_size=(7, 7, 7, 7), shift_size=([0, None],) * 4),
    "neighborhood": _per_stage(kernel_size=(7, 7, 7, 7)),
    "dilated": _per_stage(kernel_size=(7, 7, 7, 7), dilation=([1, 8], [1, 4], [1, 2], [1, 1])),
    "deformable": _per_stage(
        n_groups=(1, 2, 3, 6), offset_kernel=(9, 7, 5, 3), offset_stride=(8, 4, 2, 1), q_size=(56, 28, 14, 7)
    ),
    "dbra": _per_stage(
        n_win=(7, 7, 7, 7),
        topk=(4, 8, 16, 49),
        n_groups=(1, 2, 4, 8),
        offset_kernel=(9, 7, 5, 3),
        offset_stride=(8, 4, 2, 1),
        q_size=(56, 28, 14, 7),
    ),
    # agents and position tables sized to each stage's map; MaxViT's 7x7 block and grid; KVT keeps a
    # quarter of each map's tokens (the last stage's 49 are all kept: dense)
    "agent": _per_stage(agent_num=(9, 16, 49, 49), bias_size=(56, 28, 14, 7)),
    "flatten": _per_stage(pe_size=(56, 28, 14, 7)),
    "maxvit": _per_stage(window_size=(7, 7, 7, 7)),
    "kvt": _per_stage(topk=(784, 196, 49, 49)),
}

_S32_PARAMS = {
    "bra": _per_stage(n_win=(4, 4, 4, 4), topk=(1, 4, 16, 16)),  # regions of 8/4/2/1: BiFormer's at 224
    "swin": _per_stage(window_size=(8, 8, 8, 8), shift_size=([0, None],) * 4),
    "neighborhood": _per_stage(kernel_size=(7, 7, 7, 3)),
    "dilated": _per_stage(kernel_size=(7, 7, 7, 3), dilation=([1, 4], [1, 2], [1, 1], [1, 1])),
    "deformable": _per_stage(
        n_groups=(1, 2, 3, 6), offset_kernel=(5, 3, 3, 3), offset_stride=(4, 2, 1, 1), q_size=(32, 16, 8, 4)
    ),
    "dbra": _per_stage(
        n_win=(4, 4, 4, 4),
        topk=(4, 8, 16, 16),
        n_groups=(1, 2, 4, 8),
        offset_kernel=(5, 3, 3, 3),
        offset_stride=(4, 2, 1, 1),
        q_size=(32, 16, 8, 4),
    ),
    "agent": _per_stage(agent_num=(9, 16, 16, 16), bias_size=(32, 16, 8, 4)),
    "flatten": _per_stage(pe_size=(32, 16, 8, 4)),
    "maxvit": _per_stage(window_size=(8, 8, 4, 4)),
    "kvt": _per_stage(topk=(256, 64, 16, 16)),
}

_NANO_PARAMS = {  # stage 4 is global; its column is unused
    "bra": _per_stage(n_win=(4, 4, 4, 1), topk=(4, 4, 4, 1)),
    "swin": _per_stage(window_size=(8, 4, 2, 2)),
    "neighborhood": _per_stage(kernel_size=(7, 5, 3, 3)),
    "dilated": _per_stage(kernel_size=(7, 3, 3, 3), dilation=(2, 2, 1, 1)),
    "deformable": _per_stage(offset_kernel=(5, 3, 3, 3), offset_stride=(2, 2, 2, 1), q_size=(16, 8, 4, 2)),
    "dbra": _per_stage(
        n_win=(4, 4, 4, 2),
        topk=(4, 4, 4, 4),
        offset_kernel=(5, 3, 3, 3),
        offset_stride=(4, 2, 1, 1),
        q_size=(16, 8, 4, 2),
    ),
    "agent": _per_stage(agent_num=(9, 16, 4, 4), bias_size=(16, 8, 4, 2)),
    "flatten": _per_stage(pe_size=(16, 8, 4, 2)),
    "maxvit": _per_stage(window_size=(4, 4, 2, 2)),
    "kvt": _per_stage(topk=(64, 16, 4, 4)),
}

_ISO16_PARAMS = {  # one 16x16 map; the reach of each in docs/ablation.md#reach
    "bra": ({"n_win": 4, "topk": 4},),  # regions of 4x4 tokens, 4 of 16 routed
    "swin": ({"window_size": 4, "shift_size": [0, None]},),  # 4x4 windows, shifted every other block
    "neighborhood": ({"kernel_size": 3},),  # 1 token each way per block: two glyphs meet only if d <= 8
    "dilated": ({"kernel_size": 5, "dilation": [1, 3]},),  # DiNAT's alternation, dilation 3
    "deformable": ({"offset_kernel": 5, "offset_stride": 2, "q_size": 16},),
    "dbra": ({"n_win": 4, "topk": 4, "offset_kernel": 5, "offset_stride": 4, "q_size": 16},),
    "agent": ({"agent_num": 16, "bias_size": 16},),
    "flatten": ({"pe_size": 16},),
    "maxvit": ({"window_size": 4},),  # 4x4 blocks and a 4x4 grid
    "kvt": ({"topk": 64},),  # a quarter of the 256 tokens
}

_ISO8_PARAMS = {  # one 8x8 map of two blocks; the reach of each in docs/ablation.md#reach
    "bra": ({"n_win": 4, "topk": 4},),  # regions of 2x2 tokens, 4 of 16 routed
    "swin": ({"window_size": 4, "shift_size": [0, None]},),  # 4x4 windows, the second block shifted by 2
    "neighborhood": ({"kernel_size": 3},),  # 1 token each way per block: 2 tokens in two blocks
    "dilated": ({"kernel_size": 3, "dilation": [1, 2]},),  # DiNAT's alternation: 1 + 2 = 3 tokens
    "deformable": ({"offset_kernel": 5, "offset_stride": 2, "q_size": 8},),  # 4x4 sampled points
    "dbra": ({"n_win": 4, "topk": 4, "offset_kernel": 5, "offset_stride": 2, "q_size": 8},),
    "agent": ({"agent_num": 16, "bias_size": 8},),
    "flatten": ({"pe_size": 8},),
    "maxvit": ({"window_size": 4},),  # 4x4 blocks and a 4x4 grid (stride 2)
    "kvt": ({"topk": 16},),  # a quarter of the 64 tokens
}

PRESETS: dict[str, Preset] = {
    "stl": Preset((2, 2, 6, 2), (96, 192, 384, 768), 32, 4.0, 56, 224, stage_params=_STL_PARAMS),
    "stl-s32": Preset((2, 2, 6, 2), (96, 192, 384, 768), 32, 4.0, 32, 128, stage_params=_S32_PARAMS),
    "stl-nano": Preset(
        (1, 1, 2, 1), (32, 64, 128, 256), 32, 4.0, 16, 32, global_stages=(3,), stage_params=_NANO_PARAMS
    ),
    # isotropic: 4 blocks on one 16x16 token map, no merging, no global stage, no convolution: at
    # evaluation every layer but the attention acts on each token alone, and the head is a mean over
    # tokens then one linear layer, so the attention is the only path between far tokens
    "iso-16": Preset((4,), (64,), 32, 2.0, 16, 32, stage_params=_ISO16_PARAMS),
    # the same on an 8x8 map of two blocks (32 px, patch 4): the reach study's, a glyph per token
    "iso-8": Preset((2,), (64,), 32, 2.0, 8, 32, stage_params=_ISO8_PARAMS),
}

OVERRIDABLE = (
    "depths",
    "dims",
    "head_dim",
    "mlp_ratio",
    "patch_size",
    "before_attn_dwconv",
    "global_stages",
    "stage_params",
    "drop_path_rate",
    "drop_rate",
    "readout",
)

READOUTS = ("mean", "bright")
BRIGHT_LEVEL = 0.5  # a ``bright`` readout's threshold, in normalized input units


class Block(nn.Module):
    """``x + DWConv(x)`` (optional), ``x + attn(LN(x))``, ``x + MLP(LN(x))`` on (B, H, W, C) maps."""

    def __init__(
        self,
        dim: int,
        attn: AttentionMechanism,
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
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(mlp_ratio * dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.pos_embed is not None:
            x = x + self.pos_embed(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, H, W, C)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Stage(nn.Module):
    """Blocks on channels-last maps, taking and returning (B, C, H, W)."""

    def __init__(self, blocks: list[Block]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        for block in self.blocks:
            x = block(x)
        return x.permute(0, 3, 1, 2)  # (B, C, H, W)


class AblationBackbone(StagedBackbone):
    """The STL-layout pyramid with the given attention in every stage (see the module docstring).

    Args:
        stage_attention: per stage, per block, ``(mechanism name, parameters)``.
        depths, dims: blocks and channels per stage.
        in_chans: image channels.
        num_classes: classifier outputs.
        img_size: square input side (for :meth:`example_input` and the stage map sizes).
        patch_size: side and stride of the patch embedding.
        head_dim: channels per head.
        mlp_ratio: MLP hidden width over dim.
        before_attn_dwconv: kernel of the depthwise conv before each block (0: none).
        drop_rate: dropout before the head.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        readout: what the head averages. ``mean``: every token of the last map. ``bright``
            (one-stage backbones only): the tokens whose input patch holds a value above
            :data:`BRIGHT_LEVEL` (normalized units), e.g. the two marked glyphs of the reach task
            (lit at 255, +1.0 after its normalization; distractors at 96, -0.25). Which tokens are
            read is decided by each token's own pixels, so the readout brings nothing together:
            the attention must carry one marked glyph to the other's token.
    """

    def __init__(
        self,
        stage_attention: list[list[tuple[str, dict[str, Any]]]],
        *,
        depths: tuple[int, ...],
        dims: tuple[int, ...],
        in_chans: int,
        num_classes: int,
        img_size: int,
        patch_size: int,
        head_dim: int,
        mlp_ratio: float,
        before_attn_dwconv: int = 0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        readout: str = "mean",
    ) -> None:
        super().__init__(tuple(dims), num_classes, drop_rate)
        if readout not in READOUTS:
            raise ValueError(f"backbone.readout = {readout!r}; choose one of {list(READOUTS)}")
        if readout != "mean" and len(dims) != 1:
            raise ValueError(
                f"backbone.readout = {readout!r} needs a one-stage (isotropic) backbone; this one has "
                f"{len(dims)} stages"
            )
        self.readout = readout
        self.img_size, self.in_chans, self.patch_size = img_size, in_chans, patch_size
        self.stage_attention = stage_attention
        self.map_sizes = [img_size // patch_size // 2**i for i in range(len(dims))]
        self.downsample_layers.append(
            nn.Sequential(
                nn.Conv2d(in_chans, dims[0], patch_size, stride=patch_size), nn.BatchNorm2d(dims[0])
            )
        )
        for i in range(len(dims) - 1):
            self.downsample_layers.append(
                nn.Sequential(nn.BatchNorm2d(dims[i]), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2))
            )
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            blocks = []
            for j in range(depth):
                name, params = stage_attention[i][j]
                attn = build_mechanism(name, dim, dim // head_dim, **params)
                attn.check_input(self.map_sizes[i], self.map_sizes[i])
                blocks.append(
                    Block(
                        dim,
                        attn,
                        mlp_ratio=mlp_ratio,
                        before_attn_dwconv=before_attn_dwconv,
                        drop_path=rates[sum(depths[:i]) + j],
                    )
                )
            self.stages.append(Stage(blocks))
        self.norm = nn.BatchNorm2d(dims[-1])
        self._finish()

    def forward(self, x: Tensor) -> Tensor:
        if self.readout == "mean":
            return super().forward(x)
        feats = self.forward_features(x)  # (B, C, h, w)
        brightest = nn.functional.max_pool2d(x.amax(1, keepdim=True), self.patch_size)  # (B, 1, h, w)
        keep = brightest > BRIGHT_LEVEL
        w = keep.to(feats.dtype)
        pooled = (feats * w).sum((2, 3)) / w.sum((2, 3)).clamp_min(1.0)  # none bright: zeros
        return self.head(self.head_drop(pooled))

    def example_input(self, batch: int = 1) -> Tensor:
        """A ``randn`` image batch of the size the backbone was built for, (B, in_chans, S, S)."""
        p = next(self.parameters())
        return torch.randn(batch, self.in_chans, self.img_size, self.img_size, device=p.device, dtype=p.dtype)

    def describe(self) -> list[dict[str, Any]]:
        """Per stage: map side, dim, heads and the attention (name, parameters) of each block."""
        return [
            {
                "stage": i,
                "map": self.map_sizes[i],
                "dim": self.dims[i],
                "blocks": [{"mechanism": n, **p} for n, p in self.stage_attention[i]],
            }
            for i in range(len(self.dims))
        ]


def _check_list(value: Any, name: str, n: int, kind: type) -> tuple:
    if not isinstance(value, (list, tuple)) or len(value) != n or not all(isinstance(v, kind) for v in value):
        raise ValueError(
            f"backbone.{name} = {value!r}; expected {n} values of type {kind.__name__}, one per stage"
        )
    return tuple(value)


def resolve_stage_params(
    mechanism: str,
    params: dict[str, Any] | None,
    preset: Preset,
    depths: tuple[int, ...],
    global_stages: tuple[int, ...],
    stage_params: dict[str, Any] | None = None,
) -> list[list[tuple[str, dict[str, Any]]]]:
    """Per stage, per block: the mechanism and its parameters (see the module docstring).

    Raises:
        ValueError: a malformed ``stage_params`` entry or an unknown parameter name.
    """
    declared = get_mechanism(mechanism).hyperparameters()
    table = list(preset.stage_params.get(mechanism, ({},) * len(depths)))
    table += [{}] * (len(depths) - len(table))
    given = (stage_params or {}).get(mechanism)
    if given is not None:
        if (
            not isinstance(given, (list, tuple))
            or len(given) != len(depths)
            or not all(isinstance(d, dict) for d in given)
        ):
            raise ValueError(
                f"backbone.stage_params.{mechanism} = {given!r}; "
                f"expected {len(depths)} mappings, one per stage"
            )
        table = [{**t, **g} for t, g in zip(table, given)]
    out = []
    for i, depth in enumerate(depths):
        if i in global_stages:
            out.append([(GLOBAL, {})] * depth)
            continue
        merged = {**table[i], **(params or {})}
        unknown = sorted(set(merged) - set(declared))
        if unknown:
            raise ValueError(
                f"stage {i}: mechanism {mechanism!r} has no parameters {unknown}; "
                f"its parameters: {list(declared)}"
            )
        blocks = []
        for j in range(depth):
            blocks.append(
                (
                    mechanism,
                    {k: (v[j % len(v)] if isinstance(v, (list, tuple)) else v) for k, v in merged.items()},
                )
            )
        out.append(blocks)
    return out


def build_backbone(
    mechanism: str,
    params: dict[str, Any] | None = None,
    *,
    preset: str = "stl-nano",
    num_classes: int = 1000,
    in_chans: int = 3,
    img_size: int | None = None,
    **overrides: Any,
) -> AblationBackbone:
    """The preset's pyramid with ``mechanism`` in every stage but its ``global_stages``.

    Args:
        mechanism: a registered mechanism name.
        params: the mechanism's parameters, applied to every stage that runs it.
        preset: a key of :data:`PRESETS`.
        num_classes: classifier outputs.
        in_chans: image channels.
        img_size: square input side (default: the preset's); must be a multiple of the patch size
            giving maps of at least 1 at stage 4.
        overrides: any of ``depths``, ``dims``, ``head_dim``, ``mlp_ratio``, ``patch_size``,
            ``before_attn_dwconv``, ``global_stages``, ``stage_params``, ``drop_path_rate``,
            ``drop_rate``.

    Raises:
        ValueError: naming the setting, its value and what would be valid; a stage whose map
            cannot run the mechanism's parameters says which stage and map.
    """
    if preset not in PRESETS:
        raise ValueError(f"backbone.preset = {preset!r}; choose one of {list(PRESETS)}")
    unknown = sorted(set(overrides) - set(OVERRIDABLE))
    if unknown:
        raise ValueError(f"backbone: unknown keys {unknown}; allowed: preset and {list(OVERRIDABLE)}")
    p = PRESETS[preset]
    img_size = p.img_size if img_size is None else img_size
    n = len(p.depths)  # stages: 4 for the pyramids, 1 for an isotropic preset
    depths = _check_list(overrides.get("depths", p.depths), "depths", n, int)
    dims = _check_list(overrides.get("dims", p.dims), "dims", n, int)
    head_dim = overrides.get("head_dim", p.head_dim)
    bad = [d for d in dims if d % head_dim]
    if bad:
        raise ValueError(
            f"backbone.head_dim = {head_dim} does not divide the stage dims {bad}; dims = {dims}"
        )
    default_patch = max(1, img_size // p.stage1_map)
    patch = overrides.get("patch_size", default_patch)
    merges = 2 ** (n - 1)
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1 or img_size % (patch * merges):
        raise ValueError(
            f"backbone.patch_size = {patch!r} with img_size = {img_size}: img_size must be a multiple of "
            f"{merges} * patch_size ({n - 1} 2x merges); e.g. patch_size {default_patch} for img_size "
            f"{p.stage1_map * default_patch}"
        )
    global_stages = tuple(overrides.get("global_stages", p.global_stages))
    if not all(isinstance(s, int) and 0 <= s < n for s in global_stages):
        raise ValueError(
            f"backbone.global_stages = {list(global_stages)!r}; expected stage indices in 0..{n - 1}"
        )
    attention = resolve_stage_params(
        mechanism, params, p, depths, global_stages, overrides.get("stage_params")
    )
    maps = [img_size // patch // 2**i for i in range(n)]
    try:
        return AblationBackbone(
            attention,
            depths=depths,
            dims=dims,
            in_chans=in_chans,
            num_classes=num_classes,
            img_size=img_size,
            patch_size=patch,
            head_dim=head_dim,
            mlp_ratio=overrides.get("mlp_ratio", p.mlp_ratio),
            before_attn_dwconv=overrides.get("before_attn_dwconv", p.before_attn_dwconv),
            drop_rate=overrides.get("drop_rate", 0.0),
            drop_path_rate=overrides.get("drop_path_rate", 0.0),
            readout=overrides.get("readout", "mean"),
        )
    except ValueError as exc:
        stage = _failing_stage(attention, dims, head_dim, maps)
        where = (
            f"stage {stage} ({maps[stage]}x{maps[stage]} map, dim {dims[stage]})"
            if stage is not None
            else "backbone"
        )
        raise ValueError(
            f"{where} with preset {preset!r} at img_size {img_size} (stage maps {maps}): {exc}; set "
            f"backbone.stage_params.{mechanism} (one mapping per stage) or pick another preset"
        ) from exc


def _failing_stage(
    attention: list[list[tuple[str, dict[str, Any]]]], dims: tuple[int, ...], head_dim: int, maps: list[int]
) -> int | None:
    for i, blocks in enumerate(attention):
        for name, params in blocks:
            try:
                build_mechanism(name, dims[i], dims[i] // head_dim, **params).check_input(maps[i], maps[i])
            except ValueError:
                return i
    return None
