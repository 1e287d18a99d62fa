"""Loading released checkpoints (BiFormer, DeBiFormer) into attnbench modules by explicit key renaming.

Our modules keep the released module names wherever that reads naturally; where they differ, the
module that differs declares how, as ``{our child path: released child path}``:

- a class registered here with :func:`register_official_names`, by class or by its qualified name
  (e.g. our ``bra`` mechanism, whose ``qkv`` Linear is ``qkv.qkv`` in the released ``QKVLinear``
  wrapper; named, so that importing attnbench does not import the mechanisms);
- or an attribute ``official_names`` of the module (class or instance; e.g. a block naming its MLP
  layers ``fc1``/``fc2`` where the released code has ``mlp.0``/``mlp.3``).

A key of ours is translated by walking its path from the root module and applying, at each
module, that module's renames. Nothing is matched by guessing: a released key that no key of ours
maps to is *unexpected*, a key of ours that no released key provides is *missing*, and both (and
any shape mismatch) raise :class:`CheckpointMismatchError` listing every offending key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "CheckpointMismatchError",
    "LoadResult",
    "load_official_checkpoint",
    "official_key_map",
    "register_official_names",
    "to_official_state_dict",
]

log = logging.getLogger(__name__)

_CLASS_RENAMES: dict[str, dict[str, str]] = {}  # "module.QualName" -> renames

# Where the released weights are published, under the file names their authors use.
_WHERE_RELEASED = (
    "attnbench downloads nothing: download the released file first. BiFormer: "
    "biformer_{tiny,small,base,stl}_in1k.pth, from the model links of the BiFormer README "
    "(github.com/rayleizhu/BiFormer); DeBiFormer: debiformer_{tiny,small,base}_in1k_224.pth, from "
    "the model links of the DeBiFormer README (github.com/maclong01/DeBiFormer). "
    "See docs/seed-models.md"
)


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not match the module; the message lists every problem."""


class LoadResult(dict):
    """``{"missing": [...], "unexpected": [...]}``: keys left out by a non-strict load (ours, theirs)."""

    @property
    def missing(self) -> list[str]:
        return self["missing"]

    @property
    def unexpected(self) -> list[str]:
        return self["unexpected"]


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_official_names(cls: type[nn.Module] | str, renames: dict[str, str]) -> None:
    """Declare that instances of ``cls`` name children differently from the released code.

    Args:
        cls: the module class (ours), or its qualified name ``"package.module.ClassName"``.
        renames: our child path -> the released child path, e.g. ``{"qkv": "qkv.qkv"}``.
    """
    _CLASS_RENAMES[cls if isinstance(cls, str) else _qualified(cls)] = dict(renames)


# The released BRA wraps its q|k|v Linear in ``QKVLinear`` (``qkv.qkv.weight``); ours is the Linear.
register_official_names("mechanisms.bra.BiLevelRoutingAttention", {"qkv": "qkv.qkv"})


def _renames_of(module: nn.Module) -> dict[str, str]:
    own = getattr(module, "official_names", None)
    if own:
        return own
    for cls in type(module).__mro__:
        renames = _CLASS_RENAMES.get(_qualified(cls))
        if renames is not None:
            return renames
    return {}


def _official_key(root: nn.Module, key: str) -> str:
    parts = key.split(".")
    out: list[str] = []
    module: nn.Module | None = root
    i = 0
    while i < len(parts):
        if module is None:  # below a parameter/buffer name: nothing left to rename
            out.extend(parts[i:])
            break
        for ours, theirs in _renames_of(module).items():
            path = ours.split(".")
            if parts[i : i + len(path)] == path:
                out.extend(theirs.split("."))
                for name in path:
                    module = module._modules.get(name) if module is not None else None
                i += len(path)
                break
        else:
            out.append(parts[i])
            module = module._modules.get(parts[i])
            i += 1
    return ".".join(out)


