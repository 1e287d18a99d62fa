"""The options of ``attnbench report RUN_DIR``, kept apart so that building the parser is cheap.

This module imports neither pandas nor matplotlib: ``attnbench --help`` builds every subcommand's
parser, and only ``attnbench report`` itself needs the report's heavy imports.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

__all__ = ["METRIC_KEYS", "SELECTING", "ReportOptions", "add_arguments"]

# the keys of attnbench.kinds.sweep.tables.METRICS (tests/test_import_time.py keeps the two equal)
METRIC_KEYS = (
    "params",
    "flops",
    "flops_torch",
    "flops_analytic",
    "throughput",
    "latency_ms",
    "latency_iqr_ms",
    "peak_mem_mb",
    "achieved_gmacs_s",
    "efficiency",
    "compile_s",
    "max_batch",
    "top1",
    "top5",
)


def _resolution(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--resolution {text!r}: write it as HxW, e.g. 56x56") from None
    return h, w


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``attnbench report RUN_DIR``; a usage error is one line on stderr (exit 2)."""

    def error(message: str) -> None:
        parser.exit(2, f"{parser.prog}: {message} (see --help)\n")

    parser.error = error  # type: ignore[method-assign]
    parser.add_argument("run_dir", type=Path, help="run folder holding results.csv and manifest.json")
    parser.add_argument(
        "--columns", nargs="+", metavar="COL", help=f"comparison columns among {list(METRIC_KEYS)}"
    )
    parser.add_argument(
        "--sort", metavar="COL", help="sort comparison rows by COL or mechanism; --sort=-COL sorts descending"
    )
    parser.add_argument(
        "--group-by",
        nargs="*",
        metavar="COL",
        help="columns that split the tables (default: those that vary; --group-by alone: one table)",
    )
    parser.add_argument(
        "--pass",
        dest="passes",
        nargs="+",
        metavar="PASS",
        help="keep these passes (forward, forward_backward)",
    )
    parser.add_argument("--dtype", dest="dtypes", nargs="+", metavar="DTYPE", help="keep these dtypes")
    parser.add_argument("--device", dest="devices", nargs="+", metavar="DEVICE", help="keep these devices")
    parser.add_argument(
        "--resolution", type=_resolution, metavar="HxW", help="resolution of the comparison table"
    )
    parser.add_argument(
        "--no-formula", dest="formula", action="store_false", help="skip the BRA formula check"
    )
    parser.add_argument("--no-plots", dest="plots", action="store_false", help="skip the plots")
    parser.add_argument(
        "--no-maps",
        dest="maps",
        action="store_false",
        help="ablation runs: keep maps/ as it is instead of drawing the attention maps (attnbench maps)",
    )
    parser.add_argument(
        "--formats", nargs="+", default=["png", "svg"], help="plot formats (default: png svg)"
    )


# the options that choose rows or columns: a kind whose report has no use for one refuses it
SELECTING = ("columns", "sort", "group_by", "passes", "dtypes", "devices", "resolution")


@dataclasses.dataclass(frozen=True)
class ReportOptions:
    """What ``attnbench report`` was asked for (:func:`attnbench.report.write_report`'s arguments);
    None: not given. A kind's report reads those it has a use for."""

    columns: Sequence[str] | None = None
    sort: str | None = None
    group_by: Sequence[str] | None = None
    passes: Sequence[str] | None = None
    dtypes: Sequence[str] | None = None
    devices: Sequence[str] | None = None
    resolution: tuple[int, int] | None = None
    formula: bool = True
    plots: bool = True
    formats: Sequence[str] = ("png", "svg")
    maps: bool = True

    def given(self) -> list[str]:
        """The options of :data:`SELECTING` that were given."""
        return [name for name in SELECTING if getattr(self, name) is not None]
