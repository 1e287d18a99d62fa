"""Confidence intervals of accuracy and of differences in accuracy, and the Pareto front.

An ablation trains one model per (configuration, seed) and evaluates it on the validation images of
its dataset level; the images are the same, in the same order, for every configuration and seed of a
level. Two sources of chance shape a top-1: the training seed (initialisation, data order) and the
finite set of validation images. The intervals here cover both.

**Accuracy** (:func:`accuracy_ci`). The estimate is the mean over the S seeds of each seed's top-1
on the n images (in points, 0-100). Its variance has two parts, each estimated from the results:

- seeds: the sample variance of the S per-seed top-1 over S (S - 1 degrees of freedom);
- images: the sample variance over the n images of each image's result averaged over the seeds,
  over n (n - 1 degrees of freedom). The images are the same for every seed, so this is the part of
  the image sampling that no number of seeds averages away.

The interval is the mean ± sqrt(t_seeds² × seeds' part + t_images² × images' part), each t the
Student quantile at that part's degrees of freedom (:func:`student_interval`): with 3 seeds t_seeds
is 4.30, so when the seeds dominate (as they do when models "jump" off chance at different epochs)
the interval is the textbook Student interval over seeds; when the images dominate it is close to
the usual mean ± 1.96 standard errors. With one seed it covers the images alone. The bounds are
clipped to [0, 100]: a wide interval near 100 % stops there. An image's noise
that differs from seed to seed enters both parts, so the interval errs wide by that much.

Why not the hierarchical percentile bootstrap (seeds with replacement, then images) that this module
used before: resampling 3 seeds can never spread wider than the 3 values, and the percentile interval
uses normal, not Student, quantiles. In simulations of two identical mechanisms whose seeds spread
by 2-5 points, it called 19-27 % of the differences resolved instead of 5 %
(``tests/test_stats.py::test_identical_mechanisms_are_rarely_resolved`` holds this method at or
under 5 %).

**Paired difference** (:func:`paired_difference`): configuration X minus a baseline B, in points. The
same two parts, computed on the per-image differences x - b (each -1, 0 or 1): seed s of X is paired
with seed s of B and image i with image i, so what the two share (the hard images, the seed's data
order) cancels. The interval of the paired difference is narrower than that of two independent
accuracies whenever their results are correlated, and it is exactly [0, 0] for two models right on
the same images. ``paired=False`` treats the two as unrelated samples (the four parts add). A
difference is **resolved** when its 95 % interval excludes 0. Seeds that only one side has are left
out and named (:attr:`Difference.only_x`, :attr:`Difference.only_base`).

**Seeds only** (:func:`seed_accuracy_ci`, :func:`seed_difference`): for rows without per-image
results (runs made before ``val_correct`` was stored), the Student interval over the per-seed top-1
(pairs: the per-seed differences), S - 1 degrees of freedom. With fewer than :data:`MIN_SEEDS` seeds
it gives no interval (over two seeds t is 12.7 standard errors: no use): the bounds are NaN and
nothing is resolved.

**Pareto front** (:func:`pareto_front`): the configurations that no other beats, i.e. none has at
least their accuracy at no more cost with one of the two strictly better.

This module imports numpy alone at import time (the Student quantile imports ``scipy.stats`` when
an interval is computed; no torch, pandas, nor anything of attnbench).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

__all__ = [
    "IMAGES_AND_SEEDS",
    "LEVEL",
    "MIN_SEEDS",
    "SEEDS_ONLY",
    "Difference",
    "Estimate",
    "accuracy_ci",
    "decode_correct",
    "encode_correct",
    "interval",
    "paired_difference",
    "pareto_front",
    "seed_accuracy_ci",
    "seed_difference",
    "sentence",
    "signed",
    "student_interval",
]

LEVEL = 0.95  # two-sided confidence level of the intervals
MIN_SEEDS = 3  # a seeds-only interval needs at least this many seeds

IMAGES_AND_SEEDS = "images and seeds"
SEEDS_ONLY = "seeds"


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A mean accuracy (points) and its interval.

    Attributes:
        mean: observed mean top-1 over the seeds (each seed's top-1 over its images), in points.
        lo, hi: bounds of the ``level`` interval; NaN when there is none.
        std: sample standard deviation of the per-seed top-1 (NaN for one seed).
        n_seeds: seeds averaged.
        n_images: validation images per seed; None for seeds only.
        method: ``"images and seeds"`` or ``"seeds"``.
        level: confidence level of ``lo``-``hi``.
    """

    mean: float
    lo: float
    hi: float
    std: float
    n_seeds: int
    n_images: int | None
    method: str
    level: float = LEVEL

    @property
    def has_ci(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi)


