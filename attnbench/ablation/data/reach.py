"""The reach task: are two framed glyphs, ``d`` tokens apart, the same glyph?

An image (``resolution`` pixels square, black) holds two **marked** glyphs, each a ``glyph``-pixel
square pattern inside a one-pixel frame, and ``n_distractors`` unframed glyphs. The label is 1 when
the two marked glyphs are the same glyph, 0 when they differ. The two frames' centres are ``d``
tokens apart (Chebyshev distance, in tokens of ``patch`` pixels), ``d`` drawn from ``distances``.
A model can only answer by bringing the two marked glyphs together; how far apart it still can is
the reach of its attention (in a backbone where nothing else spreads information, see the
``iso-16`` preset of :mod:`attnbench.ablation.backbone`).

What the design rules out (each checked in ``tests/test_reach.py``):

- **One glyph alone says nothing.** Each marked glyph is uniform over the glyph set in both
  classes (a "different" pair draws the second glyph uniformly among the others), so any rule
  that looks at one of them scores 50 %.
- **Pixel statistics say nothing.** Every glyph has the same number of lit pixels (``ink``), so the
  image's ink is the same in every image; distractors are drawn from the same set whatever the
  label.
- **Distance says nothing.** ``d`` is drawn independently of the label; the validation split has
  the same number of images of each class at each ``d`` (stratified), so accuracy against ``d`` is
  measured within each training.
- **The task is solvable**: finding the two frames and comparing what is inside them scores 100 %.

Frames and glyphs sit on the token grid (their corners on multiples of ``patch``), so a frame
covers whole tokens: with the defaults a frame is 6 x 6 pixels, 3 x 3 tokens of 2 x 2 pixels, and
its centre token is well defined. Distractors keep a token of black around them and never touch a
frame. Generation is deterministic in ``(config, size, seed)``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

__all__ = [
    "ReachConfig",
    "ReachImages",
    "find_marked",
    "generate",
    "glyph_set",
    "matcher_accuracy",
]

ON = 255  # lit pixel value (uint8)
DIM = 96  # a distractor's lit pixels under ``mark: bright``
MARKS = ("frame", "bright")


@dataclasses.dataclass(frozen=True)
class ReachConfig:
    """The generator's settings.

    Attributes:
        resolution: image side in pixels.
        patch: pixels per token side (the backbone's patch size); distances are in tokens.
        glyph: glyph side in pixels (a frame adds one pixel each side).
        n_glyphs: size of the fixed glyph set.
        ink: lit pixels of every glyph.
        distances: the Chebyshev distances (tokens) between the two frame centres.
        n_distractors: unframed glyphs per image.
        glyph_seed: seed of the glyph set (the same set for every split).
        mark: how the two glyphs are marked. ``frame`` (the first design, the pilots): a one-pixel
            frame around each, glyphs straddling tokens. ``bright``: every glyph fills the top-left
            ``glyph x glyph`` pixels of one token, the two marked ones lit at 255 and the
            distractors at 96, so that each token holds at most one glyph and says whether it
            is marked.
        near_fraction: the share of **training** images put at the smallest distance (the rest
            drawn uniformly over all distances); the validation split stays stratified. Every
            mechanism reaches the nearest pair, so this lets each learn to compare glyphs before
            it must reach for them: in the pilots a local attention trained on the uniform
            distribution, where most pairs lie out of its reach, learned nothing, not even near.
    """

    resolution: int = 32
    patch: int = 2
    glyph: int = 4
    n_glyphs: int = 16
    ink: int = 8
    distances: tuple[int, ...] = (3, 5, 7, 9, 11, 13)
    n_distractors: int = 4
    glyph_seed: int = 0
    mark: str = "frame"
    near_fraction: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "distances", tuple(int(d) for d in self.distances))
        if self.mark not in MARKS:
            raise ValueError(f"reach: mark = {self.mark!r} is not one of {', '.join(MARKS)}")
        if not 0.0 <= self.near_fraction < 1.0:
            raise ValueError(f"reach: near_fraction = {self.near_fraction!r} must be in [0, 1)")
        side = self.frame_tokens
        if self.mark == "bright" and self.glyph > self.patch:
            raise ValueError(
                f"reach: glyph = {self.glyph} pixels is larger than patch = {self.patch}; with mark: bright "
                "each glyph sits inside one token"
            )
        if self.mark == "frame" and (self.glyph + 2) % self.patch:
            raise ValueError(
                f"reach: glyph + 2 = {self.glyph + 2} pixels (a framed glyph) must be a multiple of patch = "
                f"{self.patch}, so that a frame covers whole tokens"
            )
        if self.resolution % self.patch:
            raise ValueError(f"reach: resolution {self.resolution} is not a multiple of patch {self.patch}")
        if not 2 <= self.n_glyphs <= 2 ** (self.glyph**2) or not 0 < self.ink < self.glyph**2:
            raise ValueError(
                f"reach: n_glyphs = {self.n_glyphs} and ink = {self.ink} do not fit a "
                f"{self.glyph}x{self.glyph} glyph"
            )
        far = self.tokens - side
        bad = [d for d in self.distances if not side <= d <= far]
        if not self.distances or bad:
            raise ValueError(
                f"reach: distances {list(bad or self.distances)} are out of range: two frames of {side} "
                f"tokens on a {self.tokens}-token map are {side} (touching) to {far} tokens apart"
            )

    @property
    def tokens(self) -> int:
        """Tokens per image side."""
        return self.resolution // self.patch

    @property
    def frame_tokens(self) -> int:
        """Tokens per side of a marked glyph (with its frame under ``mark: frame``)."""
        return 1 if self.mark == "bright" else (self.glyph + 2) // self.patch

    @classmethod
    def from_dataset(cls, cfg: dict[str, Any]) -> ReachConfig:
        """The fields of a study's ``dataset:`` mapping (the other keys are the loader's)."""
        names = {f.name for f in dataclasses.fields(cls)}
        given = {k: v for k, v in cfg.items() if k in names}
        if "distances" in given:
            given["distances"] = tuple(given["distances"])
        return cls(**given)


@functools.lru_cache(maxsize=8)
def glyph_set(glyph: int, n_glyphs: int, ink: int, seed: int) -> np.ndarray:
    """``n_glyphs`` distinct ``glyph x glyph`` binary patterns with ``ink`` lit pixels each (bool)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, glyph, n_glyphs, ink, 11]))
    seen: set[bytes] = set()
    out = []
    while len(out) < n_glyphs:
        flat = np.zeros(glyph * glyph, dtype=bool)
        flat[rng.choice(glyph * glyph, size=ink, replace=False)] = True
        key = flat.tobytes()
        if key not in seen:
            seen.add(key)
            out.append(flat.reshape(glyph, glyph))
    return np.stack(out)


