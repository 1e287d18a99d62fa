"""Models studies (``kind: models``): whole timm models measured and set beside their published numbers.

A models study (``studies/paper_table.yaml`` is the reference)::

    name: paper_table
    kind: models
    resolution: 224          # square input side
    batch: 1                 # batch of the timed forward and the memory pass (FLOPs: batch 1)
    device: auto             # auto (cuda if available) | cpu | cuda
    dtype: float32           # float32 | bfloat16 | float16 (not on CPU)
    measure: [params, flops, latency, memory]
    repeats: 10              # timing samples per model, after warmup
    warmup: 3                # untimed forwards before sampling
    max_time_s: 20           # optional: stop sampling a model once this is spent (>= 3 samples)
    threads: 2               # CPU intra-op threads; default: all physical cores
    seed: 0                  # weights and input
    models:
      - name: biformer_tiny  # any timm.list_models() name (attnbench registers the seed models)
        family: "BiFormer (Zhu et al., CVPR 2023)"
        published: {params_m: 13.1, gflops: 2.2, top1: 81.4, source: "the README's table"}
        counted: {params_m: 13.14, gflops: 2.228, source: "fvcore on the released code"}
        kwargs: {bra_backend: sdpa}   # optional, passed to timm.create_model

``published`` and ``counted`` hold reference numbers, not measurements: ``params_m`` millions of
parameters, ``gflops`` GMACs (fvcore: one multiply-accumulate = one FLOP), ``top1`` ImageNet-1K
top-1 %, ``source`` where they come from (required with any number), ``resolution`` the input side
they are for (default 224; GMAC differences are computed only at the study's resolution).

Each model is one row of ``results.csv`` (inference: eval mode, ``torch.no_grad()``, pass
``forward``): params and FLOPs from :func:`attnbench.models.measure_model` (fvcore MACs of one
image in fp32 on CPU, with the seed models on BRA's ``reference`` backend), then the model is built
again, cast to the study's device and dtype, called once untimed (a failure there is an error row
without timing), timed with :func:`attnbench.timing.time_function` and its peak memory taken with
:func:`attnbench.memory.peak_memory`, as the sweep runner does for a mechanism. The row also
carries the reference numbers and the differences in % of ours against them.

The results store, resuming (by ``point_id``; ok rows are kept, error rows retried), error rows and
Ctrl-C (exit 130) behave as for sweep studies (:mod:`attnbench.runner`). Reference numbers are not
part of the ``point_id``: a resumed run refreshes them in the rows it keeps.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import timm
import torch
from tqdm import tqdm

from attnbench import __version__
from attnbench.environment import environment_id, environment_key
from attnbench.memory import METHODS as MEMORY_METHODS
from attnbench.memory import module_bytes, tensor_bytes
from attnbench.models.measure import SEED_MODELS, build_model, measure_model
from attnbench.results import LEADING_PARAM_COLUMNS, ResultsStore, move_aside
from attnbench.runner import (
    EXIT_INTERRUPTED,
    _free,
    _load_average,
    _message,
    _now,
    _write_report,
    default_run_dir,
    measure_speed,
    protocol,
)
from attnbench.study import (
    DTYPES,
    MEASURES,
    StudyError,
    _Checker,
    _Map,
    _Seq,
    _type,
    check_header,
    check_threads_and_seed,
    check_timing,
)
from attnbench.timing import fixed_threads

if TYPE_CHECKING:
    from attnbench.executors import Executor

__all__ = [
    "MODEL_COLUMNS",
    "MODEL_COLUMN_DOCS",
    "ModelResultsStore",
    "ModelSpec",
    "ModelsStudy",
    "check_models_study",
    "model_point_id",
    "run_models_study",
]

EXIT_BAD_INPUT = 2
TOP_KEYS = (
    "name",
    "description",
    "kind",
    "resolution",
    "batch",
    "device",
    "dtype",
    "measure",
    "repeats",
    "warmup",
    "max_time_s",
    "threads",
    "seed",
    "models",
)
MODEL_KEYS = ("name", "family", "published", "counted", "kwargs")
PUBLISHED_KEYS = ("params_m", "gflops", "top1", "source", "resolution")
COUNTED_KEYS = ("params_m", "gflops", "source", "resolution")
REFERENCE_RESOLUTION = 224
PASS = "forward"  # the issue asks for inference numbers

MODEL_COLUMN_DOCS = {
    "point_id": "hash of the model, its kwargs, resolution, batch, dtype, device, protocol and the "
    "environment key; the resume key",
    "env_id": "key into manifest.json 'environments'",
    "study": "study name",
    "model": "timm model name",
    "family": "the model's family and paper, as the study names it",
    "kwargs": "JSON of the extra timm.create_model keyword arguments ({} for none)",
    "resolution": "square input side (pixels)",
    "batch": "batch size of the timing and memory passes",
    "dtype": "dtype the model and input were cast to (no autocast)",
    "device": "cpu or cuda",
    "pass": "forward (eval, no_grad): inference",
    "status": "ok | error (message in error)",
    "error": "why the row failed; empty when ok",
    "params": "number of parameters (elements)",
    "params_m": "params / 1e6",
    "flops": "MACs of one forward at batch 1, fp32, CPU, fvcore convention (1 MAC = 1 FLOP); seed "
    "models counted on BRA's reference backend",
    "gflops": "flops / 1e9 (GMACs, the papers' 'GFLOPs')",
    "flops_torch": "torch FlopCounterMode total of the same forward, halved to MACs",
    "flops_uncounted": "JSON {operator: calls} that no FLOP handle counted (non-empty: flops may be low)",
    "latency_ms": "median of the timing samples, milliseconds, at the row's batch",
    "latency_iqr_ms": "inter-quartile range (p75 - p25) of the samples, milliseconds",
    "latency_n": "number of timing samples",
    "latency_samples_ms": "JSON list of every sample, milliseconds",
    "throughput": "images per second = batch / median latency",
    "peak_mem_mb": "peak memory of one forward in MiB (2^20 bytes), by mem_method",
    "mem_method": "how peak_mem_mb was measured (see manifest.json 'memory_methods')",
    "published_params_m": "published parameters, millions (study's 'published')",
    "published_gflops": "published GFLOPs = GMACs at published_resolution",
    "published_top1": "published ImageNet-1K top-1 %, not measured here",
    "published_source": "where the published numbers come from",
    "published_resolution": "input side the published numbers are for",
    "counted_params_m": "parameters counted on the released code, millions (study's 'counted')",
    "counted_gflops": "GMACs counted on the released code at counted_resolution",
    "counted_source": "who counted, with what, on which code",
    "counted_resolution": "input side the counted numbers are for",
    "params_diff_counted_pct": "100 * (params_m - counted_params_m) / counted_params_m",
    "gflops_diff_counted_pct": "100 * (gflops - counted_gflops) / counted_gflops; empty when the "
    "resolutions differ",
    "params_diff_published_pct": "100 * (params_m - published_params_m) / published_params_m",
    "gflops_diff_published_pct": "100 * (gflops - published_gflops) / published_gflops; empty when the "
    "resolutions differ",
    "timestamp": "UTC time the row was written",
}
MODEL_COLUMNS = list(MODEL_COLUMN_DOCS)


# ---------------------------------------------------------------------------------------------
# The validated study


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


@dataclasses.dataclass(frozen=True)
class ModelsStudy:
    """A validated ``kind: models`` study file."""

    path: Path
    name: str
    description: str
    device: str  # resolved: "cpu" or "cuda"
    requested_device: str
    resolution: int
    batch: int
    dtype: str
    measure: tuple[str, ...]
    repeats: int
    warmup: int
    max_time_s: float | None
    threads: int | None
    seed: int
    models: tuple[ModelSpec, ...]
    text: str
    kind: str = "models"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def _plain(value: Any) -> Any:
    """YAML's line-numbered containers as plain dicts and lists (for JSON and timm)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_models_study(
    path: Path, shown: str, root: _Map, text: str, problems: list[str], *, device: str | None = None
) -> ModelsStudy:
    """Validate a parsed ``kind: models`` study (called by :func:`attnbench.study.load_study`).

    Args:
        path: the study file.
        shown: the file as messages name it.
        root: the parsed YAML mapping.
        text: the file's text (hashed into the manifest).
        problems: problems found while parsing (duplicate keys), reported with the rest.
        device: overrides the study's ``device`` (the CLI's ``--device``).

    Raises:
        StudyError: with every problem found, one ``FILE:LINE: KEY: message`` line each.
    """
    c = _Checker(shown)
    c.problems.extend(problems)
    hints = {
        "sweep": "; a models study has no sweep (kind: models measures whole models)",
        "mechanisms": "; a models study lists 'models', not mechanisms",
        "passes": "; a models study measures the inference forward only",
        "plugins": "; a models study takes timm model names (import a module registering them instead)",
    }
    c.unknown_keys(root, TOP_KEYS, "", hints)

    def get(key: str, default: Any) -> tuple[Any, int]:
        return root.get(key, default), root.line_of(key)

    name, description, resolved, requested = check_header(root, path, c, device)
    dtype, line = get("dtype", "float32")
    if isinstance(dtype, _Seq):
        c.add(line, "dtype", f"expected one dtype of {list(DTYPES)}, got a list (one table, one dtype)")
        dtype = "float32"
    elif not c.choices(dtype, line, "dtype", tuple(DTYPES)):
        dtype = "float32"
    elif resolved == "cpu" and dtype == "float16":
        c.add(line, "dtype", "float16 is not supported on CPU (the device resolves to cpu); use bfloat16")

    sizes = {}
    for key in ("resolution", "batch"):
        node, line = get(key, REFERENCE_RESOLUTION if key == "resolution" else 1)
        sizes[key] = (c.positive_ints(node, line, key, allow_list=False) or [1])[0]
    node, line = get("measure", list(MEASURES))
    measure = c.choices(node, line, "measure", MEASURES)
    repeats, warmup, max_time_s = check_timing(root, c)
    threads, seed = check_threads_and_seed(root, c)

    models = _check_models(root, c)
    if c.problems:
        raise StudyError(c.problems)
    return ModelsStudy(
        path=path,
        name=name,
        description=description,
        device=resolved,
        requested_device=requested,
        resolution=sizes["resolution"],
        batch=sizes["batch"],
        dtype=dtype,
        measure=tuple(measure),
        repeats=repeats,
        warmup=warmup,
        max_time_s=None if max_time_s is None else float(max_time_s),
        threads=threads,
        seed=seed,
        models=tuple(models),
        text=text,
    )


