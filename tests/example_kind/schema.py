"""The study file of ``kind: count``; the validated model is the study itself (no second class)."""

from __future__ import annotations

from pydantic import Field, field_validator

from attnbench.registry import available_mechanisms
from attnbench.study._fields import PositiveInt, said, suggest
from attnbench.study._header import Header, kind_field


class CountFile(Header):
    """A count study: how many parameters each mechanism has at one (dim, num_heads)."""

    kind: kind_field("count") = "count"  # type: ignore[valid-type]
    mechanisms: list[str] = Field(min_length=1, description="registered mechanism names")
    dim: PositiveInt = Field(64, description="channels C of every mechanism")
    num_heads: PositiveInt = Field(2, description="attention heads of every mechanism")

    @field_validator("mechanisms")
    @classmethod
    def _registered(cls, names: list[str]) -> list[str]:
        known = available_mechanisms()
        for name in names:
            if name not in known:
                raise said(f"{name!r} is no registered mechanism{suggest(name, known)}")
        return names


FILE = CountFile  # what attnbench.study validates a `kind: count` file with
