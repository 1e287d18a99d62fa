"""The four-stage layout shared by BiFormer, BiFormer-STL and DeBiFormer, with timm's model API.

Module names follow the released code: ``downsample_layers[i]`` (the stem is index 0) then
``stages[i]`` for each of the four stages, a final ``norm`` (BatchNorm2d) and a Linear ``head``.
Stages take and return NCHW maps.
"""

from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from timm.models._features import feature_take_indices
from torch import Tensor, nn

__all__ = ["StagedBackbone"]


class StagedBackbone(nn.Module):
    """Base of the seed models: ``forward_features``, ``forward_head`` and timm's feature API.

    Subclasses fill ``downsample_layers``, ``stages`` and ``norm`` and call :meth:`_finish`.

    Args:
        dims: channels of the four stages.
        num_classes: classifier outputs (0: no head, ``forward`` returns pooled features).
        drop_rate: dropout before the head.
    """

    def __init__(self, dims: tuple[int, ...], num_classes: int, drop_rate: float) -> None:
        super().__init__()
        self.dims = tuple(dims)
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = dims[-1]
        self.drop_rate = drop_rate
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

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head with a fresh one for ``num_classes`` outputs (only average pooling exists)."""
        if global_pool not in (None, "", "avg"):
            raise ValueError(f"global_pool = {global_pool!r} is not supported; these models pool by average")
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) image -> (B, C4, H/32, W/32) normalized last-stage map."""
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return self.norm(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.head_drop(x.mean(dim=(2, 3)))  # (B, C4)
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
            x = self.stages[i](self.downsample_layers[i](x))
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
