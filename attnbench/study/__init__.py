"""Study files: the YAML description of what to measure, validated in full before anything runs.

Three kinds, told apart by ``kind`` (docs/study-files.md is the reference of every key):

- ``sweep`` (the default): mechanisms over a product of shapes -> :class:`Study`;
- ``models``: whole timm models beside their published numbers -> :class:`ModelsStudy`;
- ``ablation`` (the default when ``measure`` lists ``accuracy`` or a ``dataset`` is given): one
  backbone trained per mechanism -> :class:`AblationStudy`;
- ``peers``: each mechanism timed against other implementations of it -> :class:`PeersStudy`.

The schema is pydantic v2 models (one module per kind); :func:`json_schema` publishes it as JSON
Schema, each registered mechanism's parameters included, so that an editor validates and
completes a study file (``# yaml-language-server: $schema=study.schema.json``). Every problem
is reported at once, one line each, as ``FILE:LINE: KEY: message`` (e.g.
``studies/x.yaml:12: mechanisms[1].params.topk: ...``) in a :class:`StudyError`: the file is read
with line numbers (:mod:`._yaml`) and each pydantic error's ``loc`` is looked up there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Discriminator, Tag, TypeAdapter, ValidationError

from attnbench.study._ablation import MEASURES as ABLATION_MEASURES
from attnbench.study._ablation import AblationFile, AblationStudy, trains
from attnbench.study._fields import message_of
from attnbench.study._header import DEVICES, DTYPES, KINDS, resolve_device
from attnbench.study._mechanisms import MechanismSpec
from attnbench.study._models import (
    COUNTED_KEYS,
    PUBLISHED_KEYS,
    REFERENCE_RESOLUTION,
    ModelsFile,
    ModelSpec,
    ModelsStudy,
)
from attnbench.study._peers import PeerPoint, PeersFile, PeersStudy, Shape
from attnbench.study._sweep import MEASURES, PASSES, Point, Study, SweepFile
from attnbench.study._yaml import locate, read

__all__ = [
    "ABLATION_MEASURES",
    "COUNTED_KEYS",
    "DEVICES",
    "DTYPES",
    "KINDS",
    "MEASURES",
    "PASSES",
    "PUBLISHED_KEYS",
    "REFERENCE_RESOLUTION",
    "AblationStudy",
    "MechanismSpec",
    "ModelSpec",
    "ModelsStudy",
    "PeerPoint",
    "PeersStudy",
    "Point",
    "Shape",
    "Study",
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


def _kind(data: Any) -> str:
    """The kind a parsed study file is validated as: its ``kind``, else ablation for a file that
    trains, else sweep (whose schema then names an unknown ``kind``)."""
    if not isinstance(data, dict):
        return "sweep"
    kind = data.get("kind")
    if isinstance(kind, str) and kind in KINDS:
        return kind
    return "ablation" if trains(data) else "sweep"


StudyFile = Annotated[
    Annotated[SweepFile, Tag("sweep")]
    | Annotated[ModelsFile, Tag("models")]
    | Annotated[AblationFile, Tag("ablation")]
    | Annotated[PeersFile, Tag("peers")],
    Discriminator(_kind),
]
_STUDY_FILE: TypeAdapter[Any] = TypeAdapter(StudyFile)


def load_study(
    path: str | Path, *, device: str | None = None
) -> Study | ModelsStudy | AblationStudy | PeersStudy:
    """Read and validate a study file; loads its plugins (they register mechanisms).

    Nothing is written: plugins are imported without bytecode, a mechanism is built on CPU for
    each parameter combination, a models study builds each model that has kwargs, an ablation
    study its backbone.

    Args:
        path: the YAML file; messages name it as given.
        device: overrides the study's ``device`` (the CLI's ``--device``).

    Raises:
        StudyError: with every problem found, one line each, in the order of the file.
    """
    shown = str(path)
    path = Path(path)
    root, text, problems = read(path)
    if root is not None:
        try:
            checked = _STUDY_FILE.validate_python(root, context={"path": path, "device": device})
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
    schema = _STUDY_FILE.json_schema()
    return {
        "$schema": SCHEMA_DRAFT,
        "title": "attnbench study file",
        "description": "A sweep, models, ablation or peers study (docs/study-files.md). Generated by "
        "`attnbench schema`; mechanisms that plugins register are accepted by name.",
        **schema,
    }