def official_key_map(module: nn.Module) -> dict[str, str]:
    """Our state-dict key -> the released key, for every entry of ``module.state_dict()``."""
    mapping = {key: _official_key(module, key) for key in module.state_dict()}
    theirs = list(mapping.values())
    if len(set(theirs)) != len(theirs):
        dup = sorted({k for k in theirs if theirs.count(k) > 1})
        raise RuntimeError(f"official_names of {type(module).__name__} map two keys onto {dup}")
    return mapping


def to_official_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """``module.state_dict()`` renamed to the released key layout (tensors are not copied)."""
    state = module.state_dict()
    return {theirs: state[ours] for ours, theirs in official_key_map(module).items()}


def _read_state_dict(src: str | Path | Mapping[str, object]) -> dict[str, Tensor]:
    if isinstance(src, (str, Path)):
        path = Path(src).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist. {_WHERE_RELEASED}")
        src = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(src, Mapping):
        raise TypeError(
            f"checkpoint must be a state dict or a dict with key 'model', got {type(src).__name__}"
        )
    if "model" in src and isinstance(src["model"], Mapping):
        src = src["model"]  # the released training format: {"model": ..., "optimizer": ..., ...}
    bad = [k for k, v in src.items() if not isinstance(v, Tensor)]
    if bad:
        raise TypeError(f"checkpoint entries are not tensors: {bad[:8]}{' ...' if len(bad) > 8 else ''}")
    return dict(src)


def _listing(title: str, keys: list[str], limit: int = 40) -> str:
    shown = "\n    ".join(keys[:limit])
    more = f"\n    ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"  {title} ({len(keys)}):\n    {shown}{more}"


def load_official_checkpoint(
    module: nn.Module,
    checkpoint: str | Path | Mapping[str, object],
    strict: bool = True,
) -> LoadResult:
    """Load a released checkpoint into ``module`` (a whole model or a single mechanism).

    Args:
        module: the attnbench module to fill.
        checkpoint: a path to a ``.pth`` file (read with ``torch.load(map_location="cpu",
            weights_only=True)``), a dict with key ``"model"`` holding the state dict (the released
            format), or a bare state dict, all with the released key names.
        strict: raise on missing or unexpected keys. With ``strict=False`` they are returned (and
            logged) instead; shape mismatches always raise.

    Returns:
        The keys that were not loaded: ``missing`` (ours) and ``unexpected`` (the checkpoint's).

    Raises:
        CheckpointMismatchError: listing every missing, unexpected or wrongly shaped key.
    """
    theirs = _read_state_dict(checkpoint)
    to_ours = {official: ours for ours, official in official_key_map(module).items()}
    own = module.state_dict()

    unexpected = sorted(k for k in theirs if k not in to_ours)
    missing = sorted(ours for official, ours in to_ours.items() if official not in theirs)
    shapes = sorted(
        f"{official} -> {to_ours[official]}: checkpoint {tuple(t.shape)}, "
        f"module {tuple(own[to_ours[official]].shape)}"
        for official, t in theirs.items()
        if official in to_ours and t.shape != own[to_ours[official]].shape
    )
    problems = []
    if strict and missing:
        problems.append(_listing("missing from the checkpoint (our keys)", missing))
    if strict and unexpected:
        problems.append(_listing("unexpected in the checkpoint (released keys)", unexpected))
    if shapes:
        problems.append(_listing("shape mismatch", shapes))
    if problems:
        raise CheckpointMismatchError(
            f"checkpoint does not fit {type(module).__name__}; nothing was loaded.\n" + "\n".join(problems)
        )
    if missing or unexpected:
        log.warning(
            "load_official_checkpoint(strict=False): %d missing, %d unexpected keys",
            len(missing),
            len(unexpected),
        )
    renamed = {to_ours[k]: v for k, v in theirs.items() if k in to_ours}
    module.load_state_dict(renamed, strict=False)
    return LoadResult(missing=missing, unexpected=unexpected)
