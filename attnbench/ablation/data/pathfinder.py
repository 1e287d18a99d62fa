"""A procedural Pathfinder task (Linsley et al., NeurIPS 2018; Pathfinder-32 of the Long Range Arena).

Our own generator, in numpy, after the task's description (not the released generator's code):
each image holds contours, chains of short straight paddles (dashes) separated by gaps, each
paddle turning by at most ``continuity`` degrees from the previous one. Two endpoint markers (small
discs) are drawn: label 1 (connected) when they sit on the two ends of one contour, label 0 when they
sit on ends of two different contours. Two versions draw the images (``version``):

**Version 4** (the default). Every contour has ``contour_length`` paddles (distractors as long as
the marked ones), turns of up to 75 degrees, bends at least 3 px away from the straight line through
its two ends (:attr:`PathfinderConfig.min_bend`), and stays 3.5 px from every other contour, centre
line to centre line, so that a flood fill of the image never jumps from one contour to another.
Every end of every contour is clear of the other contours, so any pair of ends can carry the
markers. The label is not drawn first: each image offers every pair of ends as a candidate (the two
ends of one contour: connected; ends of two contours: not), and the candidates' cues that need no
tracing (:func:`pair_cues`: the markers' distance, the two direction cosines of the direction rule,
the ink along the straight line between them, mean and coverage in two band widths, and their
distance from the centre) put each in a cell of a grid (:data:`_CUE_CELLS`, edges at quantiles of
the connected pairs). An image is kept with the candidate that evens out its cell's count of
connected and not-connected pairs; at the end every cell holds as many of one as of the other. So
within the cells' width the cues are distributed alike for both labels, and a rule on them is at
chance: ``tests/test_pathfinder_v4.py`` holds every rule of :mod:`attnbench.ablation.data.probes`
(geometry, ink along the line, a logistic regression on pixels) to at most 60 % and a flood fill
from a marker to at least 98 % (measured: 100 %). Presets (:data:`DIFFICULTIES_V4`): ``easy``
(contours of 5 paddles), ``medium`` (6), ``hard`` (7, one distractor: four contours of 7 paddles
3.5 px apart rarely fit in 32 px); all solid, paddles at half the markers' intensity.

**Version 3** (``version: 3``, the shipped ``results/ablation-v3``; drawn exactly as before version 4
existed). Two main contours of ``contour_length`` paddles and ``n_distractors`` shorter distractors;
the label is drawn first and a not-connected pair of markers is put on ends of the two main contours
as far apart as a connected pair (within 1 %). Its contours are nearly straight, and a rule on the
direction of the paths at the markers scores 97 % on ``easy`` (contours of 4), a rule on the ink
along the straight line between the markers 93 % (``docs/ablation.md``). Presets
(:data:`DIFFICULTIES`): ``easy`` (4 solid paddles, 2 distractors of 2), ``medium`` (6 dashed
paddles, 3 distractors of 3), ``hard`` (8 paddles, turns up to 45 degrees).

Paddle and marker sizes scale with the resolution, so a preset draws the same picture, finer, at
64 or 128 px. Everything is deterministic from the seed, and labels are exactly balanced (for even
sizes). Generation is vectorized over images; an image whose contour cannot continue is redrawn.
:func:`load_pathfinder` caches each split in an ``.npz`` under ``~/.cache/attnbench/pathfinder/``
(or ``$ATTNBENCH_CACHE_DIR/pathfinder``, or ``cache_dir``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DIFFICULTIES",
    "DIFFICULTIES_V4",
    "VERSIONS",
    "GENERATOR_VERSION",
    "PathfinderConfig",
    "default_cache_dir",
    "generate",
    "load_markers",
    "load_pathfinder",
    "markers_connected",
    "render",
]

GENERATOR_VERSION = 4  # the default version; a config's version is part of the cache key
VERSIONS = (3, 4)  # the versions this module can draw (version 2 is gone: its distance gave the label away)
# defaults of the fields that differ between the versions (None in the dataclass)
_V3_DEFAULTS = {"distractor_length": 3, "n_distractors": 3, "continuity": 30.0}
_V4_DEFAULTS = {"n_distractors": 2, "continuity": 75.0}

# Contour lengths and distractors in paddles; pixel sizes (marker_radius) are given at 32 px and
# scaled with the resolution. Lower paddle contrast makes the markers stand out (easier).
DIFFICULTIES: dict[str, dict[str, float]] = {
    "easy": {
        "contour_length": 4,
        "distractor_length": 2,
        "n_distractors": 2,
        "contrast": 0.5,
        "marker_radius": 2.0,
        "paddle_gap": 0.0,
    },
    "medium": {"contour_length": 6, "distractor_length": 3, "n_distractors": 3, "contrast": 0.75},
    "hard": {"contour_length": 8, "distractor_length": 3, "n_distractors": 3, "continuity": 45},
}
# Version 4's presets: every contour solid (a flood fill can follow it), distractors as long as the
# main contours, turns of up to 75 degrees per paddle.
DIFFICULTIES_V4: dict[str, dict[str, float]] = {
    "easy": {"contour_length": 5, "contrast": 0.5, "marker_radius": 2.0, "paddle_gap": 0.0},
    "medium": {"contour_length": 6, "contrast": 0.5, "marker_radius": 2.0, "paddle_gap": 0.0},
    "hard": {
        "contour_length": 7,
        "n_distractors": 1,
        "contrast": 0.5,
        "marker_radius": 2.0,
        "paddle_gap": 0.0,
    },
}
_PIXEL_FIELDS = ("paddle_length", "paddle_gap", "paddle_thickness", "marker_radius", "separation")
_TRIES = 12  # candidate directions tried per paddle before its contour is redrawn
_CONTOUR_TRIES = 20  # attempts per contour before the image is redrawn
_MAIN = 2  # the two marked contours come first
_IMAGE_TRIES = 2000  # rounds of redrawing the images that failed (most rounds redraw a few)
_MATCH_TOLERANCE = 0.01  # a not-connected pair's distance is within 1 % of a contour's length


@dataclasses.dataclass(frozen=True)
class PathfinderConfig:
    """The generator's knobs; pixel sizes of None scale with ``resolution / 32``.

    Attributes:
        resolution: image side in pixels (32, 64, 128, ...).
        contour_length: paddles per main contour (the task's difficulty).
        distractor_length: paddles per distractor contour (version 4: contour_length, always).
        n_distractors: distractor contours per image (None: 2 in version 4, 3 in version 3).
        continuity: largest turn between consecutive paddles, in degrees (None: 75 in version
            4, 30 in version 3).
        paddle_length: paddle length in pixels (None: 3 at 32 px).
        paddle_gap: gap between consecutive paddles in pixels (None: 1.5 at 32 px).
        paddle_thickness: stroke width in pixels (None: 1 at 32 px).
        marker_radius: radius of the endpoint discs in pixels (None: 1.5 at 32 px).
        separation: least distance between the centre lines of different contours
            (None: version 4 3.5 px at 32 px, scaled; version 3 thickness + 1.5 px).
        contrast: intensity of the paddles in (0, 1] (the generator's ``paddle_contrast``);
            markers are always drawn at full intensity.
        version: the generator, 4 (the default) or 3 (the shipped results/ablation-v3 run); see the
            module docstring. Version 4 draws distractors as long as the main contours, 2 of them
            and turns of up to 75 degrees by default; version 3 draws 3 distractors of 3 paddles,
            turns up to 30 degrees.
    """

    resolution: int = 32
    contour_length: int = 6
    distractor_length: int | None = None
    n_distractors: int | None = None
    continuity: float | None = None
    paddle_length: float | None = None
    paddle_gap: float | None = None
    paddle_thickness: float | None = None
    marker_radius: float | None = None
    separation: float | None = None
    contrast: float = 1.0
    version: int = GENERATOR_VERSION

    def __post_init__(self) -> None:
        _check(self.version in VERSIONS, "version", self.version, f"one of {list(VERSIONS)}")
        if self.version >= 4 and self.distractor_length not in (None, self.contour_length):
            raise ValueError(
                f"pathfinder: parameter 'distractor_length' = {self.distractor_length!r} with version "
                f"{self.version}, which draws distractors as long as the main contours "
                f"(contour_length = {self.contour_length}); leave distractor_length out, or use version: 3"
            )
        defaults = (
            _V3_DEFAULTS if self.version == 3 else {**_V4_DEFAULTS, "distractor_length": self.contour_length}
        )
        for key, value in defaults.items():  # version-dependent defaults, resolved once
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        _check(self.resolution >= 8, "resolution", self.resolution, "an int >= 8")
        _check(self.contour_length >= 1, "contour_length", self.contour_length, "an int >= 1")
        _check(self.distractor_length >= 1, "distractor_length", self.distractor_length, "an int >= 1")
        _check(self.n_distractors >= 0, "n_distractors", self.n_distractors, "an int >= 0")
        _check(0 <= self.continuity <= 180, "continuity", self.continuity, "degrees in [0, 180]")
        _check(0 < self.contrast <= 1, "contrast", self.contrast, "a float in (0, 1]")
        for name in ("paddle_length", "paddle_thickness", "marker_radius", "separation"):
            value = getattr(self, name)
            _check(value is None or value > 0, name, value, "None or a positive number of pixels")
        _check(self.paddle_gap is None or self.paddle_gap >= 0, "paddle_gap", self.paddle_gap, "None or >= 0")
        span = self.contour_length * (self.length + self.gap)
        _check(
            span <= 4 * self.resolution,
            "contour_length",
            self.contour_length,
            f"at most {int(4 * self.resolution / (self.length + self.gap))} paddles of "
            f"{self.length + self.gap:.1f} px in a {self.resolution}-px image",
        )

    @classmethod
    def from_difficulty(cls, difficulty: str, resolution: int = 32, **overrides: Any) -> PathfinderConfig:
        """A preset of :data:`DIFFICULTIES` at ``resolution`` (its pixel sizes scaled from 32 px), with any
        field overridden (overrides are taken as given)."""
        presets = DIFFICULTIES if overrides.get("version", GENERATOR_VERSION) == 3 else DIFFICULTIES_V4
        if difficulty not in presets:
            raise ValueError(f"parameter 'difficulty' = {difficulty!r}; choose one of {list(presets)}")
        preset = {k: v * resolution / 32 if k in _PIXEL_FIELDS else v for k, v in presets[difficulty].items()}
        return cls(resolution=resolution, **{**preset, **overrides})

    @classmethod
    def from_dataset(cls, cfg: dict[str, Any]) -> PathfinderConfig:
        """The generator's settings of a study's ``dataset:`` mapping: its ``difficulty`` preset
        (default ``medium``) at its ``resolution`` (default 32), with the fields it overrides; the
        mapping's other keys (sizes, seed, cache) are not the generator's."""
        fields = {f.name for f in dataclasses.fields(cls)}
        overrides = {k: v for k, v in cfg.items() if k in fields and k != "resolution"}
        return cls.from_difficulty(cfg.get("difficulty", "medium"), cfg.get("resolution", 32), **overrides)

    @property
    def scale(self) -> float:
        return self.resolution / 32

    @property
    def length(self) -> float:
        return self.paddle_length if self.paddle_length is not None else 3.0 * self.scale

    @property
    def gap(self) -> float:
        return self.paddle_gap if self.paddle_gap is not None else 1.5 * self.scale

    @property
    def thickness(self) -> float:
        return self.paddle_thickness if self.paddle_thickness is not None else 1.0 * self.scale

    @property
    def radius(self) -> float:
        return self.marker_radius if self.marker_radius is not None else 1.5 * self.scale

    @property
    def min_separation(self) -> float:
        """Least distance between the centre lines of different contours (version 4: 3.5 px at
        32 px, scaled; version 3: thickness + 1.5 px)."""
        if self.separation is not None:
            return self.separation
        return 3.5 * self.scale if self.version >= 4 else self.thickness + 1.5

    @property
    def self_separation(self) -> float:
        """Least distance between a contour's own non-adjacent paddles."""
        return min(self.min_separation, self.thickness + 1.5)

    @property
    def min_bend(self) -> float:
        """Version 4: every contour strays at least this far (px) from the straight line through its
        two ends (3 px at 32 px, scaled), so that a connected pair's own contour leaves the band
        along the line between its markers; version 3: no such bound."""
        return 3.0 * self.scale if self.version >= 4 else 0.0

    @property
    def marker_distance(self) -> float:
        """Version 4: least distance between the two markers' centres, so that their discs' ink stays
        more than a pixel's diagonal apart."""
        return 2 * self.radius + 1.0 + math.sqrt(2) + 0.5

    @property
    def marker_clearance(self) -> float:
        """Least distance from a possible marker centre to another contour's centre line (version 4:
        the disc's ink and the stroke's ink stay more than a pixel's diagonal apart, so that no
        8-connected path of ink joins them)."""
        if self.version >= 4:
            return max(self.min_separation, self.radius + self.thickness / 2 + 1.0 + math.sqrt(2))
        return self.radius + self.thickness / 2 + 1.0


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ValueError(f"pathfinder: parameter {name!r} = {value!r} is out of range; allowed: {allowed}")


# ----------------------------------------------------------------------------- geometry
# Points and segments are arrays (..., 2) of (x, y); the helpers broadcast over leading dims.


def _point_segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from points p to segments a-b."""
    abx, aby = b[..., 0] - a[..., 0], b[..., 1] - a[..., 1]
    apx, apy = p[..., 0] - a[..., 0], p[..., 1] - a[..., 1]
    t = np.clip((apx * abx + apy * aby) / np.maximum(abx * abx + aby * aby, 1e-12), 0.0, 1.0)
    return np.hypot(apx - t * abx, apy - t * aby)


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) - (a[..., 1] - o[..., 1]) * (
        b[..., 0] - o[..., 0]
    )


def _segment_distance(a0: np.ndarray, a1: np.ndarray, b0: np.ndarray, b1: np.ndarray) -> np.ndarray:
    """Exact distance between segments a0-a1 and b0-b1 in the plane (0 where they cross)."""
    d = np.minimum(
        np.minimum(_point_segment_distance(a0, b0, b1), _point_segment_distance(a1, b0, b1)),
        np.minimum(_point_segment_distance(b0, a0, a1), _point_segment_distance(b1, a0, a1)),
    )
    crossing = (_cross(a0, a1, b0) * _cross(a0, a1, b1) < 0) & (_cross(b0, b1, a0) * _cross(b0, b1, a1) < 0)
    return np.where(crossing, 0.0, d)


def _apart(
    a0: np.ndarray, a1: np.ndarray, b0: np.ndarray, b1: np.ndarray, limit: float, length: float
) -> np.ndarray:
    """True where segments a and b (broadcast), all ``length`` long, are more than ``limit`` apart.

    Pairs whose midpoints are farther apart than ``length + limit`` are apart for sure; the exact
    distance is computed only for the others (a small fraction of the pairs).
    """
    shape = np.broadcast_shapes(a0.shape, b0.shape)
    dx = (a0[..., 0] + a1[..., 0]) - (b0[..., 0] + b1[..., 0])  # twice the midpoint offset
    dy = (a0[..., 1] + a1[..., 1]) - (b0[..., 1] + b1[..., 1])
    near = dx * dx + dy * dy <= (2 * (length + limit)) ** 2
    out = np.ones(shape[:-1], dtype=bool)
    idx = np.nonzero(near)
    if idx[0].size:
        parts = [np.broadcast_to(t, shape)[idx] for t in (a0, a1, b0, b1)]
        out[idx] = _segment_distance(*parts) > limit
    return out


def _clear(p: np.ndarray, a: np.ndarray, b: np.ndarray, limit: float, length: float) -> np.ndarray:
    """True where points p are more than ``limit`` from segments a-b (broadcast), all ``length`` long."""
    shape = np.broadcast_shapes(p.shape, a.shape)
    dx = 2 * p[..., 0] - (a[..., 0] + b[..., 0])  # twice the offset from the midpoint
    dy = 2 * p[..., 1] - (a[..., 1] + b[..., 1])
    near = dx * dx + dy * dy <= (length + 2 * limit) ** 2
    out = np.ones(shape[:-1], dtype=bool)
    idx = np.nonzero(near)
    if idx[0].size:
        parts = [np.broadcast_to(t, shape)[idx] for t in (p, a, b)]
        out[idx] = _point_segment_distance(*parts) > limit
    return out


def _contour_lengths(cfg: PathfinderConfig) -> list[int]:
    return [cfg.contour_length] * _MAIN + [cfg.distractor_length] * cfg.n_distractors


def _place_contour(
    cfg: PathfinderConfig,
    rng: np.random.Generator,
    placed: np.ndarray,
    ends: np.ndarray | None,
    main: bool,
    L: int,
    self_separation: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Try to add one contour of L paddles to each of m images, grown from its middle paddle outwards.

    The middle paddle is placed first (T random positions and directions), then the paddles after
    it one by one, then the paddles before it (walking backwards from the middle). Each new paddle
    turns by at most ``continuity`` from its neighbour and must stay inside the image, more than
    ``separation`` from every other paddle but its neighbour, and clear of possible markers.

    Args:
        placed: (m, s, 2, 2) the paddles of the contours placed so far, as (start, end) x (x, y).
        ends: (m, e, 2) end points of the main contours placed so far (possible markers), or None.
        main: whether this contour is a main one (its own ends must be clear of other contours).

    Returns:
        (m, L, 2, 2) paddles in order along the contour, and ok (m,): False where a paddle found
        no valid direction.
    """
    m, T = placed.shape[0], _TRIES
    lo, hi = cfg.radius + 0.5, cfg.resolution - 1 - cfg.radius - 0.5  # strokes and discs stay inside
    sep, clear, step = cfg.min_separation, cfg.marker_clearance, cfg.length + cfg.gap
    max_turn = math.radians(cfg.continuity)
    out = np.zeros((m, L, 2, 2))
    heading = np.zeros((m, L))  # direction of travel of each paddle, start -> end
    done = np.zeros(L, dtype=bool)
    ok = np.ones(m, dtype=bool)
    rows = np.arange(m)
    mid = L // 2
    for i in [mid, *range(mid + 1, L), *range(mid - 1, -1, -1)]:
        if i == mid:  # T random positions and directions
            start = rng.uniform(lo, hi, size=(m, T, 2))
            theta = rng.uniform(0, 2 * math.pi, size=(m, T))
            unit = np.stack([np.cos(theta), np.sin(theta)], -1)  # (m, T, 2)
            end = start + cfg.length * unit
            # head where there is room: each half, straight on, would stay inside (a long contour
            # must bend anyway: ask for at most a third of the image on each side)
            reach = (hi - lo) / 3
            room = [start - min(mid * step, reach) * unit, end + min((L - 1 - mid) * step, reach) * unit]
            valid = np.all([((p >= lo) & (p <= hi)).all(-1) for p in room], axis=0)
            neighbour = None
        else:
            forward = i > mid
            neighbour = i - 1 if forward else i + 1
            theta = heading[:, neighbour, None] + rng.uniform(-max_turn, max_turn, size=(m, T))
            unit = np.stack([np.cos(theta), np.sin(theta)], -1)
            if forward:  # continue from the neighbour's end
                start = out[:, neighbour, 1][:, None] + cfg.gap * unit
                end = start + cfg.length * unit
            else:  # continue backwards from the neighbour's start
                end = out[:, neighbour, 0][:, None] - cfg.gap * unit
                start = end - cfg.length * unit
            valid = np.ones((m, T), dtype=bool)
        valid &= ((start >= lo) & (start <= hi) & (end >= lo) & (end <= hi)).all(-1)  # (m, T)
        s0, s1 = start[:, :, None], end[:, :, None]  # (m, T, 1, 2)
        if placed.shape[1]:  # other contours
            valid &= _apart(s0, s1, placed[:, None, :, 0], placed[:, None, :, 1], sep, cfg.length).all(-1)
            for is_end, point in ((i == 0, start), (i == L - 1, end)):
                if main and is_end:  # a possible marker: clear of the other contours
                    pa, pb = placed[:, None, :, 0], placed[:, None, :, 1]
                    valid &= _clear(point[:, :, None], pa, pb, clear, cfg.length).all(-1)
        own = done.copy()
        if neighbour is not None:
            own[neighbour] = False
        if own.any():  # its own paddles but the neighbour
            mine = out[:, own]
            own_sep = sep if self_separation is None else self_separation
            valid &= _apart(s0, s1, mine[:, None, :, 0], mine[:, None, :, 1], own_sep, cfg.length).all(-1)
        if ends is not None:  # clear of the other main contours' end points
            valid &= (_point_segment_distance(ends[:, None], s0, s1) > clear).all(-1)  # (m, T, e)
        pick = valid.argmax(axis=1)  # the first valid try
        ok &= valid[rows, pick]
        out[:, i, 0] = start[rows, pick]
        out[:, i, 1] = end[rows, pick]
        heading[:, i] = theta[rows, pick]
        done[i] = True
    return out, ok


def _place(cfg: PathfinderConfig, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Place every contour in n images; a contour that gets stuck is redrawn, up to a limit.

    The second main contour is also redrawn until a pair of ends of different main contours is as
    far apart as one main contour's two ends (:func:`_matches`), whatever the image's label: a
    not-connected pair of markers then has a connected pair's distance (:func:`_choose_markers`).

    Returns:
        segments (n, S, 2, 2) in contour order and ok (n,): False where some contour could not be
        placed after :data:`_CONTOUR_TRIES` attempts (redraw that image).
    """
    lengths = _contour_lengths(cfg)
    first = np.cumsum([0, *lengths[:-1]])
    seg = np.zeros((n, sum(lengths), 2, 2))
    alive = np.ones(n, dtype=bool)
    for k, L in enumerate(lengths):
        todo = np.flatnonzero(alive)
        mains = [(first[c], first[c] + lengths[c] - 1) for c in range(min(k, _MAIN))]
        for _attempt in range(_CONTOUR_TRIES):
            if len(todo) == 0:
                break
            prior = seg[todo, : first[k]]
            ends = None
            if mains:
                ends = np.stack([prior[:, a, 0] for a, _ in mains] + [prior[:, b, 1] for _, b in mains], 1)
            new, ok = _place_contour(cfg, rng, prior, ends, k < _MAIN, L)
            if k == _MAIN - 1:  # the second main contour: some pair of ends must match (_matches)
                ok &= _matches(cfg, np.concatenate([prior, new], axis=1)).any(axis=(1, 2))
            seg[todo[ok], first[k] : first[k] + L] = new[ok]
            todo = todo[~ok]
        alive[todo] = False
    return seg, alive


# ----------------------------------------------------------------------------- drawing


def render(
    segments: np.ndarray,
    markers: np.ndarray,
    resolution: int,
    *,
    thickness: float,
    radius: float,
    contrast: float = 1.0,
) -> np.ndarray:
    """Draw anti-aliased paddles and marker discs.

    Each paddle and disc is drawn on a small patch around it, for all images at once, and merged
    into the images by maximum.

    Args:
        segments: (n, S, 2, 2) paddles as (start, end) x (x, y), pixel centres at 0..resolution-1.
        markers: (n, M, 2) disc centres (x, y).
        resolution: image side.
        thickness: stroke width in pixels.
        radius: disc radius in pixels.
        contrast: intensity of the paddles in (0, 1]; discs are drawn at 1.

    Returns:
        (n, resolution, resolution) uint8 images, ink bright on black.
    """
    n, R = segments.shape[0], resolution
    flat = np.zeros(n * R * R, dtype=np.float32)
    base = (np.arange(n) * R * R)[:, None, None]  # (n, 1, 1)

    def stamp(
        centre: np.ndarray, half: float, intensity: Callable[[np.ndarray, np.ndarray], np.ndarray]
    ) -> None:
        # centre (n, 2); intensity(x, y) -> (n, P, P) values on the patch's pixel coordinates
        size = 2 * math.ceil(half) + 2
        corner = np.floor(centre).astype(np.int64) - size // 2 + 1  # (n, 2)
        offs = np.arange(size)
        xs = corner[:, 0, None, None] + offs[None, None, :]  # (n, 1, P)
        ys = corner[:, 1, None, None] + offs[None, :, None]  # (n, P, 1)
        value = intensity(xs.astype(np.float32), ys.astype(np.float32))  # (n, P, P)
        inside = (xs >= 0) & (xs < R) & (ys >= 0) & (ys < R)
        index = base + np.clip(ys, 0, R - 1) * R + np.clip(xs, 0, R - 1)
        np.maximum.at(flat, index[inside], value[inside])

    seg = segments.astype(np.float32)
    for s in range(seg.shape[1]):
        a, b = seg[:, s, 0], seg[:, s, 1]  # (n, 2)
        half = float(np.hypot(*(b - a).T).max()) / 2 + thickness / 2 + 1

        def paddle(x, y, a=a, b=b):
            p = np.stack(np.broadcast_arrays(x, y), -1)  # (n, P, P, 2)
            d = _point_segment_distance(p, a[:, None, None], b[:, None, None])
            return contrast * np.clip(thickness / 2 + 0.5 - d, 0.0, 1.0)

        stamp((a + b) / 2, half, paddle)
    for k in range(markers.shape[1]):
        c = markers[:, k].astype(np.float32)

        def disc(x, y, c=c):
            d = np.hypot(x - c[:, 0, None, None], y - c[:, 1, None, None])
            return np.clip(radius + 0.5 - d, 0.0, 1.0)

        stamp(c, radius + 1, disc)
    out = flat.reshape(n, R, R)
    return np.round(out * 255).astype(np.uint8)


def _chunk_size(cfg: PathfinderConfig) -> int:
    """Images per vectorized step, keeping one (n, R, R) float buffer near 16 MB."""
    return max(64, min(2048, 4_000_000 // (cfg.resolution * cfg.resolution)))


def generate(
    cfg: PathfinderConfig, n: int, seed: int, *, return_geometry: bool = False
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Generate n Pathfinder images, deterministic from ``seed``.

    Returns:
        images (n, R, R) uint8, labels (n,) int64 (1 = connected); with ``return_geometry`` also
        ``{"segments": (n, S, 2, 2), "contour_of": (S,), "markers": (n, 2, 2),
        "marker_ends": (n, 2, 2)}`` where ``marker_ends[i, m] = (contour, end)`` with end 0 = start,
        1 = end of that contour.
    """
    if n < 1:
        raise ValueError(f"pathfinder: n = {n} images; ask for at least 1")
    if cfg.version >= 4:
        images, labels, geo = _generate_v4(cfg, n, seed)
    else:
        images, labels, geo = _generate_v3(cfg, n, seed)
    return (images, labels, geo) if return_geometry else (images, labels)


def _generate_v3(
    cfg: PathfinderConfig, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Version 3: labels drawn first; the second main contour redrawn until a not-connected pair can
    sit as far apart as a connected one (:func:`_choose_markers`)."""
    root = np.random.SeedSequence([seed, cfg.version])
    label_rng = np.random.default_rng(root.spawn(1)[0])
    labels = label_rng.permutation(np.arange(n) % 2).astype(np.int64)  # exactly balanced for even n
    lengths = _contour_lengths(cfg)
    first = np.cumsum([0, *lengths[:-1]])
    step = _chunk_size(cfg)
    images, geometry = [], {"segments": [], "markers": [], "marker_ends": []}
    for c, child in enumerate(root.spawn(math.ceil(n / step) + 1)[1:]):
        lo = c * step
        if lo >= n:
            break
        rng = np.random.default_rng(child)
        m = min(step, n - lo)
        seg = np.zeros((m, sum(lengths), 2, 2))
        ends = np.zeros((m, 2, 2), dtype=np.int64)
        todo = np.arange(m)
        for _attempt in range(_IMAGE_TRIES):
            placed, ok = _place(cfg, len(todo), rng)
            chosen = _choose_markers(cfg, placed, labels[lo + todo], rng)
            seg[todo[ok]], ends[todo[ok]] = placed[ok], chosen[ok]
            todo = todo[~ok]
            if len(todo) == 0:
                break
        else:
            raise RuntimeError(
                f"pathfinder: could not fit {_MAIN} contours of {cfg.contour_length} paddles and "
                f"{cfg.n_distractors} distractors in {cfg.resolution}x{cfg.resolution} with a pair of "
                "ends of different contours as far apart as a contour's two ends; lower "
                "contour_length or n_distractors, or raise the resolution"
            )
        slot = np.where(ends[..., 1] == 0, first[ends[..., 0]], first[ends[..., 0]] + lengths[0] - 1)
        rows = np.arange(m)[:, None]
        markers = seg[rows, slot, ends[..., 1]]  # (m, 2, 2): a start point (0) or an end point (1)
        images.append(
            render(
                seg,
                markers,
                cfg.resolution,
                thickness=cfg.thickness,
                radius=cfg.radius,
                contrast=cfg.contrast,
            )
        )
        geometry["segments"].append(seg)
        geometry["markers"].append(markers)
        geometry["marker_ends"].append(ends)
    geo = {k: np.concatenate(v) for k, v in geometry.items()}
    geo["contour_of"] = np.repeat(np.arange(len(lengths)), lengths)
    return np.concatenate(images), labels, geo


def _end_points(cfg: PathfinderConfig, seg: np.ndarray) -> np.ndarray:
    """(m, 2, 2, 2) the end points of the two main contours as (contour, end, xy); end 0 is the
    contour's start, 1 its end."""
    L = cfg.contour_length
    return np.stack([np.stack([seg[:, c * L, 0], seg[:, c * L + L - 1, 1]], 1) for c in range(_MAIN)], 1)


def _matches(cfg: PathfinderConfig, seg: np.ndarray) -> np.ndarray:
    """(m, contour, pair) where the pair of ends of different main contours (pair = 2 * end of
    contour 0 + end of contour 1) is as far apart as that main contour's two ends, within
    :data:`_MATCH_TOLERANCE` of their distance. ``seg`` needs only the main contours' paddles."""
    m = seg.shape[0]
    pts = _end_points(cfg, seg)  # (m, contour, end, 2)
    chord = np.linalg.norm(pts[:, :, 1] - pts[:, :, 0], axis=-1)  # (m, contour)
    across = np.linalg.norm(pts[:, 0, :, None] - pts[:, 1, None, :], axis=-1).reshape(m, 1, 4)
    return np.abs(across - chord[:, :, None]) <= _MATCH_TOLERANCE * chord[:, :, None]


def _choose_markers(
    cfg: PathfinderConfig, seg: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Where the two markers go, with the same marker distance for both labels.

    A pair of ends of different main contours (four pairs) *matches* a main contour when its
    distance is within :data:`_MATCH_TOLERANCE` (1 %) of that contour's end-to-end distance d
    (:func:`_matches`; :func:`_place` redraws the second main contour until there is a match). One
    matching (contour, pair) is chosen at random; a connected image puts the markers on that
    contour's two ends, a not-connected image on that pair. Which images exist does not depend on
    the label, and the markers' distance (the same in both classes up to the tolerance) does not
    give it away.

    Returns:
        (m, 2, 2) marker positions as (contour, end); meaningful where :func:`_place` succeeded
        (those images always have a match).
    """
    m = len(labels)
    near = _matches(cfg, seg)  # (m, contour, pair)
    pick = np.where(near.reshape(m, 8), rng.random((m, 8)), -1.0).argmax(axis=1)  # one at random
    marked, pair = pick // 4, pick % 4
    ends = np.empty((m, 2, 2), dtype=np.int64)
    pos = labels == 1
    ends[pos, 0] = np.stack([marked[pos], np.zeros(pos.sum(), dtype=np.int64)], -1)
    ends[pos, 1] = np.stack([marked[pos], np.ones(pos.sum(), dtype=np.int64)], -1)
    ends[~pos, 0] = np.stack([np.zeros((~pos).sum(), dtype=np.int64), pair[~pos] // 2], -1)
    ends[~pos, 1] = np.stack([np.ones((~pos).sum(), dtype=np.int64), pair[~pos] % 2], -1)
    return ends


# ----------------------------------------------------------------------------- version 4
# Contours are drawn without markers; every pair of contour ends is a candidate pair of markers
# (connected: the two ends of one contour; not connected: ends of two contours). Each candidate's
# non-tracing cues are measured and put in a cell; a candidate is kept only where it evens out its
# cell's count of connected and not-connected pairs, and at the end every cell holds as many of one
# as of the other. So the joint distribution of the cues, to the cells' width, is the same for both
# labels: a rule on them is at chance.

_V4_POOL = 1.6  # candidate images drawn per matched image still wanted
_V4_ROUNDS = 60  # rounds of drawing more candidates before giving up
CUE_BAND = 5.0  # width in px (at 32 px, scaled) of the band along the marker-to-marker line
CUE_STEP = 0.5  # px between the points sampled along and across the line (at 32 px, scaled)
# cells per cue: the cue's range is cut at quantiles of the candidates of the first images drawn
_CUE_CELLS = {
    "distance": 8,
    "cos_min": 4,
    "cos_max": 4,
    "line_ink": 4,
    "line_cover": 5,
    "wide_cover": 6,
    "position": 3,
}


def _place_v4(cfg: PathfinderConfig, m: int, rng: np.random.Generator) -> np.ndarray:
    """(m', C * L, 2, 2): m draws of 2 + n_distractors contours of contour_length paddles each, all
    ends clear of other contours (any end may carry a marker); the draws where some contour did not
    fit are dropped."""
    L, C = cfg.contour_length, _MAIN + cfg.n_distractors
    seg = np.zeros((m, C * L, 2, 2))
    alive = np.ones(m, dtype=bool)
    for k in range(C):
        todo = np.flatnonzero(alive)
        for _attempt in range(_CONTOUR_TRIES):
            if len(todo) == 0:
                break
            prior = seg[todo, : k * L]
            ends = np.concatenate([prior[:, 0::L, 0], prior[:, L - 1 :: L, 1]], 1) if k else None
            new, ok = _place_contour(cfg, rng, prior, ends, True, L, cfg.self_separation)
            ok &= bend(new) >= cfg.min_bend  # not nearly straight
            seg[todo[ok], k * L : (k + 1) * L] = new[ok]
            todo = todo[~ok]
        alive[todo] = False
    return seg[alive]


def bend(contours: np.ndarray) -> np.ndarray:
    """(..., ) the largest distance of a contour's paddle ends from the straight line through its two
    end points, for contours (..., L, 2, 2) of L paddles."""
    points = np.concatenate([contours[..., 0, :], contours[..., -1:, 1, :]], -2)  # (..., L + 1, 2)
    a, b = points[..., :1, :], points[..., -1:, :]
    u = (b - a) / np.maximum(np.linalg.norm(b - a, axis=-1, keepdims=True), 1e-12)
    rel = points - a
    return np.abs(rel[..., 0] * u[..., 1] - rel[..., 1] * u[..., 0]).max(-1)


def _candidate_pairs(n_contours: int) -> tuple[np.ndarray, np.ndarray]:
    """(P, 2, 2) every pair of contour ends as (marker, (contour, end)), and (P,) its label."""
    pairs, labels = [], []
    for c in range(n_contours):
        pairs.append(((c, 0), (c, 1)))
        labels.append(1)
    for c1 in range(n_contours):
        for c2 in range(c1 + 1, n_contours):
            for e1 in range(2):
                for e2 in range(2):
                    pairs.append(((c1, e1), (c2, e2)))
                    labels.append(0)
    return np.array(pairs, dtype=np.int64), np.array(labels, dtype=np.int64)


def contour_ends(seg: np.ndarray, L: int) -> tuple[np.ndarray, np.ndarray]:
    """End points (n, C, 2, 2) as (contour, end, xy) of contours of L paddles each, and the unit
    direction (n, C, 2, 2) in which the path leaves each end."""
    ends = np.stack([seg[:, 0::L, 0], seg[:, L - 1 :: L, 1]], 2)
    leave = np.stack([seg[:, 0::L, 1] - seg[:, 0::L, 0], seg[:, L - 1 :: L, 0] - seg[:, L - 1 :: L, 1]], 2)
    return ends, leave / np.maximum(np.linalg.norm(leave, axis=-1, keepdims=True), 1e-12)


# The ink cues below measure what attnbench.ablation.data.probes measures on finished images
# (line_ink, line_ink_fraction), written apart on purpose: the probes are the generator's independent
# check (tests/test_pathfinder_v4.py), so they share no code with what they check.


def _pixel_band_mean(
    ink: np.ndarray, image: np.ndarray, pa: np.ndarray, pb: np.ndarray, half_band: float, clear: float
) -> np.ndarray:
    """(K,) for K segments pa-pb (K, 2) on images ``ink[image]``: the mean ink over the pixels whose
    centre is within ``half_band`` of the segment and farther than ``clear`` from both ends; 0 where
    no pixel is."""
    R = ink.shape[-1]
    ys, xs = np.mgrid[0:R, 0:R]
    grid = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float64)  # (R*R, 2) as (x, y)
    flat = ink.reshape(len(ink), R * R)
    out = np.zeros(len(image))
    for lo in range(0, len(image), 1024):
        sl = slice(lo, lo + 1024)
        a, b = pa[sl, None], pb[sl, None]  # (k, 1, 2)
        near = _point_segment_distance(grid, a, b) <= half_band
        near &= np.hypot(*(grid - a).transpose(2, 0, 1)) > clear
        near &= np.hypot(*(grid - b).transpose(2, 0, 1)) > clear
        count = near.sum(-1)
        out[sl] = np.where(count > 0, (flat[image[sl]] * near).sum(-1) / np.maximum(count, 1), 0.0)
    return out


def _line_cover(
    ink: np.ndarray,
    image: np.ndarray,
    pa: np.ndarray,
    pb: np.ndarray,
    band: float,
    step: float,
    clear: float,
    threshold: float,
) -> np.ndarray:
    """(K,) for K segments pa-pb (K, 2) on images ``ink[image]``: the fraction of the points every
    ``step`` px along the segment, farther than ``clear`` from both ends, where the brightest point
    across the band (``band`` px wide, every ``step`` px, ink bilinearly interpolated) exceeds
    ``threshold``: how much of the straight line has a stroke beside it."""
    from scipy import ndimage

    if len(image) == 0:
        return np.zeros(0)
    length = np.linalg.norm(pb - pa, axis=-1)  # (K,)
    unit = (pb - pa) / np.maximum(length, 1e-12)[:, None]
    normal = np.stack([-unit[:, 1], unit[:, 0]], -1)
    s = np.arange(int(math.ceil(length.max() / step)) + 1) * step  # (S,)
    across = np.arange(-band / 2, band / 2 + 1e-9, step)  # (J,)
    valid = (s > clear) & (s < length[:, None] - clear)  # (K, S)
    out = np.zeros(len(image))
    for lo in range(0, len(image), 512):
        sl = slice(lo, lo + 512)
        pts = (
            pa[sl, None, None]
            + s[:, None, None] * unit[sl, None, None]
            + across[:, None] * normal[sl, None, None]
        )  # (k, S, J, 2)
        index = np.broadcast_to(image[sl, None, None], pts.shape[:-1])
        coords = np.stack([index, pts[..., 1], pts[..., 0]]).reshape(3, -1)
        peak = ndimage.map_coordinates(ink, coords, order=1, mode="constant").reshape(pts.shape[:-1]).max(-1)
        count = valid[sl].sum(-1)
        out[sl] = np.where(count > 0, ((peak > threshold) & valid[sl]).sum(-1) / np.maximum(count, 1), 0.0)
    return out


_CHEAP_CUES = ("distance", "cos_min", "cos_max", "position")


def pair_cues(
    cfg: PathfinderConfig, seg: np.ndarray, pairs: np.ndarray, where: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The cues that need no tracing, for every candidate pair (P, 2, 2) of every image, each (n, P):

    - ``distance`` between the two ends;
    - ``cos_min`` / ``cos_max``: the cosines between the direction in which the path leaves each
      end and the direction to the other end (the direction rule);
    - ``position``: the mean distance of the two ends from the image's centre;
    - ``line_ink``: the mean ink of the pixels within ``CUE_BAND / 2`` of the straight line between
      the two ends, leaving out the markers' discs (radius + 1 px);
    - ``line_cover`` / ``wide_cover``: the fraction of the straight line with a stroke beside it
      (:func:`_line_cover`, at half the stroke's intensity) within a band of ``CUE_BAND`` and of
      1.4 times that.

    Ink is measured on the contours drawn at full intensity without markers, and only where
    ``where`` (n, P) is true (NaN elsewhere)."""
    ends, leave = contour_ends(seg, cfg.contour_length)
    pa, pb = ends[:, pairs[:, 0, 0], pairs[:, 0, 1]], ends[:, pairs[:, 1, 0], pairs[:, 1, 1]]
    da, db = leave[:, pairs[:, 0, 0], pairs[:, 0, 1]], leave[:, pairs[:, 1, 0], pairs[:, 1, 1]]
    v = pb - pa
    dist = np.linalg.norm(v, axis=-1)
    u = v / np.maximum(dist[..., None], 1e-12)
    cos_a, cos_b = (da * u).sum(-1), -(db * u).sum(-1)
    centre = (cfg.resolution - 1) / 2
    out = {
        "distance": dist,
        "cos_min": np.minimum(cos_a, cos_b),
        "cos_max": np.maximum(cos_a, cos_b),
        "position": (np.linalg.norm(pa - centre, axis=-1) + np.linalg.norm(pb - centre, axis=-1)) / 2,
    }
    n = seg.shape[0]
    where = np.ones(dist.shape, dtype=bool) if where is None else where
    image, pair = np.nonzero(where)
    if image.size == 0:  # the cheap cues alone: no drawing
        return {
            **out,
            **{name: np.full(dist.shape, np.nan) for name in ("line_ink", "line_cover", "wide_cover")},
        }
    ink = render(seg, np.zeros((n, 0, 2)), cfg.resolution, thickness=cfg.thickness, radius=cfg.radius)
    ink = ink.astype(np.float32) / 255
    clear, band, step = cfg.radius + 1, CUE_BAND * cfg.scale, CUE_STEP * cfg.scale
    a, b = pa[image, pair], pb[image, pair]
    for name, values in (
        ("line_ink", lambda: _pixel_band_mean(ink, image, a, b, band / 2, clear)),
        ("line_cover", lambda: _line_cover(ink, image, a, b, band, step, clear, 0.5)),
        ("wide_cover", lambda: _line_cover(ink, image, a, b, 1.4 * band, step, clear, 0.5)),
    ):
        full = np.full(dist.shape, np.nan)
        full[image, pair] = values()
        out[name] = full
    return out


def _cue_edges(cues: dict[str, np.ndarray], usable: np.ndarray) -> dict[str, np.ndarray]:
    """Cell edges per cue: quantiles of the usable connected candidates' values (the rarer kind:
    most candidate pairs are not connected, and cells where no connected pair falls are of no use)."""
    return {  # the outermost edges at the 1st and 99th percentiles: beyond them no pair is kept
        name: np.unique(np.quantile(cues[name][usable], [0.01, *np.linspace(0, 1, k + 1)[1:-1], 0.99]))
        for name, k in _CUE_CELLS.items()
    }


def _cells(cues: dict[str, np.ndarray], edges: dict[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """(n, P) one integer >= 0 per cell of the grid of the cues ``names``, -1 where a cue falls
    outside its outermost edges (no connected pair is kept there) or is NaN."""
    key = np.zeros(cues["distance"].shape, dtype=np.int64)
    out = np.zeros(key.shape, dtype=bool)
    for name in names:
        e = edges[name]
        digit = np.digitize(np.nan_to_num(cues[name], nan=-np.inf), e)
        out |= (digit == 0) | (digit == len(e))
        key = key * (len(e) + 1) + digit
    return np.where(out, -1, key)


def _generate_v4(
    cfg: PathfinderConfig, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Version 4 (see the section's comment): draw contours, measure every candidate pair's cues,
    keep the candidates that even out their cell, then keep as many connected as not-connected
    pairs in every cell."""
    root = np.random.SeedSequence([seed, cfg.version])
    place_rng, pick_rng = (np.random.default_rng(s) for s in root.spawn(2))
    L, C = cfg.contour_length, _MAIN + cfg.n_distractors
    pairs, pair_label = _candidate_pairs(C)
    want = n + n % 2  # an even number, then n of them
    counts: dict[int, list[int]] = {}  # cell -> [not connected, connected] kept so far
    kept_seg, kept_pair, kept_cell = [], [], []
    matched, edges = 0, None
    step = _chunk_size(cfg)
    for _round in range(_V4_ROUNDS):
        if matched >= want:
            break
        todo = math.ceil((want - matched) * _V4_POOL) + 16
        for lo in range(0, todo, step):
            seg = _place_v4(cfg, min(step, todo - lo), place_rng)
            if len(seg) == 0:
                continue
            if edges is None:  # the cells, from the connected pairs of the first images drawn
                cues = pair_cues(cfg, seg, pairs, np.broadcast_to(pair_label == 1, (len(seg), len(pairs))))
                edges = _cue_edges(cues, (cues["distance"] >= cfg.marker_distance) & (pair_label == 1))
            cheap = pair_cues(cfg, seg, pairs, np.zeros((len(seg), len(pairs)), dtype=bool))
            # ink only where the cheap cues fall inside the cells, and the two discs do not touch
            inside = (_cells(cheap, edges, _CHEAP_CUES) >= 0) & (cheap["distance"] >= cfg.marker_distance)
            cells = _cells(pair_cues(cfg, seg, pairs, inside), edges, list(_CUE_CELLS))
            for i in range(len(seg)):
                order = pick_rng.permutation(len(pairs))
                best, best_gain = -1, -1
                for p in order:
                    if cells[i, p] < 0:
                        continue  # outside the cells (or the two discs would touch)
                    have = counts.get(int(cells[i, p]), (0, 0))
                    y = pair_label[p]
                    gain = have[1 - y] - have[y]  # > 0: the other label waits in this cell
                    if gain > best_gain:
                        best, best_gain = p, gain
                if best_gain < 0:
                    continue  # every candidate would tip its cell further
                cell = int(cells[i, best])
                slot = counts.setdefault(cell, [0, 0])
                slot[pair_label[best]] += 1
                matched += 2 if best_gain > 0 else 0
                kept_seg.append(seg[i])
                kept_pair.append(best)
                kept_cell.append(cell)
    if matched < want:
        raise RuntimeError(
            f"pathfinder: could not draw {n} images of {C} contours of {cfg.contour_length} paddles "
            f"{cfg.min_separation:.1f} px apart in {cfg.resolution}x{cfg.resolution}; lower contour_length "
            "or n_distractors, or raise the resolution"
        )
    # every cell: as many connected as not connected (the first ones kept of each), then `want`
    # of those images in pairs chosen at random
    label = pair_label[np.array(kept_pair)]
    cell = np.array(kept_cell)
    by_cell: dict[int, list[list[int]]] = {}
    for k, (c, y) in enumerate(zip(cell.tolist(), label.tolist())):
        by_cell.setdefault(c, [[], []])[y].append(k)
    couples = [(a, b) for neg, pos in by_cell.values() for a, b in zip(neg, pos)]
    chosen = np.array([couples[j] for j in pick_rng.choice(len(couples), want // 2, replace=False)]).ravel()
    chosen = chosen[pick_rng.permutation(want)][:n]
    seg = np.stack([kept_seg[k] for k in chosen])
    pair = pairs[np.array(kept_pair)[chosen]]  # (n, 2, 2)
    labels = pair_label[np.array(kept_pair)[chosen]]
    # the marked contours first (contour 0 holds the first marker, contour 1 the second's when
    # they differ), the others after them in their order
    order = np.empty((n, C), dtype=np.int64)
    for i in range(n):
        first = [int(pair[i, 0, 0])] + ([int(pair[i, 1, 0])] if labels[i] == 0 else [])
        order[i] = first + [c for c in range(C) if c not in first]
    seg = seg.reshape(n, C, L, 2, 2)[np.arange(n)[:, None], order].reshape(n, C * L, 2, 2)
    rank = np.argsort(order, axis=1)  # old contour -> new position
    ends = np.stack([rank[np.arange(n), pair[:, m, 0]] for m in range(2)], 1)
    marker_ends = np.stack([ends, pair[:, :, 1]], -1)  # (n, 2, 2) as (contour, end)
    points, _ = contour_ends(seg, L)
    markers = points[np.arange(n)[:, None], marker_ends[..., 0], marker_ends[..., 1]]  # (n, 2, 2)
    images = render(
        seg, markers, cfg.resolution, thickness=cfg.thickness, radius=cfg.radius, contrast=cfg.contrast
    )
    geo = {
        "segments": seg,
        "markers": markers,
        "marker_ends": marker_ends,
        "contour_of": np.repeat(np.arange(C), L),
    }
    return images, labels.astype(np.int64), geo


def markers_connected(
    segments: np.ndarray, contour_of: np.ndarray, markers: np.ndarray, tol: float = 1e-6
) -> np.ndarray:
    """The label of each image from its geometry: True where the two markers sit on the two ends
    of one contour.

    Args:
        segments: (n, S, 2, 2) paddles in order along each contour, (start, end) x (x, y).
        contour_of: (S,) contour index of each paddle.
        markers: (n, 2, 2) marker centres.
        tol: distance under which a marker is on an end point.

    Returns:
        (n,) bool.
    """
    n = segments.shape[0]
    out = np.zeros(n, dtype=bool)
    for c in np.unique(contour_of):
        slots = np.flatnonzero(contour_of == c)
        ends = np.stack([segments[:, slots[0], 0], segments[:, slots[-1], 1]], 1)  # (n, 2, 2)
        d = np.linalg.norm(markers[:, :, None] - ends[:, None], axis=-1)  # (n, marker, end)
        out |= ((d[:, 0, 0] < tol) & (d[:, 1, 1] < tol)) | ((d[:, 0, 1] < tol) & (d[:, 1, 0] < tol))
    return out


# ----------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """``$ATTNBENCH_CACHE_DIR/pathfinder`` if set, else ``~/.cache/attnbench/pathfinder``."""
    root = os.environ.get("ATTNBENCH_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "attnbench"
    return base / "pathfinder"


def cache_key(cfg: PathfinderConfig, n: int, seed: int) -> str:
    """Hash of everything that determines the images."""
    blob = json.dumps(
        {"config": dataclasses.asdict(cfg), "n": n, "seed": seed, "version": cfg.version},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def load_pathfinder(
    cfg: PathfinderConfig, n: int, seed: int, cache_dir: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray, Path]:
    """Images and labels of one split, generated once and then read from the cache.

    Returns:
        images (n, R, R) uint8, labels (n,) int64, and the cache file (which also holds the
        markers: :func:`load_markers`).
    """
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = folder / f"{cache_key(cfg, n, seed)}.npz"
    if path.is_file():
        with np.load(path) as data:
            if "markers" in data:
                return data["images"], data["labels"], path
    t0 = time.perf_counter()
    images, labels, geo = generate(cfg, n, seed, return_geometry=True)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    meta = json.dumps(
        {
            **dataclasses.asdict(cfg),
            "n": n,
            "seed": seed,
            "seconds": round(time.perf_counter() - t0, 2),
        }
    )
    np.savez_compressed(tmp, images=images, labels=labels, markers=geo["markers"], meta=np.array(meta))
    os.replace(tmp, path)  # atomic: a concurrent reader sees no half-written file
    return images, labels, path


def load_markers(
    cfg: PathfinderConfig, n: int, seed: int, cache_dir: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images, labels and marker centres (n, 2, 2) as (x, y) of one split, from the cache of
    :func:`load_pathfinder` (generated there first if need be): what a report needs to split the
    validation images by a cue."""
    _, _, path = load_pathfinder(cfg, n, seed, cache_dir)
    with np.load(path) as data:
        return data["images"], data["labels"], data["markers"]
