"""Reading a run folder: ``results.csv`` rows, filters, mechanism labels and number formatting."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attnbench.registry import get_mechanism
from attnbench.store import load_rows, read_manifest

__all__ = [
    "FIXED_COLUMNS",
    "device_label",
    "display_name",
    "filter_rows",
    "latency_quantiles",
    "latency_samples",
    "latex_labels",
    "load_manifest",
    "load_results",
    "load_run",
    "mechanism_labels",
    "plain",
    "resolution_label",
    "scaled_unit",
    "varying",
]

# Columns of a sweep row that are not mechanism parameters (the kind's own, accuracy, and ours): the
# label of a plugin mechanism this process did not load lists its other filled columns as its
# parameters (tests/test_report.py keeps this set equal to the sweep kind's measured columns)
FIXED_COLUMNS = frozenset(
    """point_id env_id study mechanism H W C num_heads batch dtype device pass compile status error flops
    flops_torch flops_analytic flops_uncounted flops_detail params latency_ms latency_iqr_ms latency_n
    latency_samples_ms throughput pass_macs achieved_gmacs_s peak_gmacs_s efficiency phases_ms compile_s
    graph_breaks max_batch max_batch_budget_mb max_batch_peak_mb peak_mem_mb mem_method timestamp
    protocol_id threads load_avg load_avg_end other_cpu steal_pct unstable unstable_why top1 top5 seed oom
    label""".split()
)
NUMERIC_COLUMNS = (
    "H W C num_heads batch flops flops_torch flops_analytic params latency_ms latency_iqr_ms "
    "throughput peak_mem_mb top1 top5 seed"
).split()
REQUIRED_COLUMNS = ("mechanism", "H", "W", "C", "num_heads", "pass", "status")
_OOM = re.compile(r"out of memory|\boom\b|memoryerror|can(?:no|')t allocate|not enough memory", re.IGNORECASE)


# the one footnote of a timing the noise guard marked unstable, in every table of every kind
UNSTABLE_NOTE = "†: unstable timing (IQR > 10% of the median, or a busy machine; see unstable_why)."


def rows_frame(run_dir: str | Path) -> pd.DataFrame:
    """Every stored row of a run folder (``results.db``, or a ``results.csv`` alone) as a DataFrame,
    restricted to one measurement protocol (see :func:`one_protocol`).

    Raises:
        FileNotFoundError: the folder holds no results.
    """
    columns, rows = load_rows(run_dir)
    df = pd.DataFrame(rows, columns=columns or None)
    if df.empty and columns:
        df = pd.DataFrame(columns=columns)
    return one_protocol(df, read_manifest(run_dir).get("protocol_id"))


def one_protocol(df: pd.DataFrame, preferred: str | None) -> pd.DataFrame:
    """The rows of one protocol (``protocol_id``: measurement settings, device and environment), so
    that no table averages numbers that are not comparable. The latest run's protocol is kept, else
    the one with most rows; ``df.attrs["left_out"]`` says what was left out and why."""
    if "protocol_id" not in df.columns or df.empty:
        return df
    ids = df["protocol_id"].fillna("(older run, no protocol recorded)")
    if ids.nunique() <= 1:
        return df
    keep = preferred if preferred in set(ids) else ids.value_counts().index[0]
    left = df[ids != keep]
    kept = df[ids == keep].copy()

    def settings(part: pd.DataFrame) -> str:
        values = []
        for col in ("threads", "env_id", "device", "dtype"):
            if col in part.columns:
                values.append(f"{col} {', '.join(sorted({plain(v) for v in part[col].dropna()})) or '-'}")
        return "; ".join(values)

    kept.attrs["left_out"] = (
        f"{len(left)} of {len(df)} rows were measured under another protocol ({settings(left)}) than the "
        f"{len(kept)} shown ({settings(kept)}); they are left out of tables and plots so that no cell mixes "
        "them, and stay in results.db"
    )
    return kept


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """The rows of a run folder (one protocol); numeric columns as numbers, parameters as written.

    Raises:
        FileNotFoundError: the folder holds no results.
        ValueError: a required column is missing.
    """
    path = Path(run_dir)
    df = rows_frame(run_dir)
    for col in df.columns:  # a CSV-only folder gives text; numbers were written as numbers
        if df[col].dtype == object:
            df[col] = df[col].where(df[col].notna(), None)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; a sweep run's rows need at least {REQUIRED_COLUMNS}"
        )
    for col in NUMERIC_COLUMNS:  # a column the run did not measure is there, empty ("not measured")
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else float("nan")
    for col in ("mechanism", "pass", "status", "dtype", "device", "error"):
        if col in df.columns:
            df[col] = df[col].astype("string").fillna("")
    if "error" not in df.columns:
        df["error"] = ""
    df["oom"] = df["status"].isin(["error", "skipped"]) & df["error"].str.contains(_OOM)
    return df


def load_run(
    run_dir: str | Path, options: Any, say: Callable[[str], None] = lambda line: None
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """What a kind's report starts from: every row (labelled, :func:`mechanism_labels`), the rows the
    options keep (``passes``, ``dtypes``, ``devices``: :func:`filter_rows`), and the manifest."""
    results = load_results(run_dir)
    say(f"{len(results)} rows read; writing the tables")
    results["label"] = mechanism_labels(results) if not results.empty else []
    df = filter_rows(results, passes=options.passes, dtypes=options.dtypes, devices=options.devices)
    return results, df.copy(), load_manifest(run_dir)


def load_manifest(run_dir: str | Path) -> dict[str, Any]:
    """``run_dir/manifest.json`` as a dict (empty when the file is absent)."""
    return read_manifest(run_dir)


def filter_rows(
    df: pd.DataFrame,
    *,
    passes: Sequence[str] | None = None,
    dtypes: Sequence[str] | None = None,
    devices: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Keep the rows whose pass, dtype and device are among those given (None keeps all).

    Raises:
        ValueError: a value that no row has, naming the option and the values present.
    """
    for option, column, wanted in (
        ("passes", "pass", passes),
        ("dtypes", "dtype", dtypes),
        ("devices", "device", devices),
    ):
        if wanted is None:
            continue
        present = sorted(set(df[column])) if column in df.columns else []
        unknown = [w for w in wanted if w not in present]
        if unknown:
            raise ValueError(f"{option} = {list(wanted)}: no row has {column} {unknown}; present: {present}")
        df = df[df[column].isin(list(wanted))]
    return df


