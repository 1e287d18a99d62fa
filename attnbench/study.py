"""Study files: the YAML description of a sweep, validated in full before anything runs.

A study (``studies/complexity.yaml`` is the reference)::

    name: complexity          # output folder results/<name>/; default: the file's stem
    description: free text
    kind: sweep               # the default; `models`: a models table (attnbench.model_study);
                              # `ablation`: trains (attnbench.ablation_study)
    device: auto              # auto (cuda if available) | cpu | cuda
    dtype: float32            # float32 | bfloat16 | float16 (not on CPU), or a list of them
    batch: 1                  # a positive int or a list of them
    measure: [flops, params, latency, memory]
    passes: [forward, forward_backward]   # default: [forward]
    repeats: 20               # timing samples per point and pass, after warmup
    warmup: 3                 # untimed calls before sampling
    max_time_s: 10            # optional: stop warm-up (>= 1 call) and sampling (>= 3) once spent
    threads: 2                # CPU intra-op threads; default: all physical cores
    seed: 0                   # weights and inputs
    sweep:                    # the product of the axes
      resolution: [28, 56]    # H = W; an item may be [H, W]; or give both H: [...] and W: [...]
      dim: [64]
      num_heads: [2]
    mechanisms:               # each multiplies in the product of its own params lists
      - name: vanilla         # (or just "- vanilla")
      - name: bra
        params: {n_win: [4, 7, 8], topk: [1, 4, 16]}
      - name: bra             # an entry's own sweep axes replace the study's (paired settings)
        sweep: {resolution: [14], dim: [256], num_heads: [8]}
        params: {topk: 16}
    plugins: [my_attention.py]   # .py files registering mechanisms, relative to the study file

Every problem is reported at once, one line each, as ``FILE:LINE: KEY: message`` (e.g.
``studies/x.yaml:12: mechanisms[1].params.topk: ...``) in a :class:`StudyError`.
Mechanism parameters are checked by name and type (:func:`attnbench.registry.validate_params`)
and by building the mechanism on CPU for every combination; a combination that cannot be built
for any ``(dim, num_heads)`` of the sweep is an error, one that fails only for some becomes
skipped points at run time.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from attnbench.registry import (
    available_mechanisms,
    build_mechanism,
    get_mechanism,
    load_plugin,
    validate_params,
)

if TYPE_CHECKING:
    from attnbench.ablation_study import AblationStudy
    from attnbench.model_study import ModelsStudy

__all__ = ["MechanismSpec", "Point", "Study", "StudyError", "load_study", "resolve_device"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MEASURES = ("flops", "params", "latency", "memory")
PASSES = ("forward", "forward_backward")
DEVICES = ("auto", "cpu", "cuda")
TOP_KEYS = (
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
    "sweep",
    "mechanisms",
    "plugins",
)
STUDY_KINDS = ("sweep", "models", "ablation")  # models: attnbench.model_study; ablation: .ablation_study
SWEEP_KEYS = ("resolution", "H", "W", "dim", "num_heads")
MECHANISM_KEYS = ("name", "params", "sweep")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PARAM_IN_MESSAGE = re.compile(r"parameter '(\w+)'")


class StudyError(Exception):
    """A study that cannot run; ``problems`` holds one ``FILE:LINE: KEY: message`` line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# ---------------------------------------------------------------------------------------------
# YAML with line numbers


class _Map(dict):
    """A YAML mapping that remembers its line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[Any, int]

    def line_of(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)


class _Seq(list):
    """A YAML sequence that remembers its line and the line of each item (1-based)."""

    line: int = 0
    item_lines: list[int]


def _empty_map(line: int) -> _Map:
    data = _Map()
    data.line, data.key_lines = line, {}
    return data


class _LineLoader(yaml.SafeLoader):
    """SafeLoader building :class:`_Map` / :class:`_Seq` and noting duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, Any]] = []


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    data = _Map()
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


def _construct_seq(loader: _LineLoader, node: yaml.SequenceNode) -> _Seq:
    data = _Seq(loader.construct_object(child, deep=True) for child in node.value)
    data.line = node.start_mark.line + 1
    data.item_lines = [child.start_mark.line + 1 for child in node.value]
    return data


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)


# ---------------------------------------------------------------------------------------------
# The validated study


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


