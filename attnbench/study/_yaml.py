"""YAML with line numbers: every mapping and list remembers where its keys and items are, so that a
problem found by the schema (at a pydantic ``loc`` such as ``("mechanisms", 1, "params", "topk")``)
is reported at its line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Map", "Seq", "locate", "read"]


class Map(dict):
    """A YAML mapping that remembers its line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[Any, int]

    def line_of(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)


class Seq(list):
    """A YAML sequence that remembers its line and the line of each item (1-based)."""

    line: int = 0
    item_lines: list[int]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader building :class:`Map` / :class:`Seq` and noting duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, Any]] = []


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> Map:
    loader.flatten_mapping(node)
    data = Map()
    data.line, data.key_lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain scalar", key_node.start_mark
            )
        if key in data:
            loader.duplicates.append((key_node.start_mark.line + 1, key))
        data[key] = loader.construct_object(value_node, deep=True)
        data.key_lines[key] = key_node.start_mark.line + 1
    return data


def _construct_seq(loader: _LineLoader, node: yaml.SequenceNode) -> Seq:
    data = Seq(loader.construct_object(child, deep=True) for child in node.value)
    data.line = node.start_mark.line + 1
    data.item_lines = [child.start_mark.line + 1 for child in node.value]
    return data


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)


def read(path: Path) -> tuple[Map | None, str, list[tuple[int, str]]]:
    """(the root mapping or None, the text, problems as (line, text)) of a study file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, "", [(0, f"cannot read the study file: {exc}")]
    loader = _LineLoader(text)
    try:
        root = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        detail = f"{context}, {problem}" if context else problem
        return None, text, [(line, f"YAML syntax error: {detail}")]
    finally:
        loader.dispose()
    if not isinstance(root, Map):
        return None, text, [(1, "the study must be a YAML mapping of keys (name, sweep, mechanisms, ...)")]
    duplicates = [
        (line, f"{key}: duplicate key (the later value would win)") for line, key in loader.duplicates
    ]
    return root, text, duplicates


def locate(root: Map, loc: Sequence[str | int]) -> tuple[str, int]:
    """The key (``mechanisms[1].params.topk``) and line of a pydantic ``loc`` in the file ``root``.

    The line is that of the deepest key or item of ``loc`` the file has: a key the file leaves out
    (a missing one) is reported at the line of the mapping's own key. An index into a value that is
    not a list is dropped: a single value stands for a one-item list (``dtype: float32``), and its
    problems are the value's.
    """
    node: Any = root
    line = root.line
    found = True  # every part so far is in the file
    key = ""
    for part in loc:
        if isinstance(part, int):
            if found and isinstance(node, Seq) and 0 <= part < len(node):
                line, node = node.item_lines[part], node[part]
            elif found:
                continue  # an index into a single value
            key += f"[{part}]"
            continue
        if found and isinstance(node, Map) and part in node:
            line, node = node.line_of(part), node[part]
        else:
            found = False
        key += f".{part}" if key else str(part)
    return key, line