def parameter_columns(df: pd.DataFrame, mechanism: str) -> list[str]:
    """The columns holding ``mechanism``'s own parameters.

    A registered mechanism declares them; for an unknown (plugin) name they are the extra columns
    its rows fill in.
    """
    try:
        declared = get_mechanism(mechanism).hyperparameters()
    except ValueError:  # not registered here: a plugin this process did not load
        rows = df[df["mechanism"] == mechanism]
        return [c for c in df.columns if c not in FIXED_COLUMNS and rows[c].notna().any()]
    return [p for p in declared if p in df.columns]


def plain(value: Any) -> str:
    """``7.0`` -> ``"7"``; anything else as ``str``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _same_form(value: Any) -> str:
    """A value as text that reads alike whether it came back as a number or as text (``"2.0"`` = ``2``)."""
    try:
        return plain(float(value)) if not isinstance(value, bool) else str(value)
    except (TypeError, ValueError):
        return str(value)


def varying(df: pd.DataFrame, columns: Iterable[str]) -> list[str]:
    """Those of ``columns`` that take more than one value in ``df`` (missing values count as one)."""
    return [c for c in columns if c in df.columns and df[c].astype("string").fillna("<NA>").nunique() > 1]


def _non_default(rows: pd.DataFrame, mechanism: str, columns: Iterable[str]) -> list[str]:
    """Those of ``columns`` where some row of a registered ``mechanism`` departs from its default."""
    try:
        declared = get_mechanism(mechanism).hyperparameters()
    except ValueError:  # a plugin this process did not load: its defaults are unknown
        return []
    out = []
    for c in columns:
        if c in declared and c in rows.columns:
            values = {_same_form(v) for v in rows[c] if not pd.isna(v)}
            if values - {_same_form(declared[c].default)}:
                out.append(c)
    return out


def _mechanism_class(mechanism: str) -> Any:
    try:
        return get_mechanism(mechanism)
    except ValueError:  # a plugin this process did not load
        return None


def display_name(mechanism: str) -> str:
    """The name papers use (the mechanism's ``display_name``); the registry name for unknown ones."""
    cls = _mechanism_class(mechanism)
    return str(cls.display_name) if cls is not None and cls.display_name else mechanism


def mechanism_look(mechanism: str) -> tuple[str | None, str | None]:
    """The mechanism's own plot colour and marker (None where it declares none or is unknown)."""
    cls = _mechanism_class(mechanism)
    return (getattr(cls, "color", None), getattr(cls, "marker", None)) if cls is not None else (None, None)


def mechanism_citation(mechanism: str) -> tuple[str, str] | None:
    """``(key, BibTeX entry)`` of the paper the mechanism declares, or None."""
    cls = _mechanism_class(mechanism)
    entry = str(getattr(cls, "bibtex", "") or "") if cls is not None else ""
    found = re.match(r"\s*@\w+\{([^,\s]+),", entry)
    return (found.group(1), entry) if found else None


def _symbol(mechanism: str, param: str) -> tuple[str, bool]:
    """The parameter's declared symbol (and True), or its name (and False)."""
    cls = _mechanism_class(mechanism)
    symbols = getattr(cls, "param_symbols", None) or {}
    return (symbols[param], True) if param in symbols else (param, False)


_GREEK = {"δ": r"\delta", "α": r"\alpha", "β": r"\beta", "γ": r"\gamma", "λ": r"\lambda", "σ": r"\sigma"}
_MATH_SYMBOL = re.compile(r"^([A-Za-z]|[α-ω])(?:_([A-Za-z0-9]+))?$")
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")


def latex_param(symbol: str, value: str, is_symbol: bool = True) -> str:
    """``S``, ``7`` -> ``$S{=}7$``; a parameter name that is no symbol stays text (``q\\_size${=}$56``)."""
    from attnbench.report._document import latex_escape

    m = _MATH_SYMBOL.match(symbol) if is_symbol else None
    if m and _NUMBER.match(value):
        base = _GREEK.get(m.group(1), m.group(1))
        sub = m.group(2)
        if sub:
            base += f"_{{{sub}}}" if len(sub) == 1 else f"_{{\\mathrm{{{sub}}}}}"
        return f"${base}{{=}}{value}$"
    return f"{latex_escape(symbol)}${{=}}${latex_escape(value)}"


def _label_parts(df: pd.DataFrame) -> dict[Any, tuple[str, list[tuple[str, str, bool]]]]:
    """Per row index: the display name and the (symbol, value, is a symbol) its label shows."""
    out: dict[Any, tuple[str, list[tuple[str, str, bool]]]] = {}
    for name, rows in df.groupby("mechanism", sort=False):
        shown_name = display_name(str(name))
        params = parameter_columns(df, name)
        shown = set(varying(rows, params)) | set(_non_default(rows, name, params))
        cols = [c for c in params if c in shown]
        for i, row in rows.iterrows():
            parts = [(*_symbol(str(name), c), plain(row[c])) for c in cols if not pd.isna(row[c])]
            parts = [(sym, value, is_symbol) for sym, is_symbol, value in parts]
            out[i] = (shown_name, parts)
    return out


def mechanism_labels(df: pd.DataFrame) -> pd.Series:
    """One label per row: the mechanism's display name plus the parameters that vary among its rows
    or depart from the mechanism's defaults, by their symbols.

    E.g. ``BRA (S=7, k=4)`` when a run sweeps BRA's n_win and topk, ``BRA (k=1)`` for a single
    setting off the default, plain ``Global`` (vanilla attention) otherwise.
    """
    labels = df["mechanism"].astype(str).copy()
    for i, (name, parts) in _label_parts(df).items():
        labels[i] = f"{name} ({', '.join(f'{s}={v}' for s, v, _ in parts)})" if parts else name
    return labels


def latex_labels(df: pd.DataFrame) -> dict[str, str]:
    """``{plain label: LaTeX label}`` of :func:`mechanism_labels`, e.g. ``BRA ($S{=}7$, $k{=}4$)``."""
    from attnbench.report._document import latex_escape

    out: dict[str, str] = {}
    for name, parts in _label_parts(df).values():
        text = f"{name} ({', '.join(f'{s}={v}' for s, v, _ in parts)})" if parts else name
        tex = latex_escape(name)
        if parts:
            tex += " (" + ", ".join(latex_param(*part) for part in parts) + ")"
        out[text] = tex
    return out


def device_label(device: Any) -> str:
    """``cpu`` -> ``CPU``, ``cuda:0`` -> ``CUDA:0``: device names as papers write them."""
    text = str(device)
    kind, sep, rest = text.partition(":")
    return {"cpu": "CPU", "cuda": "CUDA", "mps": "MPS", "xpu": "XPU"}.get(kind.lower(), kind) + sep + rest


def latency_samples(samples: Any) -> list[float]:
    """A row's stored timing samples (``latency_samples_ms``: a JSON list, or the list) as the finite,
    positive floats among them; empty when the row has none or they cannot be read."""
    if isinstance(samples, str):
        try:
            samples = json.loads(samples)
        except ValueError:
            return []
    out = []
    for v in samples if isinstance(samples, (list, tuple)) else []:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f) and f > 0:
            out.append(f)
    return out


def latency_quantiles(samples: Any, q: Sequence[float] = (25, 75)) -> list[float]:
    """Percentiles of a row's stored timing samples (:func:`latency_samples`), with the interpolation
    ``attnbench.timing`` uses for the IQR (linear); NaNs when the row has none."""
    values = latency_samples(samples)
    if not values:
        return [math.nan] * len(q)
    return [float(v) for v in np.percentile(values, list(q))]


def resolution_label(H: float, W: float) -> str:
    return f"{int(H)}×{int(W)}"


def scaled_unit(max_value: float, unit: str) -> tuple[float, str]:
    """(divisor, prefixed unit) so that ``max_value`` reads between 1 and 1000, e.g. (1e9, 'GMACs')."""
    for div, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if max_value >= div:
            return div, prefix + unit
    return 1.0, unit


def decimals_for(values: Iterable[float]) -> int:
    """Decimals for one column: 3 significant digits on its largest value, 2 on its smallest (at most 4)."""
    finite = [abs(v) for v in values if v is not None and math.isfinite(v) and v != 0]
    if not finite:
        return 0
    largest = 2 - math.floor(math.log10(max(finite)))
    smallest = 1 - math.floor(math.log10(min(finite)))
    return min(4, max(0, largest, smallest))
