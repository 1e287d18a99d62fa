"""The GPU lease's rehearsal: ``scripts/gpu-lease.sh --device cpu --tiny`` runs every stage (the
doctor, the GPU tests' collection, CPU-sized copies of the four lease studies) and packs one archive
that would come back, so that the script cannot rot between leases. The rehearsal takes about 40 s,
so it is marked slow (``pytest -m slow tests/test_gpu_lease.py``, run before every lease); the
default suite checks the script's arguments and syntax."""

from __future__ import annotations

import csv
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-lease.sh"
STAGES = ["environment", "doctor", "gpu-tests", "studies", "sweep", "peers", "compiled", "frontier"]


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    out = tmp_path_factory.mktemp("lease")
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "PYTHONPATH")}
    done = subprocess.run(
        ["bash", str(SCRIPT), "--device", "cpu", "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )
    return out, done


@pytest.mark.slow  # the whole rehearsal, about 40 s: run it before a lease
def test_every_stage_passes(rehearsal):
    out, done = rehearsal
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    with open(out / "stages.tsv", newline="") as f:
        stages = list(csv.DictReader(f, delimiter="\t"))
    assert [s["stage"] for s in stages] == STAGES
    assert all(s["rc"] == "0" for s in stages), stages


@pytest.mark.slow
def test_one_archive_that_comes_back(rehearsal):
    out, _ = rehearsal
    archive = out / "gpu-lease.tar.gz"
    assert archive.stat().st_size <= 16 * 2**20
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    for run in ("doctor", "sweep", "peers", "compiled", "frontier"):
        assert f"lease/{run}/results.db" in names and f"lease/{run}/manifest.json" in names
    assert "lease/stages.tsv" in names and "lease/doctor.log" in names
    assert not any(n.endswith((".pt", ".png")) for n in names)


def test_the_script_parses():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_bad_arguments_exit_2():
    done = subprocess.run(["bash", str(SCRIPT), "--device", "tpu"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "--device must be cuda or cpu" in done.stderr
    helped = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, cwd=ROOT)
    assert helped.returncode == 0 and "--tiny" in helped.stdout
