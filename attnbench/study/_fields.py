"""What every study schema is made of: sections that word their own problems, and field types whose
problems read as attnbench's messages always have (``expected a positive int, got 'many' (str)``).

Pydantic checks the types, ranges, choices and unknown keys; the wrappers here only say pydantic's
verdict in the words of a study file. A problem is a pydantic error of type ``study`` whose context
holds the message; :func:`fail` raises several at once, each at its own ``loc``.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import reprlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal, NoReturn

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

__all__ = [
    "brief",
    "STUDY_ERROR",
    "NonNegativeInt",
    "OneOrMany",
    "OrName",
    "Percentage",
    "PositiveInt",
    "PositiveNumber",
    "Seconds",
    "Section",
    "Text",
    "choice",
    "choices",
    "details",
    "documented",
    "exception_text",
    "fail",
    "problem",
    "said",
    "shown",
    "suggest",
    "worded",
]

STUDY_ERROR = "study"
_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"}


def said(message: str) -> PydanticCustomError:
    """A problem at the place being validated (raise it from a validator)."""
    return PydanticCustomError(STUDY_ERROR, "{message}", {"message": message})


def problem(loc: Sequence[str | int], message: str, value: Any = None) -> InitErrorDetails:
    """A problem at ``loc`` below the place being validated."""
    return InitErrorDetails(type=said(message), loc=tuple(loc), input=value)


def fail(problems: Iterable[InitErrorDetails]) -> NoReturn:
    """Raise every problem at once (pydantic prefixes their locs with the place being validated)."""
    raise ValidationError.from_exception_data("study", list(problems))


def message_of(error: Mapping[str, Any]) -> str:
    """The words of one pydantic error: ours where we said it, pydantic's otherwise."""
    if error["type"] == STUDY_ERROR:
        return error["ctx"]["message"]
    return error["msg"]


def details(exc: ValidationError) -> list[InitErrorDetails]:
    """The errors of ``exc`` as problems, to raise with others."""
    return [problem(e["loc"], message_of(e), e.get("input")) for e in exc.errors()]


_BRIEF = reprlib.Repr()  # (keyword arguments only from Python 3.12)
_BRIEF.maxlevel, _BRIEF.maxlist, _BRIEF.maxdict, _BRIEF.maxtuple = 2, 6, 4, 6
_BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxlong = 60, 60, 40


def brief(value: Any) -> str:
    """``repr(value)`` cut short (a few items, two levels, 60 characters a string): a message never
    spells out a value of unbounded size."""
    return _BRIEF.repr(value)


def shown(value: Any) -> str:
    """A value as a problem quotes it: ``'many' (str)``, ``a list [1, 2]``, ``a mapping``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return f"a list {brief(list(value))}"
    return f"{brief(value)} ({type(value).__name__})"


def exception_text(exc: BaseException) -> str:
    """``TypeError: ...`` on one line."""
    return f"{type(exc).__name__}: {exc}".replace("\r", " ").replace("\n", " ")


def documented(obj: Any, section: str = "Args:") -> dict[str, str]:
    """``{name: text}`` from a section (``Args:``, ``Attributes:``) of a Google-style docstring."""
    docs: dict[str, str] = {}
    lines = (inspect.getdoc(obj) or "").splitlines()
    if section not in lines:
        return docs
    name = None
    for line in lines[lines.index(section) + 1 :]:
        if line and not line.startswith(" "):
            break  # the next section
        match = re.match(r"^    (\w+):\s*(.*)$", line)
        if match:
            name = match.group(1)
            docs[name] = match.group(2)
        elif name and line.strip():
            docs[name] += " " + line.strip()
    return docs


def suggest(word: Any, options: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the closest option, or nothing."""
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def worded(what: str | Callable[[Any], str], *, must: bool = False) -> WrapValidator:
    """Say pydantic's verdict on a single value as ``expected {what}, got {value}``; with ``must``, a
    value of the right type out of range as ``must be {what}, got {value}``. ``what`` may be a
    function of the value that returns the whole message."""

    def reword(value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            errors = exc.errors()
            if any(e["loc"] for e in errors) or all(e["type"] == STUDY_ERROR for e in errors):
                raise  # problems of the items, or ours: said already
            if callable(what):
                raise said(what(value)) from None
            if errors[0]["type"] in _RANGE_ERRORS:  # the type is right: the value says enough
                raise said(f"{'must be' if must else 'expected'} {what}, got {brief(value)}") from None
            raise said(f"expected {what}, got {shown(value)}") from None

    return WrapValidator(reword)


INT_MAX = 2**31 - 1  # sizes, counts and steps go to torch as int32-safe numbers
SEED_MAX = 2**32 - 1  # numpy's legacy seeding takes at most 32 bits


def _int_words(what: str, high: int, must: bool) -> Callable[[Any], str]:
    """The message of an int field: the wrong type (expected ...), out of range below (``must``:
    must be ..., else expected ...) or above ``high`` (must be at most ...)."""

    def say(value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            if value > high:
                return f"must be at most {high:,}, got {brief(value)}"
            return f"{'must be' if must else 'expected'} {what}, got {value}"
        return f"expected {what}, got {shown(value)}"

    return say


PositiveInt = Annotated[
    int, Field(strict=True, gt=0, le=INT_MAX), worded(_int_words("a positive int", INT_MAX, must=True))
]
NonNegativeInt = Annotated[
    int, Field(strict=True, ge=0, le=SEED_MAX), worded(_int_words("an int >= 0", SEED_MAX, must=False))
]
Seconds = Annotated[
    float, Field(strict=True, gt=0, allow_inf_nan=False), worded("a positive number of seconds or null")
]
PositiveNumber = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False), worded("a positive number")]
Percentage = Annotated[float, Field(strict=True, gt=0, le=100), worded("a percentage in (0, 100]")]
Text = Annotated[str, Field(strict=True), worded("text")]


