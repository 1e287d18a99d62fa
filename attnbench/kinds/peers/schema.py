"""Peers studies (``kind: peers``): each mechanism timed against other implementations of it.

A peers study lists mechanisms (with parameters; a list of values sweeps one), the shapes to time
them at, and per mechanism the peers of :mod:`kinds.peers.implementations` to time it against (default: all of
its peers). Every (mechanism parameters, shape, batch, dtype) is one point; each point gives one row
per (peer, pass).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    TypeAdapter,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic_core import InitErrorDetails, core_schema

from attnbench.kinds.peers.implementations import mechanisms_with_peers, peer_names
from attnbench.mechanism import AttentionMechanism
from attnbench.registry import available_mechanisms, build_mechanism, get_mechanism
from attnbench.study._axes import Resolution
from attnbench.study._fields import (
    OneOrMany,
    PositiveInt,
    Section,
    choice,
    choices,
    fail,
    problem,
    said,
    shown,
    suggest,
    worded,
)
from attnbench.study._header import DTYPES, PASSES, Timed, kind_field, resolve_device
from attnbench.study._mechanisms import params_model

__all__ = ["PeerPoint", "PeersFile", "PeersSpec", "Shape"]


@dataclasses.dataclass(frozen=True)
class Shape:
    """One map and width to time at."""

    H: int
    W: int
    dim: int
    num_heads: int

    @property
    def label(self) -> str:
        return f"{self.H}x{self.W} C{self.dim} h{self.num_heads}"


@dataclasses.dataclass(frozen=True)
class PeersSpec:
    """One ``mechanisms:`` entry: a mechanism, its parameter grid, its peers and its own shapes."""

    name: str
    grid: tuple[tuple[str, tuple[Any, ...]], ...]
    peers: tuple[str, ...]
    shapes: tuple[Shape, ...] | None = None

    def combinations(self) -> list[dict[str, Any]]:
        keys = [k for k, _ in self.grid]
        return [dict(zip(keys, values)) for values in itertools.product(*(v for _, v in self.grid))]


@dataclasses.dataclass(frozen=True)
class PeerPoint:
    """One configuration of ours, timed against each of ``peers`` in each pass."""

    mechanism: str
    params: tuple[tuple[str, Any], ...]  # as given in the study; defaults fill the rest
    H: int
    W: int
    dim: int
    num_heads: int
    batch: int
    dtype: str
    peers: tuple[str, ...]

    def full_params(self) -> dict[str, Any]:
        declared = get_mechanism(self.mechanism).hyperparameters()
        return {**{k: p.default for k, p in declared.items()}, **dict(self.params)}

    @property
    def label(self) -> str:
        params = " ".join(f"{k}={v}" for k, v in self.params)
        head = f"{self.mechanism} {params}".strip()
        return f"{head} | {self.H}x{self.W} C{self.dim} h{self.num_heads} b{self.batch} {self.dtype}"


class ShapeEntry(Section):
    """One shape: a map (``resolution``) and a width (``dim``, ``num_heads``)."""

    what: ClassVar[str] = "a mapping of resolution, dim and num_heads"
    say_missing: ClassVar[dict[str, str]] = {
        "resolution": "missing; give a square side or an [H, W] pair",
        "dim": "missing; give the channels C",
        "num_heads": "missing; give the attention heads",
    }

    resolution: Resolution = Field(description="square side (H = W) or an [H, W] pair")
    dim: PositiveInt = Field(description="channels C")
    num_heads: PositiveInt = Field(description="attention heads; must divide dim")

    @classmethod
    def inspect(cls, data: dict[Any, Any], info: ValidationInfo) -> list[InitErrorDetails]:
        dim, heads = data.get("dim"), data.get("num_heads")
        if isinstance(dim, int) and isinstance(heads, int) and heads > 0 and dim % heads:
            return [problem(("num_heads",), f"num_heads = {heads} does not divide dim = {dim}", heads)]
        return []

    def shape(self) -> Shape:
        H, W = self.resolution
        return Shape(H, W, self.dim, self.num_heads)


Shapes = Annotated[
    list[ShapeEntry],
    Field(min_length=1),
    worded(lambda value: "expected a non-empty list of shapes (- {resolution: 56, dim: 64, num_heads: 2})"),
]


class _PeersEntry(Section):
    """A ``mechanisms:`` entry of a peers study; subclasses are made by :func:`peers_entry_model`."""

    what: ClassVar[str] = "a mapping with 'name' (and 'params', 'peers', 'shapes')"


def peers_entry_model(cls: type[AttentionMechanism]) -> type[_PeersEntry]:
    """The pydantic model of a peers study's entry naming ``cls`` (which has peers)."""
    return _entry_model(cls, tuple(peer_names(cls.name)))