@dataclasses.dataclass(frozen=True)
class Difference:
    """Mean top-1 of X minus that of a baseline (points) over their shared seeds, with its interval.

    Attributes:
        diff: observed difference of the means, in points (positive: X is better).
        lo, hi: bounds of the ``level`` interval; NaN when there is none.
        seeds: the shared seeds the difference is computed over.
        only_x, only_base: seeds that only X, or only the baseline, has: left out.
        n_images: validation images per seed; None for seeds only.
        method: ``"images and seeds"`` or ``"seeds"``.
        paired: True when seed s of X was paired with seed s of the baseline and image i with image i.
        level: confidence level of ``lo``-``hi``.
    """

    diff: float
    lo: float
    hi: float
    seeds: tuple
    only_x: tuple
    only_base: tuple
    n_images: int | None
    method: str
    paired: bool = True
    level: float = LEVEL

    @property
    def has_ci(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    @property
    def resolved(self) -> bool:
        """True when the interval excludes 0."""
        return self.has_ci and (self.lo > 0 or self.hi < 0)


def encode_correct(correct: np.ndarray) -> str:
    """Per-image top-1 correctness in val order as a row's ``val_correct``: hex of
    ``np.packbits(correct, bitorder="little")``, so 1,000 images take 250 characters."""
    return np.packbits(np.asarray(correct, dtype=bool), bitorder="little").tobytes().hex()


def decode_correct(text: str, n: int) -> np.ndarray:
    """The per-image correctness a row's ``val_correct`` holds: hex of
    ``np.packbits(correct, bitorder="little")``, bit i (little-endian within each byte) = image i.

    Raises:
        ValueError: ``text`` is not hex, or holds too few or too many bits for ``n`` images.
    """
    try:
        raw = bytes.fromhex(str(text))
    except ValueError as e:
        raise ValueError(f"val_correct = {str(text)[:20]!r}...: not hex ({e})") from None
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
    if n < 0 or len(bits) < n or len(bits) - n >= 8:
        raise ValueError(
            f"val_correct holds {len(bits)} bits, which cannot encode val_n = {n} images "
            f"(needs {math.ceil(max(n, 0) / 8) * 2} hex characters)"
        )
    return bits[:n].astype(bool)


def _matrix(correct: Mapping[Hashable, np.ndarray] | Sequence[np.ndarray], what: str) -> np.ndarray:
    """(S, n) booleans from one array of per-image results per seed, all of one length (n >= 2)."""
    arrays = list(correct.values()) if isinstance(correct, Mapping) else list(correct)
    if not arrays:
        raise ValueError(f"{what}: no seed to estimate from")
    lengths = {np.asarray(a).shape for a in arrays}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
        raise ValueError(
            f"{what}: each seed needs one 1-D array of per-image results of one length; got shapes "
            f"{sorted(lengths)}"
        )
    m = np.stack([np.asarray(a, dtype=bool) for a in arrays])  # (S, n)
    if m.shape[1] < 2:
        raise ValueError(
            f"{what}: the seeds hold {m.shape[1]} validation images; an interval needs 2 or more"
        )
    return m


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level = {level}: a confidence level lies between 0 and 1, e.g. 0.95")


def student_interval(
    mean: float, parts: Sequence[tuple[float, float]], level: float = LEVEL
) -> tuple[float, float]:
    """``mean`` ± the half-width sqrt(sum of t_k² v_k) over independent parts k, each with the
    variance v_k it adds to the estimate and t_k the Student quantile at its degrees of freedom.

    One part gives the textbook Student interval. Several add in quadrature, each widened by its
    own quantile: the seeds' few degrees of freedom widen only the seeds' share. (Pooling the parts
    under one Welch-Satterthwaite quantile instead called 7-8 % of null differences resolved at
    95 % over 3 seeds in the simulations of tests/test_stats.py; this stays at or under 5 %.)

    Returns:
        (lo, hi); no variance at all gives (mean, mean).
    """
    _check_level(level)
    live = [(v, d) for v, d in parts if v > 0]
    if not live:
        return mean, mean
    from scipy.stats import t  # here, not at the top: training workers import this module too

    q = t.ppf((1 + level) / 2, [d for _, d in live])
    half = math.sqrt(float(np.sum(q**2 * np.array([v for v, _ in live]))))
    return mean - half, mean + half


def _parts(m: np.ndarray) -> list[tuple[float, float]]:
    """Variance parts of the mean of an (S, n) matrix of per-image values, in its units squared:
    images (each image averaged over the seeds) and, with two or more seeds, seeds."""
    S, n = m.shape
    parts = [(float(m.mean(axis=0).var(ddof=1)) / n, n - 1.0)]
    if S > 1:
        parts.append((float(m.mean(axis=1).var(ddof=1)) / S, S - 1.0))
    return parts


def _clip_top1(lo: float, hi: float) -> tuple[float, float]:
    """An accuracy's bounds within [0, 100] whatever the spread (NaN stays NaN)."""
    return float(np.clip(lo, 0.0, 100.0)), float(np.clip(hi, 0.0, 100.0))


def accuracy_ci(
    correct: Mapping[Hashable, np.ndarray] | Sequence[np.ndarray], *, level: float = LEVEL
) -> Estimate:
    """Mean top-1 (points) over the seeds with its Student interval over seeds and images (see the
    module). ``correct``: per seed, the per-image correctness on the same images in the same order."""
    m = 100.0 * _matrix(correct, "accuracy")
    per_seed = m.mean(axis=1)
    mean = float(per_seed.mean())
    lo, hi = _clip_top1(*student_interval(mean, _parts(m), level))
    return Estimate(
        mean=mean,
        lo=lo,
        hi=hi,
        std=float(per_seed.std(ddof=1)) if len(per_seed) > 1 else math.nan,
        n_seeds=len(per_seed),
        n_images=m.shape[1],
        method=IMAGES_AND_SEEDS,
        level=level,
    )


def _seed_values(values: Mapping[Hashable, float], what: str) -> np.ndarray:
    out = np.array([float(v) for v in values.values()], dtype=float)
    if out.size == 0 or not np.isfinite(out).all():
        raise ValueError(f"{what}: needs one finite top-1 per seed; got {dict(values)}")
    return out


def _seed_interval(values: np.ndarray, level: float, min_seeds: int) -> tuple[float, float]:
    if len(values) < max(min_seeds, 2):
        _check_level(level)
        return math.nan, math.nan
    return student_interval(
        float(values.mean()), [(float(values.var(ddof=1)) / len(values), len(values) - 1.0)], level
    )


def seed_accuracy_ci(
    top1: Mapping[Hashable, float], *, level: float = LEVEL, min_seeds: int = MIN_SEEDS
) -> Estimate:
    """Mean top-1 over seeds with the Student interval over seeds alone (no per-image results):
    ``top1`` maps each seed to its top-1 in points. Fewer than ``min_seeds`` seeds: no interval."""
    values = _seed_values(top1, "seed_accuracy_ci")
    lo, hi = _clip_top1(*_seed_interval(values, level, min_seeds))
    return Estimate(
        mean=float(values.mean()),
        lo=lo,
        hi=hi,
        std=float(values.std(ddof=1)) if len(values) > 1 else math.nan,
        n_seeds=len(values),
        n_images=None,
        method=SEEDS_ONLY,
        level=level,
    )


def _shared(x: Mapping[Hashable, object], base: Mapping[Hashable, object]) -> tuple[list, tuple, tuple]:
    shared = [s for s in x if s in base]
    only_x = tuple(s for s in x if s not in base)
    only_base = tuple(s for s in base if s not in x)
    if not shared:
        raise ValueError(
            f"no seed in common: X has seeds {sorted(map(str, x))}, the baseline {sorted(map(str, base))}; "
            "a paired difference needs runs of both with the same seed"
        )
    return shared, only_x, only_base


def paired_difference(
    x: Mapping[Hashable, np.ndarray],
    base: Mapping[Hashable, np.ndarray],
    *,
    paired: bool = True,
    level: float = LEVEL,
) -> Difference:
    """X minus the baseline (points) over their shared seeds, with its Student interval over seeds
    and images (see the module). Seeds only one side has are left out and named in the result.

    Args:
        x, base: per seed, the per-image correctness on the same images.
        paired: pair seed with seed and image with image (the default); False treats the two as
            unrelated samples.
        level: two-sided confidence level.
    """
    shared, only_x, only_base = _shared(x, base)
    mx = 100.0 * _matrix([x[s] for s in shared], "difference (X)")
    mb = 100.0 * _matrix([base[s] for s in shared], "difference (baseline)")
    if mx.shape != mb.shape:
        raise ValueError(
            f"difference: X has {mx.shape[1]} images per seed, the baseline {mb.shape[1]}; a paired "
            "difference needs the same validation images"
        )
    diff = float(mx.mean() - mb.mean())
    parts = _parts(mx - mb) if paired else _parts(mx) + _parts(mb)
    lo, hi = student_interval(diff, parts, level)
    return Difference(
        diff=diff,
        lo=lo,
        hi=hi,
        seeds=tuple(shared),
        only_x=only_x,
        only_base=only_base,
        n_images=mx.shape[1],
        method=IMAGES_AND_SEEDS,
        paired=paired,
        level=level,
    )


def seed_difference(
    x: Mapping[Hashable, float],
    base: Mapping[Hashable, float],
    *,
    level: float = LEVEL,
    min_seeds: int = MIN_SEEDS,
) -> Difference:
    """X minus the baseline (points) from per-seed top-1 alone: the Student interval of the per-seed
    differences over the shared seeds. Fewer than ``min_seeds`` shared seeds: no interval."""
    shared, only_x, only_base = _shared(x, base)
    d = _seed_values({s: float(x[s]) - float(base[s]) for s in shared}, "seed_difference")
    lo, hi = _seed_interval(d, level, min_seeds)
    return Difference(
        diff=float(d.mean()),
        lo=lo,
        hi=hi,
        seeds=tuple(shared),
        only_x=only_x,
        only_base=only_base,
        n_images=None,
        method=SEEDS_ONLY,
        level=level,
    )


def signed(value: float, digits: int = 1, sign: bool = False) -> str:
    """``-1.1`` as ``−1.1`` (a minus sign, not a hyphen); ``sign`` adds ``+`` to positive values."""
    text = f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"
    return text.replace("-", "−")


def interval(lo: float, hi: float, digits: int = 1) -> str:
    """``1.2–5.0``; ``−1.1 to 1.9`` when a bound is negative (a dash would read as a minus)."""
    joint = "–" if lo >= 0 and hi >= 0 else " to "
    return f"{signed(lo, digits)}{joint}{signed(hi, digits)}"


def sentence(d: Difference, name: str, baseline: str, *, digits: int = 1) -> str:
    """What a difference says, in words.

    - resolved, X better: ``BRA (S=4, k=4) beats Global by 3.1 points (95 % CI 1.2–5.0)``;
    - resolved, baseline better: ``Global beats Swin by 2.0 points (95 % CI 0.5–3.5)`` (the interval
      of baseline − X);
    - otherwise: ``Swin vs Global: not resolved (difference +0.4 points, 95 % CI −1.1 to 1.9)``.

    Seeds left out of the pairing are named after it; with no interval (seeds only, fewer than
    :data:`MIN_SEEDS` seeds) the sentence says why.
    """
    pct = f"{round(d.level * 100):d} % CI"
    if d.resolved:
        if d.lo > 0:
            text = (
                f"{name} beats {baseline} by {signed(d.diff, digits)} points "
                f"({pct} {interval(d.lo, d.hi, digits)})"
            )
        else:
            text = (
                f"{baseline} beats {name} by {signed(-d.diff, digits)} points "
                f"({pct} {interval(-d.hi, -d.lo, digits)})"
            )
    elif d.has_ci:
        text = (
            f"{name} vs {baseline}: not resolved (difference {signed(d.diff, digits, sign=True)} points, "
            f"{pct} {interval(d.lo, d.hi, digits)})"
        )
    else:
        text = (
            f"{name} vs {baseline}: not resolved (difference {signed(d.diff, digits, sign=True)} points over "
            f"{len(d.seeds)} seed{'s' if len(d.seeds) != 1 else ''}; no per-image results and fewer than "
            f"{MIN_SEEDS} seeds, so no interval)"
        )
    left = []
    if d.only_x:
        left.append(f"seed {', '.join(map(str, d.only_x))} of {name} (no {baseline} run)")
    if d.only_base:
        left.append(f"seed {', '.join(map(str, d.only_base))} of {baseline} (no {name} run)")
    if left:
        text += f"; paired over seeds {', '.join(map(str, d.seeds))}, leaving out " + " and ".join(left)
    return text


def pareto_front(cost: Sequence[float], accuracy: Sequence[float]) -> list[int]:
    """Indices of the points on the front (lower cost, higher accuracy), in order of cost.

    A point is on the front when no other has at most its cost and at least its accuracy with one of
    the two strictly better; equal points are all on it. Points with a NaN are never on it.
    """
    c = np.asarray(cost, dtype=float)
    a = np.asarray(accuracy, dtype=float)
    if c.shape != a.shape or c.ndim != 1:
        raise ValueError(
            f"pareto_front: cost and accuracy need one value per point; got {c.shape}, {a.shape}"
        )
    ok = np.isfinite(c) & np.isfinite(a)
    front = []
    for i in np.flatnonzero(ok):
        others = ok & (c <= c[i]) & (a >= a[i]) & ((c < c[i]) | (a > a[i]))
        if not others.any():
            front.append(int(i))
    return sorted(front, key=lambda i: (c[i], -a[i]))