def choice(
    options: Sequence[str],
    *,
    hints: Mapping[str, str] | None = None,
    listed: Sequence[str] | Callable[[], Sequence[str]] = (),
) -> Any:
    """One of ``options`` (a ``Literal``); a problem lists ``listed`` (default: the options; a
    function is called then) and the closest, or the ``hints`` entry of the value (``{"gpu": "cuda"}``)."""

    def reword(value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(value)
        except ValidationError:
            names = list((listed() if callable(listed) else listed) or options)
            hint = ""
            if isinstance(value, str):
                close = (hints or {}).get(value)
                hint = f"; did you mean {close!r}?" if close else suggest(value, names)
            raise said(f"{brief(value)} is not one of {names}{hint}") from None

    return Annotated[Literal[tuple(options)], WrapValidator(reword)]  # type: ignore[valid-type]


def choices(options: Sequence[str]) -> Any:
    """A list of ``options`` (or one of them), each at most once."""
    return Annotated[list[choice(options)], OneOrMany(f"choose from {list(options)}", repeats="error")]


@dataclasses.dataclass(frozen=True)
class OneOrMany:
    """``Annotated[list[X], OneOrMany(...)]``: a list, or a single X standing for a one-item list;
    the validated value is a tuple (a study is frozen, and its values key its points).

    Args:
        empty: what to give instead of an empty list (``give at least one positive int``).
        repeats: ``drop`` repeated items, make each a problem (``error``), or ``keep`` them.
    """

    empty: str
    repeats: Literal["drop", "error", "keep"] = "drop"

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_wrap_validator_function(self._validate, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        array = {**handler(schema), "minItems": 1}
        return {"anyOf": [array["items"], array]}

    def _validate(self, value: Any, handler: Callable[[Any], Any]) -> tuple[Any, ...]:
        if not isinstance(value, list):
            value = [value]
        elif not value:
            raise said(f"is an empty list; {self.empty}")
        items = handler(value)
        if self.repeats == "drop":
            return tuple(dict.fromkeys(items))
        if self.repeats == "error":
            seen: set[Any] = set()
            twice = []
            for i, item in enumerate(items):
                if item in seen:
                    twice.append(problem((i,), f"{brief(item)} is listed twice", item))
                seen.add(item)
            if twice:
                fail(twice)
        return tuple(items)


@dataclasses.dataclass(frozen=True)
class OrName:
    """``Annotated[SomeSection, OrName("...")]``: in the JSON Schema, a bare name may stand for the
    section (its :meth:`Section.shorthand` makes the mapping)."""

    description: str

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return {"anyOf": [{"type": "string", "description": self.description}, handler(schema)]}


class Section(BaseModel):
    """A mapping of a study file: unknown keys are problems, and so are a missing required key and
    anything that is not a mapping, each said in the section's own words.

    Subclasses set ``what`` (what the section is, for ``expected {what}, got ...``), ``say_missing``
    (per required key, what to say when it is left out), ``key_hints`` (per unknown key, a better
    hint than the closest name) and may override :meth:`shorthand`, :meth:`prepare` and
    :meth:`inspect`.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    what: ClassVar[str] = "a mapping"
    say_missing: ClassVar[Mapping[str, str]] = {}
    key_hints: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def shorthand(cls, data: Any) -> Any:
        """The mapping a value stands for (a bare name for ``{name: ...}``), or the value."""
        return data

    @classmethod
    def prepare(cls, data: dict[Any, Any], info: ValidationInfo) -> dict[Any, Any]:
        """The mapping to validate (a copy of the file's; defaults that depend on the context)."""
        return data

    @classmethod
    def inspect(cls, data: dict[Any, Any], info: ValidationInfo) -> list[InitErrorDetails]:
        """Problems of the mapping as a whole, found whatever else is wrong with it."""
        return []

    @classmethod
    def unknown_key(cls, key: Any) -> str:
        allowed = list(cls.model_fields)
        hint = cls.key_hints.get(key) or suggest(key, allowed)
        return f"unknown key{hint} (allowed: {', '.join(allowed)})"

    @model_validator(mode="wrap")
    @classmethod
    def _word_problems(cls, data: Any, handler: Callable[[Any], Any], info: ValidationInfo) -> Any:
        if isinstance(data, cls):
            return data
        data = cls.shorthand(data)
        if not isinstance(data, dict):
            raise said(f"expected {cls.what}, got {shown(data)}")
        data = cls.prepare(dict(data), info)
        found = cls.inspect(data, info)
        try:
            section = handler(data)
        except ValidationError as exc:
            fail([*found, *(cls._reworded(e) for e in exc.errors())])
        if found:
            fail(found)
        return section

    @classmethod
    def _reworded(cls, error: Mapping[str, Any]) -> InitErrorDetails:
        loc = error["loc"]
        if error["type"] == "extra_forbidden" and len(loc) == 1:
            return problem(loc, cls.unknown_key(loc[0]), error.get("input"))
        if error["type"] == "missing" and len(loc) == 1:
            return problem(loc, cls.say_missing.get(str(loc[0]), "missing"))
        return problem(loc, message_of(error), error.get("input"))