@dataclasses.dataclass
class ReachImages:
    """A generated split.

    Attributes:
        images: (N, R, R) uint8.
        labels: (N,) int64, 1 = the marked glyphs are the same.
        distances: (N,) int64, tokens between the frame centres.
        marked: (N, 2, 2) int64, the top-left token (row, col) of each frame.
        glyphs: (N, 2) int64, the indices of the two marked glyphs.
    """

    images: np.ndarray
    labels: np.ndarray
    distances: np.ndarray
    marked: np.ndarray
    glyphs: np.ndarray


def _offset(rng: np.random.Generator, d: int, far: int) -> tuple[int, int]:
    """A (row, col) offset between the frames' top-left tokens of Chebyshev length ``d`` that fits."""
    while True:
        along = int(rng.integers(2))  # the axis that carries the full distance
        other = int(rng.integers(-d, d + 1))
        off = [0, 0]
        off[along] = d * (1 if rng.integers(2) else -1)
        off[1 - along] = other
        if abs(off[0]) <= far and abs(off[1]) <= far:
            return off[0], off[1]


def _draw(cfg: ReachConfig, rng: np.random.Generator, d: int, label: int, glyphs: np.ndarray):
    t, f, p, g = cfg.tokens, cfg.frame_tokens, cfg.patch, cfg.glyph
    far = t - f
    dr, dc = _offset(rng, d, far)
    r0 = int(rng.integers(max(0, -dr), far - max(0, dr) + 1))
    c0 = int(rng.integers(max(0, -dc), far - max(0, dc) + 1))
    tops = [(r0, c0), (r0 + dr, c0 + dc)]
    first = int(rng.integers(cfg.n_glyphs))
    second = first if label else int((first + rng.integers(1, cfg.n_glyphs)) % cfg.n_glyphs)
    img = np.zeros((cfg.resolution, cfg.resolution), dtype=np.uint8)
    taken = np.zeros((t, t), dtype=bool)  # tokens a distractor may not use
    bright = cfg.mark == "bright"
    for (tr, tc), idx in zip(tops, (first, second)):
        y, x = tr * p, tc * p
        if bright:
            img[y : y + g, x : x + g] = np.where(glyphs[idx], ON, 0)
        else:
            img[y : y + g + 2, x : x + g + 2] = ON
            img[y + 1 : y + 1 + g, x + 1 : x + 1 + g] = np.where(glyphs[idx], ON, 0)
        taken[max(0, tr - 1) : tr + f + 1, max(0, tc - 1) : tc + f + 1] = True
    dt = -(-g // p)  # tokens a distractor covers per side
    lit = DIM if bright else ON
    placed, tries = 0, 0
    while placed < cfg.n_distractors and tries < 200:
        tries += 1
        tr, tc = int(rng.integers(0, t - dt + 1)), int(rng.integers(0, t - dt + 1))
        if taken[tr : tr + dt, tc : tc + dt].any():
            continue
        idx = int(rng.integers(cfg.n_glyphs))
        img[tr * p : tr * p + g, tc * p : tc * p + g] = np.where(glyphs[idx], lit, 0)
        taken[max(0, tr - 1) : tr + dt + 1, max(0, tc - 1) : tc + dt + 1] = True
        placed += 1
    return img, tops, (first, second)


def generate(cfg: ReachConfig, size: int, seed: int, *, stratified: bool = False) -> ReachImages:
    """``size`` images. ``stratified``: the same number of images of each class at each distance
    (as far as ``size`` divides; the rest drawn at random), in a shuffled order (the val split);
    otherwise distance (see ``near_fraction``) and label are drawn independently per image (the
    train split)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 23]))
    glyphs = glyph_set(cfg.glyph, cfg.n_glyphs, cfg.ink, cfg.glyph_seed)
    n_d = len(cfg.distances)
    if stratified:
        cells = [(d, lab) for d in cfg.distances for lab in (0, 1)]
        plan = [cells[i % len(cells)] for i in range(size - size % len(cells))]
        plan += [
            (cfg.distances[int(rng.integers(n_d))], int(rng.integers(2))) for _ in range(size % len(cells))
        ]
        plan = [plan[i] for i in rng.permutation(len(plan))]
    elif cfg.near_fraction:
        near = min(cfg.distances)
        plan = []
        for _ in range(size):
            d = near if rng.random() < cfg.near_fraction else cfg.distances[int(rng.integers(n_d))]
            plan.append((d, int(rng.integers(2))))
    else:  # (the first design's draws, kept so that the pilots' images stay the same)
        plan = [(cfg.distances[int(rng.integers(n_d))], int(rng.integers(2))) for _ in range(size)]
    images = np.zeros((size, cfg.resolution, cfg.resolution), dtype=np.uint8)
    marked = np.zeros((size, 2, 2), dtype=np.int64)
    chosen = np.zeros((size, 2), dtype=np.int64)
    for i, (d, lab) in enumerate(plan):
        images[i], tops, pair = _draw(cfg, rng, d, lab, glyphs)
        marked[i], chosen[i] = tops, pair
    labels = np.array([lab for _, lab in plan], dtype=np.int64)
    distances = np.array([d for d, _ in plan], dtype=np.int64)
    return ReachImages(images, labels, distances, marked, chosen)


def find_marked(image: np.ndarray, cfg: ReachConfig) -> list[np.ndarray]:
    """The marked glyphs of ``image`` (inside every complete frame, or every token holding a
    pixel lit at 255 under ``mark: bright``), scanning the token grid (a matcher's first step: it
    uses nothing but the pixels)."""
    g, p = cfg.glyph, cfg.patch
    if cfg.mark == "bright":
        tiles = image.reshape(cfg.tokens, p, cfg.tokens, p).transpose(0, 2, 1, 3)
        rows, cols = np.nonzero((tiles == ON).any(axis=(2, 3)))
        return [tiles[r, c, :g, :g] == ON for r, c in zip(rows, cols)]
    side = g + 2
    ring = np.ones((side, side), dtype=bool)
    ring[1:-1, 1:-1] = False
    found = []
    for y in range(0, cfg.resolution - side + 1, p):
        for x in range(0, cfg.resolution - side + 1, p):
            window = image[y : y + side, x : x + side] == ON
            if window[ring].all():
                found.append(window[1:-1, 1:-1])
    return found


def matcher_accuracy(split: ReachImages, cfg: ReachConfig) -> float:
    """Accuracy (0-1) of finding the two frames and saying "same" when their insides are equal."""
    right = 0
    for img, lab in zip(split.images, split.labels):
        inside = find_marked(img, cfg)
        same = len(inside) == 2 and bool((inside[0] == inside[1]).all())
        right += int(same == bool(lab))
    return right / len(split.labels)