def _check_models(root: _Map, c: _Checker) -> list[ModelSpec]:
    if "models" not in root:
        c.add(root.line, "models", "missing; list at least one model (- name: biformer_tiny)")
        return []
    node, line = root["models"], root.line_of("models")
    if not isinstance(node, _Seq) or not node:
        c.add(line, "models", "expected a non-empty list of models (- name: biformer_tiny)")
        return []
    known = timm.list_models()
    known_set = set(known)
    specs: list[ModelSpec] = []
    seen: dict[str, int] = {}
    for i, (entry, item_line) in enumerate(zip(node, node.item_lines)):
        key = f"models[{i}]"
        if isinstance(entry, str):
            entry = _Map({"name": entry})
            entry.line, entry.key_lines = item_line, {}
        if not isinstance(entry, _Map):
            c.add(item_line, key, f"expected a mapping with 'name' (or a model name), got {_type(entry)}")
            continue
        c.unknown_keys(entry, MODEL_KEYS, key, {})
        if "name" not in entry:
            c.add(entry.line, key, "missing 'name' (a timm model name)")
            continue
        name, name_line = entry["name"], entry.line_of("name")
        if not isinstance(name, str) or name not in known_set:
            close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(n) for n in close)}?" if close else ""
            c.add(
                name_line,
                f"{key}.name",
                f"unknown model {name!r}{hint} (any timm.list_models() name; attnbench adds "
                f"{', '.join(SEED_MODELS)})",
            )
            name = None
        family = entry.get("family", "")
        if not isinstance(family, str):
            c.add(entry.line_of("family"), f"{key}.family", f"expected text, got {_type(family)}")
        published = _check_reference(entry, "published", PUBLISHED_KEYS, key, c)
        counted = _check_reference(entry, "counted", COUNTED_KEYS, key, c)
        kwargs = entry.get("kwargs", {})
        kwargs_line = entry.line_of("kwargs")
        if not isinstance(kwargs, dict):
            c.add(
                kwargs_line,
                f"{key}.kwargs",
                f"expected a mapping of create_model arguments, got {_type(kwargs)}",
            )
            continue
        bad = [k for k in kwargs if not isinstance(k, str)]
        if bad:
            c.add(kwargs_line, f"{key}.kwargs", f"argument names must be text, got {bad}")
            continue
        if name is None:
            continue
        kwargs = _plain(kwargs)
        ident = json.dumps([name, kwargs], sort_keys=True, default=repr)
        if ident in seen:
            c.add(name_line, f"{key}.name", f"{name!r} with these kwargs is already models[{seen[ident]}]")
            continue
        seen[ident] = i
        if kwargs:
            _check_builds(name, kwargs, kwargs_line, f"{key}.kwargs", c)
        specs.append(
            ModelSpec(
                name=name,
                family=family if isinstance(family, str) else "",
                kwargs=tuple(sorted(kwargs.items())),
                published=published,
                counted=counted,
            )
        )
    return specs


