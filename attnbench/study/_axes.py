"""The sweep axes: a sweep study's ``sweep:`` and a mechanism entry's own ``sweep:``."""

from __future__ import annotations

import itertools
from typing import Annotated, Any, ClassVar

from pydantic import Field, PlainValidator, TypeAdapter, ValidationInfo, model_validator
from pydantic_core import InitErrorDetails

from attnbench.study._fields import OneOrMany, PositiveInt, Section, fail, problem, said

__all__ = ["EntrySweep", "Sweep"]

# the top-level keys of a sweep study, named when one of them is put under sweep:
_TOP_KEYS = (
    "name",
    "description",
    "kind",
    "device",
    "dtype",
    "batch",
    "measure",
    "passes",
    "repeats",
    "warmup",
    "max_time_s",
    "threads",
    "seed",
    "point_timeout_s",
    "mechanisms",
    "plugins",
)
_SIDE = TypeAdapter(PositiveInt)
_PAIR = TypeAdapter(tuple[PositiveInt, PositiveInt])


def _resolution(value: Any) -> tuple[int, int]:
    if isinstance(value, list):
        if len(value) != 2:
            raise said(f"an [H, W] pair needs two ints, got {list(value)}")
        return _PAIR.validate_python(value)
    side = _SIDE.validate_python(value)
    return side, side


Resolution = Annotated[
    tuple[int, int],
    PlainValidator(
        _resolution,
        json_schema_input_type=PositiveInt | Annotated[list[PositiveInt], Field(min_length=2, max_length=2)],
    ),
]
Sizes = Annotated[list[PositiveInt], OneOrMany("give at least one positive int")]


class EntrySweep(Section):
    """Sweep axes; in a mechanism entry each axis given replaces the study's (paired settings)."""

    what: ClassVar[str] = "a mapping of axes (resolution, H, W, dim, num_heads)"
    key_hints: ClassVar[dict[str, str]] = {
        k: f"; {k!r} is a top-level key, not a sweep axis" for k in _TOP_KEYS
    }
    partial: ClassVar[bool] = True  # any axis may be left out

    resolution: Annotated[list[Resolution], OneOrMany("give at least one positive int")] | None = Field(
        None, description="square sides (H = W), or [H, W] pairs; or give both H and W instead"
    )
    H: Sizes | None = Field(None, description="heights, swept in product with W (instead of resolution)")
    W: Sizes | None = Field(None, description="widths, swept in product with H (instead of resolution)")
    dim: Sizes | None = Field(None, description="channels C")
    num_heads: Sizes | None = Field(None, description="attention heads; each must divide some dim")

    @classmethod
    def inspect(cls, data: dict[Any, Any], info: ValidationInfo) -> list[InitErrorDetails]:
        found = []
        sides = [k for k in ("H", "W") if k in data]
        if "resolution" in data and sides:
            found.append(problem(("resolution",), "give either resolution or H and W, not both"))
        elif len(sides) == 1:
            found.append(problem((), "give both H and W (their product is swept), or resolution"))
        elif not cls.partial and "resolution" not in data and not sides:
            found.append(problem(("resolution",), "missing; give resolution (H = W) or both H and W"))
        return found

    @model_validator(mode="after")
    def _heads_divide_a_dim(self) -> EntrySweep:
        if self.dim and self.num_heads and not any(d % h == 0 for d in self.dim for h in self.num_heads):
            fail(
                [
                    problem(
                        ("num_heads",),
                        f"no num_heads in {list(self.num_heads)} divides a dim in {list(self.dim)}",
                    )
                ]
            )
        return self

    @property
    def resolutions(self) -> list[tuple[int, int]] | None:
        """Every (H, W) of the axes, or None when they leave it to the study."""
        if self.resolution:
            return list(dict.fromkeys(self.resolution))
        if self.H and self.W:
            return list(itertools.product(self.H, self.W))
        return None


class Sweep(EntrySweep):
    """The study's axes: points are the product of resolution, dim and num_heads (with dtype and batch)."""

    partial: ClassVar[bool] = False
    say_missing: ClassVar[dict[str, str]] = {
        "dim": "missing; give a positive int or a list of them",
        "num_heads": "missing; give a positive int or a list of them",
    }

    dim: Sizes = Field(description="channels C")
    num_heads: Sizes = Field(description="attention heads; each must divide some dim")
