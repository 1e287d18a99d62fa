"""attnbench maps: pictures of where each mechanism looks, the ERF numbers and the command's errors.

A tiny ablation run folder is made in the test (models from ``initial_model``, saved as a finished
run saves them, rows through the store), with vanilla attention and two test-only mechanisms: one
whose hook returns regions and points, one without a hook (drawn as a placeholder panel).
"""

from __future__ import annotations

import csv
import hashlib
import math

import numpy as np
import pytest
import torch

from attnbench import AttentionMap, AttentionMechanism, Region
from attnbench.cli import main
from attnbench.kinds.ablation.maps import MapsError, draw_model_maps, draw_run_maps, erf_radii

VANILLA = "vanilla"
WINDOWED = "_maps_windowed"  # vanilla attention, hook adds a region and points
HOOKLESS = "_maps_hookless"  # no attention_map
DATASET = {
    "name": "pathfinder",
    "version": 3,  # quick to draw
    "resolution": 32,
    "difficulty": "easy",
    "train_size": 4,
    "val_size": 24,
    "seed": 0,
}
BACKBONE = {"preset": "stl-nano"}


def _windowed_class():
    from attnbench.registry import get_mechanism

    base = get_mechanism(VANILLA)

    class Windowed(base):
        """Global attention whose hook also shows the 4x4 window around the query and its corners."""

        display_name = "Windowed"

        def attention_map(self, x, query):
            full = super().attention_map(x, query)
            top, left = (query[0] // 4) * 4, (query[1] // 4) * 4
            corners = torch.tensor([[top, left], [top, left + 3], [top + 3, left], [top + 3, left + 3]])
            points = corners.float()[None].expand(self.num_heads, 4, 2)
            return AttentionMap(
                query,
                full.weights,
                regions=(Region("window", top, left, 4, 4),),
                points=points,
                point_weights=torch.linspace(0.1, 1.0, 4).expand(self.num_heads, 4),
                note="softmax weights; the query's 4x4 window; its corners",
            )

    return Windowed


class Hookless(AttentionMechanism):
    """A per-token linear map: no attention, no hook."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__(dim, num_heads)
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, x):
        return self.proj(x)


@pytest.fixture(scope="module")
def registered():
    from attnbench import registry

    registry.available_mechanisms()  # load the built-in mechanisms before saving the registry
    saved = dict(registry._REGISTRY)
    registry.register_mechanism(WINDOWED)(_windowed_class())
    registry.register_mechanism(HOOKLESS)(Hookless)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


def _make_run(run_dir, runs, level=None):
    """A finished ablation run folder of (mechanism, seed) runs: rows in results.db,
    ablation/<key>/model.pt, manifest.json; ``level``: the rows' level column (none without)."""
    from attnbench.ablation import initial_model
    from attnbench.store import ResultsStore

    store = ResultsStore(run_dir)
    for mechanism, seed in runs:
        key = hashlib.sha256(f"{mechanism}-{seed}".encode()).hexdigest()[:16]
        workdir = run_dir / "ablation" / key
        workdir.mkdir(parents=True)
        config = {
            "mechanism": mechanism,
            "params": {},
            "dataset": DATASET,
            "backbone": BACKBONE,
            "train": {},
            "seed": seed,
        }
        # "trained": other weights than the init's (a model that trained would have them)
        trained = initial_model(mechanism, {}, DATASET, BACKBONE, seed + 100)
        torch.save(
            {"fingerprint": key, "config": config, "model": trained.state_dict()}, workdir / "model.pt"
        )
        store.add(
            {
                "point_id": hashlib.sha256(key.encode()).hexdigest()[:16],
                "pass": "train",
                "status": "ok",
                "mechanism": mechanism,
                "seed": seed,
                "dataset": "pathfinder",
                "workdir": f"ablation/{key}",
                **({"level": level, "level_index": 0} if level else {}),
            }
        )
    store.write_manifest({"conditions": {"datasets": [DATASET]}})
    store.close()
    return run_dir


@pytest.fixture(scope="module")
def run_maps(registered, tmp_path_factory):
    import os

    os.environ.setdefault("ATTNBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    runs = [(WINDOWED, 1), (WINDOWED, 0), (HOOKLESS, 0)]
    run_dir = _make_run(tmp_path_factory.mktemp("run"), runs)
    written = draw_run_maps(run_dir, erf_images=4)
    return run_dir, written


@pytest.fixture(scope="module")
def vanilla_run(run_maps, tmp_path_factory):
    return _make_run(tmp_path_factory.mktemp("vanilla"), [(VANILLA, 0), (VANILLA, 1)], level="easy")


def test_files_written(run_maps):
    run_dir, written = run_maps
    names = {p.name for p in written}
    for stem in (WINDOWED, HOOKLESS, "all"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    assert "erf.csv" in names
    for path in written:
        assert path.parent == run_dir / "maps" and path.stat().st_size > 1000 or path.suffix == ".csv"
    svg = (run_dir / "maps" / f"{HOOKLESS}.svg").read_text()
    assert "no attention_map" in svg  # the placeholder panel is labelled


def test_erf_csv(run_maps):
    run_dir, _ = run_maps
    with (run_dir / "maps" / "erf.csv").open() as f:
        rows = list(csv.DictReader(f))
    configs = {r["configuration"] for r in rows}
    assert configs == {"Windowed", HOOKLESS}
    assert {r["state"] for r in rows} == {"init", "trained"}
    assert {r["query"] for r in rows} == {"marker 1", "contour middle", "marker 2"}
    assert {r["seed"] for r in rows} == {"0"}  # the smallest seed
    assert len(rows) == 2 * 3 * 2
    for r in rows:
        assert (run_dir / "maps" / f"{r['file']}.png").is_file(), r
        r50, r90 = float(r["r50_px"]), float(r["r90_px"])
        assert 0 < r50 <= r90 <= math.hypot(32, 32), r
        assert r["n_images"] == "4" and r["level"] == "easy"  # the report's words for the level
    # a per-token linear map before stage 1's attention sees only its 2x2 patch
    local = [float(r["r90_px"]) for r in rows if r["configuration"] == HOOKLESS]
    assert max(local) <= 1.5


def test_erf_radii_of_a_point_and_a_ring():
    maps = np.zeros((1, 9, 9))
    maps[0, 4, 4] = 1.0
    assert erf_radii(maps, [(4, 4)]) == (0.0, 0.0)
    maps[0, 4, 4], maps[0, 4, 8] = 1.0, 1.0  # half the mass 4 px away
    r50, r90 = erf_radii(maps, [(4, 4)])
    assert r50 == 0.0 and r90 == 4.0


def test_cli_writes_and_prints_paths(vanilla_run, capsys):
    argv = ["maps", str(vanilla_run), "--seed", "1", "--query", "3,4", "--stage", "2", "--image-index", "1"]
    code = main([*argv, "--level", "easy"])
    out = capsys.readouterr().out
    assert code == 0
    assert str(vanilla_run / "maps" / "all.png") in out and str(vanilla_run / "maps" / "vanilla.svg") in out
    rows = list(csv.DictReader((vanilla_run / "maps" / "erf.csv").open()))
    assert {r["configuration"] for r in rows} == {"Global"}
    assert {r["seed"] for r in rows} == {"1"} and {r["query"] for r in rows} == {"query 1"}
    assert {r["level"] for r in rows} == {"easy"}
    assert "Val image 1 " in (vanilla_run / "maps" / "all.svg").read_text()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--level", "cifar10-32"], ["level 'cifar10-32'", "'easy'"]),
        (["--seed", "7"], ["seed 7", "[0, 1]"]),
        (["--query", "16,0"], ["outside the stage-1 map of 16x16", "0 <= ROW < 16"]),
        (["--query", "a,b"], ["ROW,COL"]),
        (["--image-index", "99"], ["image index 99", "0..23"]),
        (["--stage", "5"], ["stage 5", "1..4"]),
    ],
)
def test_cli_bad_input_is_one_line(run_maps, capsys, argv, words):
    run_dir, _ = run_maps
    assert main(["maps", str(run_dir), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err


def test_cli_folders_that_are_not_finished_ablation_runs(registered, tmp_path, capsys):
    from attnbench.store import ResultsStore

    assert main(["maps", str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["maps", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    store = ResultsStore(tmp_path)
    store.add({"point_id": "ab" * 8, "pass": "fwd", "status": "ok", "mechanism": "bra"})
    assert main(["maps", str(tmp_path)]) == 2
    assert "is not an ablation run" in capsys.readouterr().err
    store.add({"point_id": "cd" * 8, "pass": "train", "status": "error", "workdir": "ablation/x"})
    store.close()
    assert main(["maps", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no" in err and "finished model.pt" in err and len(err.splitlines()) == 1
    assert main(["maps"]) == 2
    err = capsys.readouterr().err
    assert "(RUN_DIR) or a seed model (--model NAME" in err and "neither was given" in err
    assert main(["maps", str(tmp_path), "--model", "biformer_tiny"]) == 2
    assert "both were given" in capsys.readouterr().err


def test_draw_run_maps_raises_maps_error(run_maps):
    run_dir, _ = run_maps
    with pytest.raises(MapsError, match="level 3"):
        draw_run_maps(run_dir, level=3)


def test_seed_model_without_checkpoint(tmp_path):
    written = draw_model_maps("biformer_tiny", out_dir=tmp_path, img_size=112, stage=1)
    assert {p.name for p in written} == {"biformer_tiny.png", "biformer_tiny.svg", "erf.csv"}
    svg = (tmp_path / "biformer_tiny.svg").read_text()
    assert "randomly initialised" in svg and "synthetic test pattern" in svg
    rows = list(csv.DictReader((tmp_path / "erf.csv").open()))
    assert {r["state"] for r in rows} == {"init"} and len(rows) == 3
    assert all(0 < float(r["r50_px"]) <= float(r["r90_px"]) for r in rows)


def test_seed_model_errors(tmp_path):
    with pytest.raises(MapsError, match="unknown model"):
        draw_model_maps("biformer_nope", out_dir=tmp_path)
    with pytest.raises(MapsError, match="cannot read image"):
        draw_model_maps("biformer_tiny", image=tmp_path / "none.png", out_dir=tmp_path, img_size=112)
    bad = tmp_path / "bad.pth"
    torch.save({"model": {"nothing": torch.zeros(1)}}, bad)
    with pytest.raises(MapsError, match="cannot load checkpoint"):
        draw_model_maps("biformer_tiny", checkpoint=bad, out_dir=tmp_path, img_size=112)
