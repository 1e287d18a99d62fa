"""The keys every kind of study has (name, device, threads, seed, point_timeout_s), and the timing
keys of the kinds that time (repeats, warmup, max_time_s)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any, ClassVar

import torch
from pydantic import ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator

from attnbench.kind import study_kinds
from attnbench.study._fields import (
    NonNegativeInt,
    PositiveInt,
    Seconds,
    Section,
    Text,
    brief,
    choice,
    said,
    worded,
)

__all__ = ["DEVICES", "DTYPES", "MEASURES", "PASSES", "Header", "Timed", "resolve_device"]


DEVICES = ("auto", "cpu", "cuda")
MEASURES = ("flops", "params", "latency", "memory", "phases", "max_batch")  # what a timed study measures
PASSES = ("forward", "forward_backward")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
POINT_TIMEOUT_S = 900.0  # sweep and models studies; an ablation trains for hours

FolderName = Annotated[
    str,
    Field(strict=True, pattern=NAME_PATTERN),
    worded(lambda value: f"{brief(value)} must be a folder-safe name (letters, digits, '.', '_', '-')"),
]


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; others unchanged."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


_KIND_DOC = (
    "sweep (the default): mechanisms over a product of shapes; models: whole timm models beside "
    "their published numbers; ablation (the default when measure lists accuracy or a dataset is "
    "given): one backbone trained per mechanism; peers: each mechanism timed against other "
    "implementations of it"
)


def kind_field(kind: str) -> Any:
    """The ``kind`` key of a study of ``kind`` (its problems list every kind)."""
    return Annotated[choice((kind,), listed=study_kinds), Field(description=_KIND_DOC)]


class Header(Section):
    """The keys of every study file; the context gives the file (``path``) and the ``--device``.

    What the runner reads of any study: ``name``, ``description``, ``kind``, ``device`` (as asked:
    ``auto``, ``cpu`` or ``cuda``; the runner resolves ``auto``), ``threads``, ``seed``,
    ``point_timeout_s``, and the file it came from: ``path``, ``text``, ``sha256`` (and ``plugins``
    where the kind has them). A kind's study is this validated model itself (:meth:`study`), with
    properties for what it derives; its report and measurement read it as it is.
    """

    model_config = ConfigDict(frozen=True)  # the validated file is the study, read by every worker
    what: ClassVar[str] = "a YAML mapping of keys"

    name: FolderName | None = Field(
        None, description="the study's name, for its run folder (runs/<name>/); default: the file's stem"
    )
    description: Text = Field("", description="free text, kept with the results")
    kind: str = Field("sweep", description=_KIND_DOC)  # each kind's model narrows it
    device: choice(DEVICES, hints={"gpu": "cuda"}) = Field(  # type: ignore[valid-type]
        "auto",
        description="auto (cuda when available, else cpu), cpu or cuda; the CLI's --device overrides it",
    )
    threads: PositiveInt | None = Field(
        None, description="CPU intra-op threads (torch.set_num_threads); default 1 on CPU"
    )
    seed: NonNegativeInt = Field(0, description="seed of weights and inputs")
    point_timeout_s: Seconds | None = Field(
        POINT_TIMEOUT_S,
        description="seconds one point may take before its worker is killed and the point becomes an "
        "error row; null: no limit",
    )

    _path: Path | None = PrivateAttr(None)
    _text: str = PrivateAttr("")

    def study(self, path: Path, text: str) -> Header:
        """The validated study: this model, knowing the file it was read from."""
        self._path, self._text = path, text
        return self

    @property
    def path(self) -> Path | None:
        """The study file (None for a study built in code)."""
        return self._path

    @property
    def text(self) -> str:
        """The study file's text, kept with the results."""
        return self._text

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self._text.encode()).hexdigest()

    @classmethod
    def prepare(cls, data: dict[Any, Any], info: ValidationInfo) -> dict[Any, Any]:
        context = info.context or {}
        if data.get("name") is None and context.get("path") is not None:
            data["name"] = context["path"].stem
        if context.get("device") is not None:
            data["device"] = context["device"]
        return data

    @field_validator("point_timeout_s")
    @classmethod
    def _seconds(cls, value: float | None) -> float | None:
        return None if value is None else float(value)  # 900 and 900.0 are one protocol

    @field_validator("device")
    @classmethod
    def _cuda_is_there(cls, device: str) -> str:
        if resolve_device(device) == "cuda" and not torch.cuda.is_available():
            raise said("cuda was asked for but torch.cuda.is_available() is False; use auto or cpu")
        return device


class Timed(Header):
    """The keys of a study that times (sweep and models)."""

    repeats: PositiveInt = Field(20, description="timing samples per point and pass, after warmup")
    warmup: NonNegativeInt = Field(3, description="untimed calls before sampling")
    max_time_s: Seconds | None = Field(
        None,
        description="stop warm-up (after at least 1 call) and sampling (after at least 3 samples) of a "
        "point once this many seconds are spent; null: no budget",
    )

    @field_validator("max_time_s")
    @classmethod
    def _max_seconds(cls, value: float | None) -> float | None:
        return None if value is None else float(value)
