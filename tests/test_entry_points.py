"""The three ways a mechanism gets in, with the worked example (PVT's SRA, ``examples/``).

Each way registers ``sra`` and the runner measures it: a module of the ``mechanisms`` package, a
plugin file named in a study's ``plugins:``, and an installed package's ``attnbench.mechanisms``
entry point (a hand-made dist-info on ``sys.path``; a real ``pip install --target`` is ``slow``).
Also: SRA itself against an independent dense reference, and the example study.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch

import attnbench
import mechanisms
from attnbench import registry
from attnbench.conformance import run_checks
from attnbench.executors import LocalExecutor
from attnbench.runner import run_study
from attnbench.study import load_study

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PLUGIN = EXAMPLES / "sra_attention.py"
PACKAGE = EXAMPLES / "attnbench-sra"
PACKAGED_COPY = PACKAGE / "src" / "attnbench_sra" / "sra_attention.py"

TINY_STUDY = """\
name: {name}
device: cpu
measure: [flops, params]
passes: [forward]
repeats: 1
warmup: 0
sweep: {{resolution: [28], dim: [32], num_heads: [2]}}
mechanisms:
  - name: sra
    params: {{sr_ratio: [4]}}
{plugins}"""


@pytest.fixture
def fresh_registry(monkeypatch):
    """Registrations, loaded plugins and imported example modules are undone after the test."""
    saved = dict(registry._REGISTRY)
    monkeypatch.setattr(registry, "_loaded_plugins", {})
    modules = set(sys.modules)
    yield registry
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)
    for name in set(sys.modules) - modules:
        if name.startswith(("attnbench_sra", "attnbench_plugin_", "mechanisms.")):
            del sys.modules[name]


def _load_builtin_again(monkeypatch) -> None:
    """Run the registry's discovery (zoo modules, then entry points) as on first use."""
    monkeypatch.setattr(registry, "_loaded_builtin", False)
    registry._load_builtin()


def _measure(tmp_path: Path, plugins: str = "") -> list[dict[str, str]]:
    """Run a one-point study of ``sra`` through the runner; returns its CSV rows."""
    study_file = tmp_path / "study.yaml"
    study_file.write_text(TINY_STUDY.format(name="ways", plugins=plugins), encoding="utf-8")
    study = load_study(study_file)
    out = io.StringIO()
    # in this process: the registrations these tests patch live here, not in a worker
    code = run_study(
        study,
        out_dir=tmp_path / "run",
        quiet=True,
        report=False,
        stdout=out,
        stderr=out,
        executor=LocalExecutor("none"),
    )
    assert code == 0, out.getvalue()
    with open(tmp_path / "run" / "results.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _assert_measured_sra(rows: list[dict[str, str]]) -> None:
    (row,) = rows
    assert row["mechanism"] == "sra" and row["status"] == "ok", row
    expected = sum(attnbench.build_mechanism("sra", 32, 2, sr_ratio=4).analytic_flops(28, 28).values())
    assert int(row["flops"]) == int(row["flops_analytic"]) == expected
    assert int(row["params"]) > 0


def _install_by_hand(site: Path) -> None:
    """What ``pip install`` leaves for the example package: the package and a dist-info with entry points."""
    shutil.copytree(PACKAGE / "src" / "attnbench_sra", site / "attnbench_sra")
    info = site / "attnbench_sra-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: attnbench-sra\nVersion: 0.1.0\n")
    # the same line as examples/attnbench-sra/pyproject.toml's [project.entry-points."attnbench.mechanisms"]
    (info / "entry_points.txt").write_text(
        "[attnbench.mechanisms]\nsra = attnbench_sra.sra_attention:SpatialReductionAttention\n"
    )


def test_packaged_module_is_the_plugin_file():
    """The package ships the plugin file unchanged, so the two ways register the same mechanism."""
    assert PACKAGED_COPY.read_bytes() == PLUGIN.read_bytes(), (
        f"the two copies of SRA differ; run: cp {PLUGIN.relative_to(ROOT)} {PACKAGED_COPY.relative_to(ROOT)}"
    )
    text = (PACKAGE / "pyproject.toml").read_text()
    assert '[project.entry-points."attnbench.mechanisms"]' in text
    assert 'sra = "attnbench_sra.sra_attention:SpatialReductionAttention"' in text


# --- way 1: a module of the mechanisms package ----------------------------------------------------


def test_module_in_mechanisms_package_registers_and_is_measured(fresh_registry, monkeypatch, tmp_path):
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    shutil.copy(PLUGIN, zoo / "sra.py")
    monkeypatch.setattr(mechanisms, "__path__", [*mechanisms.__path__, str(zoo)])
    assert "sra" not in registry._REGISTRY
    _load_builtin_again(monkeypatch)
    assert "sra" in attnbench.available_mechanisms()
    assert attnbench.get_mechanism("sra").__module__ == "mechanisms.sra"
    _assert_measured_sra(_measure(tmp_path))