@dataclasses.dataclass(frozen=True)
class Point:
    """One configuration to measure (each is measured once per pass)."""

    mechanism: str
    params: tuple[tuple[str, Any], ...]  # as given in the study; defaults fill the rest
    H: int
    W: int
    dim: int
    num_heads: int
    batch: int
    dtype: str

    def full_params(self) -> dict[str, Any]:
        """Every hyper-parameter of the mechanism: the study's values over the defaults."""
        declared = get_mechanism(self.mechanism).hyperparameters()
        return {**{k: p.default for k, p in declared.items()}, **dict(self.params)}

    @property
    def label(self) -> str:
        params = " ".join(f"{k}={v}" for k, v in self.params)
        head = f"{self.mechanism} {params}".strip()
        return f"{head} | {self.H}x{self.W} C{self.dim} h{self.num_heads} b{self.batch} {self.dtype}"


@dataclasses.dataclass(frozen=True)
class Study:
    """A validated study file."""

    path: Path
    name: str
    description: str
    device: str  # resolved: "cpu" or "cuda"
    requested_device: str
    dtypes: tuple[str, ...]
    batches: tuple[int, ...]
    measure: tuple[str, ...]
    passes: tuple[str, ...]
    repeats: int
    warmup: int
    max_time_s: float | None
    threads: int | None
    seed: int
    resolutions: tuple[tuple[int, int], ...]
    dims: tuple[int, ...]
    heads: tuple[int, ...]
    mechanisms: tuple[MechanismSpec, ...]
    plugins: tuple[Path, ...]
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def points(self) -> list[Point]:
        """The product of the sweep axes and each mechanism's parameter grid, in run order."""
        out: list[Point] = []
        for spec in self.mechanisms:
            for params in spec.combinations():
                frozen = tuple(params.items())
                for dtype, batch, dim, heads, (H, W) in itertools.product(
                    self.dtypes,
                    self.batches,
                    spec.dims or self.dims,
                    spec.heads or self.heads,
                    spec.resolutions or self.resolutions,
                ):
                    out.append(Point(spec.name, frozen, H, W, dim, heads, batch, dtype))
        return out


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; others unchanged."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def _suggest(word: Any, options: list[str]) -> str:
    close = difflib.get_close_matches(str(word), options, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Checker:
    """Collects ``FILE:LINE: KEY: message`` problems while reading a study."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[str] = []

    def add(self, line: int, key: str, message: str) -> None:
        entry = f"{self.file}:{line}: {key}: {message}" if key else f"{self.file}:{line}: {message}"
        if entry not in self.problems:
            self.problems.append(entry)

    def items(self, node: Any, line: int) -> Iterator[tuple[Any, int, str]]:
        """(value, line, index suffix) for a scalar-or-list value."""
        if isinstance(node, _Seq):
            for i, (value, item_line) in enumerate(zip(node, node.item_lines)):
                yield value, item_line, f"[{i}]"
        elif isinstance(node, list):  # a default given in code, not read from YAML
            for i, value in enumerate(node):
                yield value, line, f"[{i}]"
        else:
            yield node, line, ""

    def positive_ints(self, node: Any, line: int, key: str, *, allow_list: bool = True) -> list[int]:
        if isinstance(node, _Seq) and not node:
            self.add(line, key, "is an empty list; give at least one positive int")
            return []
        if isinstance(node, _Seq) and not allow_list:
            self.add(line, key, f"expected a positive int, got a list {list(node)}")
            return []
        out = []
        for value, item_line, idx in self.items(node, line):
            if not _is_int(value):
                self.add(item_line, key + idx, f"expected a positive int, got {value!r} ({_type(value)})")
            elif value <= 0:
                self.add(item_line, key + idx, f"must be a positive int, got {value}")
            else:
                out.append(value)
        return out

    def choices(self, node: Any, line: int, key: str, allowed: tuple[str, ...]) -> list[str]:
        if isinstance(node, _Seq) and not node:
            self.add(line, key, f"is an empty list; choose from {list(allowed)}")
            return []
        out = []
        for value, item_line, idx in self.items(node, line):
            if value not in allowed:
                hint = _suggest(value, list(allowed)) if isinstance(value, str) else ""
                self.add(item_line, key + idx, f"{value!r} is not one of {list(allowed)}{hint}")
            elif value in out:
                self.add(item_line, key + idx, f"{value!r} is listed twice")
            else:
                out.append(value)
        return out

    def unknown_keys(self, node: _Map, allowed: tuple[str, ...], prefix: str, hints: dict[str, str]) -> None:
        for key in node:
            if key not in allowed:
                where = f"{prefix}.{key}" if prefix else str(key)
                hint = hints.get(key) or _suggest(key, list(allowed))
                self.add(node.line_of(key), where, f"unknown key{hint} (allowed: {', '.join(allowed)})")


def _read_yaml(path: Path, shown: str) -> tuple[_Map | None, str, list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, "", [f"{shown}:0: cannot read the study file: {exc}"]
    loader = _LineLoader(text)
    try:
        root = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        detail = f"{context}, {problem}" if context else problem
        return None, text, [f"{shown}:{line}: YAML syntax error: {detail}"]
    finally:
        loader.dispose()
    if not isinstance(root, _Map):
        return (
            None,
            text,
            [f"{shown}:1: the study must be a YAML mapping of keys (name, sweep, mechanisms, ...)"],
        )
    problems = [
        f"{shown}:{line}: {key}: duplicate key (the later value would win)" for line, key in loader.duplicates
    ]
    return root, text, problems


def check_header(root: _Map, path: Path, c: _Checker, device: str | None) -> tuple[str, str, str, str]:
    """``name``, ``description`` and the device of any kind of study: (name, description, resolved
    device, requested device); ``device`` overrides the study's (the CLI's ``--device``)."""
    name, line = root.get("name", path.stem), root.line_of("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        c.add(line, "name", f"{name!r} must be a folder-safe name (letters, digits, '.', '_', '-')")
    description, line = root.get("description", ""), root.line_of("description")
    if not isinstance(description, str):
        c.add(line, "description", f"expected text, got {_type(description)}")
    requested, line = root.get("device", "auto"), root.line_of("device")
    where = "device"
    if device is not None:
        requested, where = device, "--device"
    resolved = "cpu"
    if requested not in DEVICES:
        hint = "; did you mean 'cuda'?" if requested == "gpu" else _suggest(requested, list(DEVICES))
        c.add(line, where, f"{requested!r} is not one of {list(DEVICES)}{hint}")
    else:
        resolved = resolve_device(requested)
        if resolved == "cuda" and not torch.cuda.is_available():
            c.add(line, where, "cuda was asked for but torch.cuda.is_available() is False; use auto or cpu")
    return name, description, resolved, requested


def check_threads_and_seed(root: _Map, c: _Checker) -> tuple[int | None, int]:
    """``threads`` (None: all physical cores) and ``seed`` of any kind of study."""
    threads, line = root.get("threads", None), root.line_of("threads")
    if threads is not None:
        threads = (c.positive_ints(threads, line, "threads", allow_list=False) or [None])[0]
    seed, line = root.get("seed", 0), root.line_of("seed")
    if not _is_int(seed) or seed < 0:
        c.add(line, "seed", f"expected an int >= 0, got {seed!r}")
        seed = 0  # reported above; a placeholder so later checks can go on
    return threads, seed


def check_timing(root: _Map, c: _Checker) -> tuple[int, int, float | None]:
    """``repeats``, ``warmup`` and ``max_time_s`` (None: no budget) of any study that times."""
    node, line = root.get("repeats", 20), root.line_of("repeats")
    repeats = (c.positive_ints(node, line, "repeats", allow_list=False) or [20])[0]
    warmup, line = root.get("warmup", 3), root.line_of("warmup")
    if not _is_int(warmup) or warmup < 0:
        c.add(line, "warmup", f"expected an int >= 0, got {warmup!r}")
    max_time_s, line = root.get("max_time_s", None), root.line_of("max_time_s")
    if max_time_s is not None and (
        isinstance(max_time_s, bool)
        or not isinstance(max_time_s, (int, float))
        or not math.isfinite(max_time_s)
        or max_time_s <= 0
    ):
        c.add(line, "max_time_s", f"expected a positive number of seconds or null, got {max_time_s!r}")
    return repeats, warmup, max_time_s


def load_study(path: str | Path, *, device: str | None = None) -> Study | ModelsStudy | AblationStudy:
    """Read and validate a study file; loads its plugins (they register mechanisms).

    ``kind: models`` files (whole models, :mod:`attnbench.model_study`) give a ``ModelsStudy``;
    studies measuring ``accuracy`` or naming a ``dataset`` (:mod:`attnbench.ablation_study`) an
    ``AblationStudy``.

    Args:
        path: the YAML file; messages name it as given.
        device: overrides the study's ``device`` (the CLI's ``--device``).

    Raises:
        StudyError: with every problem found, one line each.
    """
    shown = str(path)
    path = Path(path)
    root, text, problems = _read_yaml(path, shown)
    if root is None:
        raise StudyError(problems)
    kind = root.get("kind", "sweep")
    if kind == "models":  # whole models beside published numbers: attnbench.model_study
        from attnbench.model_study import check_models_study

        return check_models_study(path, shown, root, text, problems, device=device)
    from attnbench.ablation_study import is_ablation_study

    if kind == "ablation" or is_ablation_study(root):  # trains: attnbench.ablation_study
        from attnbench.ablation_study import check_ablation_study

        return check_ablation_study(path, shown, root, text, problems, device=device)
    c = _Checker(shown)
    c.problems.extend(problems)
    c.unknown_keys(root, TOP_KEYS, "", {})
    if kind not in STUDY_KINDS:
        hint = _suggest(kind, list(STUDY_KINDS)) if isinstance(kind, str) else ""
        c.add(root.line_of("kind"), "kind", f"{kind!r} is not one of {list(STUDY_KINDS)}{hint}")

    def get(key: str, default: Any) -> tuple[Any, int]:
        return root.get(key, default), root.line_of(key)

    name, description, resolved, requested = check_header(root, path, c, device)
    node, line = get("dtype", "float32")
    dtypes = c.choices(node, line, "dtype", tuple(DTYPES))
    if resolved == "cpu" and "float16" in dtypes:
        c.add(
            line,
            "dtype",
            "float16 is not supported on CPU (the device resolves to cpu); use bfloat16 or float32",
        )

    # protocol
    node, line = get("batch", 1)
    batches = c.positive_ints(node, line, "batch")
    node, line = get("measure", list(MEASURES))
    measure = c.choices(node, line, "measure", MEASURES)
    node, line = get("passes", ["forward"])
    passes = c.choices(node, line, "passes", PASSES)
    repeats, warmup, max_time_s = check_timing(root, c)
    threads, seed = check_threads_and_seed(root, c)

    resolutions, dims, heads = _check_sweep(root, c)
    before = len(c.problems)
    plugins = _load_plugins(root, path, c)
    mechanisms = _check_mechanisms(root, c, dims, heads, plugin_failed=len(c.problems) > before)

    if c.problems:
        raise StudyError(c.problems)
    return Study(
        path=path,
        name=name,
        description=description,
        device=resolved,
        requested_device=requested,
        dtypes=tuple(dtypes),
        batches=tuple(batches),
        measure=tuple(measure),
        passes=tuple(passes),
        repeats=repeats,
        warmup=warmup,
        max_time_s=None if max_time_s is None else float(max_time_s),
        threads=threads,
        seed=seed,
        resolutions=tuple(resolutions),
        dims=tuple(dims),
        heads=tuple(heads),
        mechanisms=tuple(mechanisms),
        plugins=tuple(plugins),
        text=text,
    )


def _check_sweep(
    root: _Map, c: _Checker, prefix: str = "sweep", partial: bool = False
) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """The sweep axes under ``root["sweep"]``; with ``partial`` (a mechanism's own ``sweep:``) any
    axis may be left out, and comes back empty (the study's applies)."""
    if "sweep" not in root:
        c.add(root.line, prefix, "missing; give resolution (or H and W), dim and num_heads")
        return [], [], []
    sweep = root["sweep"]
    line = root.line_of("sweep")
    if not isinstance(sweep, _Map):
        c.add(line, prefix, f"expected a mapping of axes ({', '.join(SWEEP_KEYS)}), got {_type(sweep)}")
        return [], [], []
    hints = {k: f"; {k!r} is a top-level key, not a sweep axis" for k in TOP_KEYS}
    c.unknown_keys(sweep, SWEEP_KEYS, prefix, hints)

    resolutions: list[tuple[int, int]] = []
    if "resolution" in sweep:
        if "H" in sweep or "W" in sweep:
            c.add(
                sweep.line_of("resolution"),
                f"{prefix}.resolution",
                "give either resolution or H and W, not both",
            )
        node, rline = sweep["resolution"], sweep.line_of("resolution")
        if isinstance(node, _Seq) and not node:
            c.add(rline, f"{prefix}.resolution", "is an empty list; give at least one positive int")
        for value, item_line, idx in c.items(node, rline):
            key = f"{prefix}.resolution" + idx
            if isinstance(value, _Seq):
                sizes = c.positive_ints(value, item_line, key)
                if len(value) != 2:
                    c.add(item_line, key, f"an [H, W] pair needs two ints, got {list(value)}")
                elif len(sizes) == 2:
                    resolutions.append((sizes[0], sizes[1]))
            else:
                resolutions.extend((s, s) for s in c.positive_ints(value, item_line, key))
    elif "H" in sweep or "W" in sweep:
        if "H" not in sweep or "W" not in sweep:
            c.add(sweep.line, prefix, "give both H and W (their product is swept), or resolution")
        Hs = c.positive_ints(sweep.get("H", []), sweep.line_of("H"), f"{prefix}.H") if "H" in sweep else []
        Ws = c.positive_ints(sweep.get("W", []), sweep.line_of("W"), f"{prefix}.W") if "W" in sweep else []
        resolutions = list(itertools.product(Hs, Ws))
    elif not partial:
        c.add(sweep.line, f"{prefix}.resolution", "missing; give resolution (H = W) or both H and W")
    resolutions = list(dict.fromkeys(resolutions))

    axes = []
    for key in ("dim", "num_heads"):
        if key not in sweep:
            if not partial:
                c.add(sweep.line, f"{prefix}.{key}", "missing; give a positive int or a list of them")
            axes.append([])
        else:
            values = c.positive_ints(sweep[key], sweep.line_of(key), f"{prefix}.{key}")
            axes.append(list(dict.fromkeys(values)))
    dims, heads = axes
    if dims and heads and not any(d % h == 0 for d in dims for h in heads):
        c.add(
            sweep.line_of("num_heads"),
            f"{prefix}.num_heads",
            f"no num_heads in {heads} divides a dim in {dims}",
        )
    return resolutions, dims, heads


def _load_plugins(root: _Map, study_path: Path, c: _Checker) -> list[Path]:
    node, line = root.get("plugins"), root.line_of("plugins")
    if node is None:
        return []
    if not isinstance(node, _Seq):
        c.add(line, "plugins", f"expected a list of .py files, got {_type(node)}")
        return []
    out = []
    for i, (value, item_line) in enumerate(zip(node, node.item_lines)):
        key = f"plugins[{i}]"
        if not isinstance(value, str):
            c.add(item_line, key, f"expected a path to a .py file, got {_type(value)}")
            continue
        plugin = Path(value).expanduser()
        if not plugin.is_absolute():
            plugin = study_path.parent / plugin
        try:
            _import_without_bytecode(plugin)
        except ValueError as exc:
            c.add(item_line, key, f"{exc} (relative paths start at the study file's folder)")
            continue
        except Exception as exc:  # noqa: BLE001 - a plugin's import error is a study problem
            c.add(item_line, key, f"importing {value!r} failed: {type(exc).__name__}: {exc}")
            continue
        out.append(plugin.resolve())
    return out


def _import_without_bytecode(plugin: Path) -> None:
    """Load a plugin without leaving ``__pycache__`` next to it (validation writes nothing)."""
    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        load_plugin(plugin)
    finally:
        sys.dont_write_bytecode = before


def _check_mechanisms(
    root: _Map, c: _Checker, dims: list[int], heads: list[int], plugin_failed: bool
) -> list[MechanismSpec]:
    if "mechanisms" not in root:
        c.add(root.line, "mechanisms", "missing; list at least one mechanism (see `attnbench list`)")
        return []
    node, line = root["mechanisms"], root.line_of("mechanisms")
    if not isinstance(node, _Seq) or not node:
        c.add(line, "mechanisms", "expected a non-empty list of mechanisms (- name: bra)")
        return []
    names = available_mechanisms()
    sweep = root.get("sweep")
    axis_lines = {k: sweep.line_of(k) if isinstance(sweep, _Map) else line for k in ("dim", "num_heads")}
    specs = []
    for i, (entry, item_line) in enumerate(zip(node, node.item_lines)):
        key = f"mechanisms[{i}]"
        if isinstance(entry, str):
            entry_name, name_line, params = entry, item_line, _empty_map(item_line)
        elif isinstance(entry, _Map):
            c.unknown_keys(entry, MECHANISM_KEYS, key, {})
            own = ([], [], [])
            if "sweep" in entry:
                own = _check_sweep(entry, c, f"{key}.sweep", partial=True)
            if "name" not in entry:
                c.add(entry.line, key, "missing 'name'")
                continue
            entry_name, name_line = entry["name"], entry.line_of("name")
            params = entry.get("params")
            if params is None:
                params = _empty_map(entry.line)
            if not isinstance(params, _Map):
                c.add(entry.line_of("params"), f"{key}.params", f"expected a mapping, got {_type(params)}")
                continue
        else:
            c.add(item_line, key, f"expected a mapping with 'name' (and 'params'), got {_type(entry)}")
            continue
        if not isinstance(entry_name, str) or entry_name not in names:
            hint = _suggest(entry_name, names) if isinstance(entry_name, str) else ""
            why = " (a plugin failed to load)" if plugin_failed else ""
            c.add(
                name_line,
                f"{key}.name",
                f"unknown mechanism {entry_name!r}{hint}{why} (registered: {', '.join(names)})",
            )
            continue
        if isinstance(entry, str):
            own = ([], [], [])
        own_res, own_dims, own_heads = own
        spec = _check_params(entry_name, params, key, c, own_dims or dims, own_heads or heads, axis_lines)
        if spec is not None:
            specs.append(
                dataclasses.replace(
                    spec,
                    resolutions=tuple(own_res) or None,
                    dims=tuple(own_dims) or None,
                    heads=tuple(own_heads) or None,
                )
            )
    return specs


def _check_params(
    name: str,
    params: _Map,
    key: str,
    c: _Checker,
    dims: list[int],
    heads: list[int],
    axis_lines: dict[str, int],
) -> MechanismSpec | None:
    declared = get_mechanism(name).hyperparameters()
    grid: list[tuple[str, tuple[Any, ...]]] = []
    ok = True
    for pname, node in params.items():
        pkey, pline = f"{key}.params.{pname}", params.line_of(pname)
        if isinstance(node, _Map):
            c.add(pline, pkey, "expected a value or a list of values, got a mapping")
            ok = False
            continue
        if isinstance(node, _Seq) and not node:
            c.add(pline, pkey, "is an empty list; give at least one value")
            ok = False
            continue
        if pname not in declared:
            try:
                validate_params(name, {pname: node})
            except ValueError as exc:
                c.add(pline, pkey, str(exc))
            ok = False
            continue
        values = []
        for value, item_line, idx in c.items(node, pline):
            if isinstance(value, (_Seq, _Map)):
                c.add(item_line, pkey + idx, "nested lists are not supported; a list sweeps the parameter")
                ok = False
                continue
            try:
                values.append(validate_params(name, {pname: value})[pname])
            except ValueError as exc:
                c.add(item_line, pkey + idx, str(exc))
                ok = False
        grid.append((str(pname), tuple(dict.fromkeys(values))))
    if not ok:
        return None
    spec = MechanismSpec(name, tuple(grid))
    if not dims or not heads:
        return spec
    for combo in spec.combinations():
        errors = []
        for dim, h in itertools.product(dims, heads):
            try:
                build_mechanism(name, dim, h, **combo)
            except ValueError as exc:
                errors.append(str(exc))
            except Exception as exc:  # noqa: BLE001 - a mechanism that cannot be built at all
                errors.append(f"building it failed: {type(exc).__name__}: {exc}")
            else:
                break
        else:  # no (dim, num_heads) of the sweep builds this combination
            message = errors[0]
            match = _PARAM_IN_MESSAGE.search(message)
            culprit = match.group(1) if match else None
            if culprit in params:
                where, line = f"{key}.params.{culprit}", params.line_of(culprit)
            elif culprit in axis_lines:
                where, line = f"sweep.{culprit}", axis_lines[culprit]
            else:
                where, line = key, params.line
            combo_text = ", ".join(f"{k}={v}" for k, v in combo.items())
            c.add(line, where, f"with {combo_text}: {message}" if len(combo) > 1 else message)
    return spec
