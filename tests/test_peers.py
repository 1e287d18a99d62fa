"""Peers: every peer computes our function, the kind times both interleaved into rows, a peer that
computes another function is an error row, the study file and its schema."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from attnbench.executors import LocalExecutor
from attnbench.kinds.peers.implementations import PEERS, Peer, get_peer, register_peer
from attnbench.kinds.peers.kind import TOLERANCE, compare, time_interleaved
from attnbench.kinds.peers.schema import PeersFile
from attnbench.kinds.peers.tables import peers_tables
from attnbench.registry import build_mechanism
from attnbench.runner import run_study
from attnbench.store import ResultsStore
from attnbench.study import StudyError, json_schema, load_study

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [(m, p) for m, table in PEERS.items() for p in table]
# (H, W, C, heads, params): small, but big enough for every mechanism's defaults
SMALL = {"dilated": (14, 14, 32, 2, {}), "bra": (14, 14, 32, 2, {"topk": 2})}

TINY = """\
name: tiny-peers
kind: peers
device: cpu
threads: 1
batch: 2
repeats: 3
warmup: 1
passes: [forward, forward_backward]
shapes:
  - {resolution: 14, dim: 32, num_heads: 2}
mechanisms:
"""


@pytest.mark.parametrize("mechanism,peer", PAIRS, ids=[f"{m}-{p}" for m, p in PAIRS])
def test_every_peer_computes_our_function(mechanism, peer):
    H, W, C, heads, params = SMALL.get(mechanism, (14, 14, 32, 2, {}))
    entry = get_peer(mechanism, peer)
    ours = build_mechanism(mechanism, C, heads, **params)
    with torch.no_grad():  # tables start at zero or tiny values: make a wrong lookup show
        for name, p in ours.named_parameters():
            if "table" in name:
                p.normal_(std=1.0)
    other = entry.build(ours, H, W)
    entry.copy_weights(ours, other)
    worst, why = compare(ours, other, torch.randn(2, H, W, C), TOLERANCE["float32"])
    assert why is None and worst <= 1e-5, why


def test_a_peer_that_cannot_compute_ours_says_why():
    ours = build_mechanism("swin", 32, 2, shift_size=3)
    with pytest.raises(ValueError, match="timm shifts, then pads"):
        get_peer("swin", "timm.WindowAttention").build(ours, 17, 20)
    with pytest.raises(ValueError, match="sequential"):
        get_peer("axial", "sdpa.rows_cols").build(build_mechanism("axial", 32, 2, mode="parallel"), 8, 8)


def test_interleaved_pairs_alternate_who_goes_first():
    calls: list[str] = []
    a, b = time_interleaved(
        lambda: calls.append("a"), lambda: calls.append("b"), warmup=1, repeats=4, max_time_s=None
    )
    assert len(a) == len(b) == 4
    assert "".join(calls) == "ab" + "ab" + "ba" + "ab" + "ba"  # warm-up, then pairs ab, ba, ab, ba


def _study(tmp_path: Path, entries: str) -> PeersFile:
    path = tmp_path / "peers.yaml"
    path.write_text(TINY + entries, encoding="utf-8")
    return load_study(path)


def _rows(run_dir: Path) -> list[dict]:
    store = ResultsStore(run_dir)
    try:
        return store.rows()
    finally:
        store.close()


def _run(study: PeersFile, out: Path) -> list[dict]:
    # in this process: a peer registered by a test exists here, not in a worker
    code = run_study(study, out_dir=out, quiet=True, report=False, executor=LocalExecutor("none"))
    assert code == 0
    return _rows(out)


def test_the_kind_times_ours_and_each_peer_interleaved(tmp_path):
    study = _study(
        tmp_path,
        "  - {name: swin, params: {shift_size: [0, 3]}}\n"
        "  - {name: vanilla, peers: sdpa}\n"
        "  - neighborhood\n",
    )
    rows = _run(study, tmp_path / "run")
    by_key = {(r["mechanism"], r["params"], r["peer"], r["pass"]): r for r in rows}
    assert len(rows) == len(by_key) == 8  # 2 swin points + vanilla + neighborhood, 2 passes each
    for r in rows:
        assert (r["H"], r["W"], r["C"], r["num_heads"], r["batch"], r["dtype"]) == (
            14,
            14,
            32,
            2,
            2,
            "float32",
        )
        if r["status"] == "skipped":
            continue
        assert r["status"] == "ok", r["error"]
        ours, peer = json.loads(r["ours_samples_ms"]), json.loads(r["peer_samples_ms"])
        assert len(ours) == len(peer) == r["n_pairs"] == 3
        ratios = [x / y for x, y in zip(ours, peer)]
        assert r["ratio"] == pytest.approx(float(np.median(ratios)), rel=1e-5)
        q25, q75 = np.percentile(ratios, [25, 75])
        assert r["ratio_iqr"] == pytest.approx(q75 - q25, rel=1e-4, abs=1e-6)
        assert r["ours_ms"] == pytest.approx(float(np.median(ours)), rel=1e-5)
        assert r["max_diff_fp32"] <= 1e-5 and r["tolerance"] == 1e-5
        assert r["unstable"] in (0, 1) and r["threads"] == 1
    skipped = by_key[("neighborhood", "{}", "natten.na2d", "forward_backward")]
    assert skipped["status"] == "skipped" and "no backward" in skipped["error"]
    assert by_key[("swin", '{"shift_size": 3}', "timm.WindowAttention", "forward")]["status"] == "ok"
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["kind"] == "peers" and "swin: timm.WindowAttention" in manifest["peers"]
    tables = peers_tables(pd.DataFrame(rows))  # the report's tables of these rows
    assert [t.name for t in tables] == ["peers_cpu_float32_b2", "peers_summary"]
    assert "natten's CPU path" in tables[0].to_markdown() and len(tables[1].rows) == 7  # timed rows
    # a second run keeps every row
    before = {r["point_id"]: r["timestamp"] for r in rows}
    again = _run(_study(tmp_path, "  - {name: vanilla, peers: sdpa}\n"), tmp_path / "run")
    assert all(before[r["point_id"]] == r["timestamp"] for r in again if r["point_id"] in before)


@pytest.fixture
def wrong_peer():
    """A vanilla peer whose output projection is 1 % off ours: another function."""

    def copy_off(ours, peer):
        peer.load_state_dict(ours.state_dict())
        with torch.no_grad():
            peer.proj.weight.mul_(1.01)

    sdpa = get_peer("vanilla", "sdpa")
    register_peer(
        Peer("vanilla", "test.off_by_one_percent", "sdpa, proj scaled by 1.01", sdpa.build, copy_off)
    )
    yield "test.off_by_one_percent"
    del PEERS["vanilla"]["test.off_by_one_percent"]


def test_a_peer_computing_another_function_is_an_error_row_never_a_ratio(tmp_path, wrong_peer):
    rows = _run(_study(tmp_path, f"  - {{name: vanilla, peers: [sdpa, {wrong_peer}]}}\n"), tmp_path / "run")
    wrong = [r for r in rows if r["peer"] == wrong_peer]
    right = [r for r in rows if r["peer"] == "sdpa"]
    assert len(wrong) == len(right) == 2
    assert all(r["status"] == "ok" for r in right)
    for r in wrong:
        assert r["status"] == "error" and r.get("ratio") is None and r.get("ours_ms") is None
        assert "different function" in r["error"] and f"{r['max_diff_fp32']:.3g}" in r["error"]
        assert r["max_diff_fp32"] > 1e-5


def test_bfloat16_rows_are_checked_at_their_own_tolerance(tmp_path):
    path = tmp_path / "bf16.yaml"
    path.write_text(
        TINY.replace("passes: [forward, forward_backward]", "passes: forward\ndtype: [bfloat16]")
        + "  - {name: swin, params: {shift_size: 3}}\n",
        encoding="utf-8",
    )
    (row,) = _run(load_study(path), tmp_path / "run")
    assert row["status"] == "ok", row["error"]
    assert row["dtype"] == "bfloat16" and row["tolerance"] == TOLERANCE["bfloat16"]
    assert row["max_diff_fp32"] <= 1e-5 and row["max_diff"] <= TOLERANCE["bfloat16"]


@pytest.mark.parametrize(
    "entries,expected",
    [
        (
            "  - {name: swin, peers: timm.Attention}\n",
            r"peers\.yaml:12: mechanisms\[0\]\.peers: 'timm.Attention' is not one of "
            r"\['timm.WindowAttention'\]",
        ),
        ("  - kvt\n", r"mechanism 'kvt' has no peers yet"),
        ("  - swinn\n", r"unknown mechanism 'swinn'; did you mean 'swin'"),
        ("  - {name: swin, params: {window_size: 0}}\n", r"window_size"),
    ],
)
def test_study_problems_name_the_line_and_the_fix(tmp_path, entries, expected):
    with pytest.raises(StudyError, match=expected):
        _study(tmp_path, entries)


def test_shapes_are_required_somewhere(tmp_path):
    path = tmp_path / "peers.yaml"
    path.write_text(TINY.split("shapes:")[0] + "mechanisms: [swin]\n", encoding="utf-8")
    with pytest.raises(StudyError, match="shapes: missing"):
        load_study(path)


def test_the_shipped_peer_studies_load_and_the_schema_has_the_kind():
    for name in ("peers.yaml", "peers-gpu.yaml"):
        study = load_study(ROOT / "studies" / name, device="cpu")
        assert isinstance(study, PeersFile) and study.points()
        covered = {spec.name for spec in study.mechanisms}
        assert covered == set(PEERS), f"{name} leaves out {set(PEERS) - covered}"
    assert "bfloat16" in load_study(ROOT / "studies" / "peers-gpu.yaml", device="cpu").dtypes
    schema = json_schema()
    assert "PeersFile" in {ref["$ref"].rsplit("/", 1)[1] for ref in schema["oneOf"]}
    entry = schema["$defs"]["swin_peers_entry"]["properties"]
    assert "timm.WindowAttention" in json.dumps(entry["peers"])
    shipped = json.loads((ROOT / "studies" / "study.schema.json").read_text(encoding="utf-8"))
    assert "PeersFile" in shipped["$defs"]


def test_the_summary_names_the_points_slower_than_their_fastest_peer():
    from attnbench.kinds.peers.tables import peers_verdict

    base = {"mechanism": "swin", "params": "{}", "H": 28, "W": 28, "C": 64, "num_heads": 2, "pass": "forward"}
    base |= {"dtype": "float32", "device": "cpu", "batch": 4, "status": "ok"}
    rows = [
        {**base, "peer": "a", "ratio": 1.05},
        {**base, "peer": "b", "ratio": 1.30},  # the fastest peer of this point: ours 30 % slower
        {**base, "pass": "forward_backward", "peer": "a", "ratio": 0.9},
        {**base, "H": 56, "W": 56, "peer": "a", "ratio": None, "status": "skipped"},
    ]
    text = peers_verdict(pd.DataFrame(rows))
    assert text.startswith("1 of 2 points (mechanism, shape, pass) are within 1.10× of their fastest peer")
    assert "1.30× b" in text and "forward_backward" not in text
    assert peers_verdict(pd.DataFrame(rows[3:])) == "No point has a timed peer to compare with."