@functools.cache
def _entry_model(cls: type[AttentionMechanism], names: tuple[str, ...]) -> type[_PeersEntry]:
    return create_model(
        f"{cls.name}_peers_entry",
        __base__=_PeersEntry,
        __doc__=f"{cls.name} and the peers it is timed against.",
        name=(Literal[cls.name], Field(description=f"{cls.name}: peers {', '.join(names)}")),  # type: ignore[valid-type]
        params=(params_model(cls) | None, Field(None, description=f"parameters of {cls.name}")),
        peers=(
            Annotated[list[choice(names)], OneOrMany(f"choose from {list(names)}", repeats="error")] | None,
            Field(None, description=f"peers to time it against (default: all): {', '.join(names)}"),
        ),
        shapes=(Shapes | None, Field(None, description="shapes of this entry, instead of the study's")),
    )


def _validate_entry(value: Any, info: ValidationInfo) -> PeersSpec:
    context = info.context or {}
    if isinstance(value, str):
        raw: dict[Any, Any] = {"name": value}
    elif isinstance(value, dict):
        raw = value
    else:
        raise said(f"expected a mapping with 'name' (and 'params', 'peers'), got {shown(value)}")
    name = raw.get("name")
    with_peers = mechanisms_with_peers()
    if "name" not in raw:
        fail([problem(("name",), "missing; a mechanism with peers: " + ", ".join(with_peers))])
    if not isinstance(name, str) or name not in with_peers:
        if isinstance(name, str) and name in available_mechanisms():
            message = f"mechanism {name!r} has no peers yet (mechanisms with peers: {', '.join(with_peers)})"
        else:
            hint = suggest(name, with_peers) if isinstance(name, str) else ""
            message = f"unknown mechanism {name!r}{hint} (mechanisms with peers: {', '.join(with_peers)})"
        fail([problem(("name",), message, name)])
    entry = peers_entry_model(get_mechanism(name)).model_validate(raw, context=context)
    given = raw.get("params") or {}
    spec = PeersSpec(
        name,
        tuple(entry.params.given(list(given)) if entry.params is not None else ()),
        tuple(entry.peers or peer_names(name)),
        tuple(s.shape() for s in entry.shapes) if entry.shapes else None,
    )
    check = context.get("check_peers_entry")
    found = check(spec) if check is not None else []
    if found:
        fail(found)
    return spec


