"""Confidence intervals of accuracy and of differences in accuracy, and the Pareto front (numpy only).

An ablation trains one model per (configuration, seed) and evaluates it on the validation images of
its dataset level; the images are the same, in the same order, for every configuration and seed of a
level. Two sources of chance shape a top-1: the training seed (initialisation, data order) and the
finite set of validation images. The intervals here resample both:

**Hierarchical bootstrap of accuracy** (:func:`bootstrap_accuracy`, :func:`accuracy_ci`). One
replicate draws S seeds with replacement from the S seeds run, then, for each drawn seed separately,
n validation images with replacement from that seed's n per-image results, and averages the drawn
results (in points, 0-100). A seed drawn twice gets two independent image draws. The number of
correct images among n drawn with replacement from a seed with k correct is Binomial(n, k/n), so
each replicate draws those counts directly: the same distribution as drawing indices, without
(resamples × S × n) arrays. The 95 % interval is the percentile interval (the 2.5th and 97.5th
percentiles of :data:`RESAMPLES` replicates); the point estimate is the observed mean. A seeded
``numpy.random.Generator`` (:data:`SEED`) makes a report's intervals the same every time it is
written.

**Paired difference** (:func:`bootstrap_difference`, :func:`paired_difference`): configuration X
minus a baseline B, in points. Pairing: each replicate draws the same seeds and, per drawn seed, the
same image indices for X and for B (X's seed s is paired with B's seed s, image i with image i). The
per-image pair falls in one of four kinds (both right, only X right, only B right, both wrong), so a
replicate draws the counts of "only X right" and "only B right" among n drawn pairs (a multinomial,
drawn as two binomials); the difference is their difference over S·n. Both models see the same
hard and easy images and start from the same seed, so what they share cancels: the interval of the
paired difference is narrower than that of two independent accuracies whenever their results are
correlated, and it is exactly [0, 0] for two models right on the same images. A difference is
**resolved** when its 95 % interval excludes 0. Seeds that only one side has are left out and
named (:attr:`Difference.only_x`, :attr:`Difference.only_base`).

**Seeds only** (:func:`seed_accuracy_ci`, :func:`seed_difference`): for rows without per-image
results (runs made before ``val_correct`` was stored), the same bootstrap over seeds alone, on the
per-seed top-1 (pairs: the per-seed differences). With fewer than :data:`MIN_SEEDS` seeds it gives
no interval (a bootstrap of two values is their range, not a 95 % interval): the bounds are NaN and
nothing is resolved.

**Pareto front** (:func:`pareto_front`): the configurations that no other beats, i.e. none has at
least their accuracy at no more cost with one of the two strictly better.

This module imports numpy alone (no torch, pandas, nor anything of attnbench).
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
    "RESAMPLES",
    "SEED",
    "SEEDS_ONLY",
    "Difference",
    "Estimate",
    "accuracy_ci",
    "bootstrap_accuracy",
    "bootstrap_difference",
    "decode_correct",
    "encode_correct",
    "interval",
    "paired_difference",
    "pareto_front",
    "seed_accuracy_ci",
    "seed_difference",
    "sentence",
    "signed",
]

RESAMPLES = 2000  # bootstrap replicates per interval
SEED = 0  # of the numpy Generator: the same intervals every time a report is written
LEVEL = 0.95  # two-sided confidence level of the percentile intervals
MIN_SEEDS = 3  # a seeds-only bootstrap needs at least this many seeds to give an interval

IMAGES_AND_SEEDS = "images and seeds"
SEEDS_ONLY = "seeds"


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A mean accuracy (points) and its percentile interval.

    Attributes:
        mean: observed mean top-1 over the seeds (each seed's top-1 over its images), in points.
        lo, hi: bounds of the ``level`` percentile interval; NaN when there is none.
        std: sample standard deviation of the per-seed top-1 (NaN for one seed).
        n_seeds: seeds averaged.
        n_images: validation images per seed; None when resampled over seeds only.
        resamples: bootstrap replicates.
        method: ``"images and seeds"`` or ``"seeds"``.
        level: confidence level of ``lo``-``hi``.
    """

    mean: float
    lo: float
    hi: float
    std: float
    n_seeds: int
    n_images: int | None
    resamples: int
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
        lo, hi: bounds of the ``level`` percentile interval; NaN when there is none.
        seeds: the shared seeds the difference is computed over.
        only_x, only_base: seeds that only X, or only the baseline, has: left out.
        n_images: validation images per seed; None when resampled over seeds only.
        resamples: bootstrap replicates.
        method: ``"images and seeds"`` or ``"seeds"``.
        paired: True when both sides took the same resampled seeds and images.
        level: confidence level of ``lo``-``hi``.
    """

    diff: float
    lo: float
    hi: float
    seeds: tuple
    only_x: tuple
    only_base: tuple
    n_images: int | None
    resamples: int
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
    """(S, n) booleans from one array of per-image results per seed, all of one length."""
    arrays = list(correct.values()) if isinstance(correct, Mapping) else list(correct)
    if not arrays:
        raise ValueError(f"{what}: no seed to resample")
    lengths = {np.asarray(a).shape for a in arrays}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
        raise ValueError(
            f"{what}: each seed needs one 1-D array of per-image results of one length; got shapes "
            f"{sorted(lengths)}"
        )
    return np.stack([np.asarray(a, dtype=bool) for a in arrays])  # (S, n)


def _percentiles(replicates: np.ndarray, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"level = {level}: a confidence level lies between 0 and 1, e.g. 0.95")
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(replicates, [tail, 100 - tail])
    return float(lo), float(hi)


def _check_resamples(resamples: int) -> None:
    if resamples < 1:
        raise ValueError(f"resamples = {resamples}: draw at least 1 (the reports use {RESAMPLES})")


def bootstrap_accuracy(
    correct: Mapping[Hashable, np.ndarray] | Sequence[np.ndarray],
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> np.ndarray:
    """Replicates of the mean top-1 (points) of the hierarchical bootstrap: seeds with replacement,
    then each drawn seed's images with replacement (drawn as binomial counts; see the module).

    Args:
        correct: per seed, the per-image correctness (booleans, same images in the same order).
        resamples: replicates to draw.
        seed: of the numpy Generator.

    Returns:
        (resamples,) mean accuracies in points.
    """
    _check_resamples(resamples)
    m = _matrix(correct, "accuracy")
    S, n = m.shape
    if n == 0:
        raise ValueError("accuracy: the seeds hold 0 validation images")
    rng = np.random.default_rng(seed)
    p = m.mean(axis=1)  # (S,) each seed's accuracy
    drawn = rng.integers(0, S, size=(resamples, S))  # (B, S) resampled seeds
    hits = rng.binomial(n, p[drawn])  # (B, S) correct images among n drawn per resampled seed
    return 100.0 * hits.sum(axis=1) / (S * n)


def accuracy_ci(
    correct: Mapping[Hashable, np.ndarray] | Sequence[np.ndarray],
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> Estimate:
    """Mean top-1 (points) over the seeds with its percentile interval from
    :func:`bootstrap_accuracy` (images and seeds resampled)."""
    m = _matrix(correct, "accuracy")
    per_seed = 100.0 * m.mean(axis=1)
    lo, hi = _percentiles(bootstrap_accuracy(correct, resamples=resamples, seed=seed), level)
    return Estimate(
        mean=float(per_seed.mean()),
        lo=lo,
        hi=hi,
        std=float(per_seed.std(ddof=1)) if len(per_seed) > 1 else math.nan,
        n_seeds=len(per_seed),
        n_images=m.shape[1],
        resamples=resamples,
        method=IMAGES_AND_SEEDS,
        level=level,
    )


def _seed_values(values: Mapping[Hashable, float], what: str) -> np.ndarray:
    out = np.array([float(v) for v in values.values()], dtype=float)
    if out.size == 0 or not np.isfinite(out).all():
        raise ValueError(f"{what}: needs one finite top-1 per seed; got {dict(values)}")
    return out


def seed_accuracy_ci(
    top1: Mapping[Hashable, float],
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
    min_seeds: int = MIN_SEEDS,
) -> Estimate:
    """Mean top-1 over seeds with an interval from resampling seeds alone (no per-image results):
    ``top1`` maps each seed to its top-1 in points. Fewer than ``min_seeds`` seeds: no interval."""
    values = _seed_values(top1, "seed_accuracy_ci")
    lo = hi = math.nan
    if len(values) >= min_seeds:
        _check_resamples(resamples)
        rng = np.random.default_rng(seed)
        drawn = rng.integers(0, len(values), size=(resamples, len(values)))
        lo, hi = _percentiles(values[drawn].mean(axis=1), level)
    return Estimate(
        mean=float(values.mean()),
        lo=lo,
        hi=hi,
        std=float(values.std(ddof=1)) if len(values) > 1 else math.nan,
        n_seeds=len(values),
        n_images=None,
        resamples=resamples,
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


def bootstrap_difference(
    x: Mapping[Hashable, np.ndarray],
    base: Mapping[Hashable, np.ndarray],
    *,
    paired: bool = True,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> np.ndarray:
    """Replicates of mean top-1 of ``x`` minus that of ``base`` (points) over their shared seeds.

    Args:
        x, base: per seed, the per-image correctness on the same images.
        paired: draw the same seeds and image indices for both (the default); False draws them
            independently for each side, as if the two had been evaluated on unrelated samples.
        resamples: replicates to draw.
        seed: of the numpy Generator.

    Returns:
        (resamples,) differences in points.
    """
    _check_resamples(resamples)
    shared, _, _ = _shared(x, base)
    mx = _matrix([x[s] for s in shared], "difference (X)")
    mb = _matrix([base[s] for s in shared], "difference (baseline)")
    if mx.shape != mb.shape:
        raise ValueError(
            f"difference: X has {mx.shape[1]} images per seed, the baseline {mb.shape[1]}; a paired "
            "difference needs the same validation images"
        )
    S, n = mx.shape
    if n == 0:
        raise ValueError("difference: the seeds hold 0 validation images")
    rng = np.random.default_rng(seed)
    if not paired:
        hx = rng.binomial(n, mx.mean(axis=1)[rng.integers(0, S, size=(resamples, S))])
        hb = rng.binomial(n, mb.mean(axis=1)[rng.integers(0, S, size=(resamples, S))])
        return 100.0 * (hx.sum(axis=1) - hb.sum(axis=1)) / (S * n)
    only_x = (mx & ~mb).mean(axis=1)  # (S,) share of images only X gets right
    only_b = (mb & ~mx).mean(axis=1)  # (S,) share only the baseline gets right
    drawn = rng.integers(0, S, size=(resamples, S))  # (B, S) the same resampled seeds for both
    px, pb = only_x[drawn], only_b[drawn]
    # multinomial counts of the two discordant kinds among n drawn pairs, as two binomials
    nx = rng.binomial(n, px)  # (B, S)
    rest = np.where(px < 1, pb / np.where(px < 1, 1 - px, 1), 0.0)
    nb = rng.binomial(n - nx, np.clip(rest, 0.0, 1.0))
    return 100.0 * (nx.sum(axis=1) - nb.sum(axis=1)) / (S * n)


def paired_difference(
    x: Mapping[Hashable, np.ndarray],
    base: Mapping[Hashable, np.ndarray],
    *,
    paired: bool = True,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> Difference:
    """X minus the baseline (points) over their shared seeds, with the percentile interval of
    :func:`bootstrap_difference`. Seeds only one side has are left out and named in the result."""
    shared, only_x, only_base = _shared(x, base)
    mx = _matrix([x[s] for s in shared], "difference (X)")
    mb = _matrix([base[s] for s in shared], "difference (baseline)")
    reps = bootstrap_difference(x, base, paired=paired, resamples=resamples, seed=seed)
    lo, hi = _percentiles(reps, level)
    return Difference(
        diff=float(100.0 * (mx.mean() - mb.mean())),
        lo=lo,
        hi=hi,
        seeds=tuple(shared),
        only_x=only_x,
        only_base=only_base,
        n_images=mx.shape[1],
        resamples=resamples,
        method=IMAGES_AND_SEEDS,
        paired=paired,
        level=level,
    )


def seed_difference(
    x: Mapping[Hashable, float],
    base: Mapping[Hashable, float],
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
    min_seeds: int = MIN_SEEDS,
) -> Difference:
    """X minus the baseline (points) from per-seed top-1 alone: the per-seed differences over the
    shared seeds, resampled over seeds. Fewer than ``min_seeds`` shared seeds: no interval."""
    shared, only_x, only_base = _shared(x, base)
    d = _seed_values({s: float(x[s]) - float(base[s]) for s in shared}, "seed_difference")
    lo = hi = math.nan
    if len(d) >= min_seeds:
        _check_resamples(resamples)
        rng = np.random.default_rng(seed)
        lo, hi = _percentiles(d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1), level)
    return Difference(
        diff=float(d.mean()),
        lo=lo,
        hi=hi,
        seeds=tuple(shared),
        only_x=only_x,
        only_base=only_base,
        n_images=None,
        resamples=resamples,
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
