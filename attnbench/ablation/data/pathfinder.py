"""A procedural Pathfinder task (Linsley et al., NeurIPS 2018; Pathfinder-32 of the Long Range Arena).

Our own generator, in numpy, after the task's description (not the released generator's code):
each image holds two *main* contours of ``contour_length`` paddles and ``n_distractors`` distractor
contours of ``distractor_length`` paddles. A contour is a chain of short straight paddles (dashes)
separated by gaps; each paddle turns by at most ``continuity`` degrees from the previous one.
Two endpoint markers (small discs) are drawn:

- label 1 (connected): both markers on the two ends of the same main contour;
- label 0 (not connected): one marker on an end of each main contour.

The geometry is drawn before the label and does not depend on it (both main contours always exist
and have the same length), so ink, contour count and marker count carry no label information.
Nor does the markers' distance: a connected pair is a contour's two ends, whose distance barely
varies (short contours are nearly straight), so a not-connected pair is an end of each main
contour chosen at that same distance (within 1 %), and the second main contour is redrawn until
there is such a pair, whatever the label. Without this (generator version 2) a rule on the distance alone
scored 94 % on dashed 4-paddle contours. What is left besides following the path is its
direction: on short, nearly straight contours the paddle at a connected marker points at the other
marker. A rule on that scores 97 % on ``easy`` (solid contours of 4 paddles), 80 % at 6 paddles and
64 % at 8 (``docs/ablation.md``).

Different contours never touch: every paddle stays at least ``separation`` pixels from the
paddles of other contours (and from its own non-adjacent paddles), and contours stay clear of the
main contours' end points, where markers may go.

Difficulty presets (:data:`DIFFICULTIES`, chosen by us, not taken from the released generator):
``easy`` (main contours of 4 paddles without gaps, i.e. solid paths; 2 distractors of 2, paddles
at half the markers' intensity, larger markers), ``medium`` (6 dashed paddles, 3 distractors of 3,
paddles at 0.75), ``hard`` (8 paddles, 3 distractors of 3, turns up to 45 degrees, full contrast).
Paddle and marker sizes scale with the resolution, so a preset draws the same picture, finer, at
64 or 128 px.

Everything is deterministic from the seed, and labels are exactly balanced (for even sizes).
Generation is vectorized over images (one numpy step per paddle for all images at once); an image
whose contour cannot continue is redrawn. :func:`load_pathfinder` caches each split in an ``.npz``
under ``~/.cache/attnbench/pathfinder/`` (or ``$ATTNBENCH_CACHE_DIR/pathfinder``, or ``cache_dir``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DIFFICULTIES",
    "GENERATOR_VERSION",
    "PathfinderConfig",
    "default_cache_dir",
    "generate",
    "load_pathfinder",
    "markers_connected",
    "render",
]

GENERATOR_VERSION = 3  # bump when the images for a given config change; part of the cache key

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
        distractor_length: paddles per distractor contour.
        n_distractors: distractor contours per image.
        continuity: largest turn between consecutive paddles, in degrees.
        paddle_length: paddle length in pixels (None: 3 at 32 px).
        paddle_gap: gap between consecutive paddles in pixels (None: 1.5 at 32 px).
        paddle_thickness: stroke width in pixels (None: 1 at 32 px).
        marker_radius: radius of the endpoint discs in pixels (None: 1.5 at 32 px).
        separation: least distance between the centre lines of different contours
            (None: thickness + 1.5 px, so that strokes never touch).
        contrast: intensity of the paddles in (0, 1] (the generator's ``paddle_contrast``);
            markers are always drawn at full intensity.
    """

    resolution: int = 32
    contour_length: int = 6
    distractor_length: int = 3
    n_distractors: int = 3
    continuity: float = 30.0
    paddle_length: float | None = None
    paddle_gap: float | None = None
    paddle_thickness: float | None = None
    marker_radius: float | None = None
    separation: float | None = None
    contrast: float = 1.0

    def __post_init__(self) -> None:
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
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"parameter 'difficulty' = {difficulty!r}; choose one of {list(DIFFICULTIES)}")
        preset = {
            k: v * resolution / 32 if k in _PIXEL_FIELDS else v for k, v in DIFFICULTIES[difficulty].items()
        }
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
        return self.separation if self.separation is not None else self.thickness + 1.5

    @property
    def marker_clearance(self) -> float:
        """Least distance from a possible marker centre to another contour's centre line."""
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
            valid &= _apart(s0, s1, mine[:, None, :, 0], mine[:, None, :, 1], sep, cfg.length).all(-1)
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
    root = np.random.SeedSequence([seed, GENERATOR_VERSION])
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
    out_images = np.concatenate(images)
    if not return_geometry:
        return out_images, labels
    geo = {k: np.concatenate(v) for k, v in geometry.items()}
    geo["contour_of"] = np.repeat(np.arange(len(lengths)), lengths)
    return out_images, labels, geo


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
        {"config": dataclasses.asdict(cfg), "n": n, "seed": seed, "version": GENERATOR_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def load_pathfinder(
    cfg: PathfinderConfig, n: int, seed: int, cache_dir: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray, Path]:
    """Images and labels of one split, generated once and then read from the cache.

    Returns:
        images (n, R, R) uint8, labels (n,) int64, and the cache file.
    """
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = folder / f"{cache_key(cfg, n, seed)}.npz"
    if path.is_file():
        with np.load(path) as data:
            return data["images"], data["labels"], path
    t0 = time.perf_counter()
    images, labels = generate(cfg, n, seed)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    meta = json.dumps(
        {
            **dataclasses.asdict(cfg),
            "n": n,
            "seed": seed,
            "version": GENERATOR_VERSION,
            "seconds": round(time.perf_counter() - t0, 2),
        }
    )
    np.savez_compressed(tmp, images=images, labels=labels, meta=np.array(meta))
    os.replace(tmp, path)  # atomic: a concurrent reader sees no half-written file
    return images, labels, path
