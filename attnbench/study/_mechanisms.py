"""The ``mechanisms:`` and ``plugins:`` of sweep and ablation studies.

Each registered mechanism's declared hyper-parameters (:meth:`AttentionMechanism.hyperparameters`)
become a pydantic model (:func:`params_model`): one field per parameter, typed by its annotation
(``Literal`` choices included), with its default and the description its docstring's ``Args:``
gives. A value may be a list, which sweeps the parameter. Models are built when a study names the
mechanism (plugins register theirs while the study is read) and when the JSON Schema is written.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
import math
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    AfterValidator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    create_model,
)
from pydantic_core import InitErrorDetails, core_schema

from attnbench.mechanism import AttentionMechanism, Param
from attnbench.registry import available_mechanisms, get_mechanism, load_plugin, validate_params
from attnbench.study._axes import EntrySweep
from attnbench.study._fields import (
    OneOrMany,
    Section,
    Text,
    brief,
    details,
    documented,
    exception_text,
    fail,
    problem,
    said,
    shown,
    suggest,
    worded,
)

__all__ = ["MechanismEntry", "MechanismSpec", "PluginFile", "Plugins", "entry_model", "params_model"]

# a study's check of one entry against the rest of the study (a sweep builds it for the study's
# shapes; an ablation builds its backbone); the kind's model puts it into the validation context
CheckEntry = Callable[["MechanismSpec", Any], list[InitErrorDetails]]


MAX_COMBINATIONS = 1_000  # parameter combinations of one mechanisms entry (each is built to check it)


@dataclasses.dataclass(frozen=True)
class MechanismSpec:
    """One ``mechanisms:`` entry: a registered name, the grid of its parameters, and the sweep axes
    it overrides (None: the study's)."""

    name: str
    grid: tuple[tuple[str, tuple[Any, ...]], ...]
    resolutions: tuple[tuple[int, int], ...] | None = None
    dims: tuple[int, ...] | None = None
    heads: tuple[int, ...] | None = None

    def combinations(self) -> list[dict[str, Any]]:
        """Every parameter combination of the grid (``[{}]`` for none)."""
        keys = [k for k, _ in self.grid]
        return [dict(zip(keys, values)) for values in itertools.product(*(v for _, v in self.grid))]


# ---------------------------------------------------------------------------------------------
# One model per mechanism


def _value_type(mechanism: str, param: Param) -> Any:
    """One value of ``param``, as pydantic checks it; a problem is said as ``Param.coerce`` says it."""
    if param.choices is not None:
        base: Any = Literal[param.choices]  # type: ignore[valid-type]
    else:
        args = typing.get_args(param.annotation)
        optional = typing.get_origin(param.annotation) in (Union, types.UnionType) and type(None) in args
        inner = [a for a in args if a is not type(None)] if optional else [param.annotation]
        # other annotations are checked by the mechanism itself, as Param.coerce does
        plain = inner[0] if len(inner) == 1 and inner[0] in (bool, int, float, str) else Any
        base = plain | None if optional and plain is not Any else plain

    def reword(value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(value)
        except ValidationError:
            if isinstance(value, dict):
                raise said("expected a value or a list of values, got a mapping") from None
            if isinstance(value, list):
                raise said("nested lists are not supported; a list sweeps the parameter") from None
            try:
                param.coerce(value, f"mechanism {mechanism!r}")
            except ValueError as exc:
                raise said(str(exc)) from None
            raise said(
                f"mechanism {mechanism!r}: parameter {param.name!r} = {brief(value)}: "
                f"expected {param.type_name}"
            ) from None

    return Annotated[base, WrapValidator(reword)]


class _Params(Section):
    """A mechanism's ``params:``; subclasses are made by :func:`params_model`."""

    what: ClassVar[str] = "a mapping of parameters (a list of values sweeps one)"
    mechanism: ClassVar[str] = ""

    @classmethod
    def unknown_key(cls, key: Any) -> str:
        try:
            validate_params(cls.mechanism, {key: None})
        except ValueError as exc:
            return str(exc)
        return "unknown parameter"  # pragma: no cover - validate_params knows every parameter

    def given(self, order: list[Any]) -> list[tuple[str, tuple[Any, ...]]]:
        """(name, values) of the parameters the study gives, in the study's ``order``."""
        by_alias = {field.alias: name for name, field in type(self).model_fields.items()}
        return [
            (k, tuple(getattr(self, by_alias[k]))) for k in order if by_alias.get(k) in self.model_fields_set
        ]


@functools.cache
def params_model(cls: type[AttentionMechanism]) -> type[_Params]:
    """The pydantic model of a mechanism's ``params:``, from its declared hyper-parameters."""
    docs = documented(cls)
    fields: dict[str, Any] = {}
    for i, p in enumerate(cls.hyperparameters().values()):
        doc = docs.get(p.name, "").rstrip(".")
        about = f"{doc}; " if doc else ""
        fields[f"p{i}"] = (
            Annotated[list[_value_type(cls.name, p)], OneOrMany("give at least one value", repeats="drop")],
            Field(
                p.default,
                alias=p.name,
                title=p.name,
                description=f"{about}{p.type_name}, default {p.default!r}; a list of values sweeps it",
            ),
        )
    model = create_model(
        f"{cls.name}_params", __base__=_Params, __doc__=f"Parameters of {cls.name}.", **fields
    )
    model.mechanism = cls.name
    return model


class _Entry(Section):
    """A ``mechanisms:`` entry; subclasses are made by :func:`entry_model`."""

    what: ClassVar[str] = "a mapping with 'name' (and 'params')"


@functools.cache
def entry_model(cls: type[AttentionMechanism]) -> type[_Entry]:
    """The pydantic model of a ``mechanisms:`` entry naming ``cls``."""
    doc = (inspect.getdoc(cls) or cls.name).splitlines()[0]
    return create_model(
        f"{cls.name}_entry",
        __base__=_Entry,
        __doc__=doc,
        name=(Literal[cls.name], Field(description=doc)),  # type: ignore[valid-type]
        params=(params_model(cls) | None, Field(None, description=f"parameters of {cls.name}")),
        sweep=(EntrySweep | None, Field(None, description="axes of this entry that replace the study's")),
    )


def _not_registered(schema: dict[str, Any]) -> None:
    schema["not"] = {"enum": available_mechanisms()}


class OtherMechanism(_Entry):
    """A mechanism that a file of ``plugins:`` registers (its parameters are checked when the study is
    read)."""

    say_missing: ClassVar[dict[str, str]] = {"name": "missing; a registered mechanism (see `attnbench list`)"}

    name: Text = Field(description="the name a plugin registers", json_schema_extra=_not_registered)
    params: Annotated[dict[str, Any], worded("a mapping of parameters")] | None = None
    sweep: EntrySweep | None = Field(None, description="axes of this entry that replace the study's")


def validate_entry(value: Any, info: ValidationInfo) -> MechanismSpec:
    """A ``mechanisms:`` entry (a name, or a mapping with name, params and sweep) as a spec, checked
    against the rest of the study by the context's ``check_entry``."""
    context = info.context or {}
    if isinstance(value, str):
        raw: dict[Any, Any] = {"name": value}
    elif isinstance(value, dict):
        raw = value
    else:
        raise said(f"expected a mapping with 'name' (and 'params'), got {shown(value)}")
    names = available_mechanisms()
    name = raw.get("name")
    if not isinstance(name, str) or name not in names:
        found = []
        if "name" in raw:
            hint = suggest(name, names) if isinstance(name, str) else ""
            why = " (a plugin failed to load)" if context.get("plugin_failed") else ""
            message = f"unknown mechanism {name!r}{hint}{why} (registered: {', '.join(names)})"
            found.append(problem(("name",), message, name))
        try:  # the rest of the entry (its name is said above)
            OtherMechanism.model_validate(
                {**raw, "name": str(name)} if "name" in raw else raw, context=context
            )
        except ValidationError as exc:
            found += details(exc)
        fail(found)
    entry = entry_model(get_mechanism(name)).model_validate(raw, context=context)
    own = entry.sweep
    given_params = raw.get("params") or {}
    spec = MechanismSpec(
        name,
        tuple(entry.params.given(list(given_params)) if entry.params is not None else ()),
        resolutions=tuple(own.resolutions) if own and own.resolutions else None,
        dims=tuple(own.dim) if own and own.dim else None,
        heads=tuple(own.num_heads) if own and own.num_heads else None,
    )
    combinations = math.prod(len(values) for _, values in spec.grid)
    if combinations > MAX_COMBINATIONS:
        sizes = " x ".join(f"{len(values)} {key}" for key, values in spec.grid)
        fail(
            [
                problem(
                    ("params",),
                    f"the parameter grid has {combinations:,} combinations ({sizes}); at most "
                    f"{MAX_COMBINATIONS:,} per mechanism entry: sweep fewer values, or split it into entries",
                )
            ]
        )
    check: CheckEntry | None = context.get("check_entry")
    found = check(spec, entry) if check is not None else []
    if found:
        fail(found)
    return spec


class MechanismEntry:
    """``list[MechanismEntry]``: validated by :func:`validate_entry`; its JSON Schema is one choice per
    registered mechanism (with its parameters), or another name (a plugin's)."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(validate_entry)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        names = available_mechanisms()
        choices = [entry_model(get_mechanism(n)) for n in names]
        union = Union[(Literal[tuple(names)], *choices, OtherMechanism)]  # type: ignore[valid-type]
        out = handler(TypeAdapter(union).core_schema)
        plugin_name = {"type": "string", "not": {"enum": names}, "description": "a name a plugin registers"}
        return {**out, "anyOf": [*out["anyOf"], plugin_name]}


# ---------------------------------------------------------------------------------------------
# plugins:


def _load_plugin(value: Any, info: ValidationInfo) -> Path:
    """Import one ``plugins:`` file (relative to the study's folder); any failure is a problem here,
    a ``sys.exit`` included. Ctrl-C still stops."""
    context = info.context or {}
    if not isinstance(value, str):
        raise said(f"expected a path to a .py file, got {shown(value)}")
    plugin = Path(value).expanduser()
    if not plugin.is_absolute() and context.get("path") is not None:
        plugin = context["path"].parent / plugin
    if not plugin.is_file() or plugin.suffix != ".py":
        context["plugin_failed"] = True
        raise said(
            f"plugin {str(plugin)!r} is not an existing .py file (relative paths start at the study "
            "file's folder)"
        )
    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # validation writes nothing, __pycache__ included
    try:
        load_plugin(plugin)
    except KeyboardInterrupt:
        raise
    except SystemExit as exc:
        context["plugin_failed"] = True
        code = "" if exc.code is None else repr(exc.code)
        raise said(f"importing {value!r} called sys.exit({code})") from None
    except BaseException as exc:  # noqa: BLE001 - a plugin's import error is a study problem
        context["plugin_failed"] = True
        raise said(f"importing {value!r} failed: {exception_text(exc)}") from None
    finally:
        sys.dont_write_bytecode = before
    return plugin.resolve()


PluginFile = Annotated[Path, PlainValidator(_load_plugin, json_schema_input_type=str)]
# the ``plugins:`` key of a study: each file imported as it is validated; a tuple of resolved paths
Plugins = Annotated[list[PluginFile], worded("a list of .py files"), AfterValidator(tuple)]
