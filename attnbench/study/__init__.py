"""Study files: the YAML description of what to measure, validated in full before anything runs.

Each kind of study (``kind:``; docs/study-files.md is the reference of every key) brings its own
schema, in its package (``attnbench/kinds/<kind>/schema.py``, registered in :mod:`attnbench.kind`):

- ``sweep`` (the default): mechanisms over a product of shapes;
- ``models``: whole timm models beside their published numbers;
- ``ablation`` (the default when ``measure`` lists ``accuracy`` or a ``dataset`` is given): one
  backbone trained per mechanism;
- ``peers``: each mechanism timed against other implementations of it.

This package is what the kinds share: the loader, built from the registered kinds; the keys every
study has (:mod:`._header`); the mechanism entries (:mod:`._mechanisms`) and sweep axes
(:mod:`._axes`); the field types and their messages (:mod:`._fields`); the YAML reader with line
numbers (:mod:`._yaml`). The schema is pydantic v2 models; :func:`json_schema` publishes it as
JSON Schema, each registered mechanism's parameters included, so that an editor validates and
completes a study file (``# yaml-language-server: $schema=study.schema.json``). Every problem is
reported at once, one line each, as ``FILE:LINE: KEY: message`` (e.g.
``studies/x.yaml:12: mechanisms[1].params.topk: ...``) in a :class:`StudyError`: the file is read
with line numbers (:mod:`._yaml`) and each pydantic error's ``loc`` is looked up there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag, TypeAdapter, ValidationError

from attnbench.kind import KINDS, kind_module, study_kinds
from attnbench.study._fields import message_of
from attnbench.study._header import DEVICES, DTYPES, resolve_device
from attnbench.study._mechanisms import MechanismSpec
from attnbench.study._yaml import locate, read

__all__ = [
    "DEVICES",
    "DTYPES",
    "MechanismSpec",
    "StudyError",
    "json_schema",
    "load_study",
    "resolve_device",
]

SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"


class StudyError(Exception):
    """A study that cannot run; ``problems`` holds one ``FILE:LINE: KEY: message`` line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


_ADAPTERS: dict[tuple[tuple[str, str], ...], TypeAdapter[Any]] = {}


def _study_file() -> TypeAdapter[Any]:
    """The validator of a study file of any registered kind: the kinds' ``FILE`` models, told apart
    by ``kind`` (a file without one: the first kind whose ``claims`` takes it, else ``sweep``, whose
    schema then names an unknown ``kind``). Built once per state of the registry."""
    key = tuple(KINDS.items())
    if key not in _ADAPTERS:
        schemas = {name: kind_module(name, "schema") for name in study_kinds()}

        def which(data: Any) -> str:
            if not isinstance(data, dict):
                return "sweep"
            kind = data.get("kind")
            if isinstance(kind, str) and kind in schemas:
                return kind
            claimed = [n for n, m in schemas.items() if getattr(m, "claims", None) and m.claims(data)]
            return claimed[0] if claimed else "sweep"

        members = tuple(Annotated[m.FILE, Tag(n)] for n, m in schemas.items())
        _ADAPTERS[key] = TypeAdapter(Annotated[Union[members], Discriminator(which)])  # noqa: UP007
    return _ADAPTERS[key]


def load_study(path: str | Path, *, device: str | None = None) -> Any:
    """Read and validate a study file; loads its plugins (they register mechanisms).

    Nothing is written: plugins are imported without bytecode, a mechanism is built on CPU for
    each parameter combination, a models study builds each model that has kwargs, an ablation
    study its backbone.

    Args:
        path: the YAML file; messages name it as given.
        device: overrides the study's ``device`` (the CLI's ``--device``).

    Returns:
        The validated study of the file's kind (its schema's ``study(path, text)``).

    Raises:
        StudyError: with every problem found, one line each, in the order of the file.
    """
    shown = str(path)
    path = Path(path)
    root, text, problems = read(path)
    if root is not None:
        try:
            checked = _study_file().validate_python(root, context={"path": path, "device": device})
        except ValidationError as exc:
            for error in exc.errors():
                key, line = locate(root, error["loc"][1:])  # the first part is the kind's tag
                if device is not None and key == "device":
                    key = "--device"
                problems.append((line, f"{key}: {message_of(error)}" if key else message_of(error)))
    if problems:
        lines = (f"{shown}:{line}: {said}" for line, said in sorted(problems, key=lambda p: p[0]))
        raise StudyError(list(dict.fromkeys(lines)))
    return checked.study(path, text)


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a study file of any kind, with the parameters of every
    registered mechanism, for editors (``attnbench schema``; ``studies/study.schema.json``)."""
    schema = _study_file().json_schema()
    return {
        "$schema": SCHEMA_DRAFT,
        "title": "attnbench study file",
        "description": "A sweep, models, ablation or peers study (docs/study-files.md). Generated by "
        "`attnbench schema`; mechanisms that plugins register are accepted by name.",
        **schema,
    }
