"""The four-stage layout shared by BiFormer, BiFormer-STL and DeBiFormer, with timm's model API.

Module names follow the released code: ``downsample_layers[i]`` (the stem is index 0) then
``stages[i]`` for each of the four stages, a final ``norm`` (BatchNorm2d) and a Linear ``head``.
Stages take and return NCHW maps.

timm's model contracts kept here: ``forward_features`` (unpooled last-stage map),
``forward_head(x, pre_logits)``, ``reset_classifier(num_classes, global_pool)`` (``global_pool=''``
leaves the map unpooled), ``forward_intermediates`` / ``prune_intermediate_layers`` (what
``features_only=True`` runs on), ``set_grad_checkpointing`` and ``no_weight_decay``. For torch.fx
(timm's FX feature extraction), every attention mechanism is a leaf module: its forward branches on
the map size, which a traced graph cannot. :func:`pad_to_min_size` and :func:`crop_like` branch
too and are traced as calls (timm's ``register_notrace_function``: a block calls them through its
module's globals, which the tracer patches).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function, register_notrace_module, trunc_normal_
from timm.models import checkpoint, checkpoint_seq
from timm.models._features import feature_take_indices
from torch import Tensor, nn

from attnbench.mechanism import AttentionMechanism

__all__ = [
    "GLOBAL_POOLS",
    "StagedBackbone",
    "attend_padded",
    "crop_like",
    "pad_to_min_size",
    "region_min_size",
]

GLOBAL_POOLS = ("avg", "")  # average pooling, or none (forward_head returns the (B, C, H, W) map)

# Mechanisms branch on the map size in Python (padding, region splits): torch.fx keeps them whole.
register_notrace_module(AttentionMechanism)


def region_min_size(attn: nn.Module) -> int:
    """The side an attention's input is zero-padded up to when smaller, 0 for none.

    A mechanism with ``auto_pad`` and ``n_win`` regions per side (``bra``, ``dbra``) pads its input
    at bottom/right to a multiple of ``n_win`` before anything else, so a map smaller than
    ``n_win`` is, in effect, padded to ``n_win`` (as the released code does). ``bra`` refuses such a
    map outright; padding it first (:func:`pad_to_min_size`, then :func:`crop_like` on the
    output) computes what the released ``auto_pad`` computes.
    """
    if getattr(attn, "auto_pad", False) and isinstance(getattr(attn, "n_win", None), int):
        return attn.n_win
    return 0


@register_notrace_function
def pad_to_min_size(x: Tensor, size: int) -> Tensor:
    """Zero-pad a (B, H, W, C) map at bottom/right to at least ``size x size`` (``x`` itself if it is)."""
    H, W = x.shape[1], x.shape[2]
    if H >= size and W >= size:
        return x
    return F.pad(x, (0, 0, 0, max(size - W, 0), 0, max(size - H, 0)))


@register_notrace_function
def crop_like(x: Tensor, like: Tensor) -> Tensor:
    """``x`` (B, H', W', C) cut to the H x W of ``like`` (``x`` itself when the sizes agree)."""
    H, W = like.shape[1], like.shape[2]
    if x.shape[1] == H and x.shape[2] == W:
        return x
    return x[:, :H, :W].contiguous()


def attend_padded(attn: nn.Module, x: Tensor, min_size: int) -> Tensor:
    """``attn(x)`` on (B, H, W, C), padded to ``min_size`` per side when smaller and cropped back
    (0: as is); see :func:`region_min_size`."""
    if not min_size:
        return attn(x)
    return crop_like(attn(pad_to_min_size(x, min_size)), x)


class StagedBackbone(nn.Module):
    """Base of the seed models: ``forward_features``, ``forward_head`` and timm's feature API.

    Subclasses fill ``downsample_layers``, ``stages`` and ``norm`` and call :meth:`_finish`.

    Args:
        dims: channels of the four stages.
        num_classes: classifier outputs (0: no head, ``forward`` returns pooled features).
        drop_rate: dropout before the head.
        global_pool: "avg" (average pooling before the head) or "" (none: with ``num_classes=0``,
            ``forward`` returns the unpooled (B, C, H, W) map).
    """

    def __init__(
        self, dims: tuple[int, ...], num_classes: int, drop_rate: float, global_pool: str = "avg"
    ) -> None:
        super().__init__()
        self._check_head(num_classes, global_pool)
        self.dims = tuple(dims)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = dims[-1]
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.feature_info = [
            dict(num_chs=d, reduction=4 * 2**i, module=f"stages.{i}") for i, d in enumerate(dims)
        ]
        self.downsample_layers = nn.ModuleList()
        self.stages = nn.ModuleList()
        self.norm: nn.Module = nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head: nn.Module = nn.Identity()

    def _finish(self) -> None:
        self.head = nn.Linear(self.num_features, self.num_classes) if self.num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # as released: truncated normal Linear weights, zero biases, unit LayerNorms; convs keep torch's
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @staticmethod
    def _check_head(num_classes: int, global_pool: str) -> None:
        if global_pool not in GLOBAL_POOLS:
            raise ValueError(
                f"global_pool = {global_pool!r} is not supported; choose 'avg' (average pooling) or '' "
                "(no pooling, with num_classes=0)"
            )
        if num_classes > 0 and not global_pool:
            raise ValueError(
                f"global_pool = '' (no pooling) needs num_classes = 0, got num_classes = {num_classes}: "
                "the linear head classifies pooled features"
            )

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head with a fresh one for ``num_classes`` outputs (0: none); ``global_pool``
        "avg" or "" (no pooling: ``forward`` returns (B, C, H, W)), None keeps the current one."""
        pool = self.global_pool if global_pool is None else global_pool
        self._check_head(num_classes, pool)
        self.num_classes, self.global_pool = num_classes, pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward instead of keeping them (timm's
        ``checkpoint``, non-reentrant by default; a whole stage at once for a stage that is neither
        an ``nn.Sequential`` nor checkpoints its blocks itself). Same outputs and gradients, less
        memory."""
        self.grad_checkpointing = enable
        for stage in self.stages:
            if hasattr(stage, "grad_checkpointing"):
                stage.grad_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters kept out of weight decay by timm's optimizer factory (``create_optimizer_v2``),
        besides the biases and 1-D weights it leaves out anyway: relative position bias tables
        (DeBiFormer's ``rpe_table``), as in the released DeBiFormer segmentation configs and
        attnbench's own training. BiFormer has none."""
        tables = ("rpe_table", "relative_position_bias_table")
        return {name for name, _ in self.named_parameters() if name.endswith(tables)}

    def _run_stage(self, i: int, x: Tensor) -> Tensor:
        stage = self.stages[i]
        if self.grad_checkpointing and not torch.jit.is_scripting():
            if isinstance(stage, nn.Sequential):
                return checkpoint_seq(stage, x)  # block by block
            if not hasattr(stage, "grad_checkpointing"):  # a stage that does not checkpoint itself
                return checkpoint(stage, x)
        return stage(x)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) image -> (B, C4, H/32, W/32) normalized last-stage map."""
        for i, down in enumerate(self.downsample_layers):
            x = self._run_stage(i, down(x))
        return self.norm(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, C4, h, w) map -> logits, or with ``pre_logits`` the features the head reads: pooled
        (B, C4), or the map itself with ``global_pool=''``."""
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))  # (B, C4)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Stage outputs as timm's ``forward_intermediates`` (NCHW; ``norm`` applies to the last)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt = {output_fmt!r} is not supported; only 'NCHW'")
        take, max_index = feature_take_indices(len(self.stages), indices)
        last = len(self.stages) - 1
        n_run = max_index + 1 if stop_early else len(self.stages)
        intermediates = []
        for i in range(n_run):
            x = self._run_stage(i, self.downsample_layers[i](x))
            if i in take:
                intermediates.append(self.norm(x) if norm and i == last else x)
        if intermediates_only:
            return intermediates
        if n_run - 1 == last:
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last one needed for ``indices`` (timm's feature extraction)."""
        take, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        self.downsample_layers = self.downsample_layers[: max_index + 1]
        self.stages = self.stages[: max_index + 1]
        if prune_norm or prune_end:
            self.norm = nn.Identity()  # the final norm is sized for the last stage only
        self.num_features = self.head_hidden_size = self.dims[max_index]
        if prune_head or prune_end:
            self.reset_classifier(0)
        return take