# --- way 2: a plugin file named in a study --------------------------------------------------------


def test_plugin_file_registers_via_load_plugin(fresh_registry, tmp_path):
    plugin = tmp_path / "sra_attention.py"
    shutil.copy(PLUGIN, plugin)
    assert attnbench.load_plugin(plugin) == ["sra"]
    assert attnbench.load_plugin(plugin) == ["sra"]  # loading twice is a no-op
    m = attnbench.build_mechanism("sra", 32, 2)
    assert m(torch.randn(1, 16, 16, 32)).shape == (1, 16, 16, 32)


def test_plugin_file_in_study_is_measured(fresh_registry, tmp_path):
    shutil.copy(PLUGIN, tmp_path / "sra_attention.py")
    _assert_measured_sra(_measure(tmp_path, plugins="plugins: [sra_attention.py]\n"))


# --- way 3: an installed package's entry point ----------------------------------------------------


def test_entry_point_registers_and_is_measured(fresh_registry, monkeypatch, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _install_by_hand(site)
    monkeypatch.syspath_prepend(str(site))
    assert [ep.name for ep in entry_points(group=registry.ENTRY_POINT_GROUP) if ep.name == "sra"] == ["sra"]
    _load_builtin_again(monkeypatch)
    assert attnbench.get_mechanism("sra").__module__ == "attnbench_sra.sra_attention"
    _assert_measured_sra(_measure(tmp_path))


def test_broken_entry_point_is_logged_and_does_not_hide_others(fresh_registry, monkeypatch, tmp_path, caplog):
    site = tmp_path / "site"
    (site / "broken_mech").mkdir(parents=True)
    (site / "broken_mech" / "__init__.py").write_text("raise ImportError('needs a CUDA extension')\n")
    info = site / "broken_mech-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-mech\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[attnbench.mechanisms]\nbroken = broken_mech\n")
    _install_by_hand(site)
    monkeypatch.syspath_prepend(str(site))
    with caplog.at_level(logging.WARNING, logger="attnbench.registry"):
        _load_builtin_again(monkeypatch)
    assert "broken_mech" in caplog.text and "needs a CUDA extension" in caplog.text
    assert {"sra", "bra", "swin", "vanilla"} <= set(attnbench.available_mechanisms())


def test_entry_point_and_plugin_file_together_are_refused(fresh_registry, monkeypatch, tmp_path):
    """Both ways at once register 'sra' twice: the plugin load says who has the name."""
    site = tmp_path / "site"
    site.mkdir()
    _install_by_hand(site)
    monkeypatch.syspath_prepend(str(site))
    _load_builtin_again(monkeypatch)
    with pytest.raises(ValueError, match="'sra' is already registered by attnbench_sra"):
        attnbench.load_plugin(PLUGIN)


