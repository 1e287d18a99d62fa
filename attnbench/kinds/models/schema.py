"""Models studies (``kind: models``): whole timm models measured and set beside their published numbers."""

from __future__ import annotations

import dataclasses
import difflib
import json
from typing import Annotated, Any, ClassVar

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails

from attnbench.study._fields import (
    OrName,
    Percentage,
    PositiveInt,
    PositiveNumber,
    Section,
    Text,
    choice,
    choices,
    details,
    fail,
    problem,
    said,
    shown,
    worded,
)
from attnbench.study._header import DTYPES, MEASURES, Timed, kind_field, resolve_device
from attnbench.study._yaml import plain

__all__ = [
    "COUNTED_KEYS",
    "PUBLISHED_KEYS",
    "REFERENCE_RESOLUTION",
    "ModelSpec",
    "ModelsFile",
]

PUBLISHED_KEYS = ("params_m", "gflops", "top1", "source", "resolution")
COUNTED_KEYS = ("params_m", "gflops", "source", "resolution")
REFERENCE_RESOLUTION = 224
_NUMBERS = ("params_m", "gflops", "top1")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One ``models:`` entry: a timm name, its build kwargs and the reference numbers beside it."""

    name: str
    family: str = ""
    kwargs: tuple[tuple[str, Any], ...] = ()
    published: tuple[tuple[str, Any], ...] = ()
    counted: tuple[tuple[str, Any], ...] = ()

    def model_kwargs(self) -> dict[str, Any]:
        return dict(self.kwargs)

    @property
    def label(self) -> str:
        """``name`` plus its kwargs, e.g. ``biformer_tiny (bra_backend=sdpa)``."""
        if not self.kwargs:
            return self.name
        return f"{self.name} ({', '.join(f'{k}={v}' for k, v in self.kwargs)})"


class Counted(Section):
    """Numbers counted on the released code, which ours should match."""

    what: ClassVar[str] = "a mapping of params_m, gflops, source, resolution"

    params_m: PositiveNumber | None = Field(None, description="millions of parameters")
    gflops: PositiveNumber | None = Field(
        None, description="GMACs (fvcore: one multiply-accumulate = one FLOP)"
    )
    source: Annotated[str, Field(strict=True, pattern=r"\S")] | None = Field(
        None, description="where the numbers come from (required with any number)"
    )
    resolution: PositiveInt | None = Field(
        None, description=f"the input side the numbers are for (default {REFERENCE_RESOLUTION})"
    )

    @field_validator("source", mode="wrap")
    @classmethod
    def _says_where(cls, value: Any, handler: Any) -> str | None:
        try:
            return handler(value)
        except ValidationError:
            raise said(f"expected text naming where the numbers come from, got {value!r}") from None

    @classmethod
    def inspect(cls, data: dict[Any, Any], info: ValidationInfo) -> list[InitErrorDetails]:
        if data.get("source") is None and any(k in data for k in _NUMBERS):
            return [
                problem(
                    ("source",), "missing; say where these numbers come from (README, paper table, counter)"
                )
            ]
        return []

    def numbers(self) -> tuple[tuple[str, Any], ...]:
        """The numbers given, as ``ModelSpec.published`` / ``counted`` hold them."""
        out = {k: getattr(self, k) for k in (*_NUMBERS, "resolution") if getattr(self, k, None) is not None}
        if self.source is not None:
            out["source"] = self.source.strip()
        return tuple(out.items())


class Published(Counted):
    """Numbers as a paper or README publishes them."""

    what: ClassVar[str] = "a mapping of params_m, gflops, top1, source, resolution"

    top1: Percentage | None = Field(None, description="ImageNet-1K top-1 %, as published (not measured here)")


def _model_names() -> list[str]:
    import timm

    import attnbench.models  # noqa: F401 - registers the seed models with timm

    return timm.list_models()


class ModelEntry(Section):
    """One ``models:`` entry (or just a timm name)."""

    what: ClassVar[str] = "a mapping with 'name' (or a model name)"
    say_missing: ClassVar[dict[str, str]] = {"name": "missing; give a timm model name"}

    name: Text = Field(
        description="any timm.list_models() name; attnbench adds its seed models (biformer_tiny, ...)"
    )
    family: Text = Field("", description="the model's family and paper, as the table names it")
    published: Published | None = Field(None, description="the numbers its paper or README publishes")
    counted: Counted | None = Field(None, description="the numbers counted on the released code")
    kwargs: Annotated[
        dict[str, Any],
        worded(
            lambda value: (
                f"argument names must be text, got {[k for k in value if not isinstance(k, str)]}"
                if isinstance(value, dict)
                else f"expected a mapping of create_model arguments, got {shown(value)}"
            )
        ),
    ] = Field({}, description="keyword arguments of timm.create_model")

    @classmethod
    def shorthand(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @field_validator("name")
    @classmethod
    def _known_to_timm(cls, name: str) -> str:
        known = _model_names()
        if name not in known:
            from attnbench.models.measure import SEED_MODELS

            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(n) for n in close)}?" if close else ""
            raise said(
                f"unknown model {name!r}{hint} (any timm.list_models() name; attnbench adds "
                f"{', '.join(SEED_MODELS)})"
            )
        return name

    @model_validator(mode="after")
    def _builds(self) -> ModelEntry:
        """Build the model once with its kwargs: a misspelt argument stops the study before it runs."""
        if not self.kwargs:
            return self
        from attnbench.models.measure import build_model

        try:
            build_model(self.name, **plain(self.kwargs))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - any failure to build is a study problem
            text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
            fail([problem(("kwargs",), f"timm.create_model({self.name!r}, **kwargs) failed: {text}")])
        return self

    def spec(self) -> ModelSpec:
        return ModelSpec(
            name=self.name,
            family=self.family,
            kwargs=tuple(sorted(plain(self.kwargs).items())),
            published=self.published.numbers() if self.published else (),
            counted=self.counted.numbers() if self.counted else (),
        )


def _same_model_twice(value: Any) -> list[InitErrorDetails]:
    """Entries naming a model with the same kwargs as an earlier one."""
    found = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(value if isinstance(value, list) else []):
        raw = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            continue
        kwargs = raw.get("kwargs") or {}
        ident = json.dumps([raw["name"], plain(kwargs)], sort_keys=True, default=repr)
        if ident in seen:
            message = f"{raw['name']!r} with these kwargs is already models[{seen[ident]}]"
            found.append(problem((i, "name"), message, raw["name"]))
        else:
            seen[ident] = i
    return found


# The validated file is the study (Header.study): ``models`` holds one ModelSpec per entry.
class ModelsFile(Timed):
    """A models study: whole timm models, one row each, beside their published and counted numbers."""

    say_missing: ClassVar[dict[str, str]] = {
        "kind": "missing; a models study says kind: models",
        "models": "missing; list at least one model (- name: biformer_tiny)",
    }
    key_hints: ClassVar[dict[str, str]] = {
        "sweep": "; a models study has no sweep (kind: models measures whole models)",
        "mechanisms": "; a models study lists 'models', not mechanisms",
        "passes": "; a models study measures the inference forward only",
        "plugins": "; a models study takes timm model names (import a module registering them instead)",
    }

    kind: kind_field("models")  # type: ignore[valid-type]
    resolution: PositiveInt = Field(REFERENCE_RESOLUTION, description="square input side")
    batch: PositiveInt = Field(
        1, description="batch of the timed forward and the memory pass (FLOPs: batch 1)"
    )
    dtype: choice(tuple(DTYPES)) = Field(  # type: ignore[valid-type]
        "float32", description="float32, bfloat16 or float16 (not on CPU): one table, one dtype"
    )
    measure: choices(MEASURES) = Field(  # type: ignore[valid-type]
        tuple(MEASURES), description="what to measure: params, flops (fvcore MACs), latency, memory"
    )
    models: Annotated[
        list[
            Annotated[ModelEntry, OrName("a timm model name, measured without kwargs or reference numbers")]
        ],
        Field(min_length=1),
        worded(lambda value: "expected a non-empty list of models (- name: biformer_tiny)"),
    ] = Field(
        description="the table's rows: timm model names, or mappings with name, family, published, counted "
        "and kwargs"
    )

    @field_validator("dtype", mode="before")
    @classmethod
    def _one_dtype(cls, dtype: Any) -> Any:
        if isinstance(dtype, list):
            raise said(f"expected one dtype of {list(DTYPES)}, got a list (one table, one dtype)")
        return dtype

    @field_validator("dtype")
    @classmethod
    def _float16_needs_a_gpu(cls, dtype: str, info: ValidationInfo) -> str:
        device = info.data.get("device")
        if device is not None and resolve_device(device) == "cpu" and dtype == "float16":
            raise said("float16 is not supported on CPU (the device resolves to cpu); use bfloat16")
        return dtype

    @field_validator("models", mode="wrap")
    @classmethod
    def _each_model_once(cls, value: Any, handler: Any) -> tuple[ModelSpec, ...]:
        """Each entry validated once, as the spec the measurement reads (kwargs and numbers sorted)."""
        twice = _same_model_twice(value)
        try:
            models = handler(value)
        except ValidationError as exc:
            fail([*details(exc), *twice])
        if twice:
            fail(twice)
        return tuple(m.spec() for m in models)

    @field_validator("measure")
    @classmethod
    def _as_tuple(cls, measure: list[str]) -> tuple[str, ...]:
        return tuple(measure)


FILE = ModelsFile  # the study file of this kind (attnbench.kind: a kind's schema module)
