"""YAML with line numbers: every mapping and list remembers where its keys and items are, so that a
problem found by the schema (at a pydantic ``loc`` such as ``("mechanisms", 1, "params", "topk")``)
is reported at its line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Map", "Seq", "locate", "plain", "read"]


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


MAX_BYTES = 1 << 20  # a study file is a few kilobytes; the largest shipped one is under 10 kB
MAX_VALUES = 100_000  # values after YAML aliases are expanded (an alias bomb expands to billions)
MAX_DEPTH = 32  # nesting of mappings and lists (a study needs about 5)


def _text(path: Path) -> str:
    """The file's text, read only if it is a regular file of at most :data:`MAX_BYTES`.

    Raises:
        ValueError: it is not a regular file, too large, or not UTF-8 (the message says which).
        OSError: it cannot be read.
    """
    if not path.is_file():  # /dev/zero, a FIFO, a folder: nothing to read to the end of
        raise ValueError("it is not a regular file")
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ValueError(f"it is larger than {MAX_BYTES >> 20} MiB (a study file is a few kilobytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"it is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _size_and_depth(root: Any) -> tuple[int, int]:
    """The number of values ``root`` holds once every alias is expanded (capped just above
    :data:`MAX_VALUES`), and its nesting depth, without recursion: a value reached twice through
    YAML aliases counts each time, but is walked once."""
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    open_: set[int] = set()  # entered, not finished: met again below itself means a cycle
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if not isinstance(node, (dict, list)) or (id(node) in sizes and not done):
            continue
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else list(node)
        inner = [c for c in children if isinstance(c, (dict, list))]
        if not done:
            if id(node) in open_:
                return MAX_VALUES + 1, 0  # a value that holds itself (&a [*a]) expands without end
            open_.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in inner if id(c) not in sizes)
            if len(stack) > 4 * MAX_VALUES:
                return MAX_VALUES + 1, 0
            continue
        sizes[id(node)] = min(
            MAX_VALUES + 1, 1 + len(children) - len(inner) + sum(sizes.get(id(c), 1) for c in inner)
        )
        depths[id(node)] = 1 + max((depths.get(id(c), 0) for c in inner), default=0)
        open_.discard(id(node))
    if not isinstance(root, (dict, list)):
        return 1, 0
    return sizes[id(root)], depths[id(root)]


def read(path: Path) -> tuple[Map | None, str, list[tuple[int, str]]]:
    """(the root mapping or None, the text, problems as (line, text)) of a study file."""
    try:
        text = _text(path)
    except (OSError, ValueError) as exc:
        return None, "", [(0, f"cannot read the study file: {getattr(exc, 'strerror', None) or exc}")]
    loader = _LineLoader(text)
    try:
        root = loader.get_single_data()
    except RecursionError:
        return (
            None,
            text,
            [(0, f"the study is nested too deeply (a study needs about 5 levels; at most {MAX_DEPTH})")],
        )
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
    size, depth = _size_and_depth(root)
    if size > MAX_VALUES:
        return (
            None,
            text,
            [
                (
                    0,
                    f"the study expands to more than {MAX_VALUES:,} values (YAML anchors and aliases that "
                    "repeat each other?); a study holds a few hundred",
                )
            ],
        )
    if depth > MAX_DEPTH:
        return (
            None,
            text,
            [(0, f"the study is nested {depth} levels deep; at most {MAX_DEPTH} (a study needs about 5)")],
        )
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


def plain(value: Any) -> Any:
    """The file's line-numbered containers as plain dicts and lists (for JSON and timm)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