@pytest.mark.slow
def test_pip_installed_package_registers(fresh_registry, monkeypatch, tmp_path):
    """A real ``pip install --target`` of examples/attnbench-sra (no network: --no-index, --no-deps)."""
    source = tmp_path / "src"
    shutil.copytree(PACKAGE, source)  # the build leaves build/ and *.egg-info: not in the checkout
    target = tmp_path / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    cmd += ["--no-index", "--target", str(target), str(source)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    monkeypatch.syspath_prepend(str(target))
    _load_builtin_again(monkeypatch)
    cls = attnbench.get_mechanism("sra")
    assert Path(sys.modules[cls.__module__].__file__).is_relative_to(target)
    assert all(r.passed for r in run_checks("sra")), run_checks("sra")


# --- the example mechanism itself -----------------------------------------------------------------


def _dense_sra(m, x: torch.Tensor) -> torch.Tensor:
    """SRA written independently: patches by reshaping, the conv as a matmul, explicit softmax."""
    B, H, W, C = x.shape
    r, h, d = m.sr_ratio, m.num_heads, m.head_dim
    Hr, Wr = H // r, W // r
    patches = x[:, : Hr * r, : Wr * r].reshape(B, Hr, r, Wr, r, C).permute(0, 1, 3, 5, 2, 4)
    patches = patches.reshape(B, Hr * Wr, C * r * r)  # (B, Nr, C·r·r), the conv weight's order
    reduced = patches @ m.sr.weight.reshape(C, -1).T + m.sr.bias  # (B, Nr, C)
    mu = reduced.mean(-1, keepdim=True)
    var = reduced.var(-1, unbiased=False, keepdim=True)
    normed = (reduced - mu) / torch.sqrt(var + m.norm.eps) * m.norm.weight + m.norm.bias
    q = (x.reshape(B, H * W, C) @ m.q.weight.T + m.q.bias).view(B, -1, h, d).transpose(1, 2)
    kv = normed @ m.kv.weight.T + m.kv.bias  # (B, Nr, 2C): k | v
    k = kv[..., :C].reshape(B, -1, h, d).transpose(1, 2)
    v = kv[..., C:].reshape(B, -1, h, d).transpose(1, 2)
    attn = torch.softmax(q @ k.transpose(-2, -1) * d**-0.5, dim=-1)  # (B, h, N, Nr)
    out = (attn @ v).transpose(1, 2).reshape(B, H, W, C)
    return out @ m.proj.weight.T + m.proj.bias


@pytest.mark.parametrize(("size", "sr_ratio"), [((16, 16), 4), ((19, 13), 4), ((14, 21), 7)])
def test_sra_matches_dense_reference(fresh_registry, size, sr_ratio):
    attnbench.load_plugin(PLUGIN)
    m = attnbench.build_mechanism("sra", 32, 2, sr_ratio=sr_ratio).eval()
    with torch.no_grad():
        for p in m.parameters():  # non-trivial norm affine and biases
            p.add_(0.1 * torch.randn_like(p))
        x = torch.randn(2, *size, 32)
        torch.testing.assert_close(m(x), _dense_sra(m, x), atol=1e-5, rtol=1e-4)


def test_sra_ratio_one_is_global_attention(fresh_registry):
    attnbench.load_plugin(PLUGIN)
    sra = attnbench.build_mechanism("sra", 32, 2, sr_ratio=1).eval()
    vanilla = attnbench.build_mechanism("vanilla", 32, 2).eval()
    with torch.no_grad():
        vanilla.qkv.weight.copy_(torch.cat([sra.q.weight, sra.kv.weight]))  # q | k | v rows
        vanilla.qkv.bias.copy_(torch.cat([sra.q.bias, sra.kv.bias]))
        vanilla.proj.load_state_dict(sra.proj.state_dict())
        x = torch.randn(1, 12, 12, 32)
        torch.testing.assert_close(sra(x), vanilla(x), atol=1e-5, rtol=1e-4)
    assert not hasattr(sra, "sr")


def test_sra_constraints_and_flops(fresh_registry):
    attnbench.load_plugin(PLUGIN)
    with pytest.raises(ValueError, match="sr_ratio"):
        attnbench.build_mechanism("sra", 32, 2, sr_ratio=0)
    m = attnbench.build_mechanism("sra", 64, 1)  # PVT-Tiny stage 1: C 64, 1 head, r 8
    with pytest.raises(ValueError, match=r"7x56 map is smaller than sr_ratio = 8"):
        m(torch.randn(1, 7, 56, 64))
    flops = m.analytic_flops(56, 56)
    # 56x56 -> 7x7 = 49 keys per query
    assert flops["attention"] == 2 * 3136 * 49 * 64
    assert flops["sr_conv"] == 49 * 64 * 64 * 64
    report = attnbench.count_flops(m, torch.randn(1, 56, 56, 64), cross_check=False)
    assert report.total == sum(flops.values()) and not report.uncounted


def test_example_study_validates(fresh_registry):
    study = load_study(EXAMPLES / "sra_vs_bra_swin.yaml")
    assert [s.name for s in study.mechanisms] == ["sra", "bra", "swin"]
    assert study.plugins == (PLUGIN.resolve(),)
    assert len(study.points()) == (2 + 2 + 1) * 2


def test_example_study_gives_a_comparison_row(fresh_registry, tmp_path):
    """The README's walk-through, shrunk to FLOPs and params: the plugin ends as a table row."""
    from attnbench.report import write_report

    text = (EXAMPLES / "sra_vs_bra_swin.yaml").read_text()
    text = text.replace("measure: [flops, params, latency, memory]", "measure: [flops, params]")
    text = text.replace("passes: [forward, forward_backward]", "passes: [forward]")
    text = text.replace("resolution: [28, 56]", "resolution: [28]")
    assert text.count("measure: [flops, params]\n") == 1 and "resolution: [28]\n" in text
    shutil.copy(PLUGIN, tmp_path / "sra_attention.py")
    (tmp_path / "study.yaml").write_text(text)
    out = io.StringIO()
    study = load_study(tmp_path / "study.yaml")
    code = run_study(
        study,
        out_dir=tmp_path / "run",
        quiet=True,
        report=False,
        stdout=out,
        stderr=out,
        executor=LocalExecutor("none"),
    )
    assert code == 0, out.getvalue()
    write_report(tmp_path / "run", plots=False, formula=False)
    table = (tmp_path / "run" / "tables" / "comparison_forward.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    labels = [line.split("|")[1].strip() for line in rows[1:]]
    assert labels == ["sra (sr_ratio=8)", "sra (sr_ratio=4)", "BRA (k=1)", "BRA (k=4)", "Swin"]


def test_sra_passes_conformance(fresh_registry):
    attnbench.load_plugin(PLUGIN)
    failed = [r for r in run_checks("sra") if not r.passed]
    assert not failed, failed
