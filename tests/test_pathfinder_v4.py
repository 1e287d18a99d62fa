"""Pathfinder generator version 4: the gates (no rule that skips the path gets far, a flood fill
gets everything), its geometry, and version 3 kept exactly as it was."""

import hashlib

import numpy as np
import pytest

from attnbench.ablation.data import pathfinder as pf
from attnbench.ablation.data import probes as pr

GATE_N, GATE_SEED = 2000, 123  # images per rung; the rules fit on one half, scored on the other
RULE_CEILING, TRACER_FLOOR = 60.0, 98.0


@pytest.fixture(scope="module")
def rung5():
    # the headline study's rung (studies/ablation-main.yaml): contours of 5 paddles, one distractor
    cfg = pf.PathfinderConfig.from_difficulty("easy", 32, n_distractors=1)
    assert cfg.contour_length == 5 and cfg.version == 4
    return cfg, pf.generate(cfg, GATE_N, GATE_SEED, return_geometry=True)


def check_gates(cfg, images, labels, geo):
    table = pr.rules_on(images, labels, geo, marker_radius=cfg.radius, contrast=cfg.contrast)
    tracer = table.pop("tracer")
    over = {name: round(score, 1) for name, score in table.items() if score > RULE_CEILING}
    assert not over, f"rules that do not trace the path score above {RULE_CEILING} %: {over}"
    assert tracer >= TRACER_FLOOR
    assert len(table) >= 14  # every rule of the table was run


def test_the_gates_at_the_studys_rung(rung5):
    cfg, (images, labels, geo) = rung5
    check_gates(cfg, images, labels, geo)


@pytest.mark.slow
def test_the_gates_with_two_distractors():
    # the first main study's rung (studies/ablation.yaml; the easy preset)
    cfg = pf.PathfinderConfig.from_difficulty("easy", 32)
    check_gates(cfg, *pf.generate(cfg, GATE_N, GATE_SEED, return_geometry=True))


@pytest.mark.slow
@pytest.mark.parametrize(
    "difficulty, overrides",
    [("easy", {"n_distractors": 0}), ("medium", {}), ("hard", {})],  # the pilot's first rung; contour 6; 7
)
def test_the_gates_at_the_other_rungs(difficulty, overrides):
    cfg = pf.PathfinderConfig.from_difficulty(difficulty, 32, **overrides)
    check_gates(cfg, *pf.generate(cfg, GATE_N, GATE_SEED, return_geometry=True))


def test_version_3_shortcut_is_still_there_and_caught():
    # the same gates fail version 3 (the record of what a shortcut does): its direction rule
    cfg = pf.PathfinderConfig.from_difficulty("easy", 32, version=3)
    images, labels, geo = pf.generate(cfg, 600, GATE_SEED, return_geometry=True)
    table = pr.rules_on(images, labels, geo, marker_radius=cfg.radius, contrast=cfg.contrast)
    assert table["direction"] > 90 and table["line_ink_fraction"] > 85


def test_geometry(rung5):
    cfg, (images, labels, geo) = rung5
    seg, contour_of = geo["segments"][:300], geo["contour_of"]
    L, C = cfg.contour_length, 2 + cfg.n_distractors
    assert np.array_equal(contour_of, np.repeat(np.arange(C), L))  # distractors as long as the mains
    assert cfg.distractor_length == L
    # different contours stay min_separation (3.5 px) apart, centre line to centre line
    a, b = np.triu_indices(seg.shape[1], k=1)
    other = contour_of[a] != contour_of[b]
    d = pf._segment_distance(
        seg[:, a[other], 0], seg[:, a[other], 1], seg[:, b[other], 0], seg[:, b[other], 1]
    )
    assert cfg.min_separation == 3.5 and d.min() > 3.5
    # every contour bends at least min_bend away from the line through its ends
    assert pf.bend(seg.reshape(len(seg), C, L, 2, 2)).min() >= cfg.min_bend == 3.0
    # the two marker discs never come near each other; the labels are the geometry's
    m = geo["markers"]
    assert np.linalg.norm(m[:, 0] - m[:, 1], axis=-1).min() >= cfg.marker_distance
    assert np.array_equal(pf.markers_connected(geo["segments"], contour_of, m), labels == 1)
    assert labels.sum() == GATE_N // 2


def test_deterministic_and_balanced():
    cfg = pf.PathfinderConfig.from_difficulty("easy", 32, n_distractors=0)  # the quickest to draw
    a, la = pf.generate(cfg, 41, seed=9)
    b, lb = pf.generate(cfg, 41, seed=9)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert abs(int(la.sum()) - 41 / 2) <= 0.5


@pytest.mark.parametrize(
    "difficulty, contour, digest",
    [("easy", 4, "451ced1caa07477d"), ("easy", 6, "a88ba770eca965b7"), ("medium", 6, "9278868bae97efdb")],
)
def test_version_3_draws_exactly_what_it_drew(difficulty, contour, digest):
    # digests of the images and labels that attnbench drew before version 4 existed (the shipped
    # results/ablation-v3 run was trained on version 3): version: 3 keeps them
    cfg = pf.PathfinderConfig.from_difficulty(difficulty, 32, contour_length=contour, version=3)
    images, labels = pf.generate(cfg, 64, 7)
    assert hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()[:16] == digest


def test_version_4_draws_what_the_shipped_runs_were_trained_on():
    # results/ablation-pilot and results/ablation were drawn by this version: a change to what it
    # draws is a new version (the cache and the run keys know the version, not the code)
    cfg = pf.PathfinderConfig.from_difficulty("easy", 32, n_distractors=0)
    images, labels = pf.generate(cfg, 120, 7)
    assert hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()[:16] == "bb026b93a634cd4c"


def test_settings_that_version_4_refuses():
    with pytest.raises(ValueError, match="distractor_length.*version: 3"):
        pf.PathfinderConfig.from_difficulty("easy", 32, distractor_length=2)
    with pytest.raises(ValueError, match="version"):
        pf.PathfinderConfig(version=2)
    cfg = pf.PathfinderConfig.from_difficulty("easy", 32, version=3)
    assert (cfg.distractor_length, cfg.n_distractors, cfg.continuity) == (2, 2, 30.0)
