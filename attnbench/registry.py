"""A small registry of attention mechanisms: a dict and a decorator that refuses duplicates.

Mechanisms arrive three ways: modules of the ``mechanisms`` package (imported on first use),
installed packages declaring the entry-point group ``attnbench.mechanisms``, and local files
loaded with :func:`load_plugin` (a study's ``plugins:`` list).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import logging
import pkgutil
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

from attnbench.mechanism import AttentionMechanism

__all__ = [
    "available_mechanisms",
    "build_mechanism",
    "get_mechanism",
    "load_plugin",
    "register_mechanism",
]

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "attnbench.mechanisms"

_REGISTRY: dict[str, type[AttentionMechanism]] = {}
_loaded_builtin = False
_loaded_plugins: dict[Path, str] = {}

M = TypeVar("M", bound=type[AttentionMechanism])


def register_mechanism(name: str) -> Callable[[M], M]:
    """Class decorator: register an :class:`AttentionMechanism` subclass under ``name``."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"mechanism name {name!r} must be a Python identifier, e.g. 'my_attention'")

    def deco(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, AttentionMechanism)):
            raise TypeError(f"@register_mechanism({name!r}) needs a subclass of AttentionMechanism")
        old = _REGISTRY.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(
                f"mechanism name {name!r} is already registered by {old.__module__}.{old.__qualname__}; "
                "pick another name"
            )
        cls.hyperparameters()  # fail at registration if a parameter lacks a default
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_builtin() -> None:
    global _loaded_builtin
    if _loaded_builtin:
        return
    _loaded_builtin = True
    import mechanisms

    for info in pkgutil.iter_modules(mechanisms.__path__, prefix="mechanisms."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            importlib.import_module(info.name)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # noqa: BLE001 - one broken package must not hide the others
            log.warning("entry point %s = %s failed to load: %s", ep.name, ep.value, exc)


def load_plugin(path: str | Path) -> list[str]:
    """Import a local ``.py`` file that registers mechanisms; returns the names it added.

    Loading the same file twice is a no-op.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file() or path.suffix != ".py":
        raise ValueError(f"plugin {str(path)!r} is not an existing .py file")
    if path in _loaded_plugins:
        return [n for n, c in _REGISTRY.items() if c.__module__ == _loaded_plugins[path]]
    _load_builtin()
    modname = f"attnbench_plugin_{path.stem}_{abs(hash(str(path))) & 0xFFFFFF:x}"
    before = set(_REGISTRY)
    spec = importlib.util.spec_from_file_location(modname, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(modname, None)
        raise
    _loaded_plugins[path] = modname
    return sorted(set(_REGISTRY) - before)


def available_mechanisms() -> list[str]:
    """Names of every registered mechanism, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.4)
    return f"; did you mean {close[0]!r}?" if close else ""


def get_mechanism(name: str) -> type[AttentionMechanism]:
    """The class registered under ``name``; ``ValueError`` with the closest name otherwise."""
    names = available_mechanisms()
    if name not in _REGISTRY:
        raise ValueError(f"unknown mechanism {name!r}{suggest(name, names)} (available: {names})")
    return _REGISTRY[name]


def validate_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Check names and types of ``params`` for mechanism ``name``; returns the coerced dict."""
    declared = get_mechanism(name).hyperparameters()
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key not in declared:
            raise ValueError(
                f"mechanism {name!r}: unknown parameter {key!r}{suggest(key, list(declared))} "
                f"(parameters: {list(declared) or 'none'})"
            )
        out[key] = declared[key].coerce(value, f"mechanism {name!r}")
    return out


def build_mechanism(name: str, dim: int, num_heads: int, **params: Any) -> AttentionMechanism:
    """Build the mechanism registered as ``name`` for ``dim`` channels and ``num_heads`` heads.

    Raises:
        ValueError: unknown name (the closest is suggested), unknown parameter, a value of the wrong
            type, or a value out of range (the message names the parameter and the allowed range).
    """
    cls = get_mechanism(name)
    return cls(dim, num_heads, **validate_params(name, params))