def _check_reference(
    entry: _Map, section: str, allowed: tuple[str, ...], key: str, c: _Checker
) -> tuple[tuple[str, Any], ...]:
    """A ``published`` or ``counted`` mapping: positive numbers, top-1 in (0, 100], a source with them."""
    if section not in entry or entry[section] is None:
        return ()
    node, line, where = entry[section], entry.line_of(section), f"{key}.{section}"
    if not isinstance(node, _Map):
        c.add(line, where, f"expected a mapping of {', '.join(allowed)}, got {_type(node)}")
        return ()
    c.unknown_keys(node, allowed, where, {})
    out: dict[str, Any] = {}
    for field in ("params_m", "gflops", "top1"):
        if field not in node or field not in allowed:
            continue
        value, vline = node[field], node.line_of(field)
        limit = 100 if field == "top1" else math.inf
        if not _is_number(value) or not 0 < value <= limit:
            valid = "a percentage in (0, 100]" if field == "top1" else "a positive number"
            c.add(vline, f"{where}.{field}", f"expected {valid}, got {value!r}")
        else:
            out[field] = value
    if "resolution" in node:
        res_line = node.line_of("resolution")
        sizes = c.positive_ints(node["resolution"], res_line, f"{where}.resolution", allow_list=False)
        if sizes:
            out["resolution"] = sizes[0]
    source = node.get("source")
    if "source" in node and (not isinstance(source, str) or not source.strip()):
        message = f"expected text naming where the numbers come from, got {source!r}"
        c.add(node.line_of("source"), f"{where}.source", message)
    elif source is None and any(f in node for f in ("params_m", "gflops", "top1")):
        message = "missing; say where these numbers come from (README, paper table, counter)"
        c.add(line, f"{where}.source", message)
    elif source is not None:
        out["source"] = source.strip()
    return tuple(out.items())