class PeersEntry:
    """``list[PeersEntry]``: validated by :func:`_validate_entry`; its JSON Schema is one choice per
    mechanism with peers, with its parameters and the names of its peers."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(_validate_entry)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        names = mechanisms_with_peers()
        choices = [peers_entry_model(get_mechanism(n)) for n in names]
        union = Union[(Literal[tuple(names)], *choices)]  # type: ignore[valid-type]
        return handler(TypeAdapter(union).core_schema)


def _build_problems(spec: PeersSpec, shapes: tuple[Shape, ...]) -> list[InitErrorDetails]:
    """A parameter combination that builds at none of its shapes' widths is a problem; one that
    builds for some becomes skipped rows at run time."""
    widths = list(dict.fromkeys((s.dim, s.num_heads) for s in (spec.shapes or shapes)))
    found = []
    for combo in spec.combinations():
        errors = []
        for dim, heads in widths:
            try:
                build_mechanism(spec.name, dim, heads, **combo)
            except ValueError as exc:
                errors.append(str(exc))
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - a mechanism that cannot be built at all
                errors.append(f"building it failed: {type(exc).__name__}: {exc}")
            else:
                break
        else:
            if errors:
                combo_text = ", ".join(f"{k}={v}" for k, v in combo.items())
                where = f"with {combo_text}: " if combo else ""
                found.append(problem(("params",) if combo else (), f"{where}{errors[0]}"))
    return found


class PeersFile(Timed):
    """A peers study: each mechanism against its peers, one row per (point, peer, pass)."""

    say_missing: ClassVar[dict[str, str]] = {
        "kind": "missing; a peers study says kind: peers",
        "mechanisms": "missing; list at least one mechanism with peers (- name: swin)",
    }
    key_hints: ClassVar[dict[str, str]] = {
        "sweep": "; a peers study lists shapes (- {resolution: 56, dim: 64, num_heads: 2})",
        "measure": "; a peers study times ours and each peer (latency), nothing else",
        "plugins": "; peers are attnbench's table (attnbench.kinds.peers.implementations), plugins have none",
    }

    kind: kind_field("peers")  # type: ignore[valid-type]
    dtype: choices(tuple(DTYPES)) = Field(  # type: ignore[valid-type]
        ("float32",), description="float32, bfloat16 or float16 (not on CPU), or a list of them"
    )
    batch: Annotated[list[PositiveInt], OneOrMany("give at least one positive int")] = Field(
        (1,), description="batch size, or a list of them"
    )
    passes: choices(PASSES) = Field(  # type: ignore[valid-type]
        ("forward",), description="forward, and forward_backward (a training step's forward and backward)"
    )
    shapes: Shapes | None = Field(  # validated to a tuple of Shape, () when not given
        None,
        validate_default=True,
        description="the shapes every entry is timed at (an entry's own shapes replace them)",
    )
    mechanisms: Annotated[
        list[PeersEntry],
        Field(min_length=1),
        worded(lambda value: "expected a non-empty list of mechanisms (- name: swin)"),
    ] = Field(description="mechanisms with peers: a name, or name, params, peers and shapes")

    @field_validator("dtype")
    @classmethod
    def _float16_needs_a_gpu(cls, dtypes: list[str], info: ValidationInfo) -> list[str]:
        device = info.data.get("device")
        if device is not None and resolve_device(device) == "cpu" and "float16" in dtypes:
            raise said(
                "float16 is not supported on CPU (the device resolves to cpu); use bfloat16 or float32"
            )
        return dtypes

    @field_validator("mechanisms", mode="wrap")
    @classmethod
    def _each_has_shapes_and_builds(cls, value: Any, handler: Any, info: ValidationInfo) -> list[PeersSpec]:
        shapes = tuple(info.data.get("shapes") or ())

        def check(spec: PeersSpec) -> list[InitErrorDetails]:
            if not spec.shapes and not shapes:
                return [problem(("shapes",), "missing; give shapes here or at the top of the study")]
            return _build_problems(spec, shapes)

        if info.context is not None:
            info.context["check_peers_entry"] = check
        return handler(value)

    @field_validator("shapes")
    @classmethod
    def _as_shapes(cls, shapes: list[ShapeEntry] | None) -> tuple[Shape, ...]:
        return tuple(s.shape() for s in shapes or ())

    @property
    def dtypes(self) -> tuple[str, ...]:
        return self.dtype

    @property
    def batches(self) -> tuple[int, ...]:
        return self.batch

    def points(self) -> list[PeerPoint]:
        """Every mechanism's parameter grid times its shapes, dtypes and batches, in run order."""
        out: list[PeerPoint] = []
        for spec in self.mechanisms:
            for params in spec.combinations():
                frozen = tuple(params.items())
                for dtype, batch, shape in itertools.product(
                    self.dtypes, self.batches, spec.shapes or self.shapes
                ):
                    out.append(
                        PeerPoint(
                            spec.name,
                            frozen,
                            shape.H,
                            shape.W,
                            shape.dim,
                            shape.num_heads,
                            batch,
                            dtype,
                            spec.peers,
                        )
                    )
        return out


FILE = PeersFile  # the study file of this kind (attnbench.kind: a kind's schema module)
