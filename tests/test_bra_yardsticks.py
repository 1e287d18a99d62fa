"""The BRA-backends yardsticks: the probes of studies/plugins/bra_parts.py and the report table."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

import attnbench
from attnbench.kinds.sweep.bra_backends import backend_summary, bra_backend_tables
from attnbench.report import write_report
from tests.test_report import BASE, write_run

PLUGIN = Path(__file__).parents[1] / "studies" / "plugins" / "bra_parts.py"


@pytest.fixture(scope="module", autouse=True)
def probes():
    attnbench.load_plugin(PLUGIN)


def test_floor_is_bra_without_routing_and_attention():
    """bra_floor with BRA's weights = BRA's own wo(LCE(v)): the parts every backend shares."""
    torch.manual_seed(0)
    bra = attnbench.build_mechanism("bra", 32, 2, n_win=4, topk=2, auto_pad=True)
    floor = attnbench.build_mechanism("bra_floor", 32, 2, n_win=4, auto_pad=True)
    floor.load_state_dict(bra.state_dict())  # same sub-module names: qkv, lepe, wo
    x = torch.randn(2, 13, 15, 32)
    xp = torch.nn.functional.pad(x, (0, 0, 0, 1, 0, 3))  # BRA's padding to 16 x 16
    v = bra.qkv(xp)[..., 64:]
    expected = bra.wo(bra.lepe(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))[:, :13, :15]
    torch.testing.assert_close(floor(x), expected)
    terms = bra.analytic_flops(13, 15)
    assert floor.analytic_flops(13, 15) == {k: terms[k] for k in ("qkv_proj", "lce", "out_proj")}


def test_dense_sdpa_is_plain_softmax_attention_of_the_input():
    m = attnbench.build_mechanism("dense_sdpa", 32, 4)
    x = torch.randn(2, 5, 6, 32)
    t = x.reshape(2, 30, 4, 8).transpose(1, 2)
    expected = (t @ t.transpose(-1, -2) / math.sqrt(8)).softmax(-1) @ t
    torch.testing.assert_close(m(x), expected.transpose(1, 2).reshape(2, 5, 6, 32))
    assert attnbench.count_flops(m, x[:1]).total == 2 * 30 * 30 * 32


def yardstick_rows() -> list[dict]:
    """FAKE timings: one BRA shape (S 7, k 4) over three backends, its floor and dense SDPA."""
    shape = {**BASE, "H": 28, "W": 28, "C": 64, "num_heads": 2, "pass": "forward_backward", "status": "ok"}
    shape.update(flops=1.0e8, params=1.0e4, latency_iqr_ms=1.0)
    rows = [
        {**shape, "mechanism": "bra", "n_win": 7, "topk": 4, "backend": b, "latency_ms": ms}
        | {"peak_mem_mb": mb}
        for b, ms, mb in (("reference", 100.0, 300.0), ("sdpa", 40.0, 80.0), ("auto", 25.0, 60.0))
    ]
    rows.append({**shape, "mechanism": "bra_floor", "n_win": 7, "latency_ms": 20.0, "peak_mem_mb": 30.0})
    rows.append({**shape, "mechanism": "dense_sdpa", "latency_ms": 49.0, "peak_mem_mb": 50.0})
    for r in rows:
        r["throughput"] = 1000 * r["batch"] / r["latency_ms"]
    return rows


def test_summary_derives_speedup_floor_and_fraction_of_ideal():
    summary = backend_summary(pd.DataFrame(yardstick_rows())).set_index("backend")
    assert list(summary.index) == ["reference", "sdpa", "auto"]
    assert summary.loc["auto", "speedup"] == pytest.approx(4.0)
    assert summary.loc["sdpa", "above_floor_ms"] == pytest.approx(20.0)
    assert summary.loc["auto", "ideal_ms"] == pytest.approx(4 / 49 * 49.0)  # k/S² x dense
    assert summary.loc["auto", "fraction_of_ideal"] == pytest.approx(4.0 / 5.0)


def test_table_without_yardsticks_says_so():
    rows = [r for r in yardstick_rows() if r["mechanism"] == "bra"]
    (table,) = bra_backend_tables(pd.DataFrame(rows))
    auto = next(r for r in table.rows if r[0] == "auto")
    assert auto[2] == "4.00×" and auto[3] == "—" and auto[5] == "—"
    assert table.groups == {0: "28×28, C 64, S 7, k 4: floor — ms, dense — ms"}


def test_report_writes_the_backends_table_and_plot(tmp_path):
    run = write_run(tmp_path / "run", yardstick_rows())
    write_report(run, formats=("png",), formula=False)
    table = (run / "tables" / "bra_backends_forward_backward_float32_cpu_b4.md").read_text()
    assert "| auto | **25.0 ± 1.0** | 4.00× | 5.0 | 4.00 | 0.80 | **60** |" in table
    assert "auto 4.00×" in table  # geometric mean over shapes
    assert (run / "plots" / "bra_backends.png").is_file()