def _check_builds(name: str, kwargs: dict[str, Any], line: int, key: str, c: _Checker) -> None:
    """Build the model once with ``kwargs`` so that a misspelt argument stops the study before it runs."""
    try:
        model = build_model(name, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure to build is a study problem
        c.add(line, key, f"timm.create_model({name!r}, **kwargs) failed: {_message(exc)}")
    else:
        del model


# ---------------------------------------------------------------------------------------------
# The results store of a models run


class ModelResultsStore(ResultsStore):
    """:class:`attnbench.results.ResultsStore` with the columns of a models run (same atomic writes,
    replace-by-id and torn-line handling); columns a row adds beyond them come last."""

    @property
    def columns(self) -> list[str]:
        extra = [c for c in self._param_columns if c not in MODEL_COLUMNS and c not in LEADING_PARAM_COLUMNS]
        return MODEL_COLUMNS + extra


def model_point_id(
    study: ModelsStudy, spec: ModelSpec, device: str, proto: dict[str, Any], env_key: dict[str, Any]
) -> str:
    """Hash of what makes a model's row a different measurement (reference numbers excluded)."""
    config = {
        "kind": "models",
        "model": spec.name,
        "kwargs": spec.model_kwargs(),
        "resolution": study.resolution,
        "batch": study.batch,
        "dtype": study.dtype,
        "pass": PASS,
        "device": device,
        "protocol": proto,
        "environment": env_key,
    }
    blob = json.dumps(config, sort_keys=True, default=repr).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _pct(ours: float | None, reference: float | None) -> float | None:
    if ours is None or reference is None:
        return None
    return round(100.0 * (ours - reference) / reference, 3)


def reference_columns(
    spec: ModelSpec, resolution: int, params: float | None, flops: float | None
) -> dict[str, Any]:
    """The study's reference numbers of ``spec`` and our differences to them, as row columns."""
    params_m = None if params is None else params / 1e6
    gflops = None if flops is None else flops / 1e9
    out: dict[str, Any] = {}
    for section, numbers in (("published", dict(spec.published)), ("counted", dict(spec.counted))):
        ref_res = numbers.get("resolution", REFERENCE_RESOLUTION)
        fields = PUBLISHED_KEYS if section == "published" else COUNTED_KEYS
        for field in (f for f in fields if f != "resolution"):
            out[f"{section}_{field}"] = numbers.get(field)
        out[f"{section}_resolution"] = ref_res if numbers else None
        out[f"params_diff_{section}_pct"] = _pct(params_m, numbers.get("params_m"))
        same = ref_res == resolution
        out[f"gflops_diff_{section}_pct"] = _pct(gflops, numbers.get("gflops")) if same else None
    return out


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------------------------------
# Measuring


class _Run:
    """What every model of one run shares."""

    def __init__(self, study: ModelsStudy, device: torch.device, threads: int, env: dict[str, Any]) -> None:
        self.study = study
        self.device = device
        self.threads = threads
        self.env = env
        self.env_key = environment_key(env)
        self.env_id = environment_id(env)
        self.protocol = protocol(study, threads)  # type: ignore[arg-type] - same fields as a sweep Study

    def point_id(self, spec: ModelSpec) -> str:
        return model_point_id(self.study, spec, self.device.type, self.protocol, self.env_key)

    def base_row(self, spec: ModelSpec) -> dict[str, Any]:
        return {
            "point_id": self.point_id(spec),
            "env_id": self.env_id,
            "study": self.study.name,
            "model": spec.name,
            "family": spec.family,
            "kwargs": json.dumps(spec.model_kwargs(), sort_keys=True),
            "resolution": self.study.resolution,
            "batch": self.study.batch,
            "dtype": self.study.dtype,
            "device": self.device.type,
            "pass": PASS,
        }


def measure_entry(run: _Run, spec: ModelSpec) -> dict[str, Any]:
    """The row of one model; failures become ``status = error`` with the stage and message."""
    study, device = run.study, run.device
    row = run.base_row(spec)
    errors: list[str] = []
    kwargs = spec.model_kwargs()
    torch.manual_seed(study.seed)
    if "flops" in study.measure:
        try:
            counted = measure_model(
                spec.name, study.resolution, study.batch, device.type, repeats=0, model_kwargs=kwargs
            )
        except Exception as exc:  # noqa: BLE001 - recorded in the row
            errors.append(f"flops: {_message(exc)}")
        else:
            row.update({k: counted[k] for k in ("params", "flops", "flops_torch", "flops_uncounted")})
    timed = "latency" in study.measure or "memory" in study.measure
    if timed or ("params" in study.measure and "params" not in row):
        _time_and_memory(run, spec, row, errors)
    if "params" not in study.measure:
        row.pop("params", None)
    params, flops = row.get("params"), row.get("flops")
    row["params_m"] = None if params is None else round(params / 1e6, 4)
    row["gflops"] = None if flops is None else round(flops / 1e9, 4)
    row.update(reference_columns(spec, study.resolution, params, flops))
    row.update(status="error" if errors else "ok", error="; ".join(errors) or None, timestamp=_now())
    return row


def _time_and_memory(run: _Run, spec: ModelSpec, row: dict[str, Any], errors: list[str]) -> None:
    """Build the model on the run's device and dtype, then params, latency and memory as asked."""
    study, device = run.study, run.device
    model = x = None
    try:
        torch.manual_seed(study.seed)
        model = build_model(spec.name, **spec.model_kwargs()).eval()
        if "params" in study.measure and "params" not in row:
            row["params"] = sum(p.numel() for p in model.parameters())
        if "latency" not in study.measure and "memory" not in study.measure:
            return
        model.to(device=device, dtype=DTYPES[study.dtype])
        gen = torch.Generator().manual_seed(study.seed)
        x = torch.randn(study.batch, 3, study.resolution, study.resolution, generator=gen)
        x = x.to(device=device, dtype=DTYPES[study.dtype])
    except Exception as exc:  # noqa: BLE001 - recorded in the row
        errors.append(f"build: {_message(exc)}")
        model = x = None
        _free(device)
        return

    def step() -> None:
        with torch.no_grad():
            model(x)

    try:
        try:
            step()  # probe: a shape the model cannot take, or out of memory, fails here untimed
        except Exception as exc:  # noqa: BLE001 - recorded in the row
            message = _message(exc)
            counted = f"flops: {message}" in errors  # the FLOP count already failed the same way
            errors.append(f"{PASS}: " + ("the same error" if counted else message))
            return
        measure_speed(
            step, study, device, study.batch, lambda: module_bytes(model) + tensor_bytes([x]), row, errors
        )
    finally:
        model = x = None  # drop the model before the next one is built
        _free(device, collect=bool(errors))


def _refresh_references(store: ModelResultsStore, run: _Run) -> int:
    """Rewrite the reference columns of kept rows from the current study; returns how many changed."""
    changed = 0
    kept = {r["point_id"]: r for r in store.rows if store.is_done(r["point_id"])}
    for spec in run.study.models:
        row = kept.get(run.point_id(spec))
        if row is None:
            continue
        params, flops = _number(row.get("params")), _number(row.get("flops"))
        fresh = reference_columns(spec, run.study.resolution, params, flops)
        fresh["family"] = spec.family
        if any(row.get(k, "") != ("" if v is None else str(v)) for k, v in fresh.items()):
            store.add({**row, **fresh})
            changed += 1
    return changed


def _summary(rows: list[dict[str, str]]) -> str:
    import pandas as pd

    if not rows:
        return "(no rows)"
    df = pd.DataFrame(rows)

    def num(col: str) -> pd.Series:
        return pd.to_numeric(df.get(col, pd.Series(dtype=float)), errors="coerce")

    table = pd.DataFrame(
        {
            "model": df["model"],
            "status": df["status"],
            "params(M)": num("params_m").round(2),
            "GMACs(fvcore)": num("gflops").round(3),
            "counted": num("counted_gflops"),
            "diff%": num("gflops_diff_counted_pct").round(2),
            "published": num("published_gflops"),
            "ms(median)": num("latency_ms").round(1),
            "img/s": num("throughput").round(2),
            "peak MiB": num("peak_mem_mb").round(1),
            "note": df["error"].str.slice(0, 60),
        }
    )
    return table.to_string(index=False, na_rep="-")


def run_models_study(
    study: ModelsStudy,
    *,
    out_dir: str | Path | None = None,
    fresh: bool = False,
    quiet: bool = False,
    report: bool = True,
    command: list[str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    executor: Executor | None = None,
) -> int:
    """Measure every model of ``study`` into ``out_dir`` (default ``results/<name>``); the exit code.

    Args and the returned codes are those of :func:`attnbench.runner.run_study`, which calls this
    for a ``kind: models`` study. A models study runs in this process: any executor but the local
    one is refused.

    Raises:
        attnbench.executors.ExecutorError: an executor other than the local one was asked for.
    """
    from attnbench.executors import ExecutorError, LocalExecutor

    out = stdout or sys.stdout
    err = stderr or sys.stderr
    if executor is not None and executor.name != LocalExecutor.name:
        raise ExecutorError(
            f"a models study ({study.path}) runs in this process; --executor {executor.name} is for sweep "
            "studies (run it with --executor local, the default)"
        )
    executor = executor or LocalExecutor()
    run_dir = Path(out_dir) if out_dir is not None else default_run_dir(study)  # type: ignore[arg-type]
    if fresh:
        moved = move_aside(run_dir)
        if moved is not None:
            print(f"attnbench: --fresh: moved the previous run folder to {moved}", file=out)
    csv_path = run_dir / "results.csv"
    if csv_path.is_file():
        header = csv_path.read_text(encoding="utf-8").split("\n", 1)[0].split(",")
        if "mechanism" in header and "model" not in header:
            print(
                f"attnbench run: {run_dir} holds a sweep run (mechanism rows); give a models study its own "
                "folder with --out, or start over with --fresh",
                file=err,
            )
            return EXIT_BAD_INPUT
    device = torch.device(study.device)
    resume_cmd = shlex.join(
        ["attnbench", "run", str(study.path), "--out", str(run_dir), "--device", study.requested_device]
    )

    with executor.start(study, device) as setup, fixed_threads(setup.threads):  # type: ignore[arg-type]
        run = _Run(study, device, setup.threads, setup.env)
        store = ModelResultsStore(run_dir)
        store.flush()  # the CSV exists (header at least) from the start
        manifest = _start_manifest(store, run, command)
        record = manifest["runs"][-1]
        ids = [run.point_id(spec) for spec in study.models]
        done = sum(store.is_done(i) for i in ids)
        refreshed = _refresh_references(store, run)
        stale = sum(1 for r in store.rows if r["point_id"] not in set(ids))
        if not quiet:
            print(
                f"attnbench: models study {study.name!r}: {len(ids)} models at {study.resolution}x"
                f"{study.resolution}, batch {study.batch}, {study.dtype}, forward, on {device.type} "
                f"({setup.env['device_name']}, {setup.threads} threads) -> {run_dir}",
                file=out,
            )
            if done:
                print(f"attnbench: resuming: {done} models already measured are kept", file=out)
            if refreshed:
                print(
                    f"attnbench: reference numbers of {refreshed} kept rows updated from the study", file=out
                )
        if stale:
            print(
                f"attnbench: note: {stale} rows in {store.csv_path} belong to another configuration "
                "(edited study or other machine); they are kept (--fresh starts over)",
                file=out,
            )
        todo = [spec for spec, pid in zip(study.models, ids) if not store.is_done(pid)]
        bar = tqdm(total=len(todo), unit="model", disable=quiet, file=err, dynamic_ncols=True)
        try:
            for spec in todo:
                bar.set_description_str(spec.label)
                store.add(measure_entry(run, spec))
                record["rows_written"] += 1
                bar.update(1)
        except KeyboardInterrupt:
            bar.close()
            record.update(status="interrupted", finished=_now(), load_average_end=_load_average())
            store.write_manifest(manifest)
            print(
                f"\nattnbench: interrupted; {len(store.rows)} rows are saved in {store.csv_path}\n"
                f"attnbench: resume with: {resume_cmd}",
                file=err,
            )
            return EXIT_INTERRUPTED
        bar.close()
        record.update(status="completed", finished=_now(), load_average_end=_load_average())
        store.write_manifest(manifest)

    wanted = set(ids)
    mine = [{c: r.get(c, "") for c in store.columns} for r in store.rows if r["point_id"] in wanted]
    counts = {s: sum(r["status"] == s for r in mine) for s in ("ok", "error")}
    if not quiet:
        print(_summary(mine), file=out)
    print(f"attnbench: {counts['ok']} ok, {counts['error']} errors; results in {store.csv_path}", file=out)
    if report:
        _write_report(run_dir, err)
    return 0


def _start_manifest(store: ModelResultsStore, run: _Run, command: list[str] | None) -> dict[str, Any]:
    study = run.study
    manifest = store.read_manifest() or {"created": _now(), "environments": {}, "runs": []}
    manifest.update(
        attnbench_version=__version__,
        updated=_now(),
        study={
            "name": study.name,
            "kind": study.kind,
            "description": study.description,
            "path": str(study.path),
            "sha256": study.sha256,
            "text": study.text,
        },
        conditions={
            "resolution": study.resolution,
            "batch": study.batch,
            "dtype": study.dtype,
            "device": run.device.type,
            "pass": PASS,
        },
        device=run.device.type,
        requested_device=study.requested_device,
        threads=run.threads,
        protocol={
            **run.protocol,
            "passes": [PASS],
            "flops": "attnbench.models.measure_model: fvcore MACs (1 MAC = 1 FLOP) of one forward at batch 1 "
            "in fp32 on CPU, seed models on BRA's reference backend; flops_torch = FlopCounterMode / 2",
            "latency": "eval mode under torch.no_grad(); untimed probe call, `warmup` untimed calls, then "
            "`repeats` samples (fewer if max_time_s is spent, at least 3); CUDA events with "
            "synchronization on cuda, time.perf_counter on cpu with torch.set_num_threads(threads); "
            "median and IQR in ms",
            "memory": "one call after timing; see memory_methods",
        },
        memory_methods=MEMORY_METHODS,
        columns=MODEL_COLUMN_DOCS,
    )
    manifest.setdefault("environments", {})[run.env_id] = run.env
    manifest.setdefault("runs", []).append(
        {
            "started": _now(),
            "finished": None,
            "status": "running",
            "env_id": run.env_id,
            "study_sha256": study.sha256,
            "command": command,
            "rows_written": 0,
            "load_average_start": _load_average(),
        }
    )
    store.write_manifest(manifest)
    return manifest
