"""A run folder with symbolic links in it is refused, by ``run``, ``report`` and ``maps``: attnbench
never reads or writes a run folder's files through a link (issue: planted run folders).

A run folder can come from someone else (a shared scratch folder, a cloned repository: git keeps
links). A link named ``.attnbench.lock``, ``report.md`` or ``manifest.json`` would make a run or a
report truncate, overwrite or publish a file elsewhere. Each case checks the exit code, the message
and that the link's target is untouched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from attnbench.cli import main
from attnbench.store import check_no_links, planted_links

STUDY = """\
name: links
device: cpu
dtype: float32
batch: 1
measure: [params]
passes: [forward]
sweep:
  resolution: [14]
  dim: [32]
  num_heads: [2]
mechanisms:
  - name: vanilla
"""
SECRET = "do not touch\n"


@pytest.fixture
def study(tmp_path: Path) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(STUDY)
    return path


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "elsewhere" / "secret.json"
    path.parent.mkdir()
    path.write_text(SECRET)
    return path


def _run(study: Path, out: Path, *extra: str) -> int:
    return main(["run", str(study), "--out", str(out), "--quiet", *extra])


@pytest.mark.parametrize("name", [".attnbench.lock", "results.csv", "manifest.json", "report.md"])
def test_run_refuses_a_folder_with_a_link_and_touches_nothing(tmp_path, study, secret, capsys, name):
    out = tmp_path / "run"
    out.mkdir()
    (out / name).symlink_to(secret)
    assert _run(study, out) == 2
    err = capsys.readouterr().err
    assert f"holds symbolic links ({name})" in err and "remove them" in err
    assert secret.read_text() == SECRET  # not truncated, not overwritten
    assert sorted(p.name for p in out.iterdir()) == [name]  # nothing written beside it


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One finished run folder without its report, made once for the module."""
    base = tmp_path_factory.mktemp("finished")
    (base / "study.yaml").write_text(STUDY)
    assert _run(base / "study.yaml", base / "run", "--no-report") == 0
    return base / "run"


@pytest.mark.parametrize("name", ["report.md", "index.html", "manifest.json", "tables/comparison_forward.md"])
def test_report_refuses_a_folder_with_a_link(tmp_path, finished, secret, capsys, name):
    out = Path(shutil.copytree(finished, tmp_path / "run"))
    target = out / name
    target.parent.mkdir(exist_ok=True)
    target.unlink(missing_ok=True)
    target.symlink_to(secret)
    capsys.readouterr()
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("attnbench report: ") and "symbolic links" in err and name in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert secret.read_text() == SECRET
    assert not (out / "index.html").exists() or (out / "index.html").is_symlink()


def test_maps_refuses_a_folder_with_a_link(tmp_path, finished, secret, capsys):
    out = Path(shutil.copytree(finished, tmp_path / "run"))
    (out / "maps").mkdir()
    (out / "maps" / "all.png").symlink_to(secret)
    assert main(["maps", str(out)]) == 2
    assert "holds symbolic links (maps/all.png)" in capsys.readouterr().err
    assert secret.read_text() == SECRET


def test_a_linked_folder_to_a_folder_is_one_link_and_not_followed(tmp_path, secret):
    run = tmp_path / "run"
    (run / "plots").mkdir(parents=True)
    (run / "plots" / "away").symlink_to(secret.parent, target_is_directory=True)
    for i in range(7):
        (run / f"l{i}").symlink_to(secret)
    links = planted_links(run)
    assert links == sorted([*(f"l{i}" for i in range(7)), "plots/away"])  # secret.json is not listed
    with pytest.raises(Exception, match=r"and 3 more"):
        check_no_links(run)


def test_the_run_folder_itself_may_be_a_link(tmp_path, finished):
    real = Path(shutil.copytree(finished, tmp_path / "real"))
    alias = tmp_path / "alias"
    alias.symlink_to(real, target_is_directory=True)
    assert main(["report", str(alias)]) == 0
    assert (real / "index.html").is_file()
    assert json.loads((real / "manifest.json").read_text())["study"]["name"] == "links"
