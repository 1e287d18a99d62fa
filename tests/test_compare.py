"""``attnbench compare``: two runs of one study are within noise, a slowed mechanism is flagged
slower, a changed count is a finding, and runs of different protocols are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from attnbench.cli import main
from attnbench.report.compare import CompareError, compare_runs, ratio_interval
from attnbench.store import ResultsStore

POINTS = [  # (mechanism, params, median latency in ms)
    ("vanilla", {}, 4.0),
    ("bra", {"n_win": 7, "topk": 4}, 6.0),
    ("swin", {}, 3.0),
]


def _run(path: Path, seed: int, slow: dict[str, float] | None = None, threads: int = 1, flops=None) -> Path:
    """A sweep run folder with 20 timing samples per row (log-normal, 3 % spread) around each
    point's latency, times ``slow[mechanism]``."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    store = ResultsStore(path)
    for i, (mech, params, ms) in enumerate(POINTS):
        for j, pass_ in enumerate(("forward", "forward_backward")):
            centre = ms * (3 if j else 1) * (slow or {}).get(mech, 1.0)
            samples = (centre * np.exp(rng.normal(0, 0.03, 20))).round(5).tolist()
            store.add(
                {
                    "point_id": f"{seed:04x}{i:06x}{j:06x}",
                    "pass": pass_,
                    "status": "ok",
                    "mechanism": mech,
                    **params,
                    "H": 28,
                    "W": 28,
                    "C": 64,
                    "num_heads": 2,
                    "batch": 1,
                    "dtype": "float32",
                    "device": "cpu",
                    "compile": "none",
                    "latency_ms": float(np.median(samples)),
                    "latency_samples_ms": json.dumps(samples),
                    "flops": (flops or {}).get(mech, 1e6 * (i + 1)),
                    "params": 1e4,
                    "peak_mem_mb": 10.0 + i,
                    "threads": threads,
                }
            )
    store.close()
    protocol = {"threads": threads, "repeats": 20, "warmup": 3, "measure": ["flops", "latency"]}
    (path / "manifest.json").write_text(json.dumps({"kind": "sweep", "protocol": protocol}))
    return path


def test_ratio_interval_covers_the_ratio_of_medians():
    ratio, lo, hi = ratio_interval([1.0, 1.1, 0.9, 1.0, 1.05], [2.0, 2.2, 1.8, 2.0, 2.1])
    assert ratio == pytest.approx(2.0) and lo <= ratio <= hi and lo > 1.5


def test_two_runs_of_one_study_are_within_noise(tmp_path):
    c = compare_runs(_run(tmp_path / "a", 1), _run(tmp_path / "b", 2))
    assert len(c.rows) == 6 and c.counts()["within noise"] == 6, c.rows[["label", "ratio", "lo", "hi"]]
    assert set(c.rows["counts"]) == {"equal"} and not c.only_a and not c.only_b


def test_a_slowed_mechanism_is_flagged_slower_and_only_it(tmp_path, capsys):
    a, b = _run(tmp_path / "a", 1), _run(tmp_path / "b", 2, slow={"bra": 1.3})
    assert main(["compare", str(a), str(b)]) == 0
    printed = capsys.readouterr().out
    assert "**2 slower**, **0 faster**, 4 within noise" in printed and "most slower: BRA" in printed
    out = b / "compare" / "a"
    assert {p.name for p in out.iterdir()} == {"compare.md", "compare.tex", "index.html", "ratios.png"}
    md = (out / "compare.md").read_text()
    bra = [line for line in md.splitlines() if line.startswith("| BRA")]
    assert len(bra) == 2 and all("**slower**" in line for line in bra)
    faster = compare_runs(b, a)  # the other way round
    assert faster.counts()["faster"] == 2


def test_a_changed_count_is_a_finding(tmp_path):
    c = compare_runs(_run(tmp_path / "a", 1), _run(tmp_path / "b", 2, flops={"swin": 5e6}))
    swin = c.rows[c.rows["label"] == "Swin"]
    assert set(swin["counts"]) == {"FLOPs 3000000 → 5000000"}
    assert (c.rows["counts"] == "equal").sum() == 4


def test_runs_of_different_protocols_are_refused_unless_asked(tmp_path, capsys):
    a, b = _run(tmp_path / "a", 1), _run(tmp_path / "b", 2, threads=2)
    with pytest.raises(CompareError, match="different protocols .*threads: 1 in A, 2 in B"):
        compare_runs(a, b)
    assert main(["compare", str(a), str(b)]) == 2
    assert "--allow-protocol-change" in capsys.readouterr().err
    c = compare_runs(a, b, allow_protocol_change=True)
    assert c.protocol_changes == ["threads"] and len(c.rows) == 6


def test_runs_without_common_points_and_bad_folders(tmp_path, capsys):
    a = _run(tmp_path / "a", 1)
    with pytest.raises(CompareError, match="holds no results"):
        compare_runs(a, tmp_path / "nothing")
    assert main(["compare", str(a), str(tmp_path / "nothing")]) == 2
    assert "Traceback" not in capsys.readouterr().err
