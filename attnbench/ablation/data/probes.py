"""Probe rules for Pathfinder: how far rules that do not trace the path get, and one that does.

A Pathfinder image is only a test of following a path if nothing simpler solves it. This module
scores images with simple rules, fits each rule's one threshold on a random half of the images and
scores it on the other half (:func:`held_out_accuracy`), and gathers them in :func:`rule_table`, so
that tests can hold a generator to "every non-tracing rule near chance, the tracer near 100 %", and
reports can split images by the straight-line cue (:func:`straight_line_cue`, :func:`cue_split`).

Images are (n, R, R) uint8 as :func:`attnbench.ablation.data.pathfinder.generate` draws them (ink
bright on black; "ink" below is ``image / 255``); markers are (n, 2, 2) marker centres (x, y) in
pixel coordinates (pixel centres at 0..R-1, x = column, y = row); ``geo`` is the geometry that
``generate(..., return_geometry=True)`` returns.

The rules (names as in :func:`rule_table`):

- ``distance_threshold``, ``distance_interval``: the Euclidean distance between the two markers
  (:func:`marker_distance`), "connected iff above / below t" or "iff a <= d <= b". It looks at two
  points only. A generator whose connected pairs sit at a typical distance (short contours are
  nearly straight) gives the label away here (generator version 2: 94 %).
- ``marker_position``: the markers' mean distance from the image centre (:func:`marker_position`):
  where the markers are, not what joins them. A generator that places connected and not-connected
  pairs differently (e.g. not-connected pairs nearer the centre) gives the label away here.
- ``direction``: the documented direction rule (:func:`direction_score`). At each marker, the
  direction in which the path *leaves* the marker (its first paddle, pointing into the contour),
  cosine with the unit vector towards the other marker; the score is the smaller of the two
  cosines. It looks at one paddle at each end, not at the path between them: on short, nearly
  straight contours a connected marker's paddle points at the other marker. ``direction_max``: the
  larger of the two cosines.
- ``line_ink``: mean ink in a band ``band`` px wide (distance to the straight segment between the
  markers <= band / 2), leaving out the marker discs (pixels within marker radius + 1 px of a marker
  centre) (:func:`line_ink`). ``line_ink_fraction``: the fraction of points along that segment
  (every 0.5 px, outside the discs) where the brightest point across the band exceeds a threshold,
  i.e. how much of the straight line has ink near it (:func:`line_ink_fraction`). Both ask "is there
  a path along the *straight line*", not whether the ink there is one contour that reaches both
  markers: a connected contour that bends away from the line scores low, and a not-connected pair
  whose line runs along some contour scores high. The table has them for a band of 5 px (the
  reviewer's rule; a stroke counts above half the paddle contrast), and as variants for bands of 3
  and 7 px (``line_ink_3px``, ``line_ink_fraction_7px``, ...) and a faint threshold (a fifth of the
  contrast: ``line_ink_fraction_faint``), bands scaled with the resolution from 32 px.
- ``total_ink``: the sum of ink in the image (:func:`total_ink`): how much is drawn, not where.
- ``marker_ink``: ink within a few pixels of the two markers, summed (:func:`marker_ink`): what
  touches the markers, not where it leads.
- ``logistic_pixels``: L2-regularised logistic regression on the raw pixels (:func:`logistic_pixels`),
  fit on the fit half: one linear template over the image; it cannot follow a path that may lie
  anywhere, and only scores well if the label shows in fixed pixels (a generator bias).
- ``tracer``: the "perfect tracer" (:func:`flood_fill_tracer`): 8-connected components of the ink,
  connected iff both marker centres are in the same component. It needs no fit; its accuracy is on
  all images. It falls short of 100 % where different contours touch in pixels (anti-aliasing) or
  a contour breaks (gaps between paddles).

Everything is numpy and scipy, vectorised over images, and deterministic from the seed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage, optimize

__all__ = [
    "cue_split",
    "direction_score",
    "fit_interval",
    "fit_threshold",
    "flood_fill_tracer",
    "held_out_accuracy",
    "held_out_interval_accuracy",
    "line_ink",
    "line_ink_fraction",
    "logistic_pixels",
    "marker_distance",
    "marker_ink",
    "marker_position",
    "rule_table",
    "rules_on",
    "split_half",
    "straight_line_cue",
    "total_ink",
]

_STEP = 0.5  # spacing of the sample points along and across the line, px


# ----------------------------------------------------------------------------- scores


def marker_distance(markers: np.ndarray) -> np.ndarray:
    """(n,) Euclidean distance between the two markers (markers (n, 2, 2) as (x, y))."""
    m = np.asarray(markers, dtype=np.float64)
    return np.linalg.norm(m[:, 0] - m[:, 1], axis=-1)


def marker_position(markers: np.ndarray, resolution: int) -> np.ndarray:
    """(n,) mean distance of the two markers from the image centre ((resolution - 1) / 2, in px)."""
    m = np.asarray(markers, dtype=np.float64)
    return np.linalg.norm(m - (resolution - 1) / 2, axis=-1).mean(axis=1)


def direction_score(geo: dict[str, np.ndarray], which: str = "min") -> np.ndarray:
    """(n,) the direction rule's score: the smaller (``which="min"``; ``"max"``: the larger) of the
    two cosines between the direction the path leaves a marker and the direction to the other
    marker (1: both point straight at each other).

    For a marker on end 0 of its contour the path leaves along the first paddle (start -> end); on
    end 1, along the last paddle backwards (end -> start).

    Args:
        geo: ``generate(..., return_geometry=True)``'s geometry: ``segments`` (n, S, 2, 2),
            ``contour_of`` (S,), ``markers`` (n, 2, 2), ``marker_ends`` (n, 2, 2) as (contour, end).
    """
    seg = np.asarray(geo["segments"], dtype=np.float64)
    contour_of = np.asarray(geo["contour_of"])
    markers = np.asarray(geo["markers"], dtype=np.float64)
    ends = np.asarray(geo["marker_ends"])
    n_contours = int(contour_of.max()) + 1
    first = np.array([np.flatnonzero(contour_of == c)[0] for c in range(n_contours)])
    last = np.array([np.flatnonzero(contour_of == c)[-1] for c in range(n_contours)])
    rows = np.arange(seg.shape[0])
    cosines = []
    for k in (0, 1):
        c, e = ends[:, k, 0], ends[:, k, 1]
        head = seg[rows, first[c], 1] - seg[rows, first[c], 0]  # first paddle, start -> end
        tail = seg[rows, last[c], 0] - seg[rows, last[c], 1]  # last paddle, end -> start
        leave = np.where((e == 0)[:, None], head, tail)
        to_other = markers[:, 1 - k] - markers[:, k]
        norm = np.linalg.norm(leave, axis=-1) * np.linalg.norm(to_other, axis=-1)
        cosines.append((leave * to_other).sum(-1) / np.maximum(norm, 1e-12))
    return np.minimum(*cosines) if which == "min" else np.maximum(*cosines)


def _pixel_grid(R: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:R, 0:R].astype(np.float32)
    return xs, ys  # (R, R) each: x = column, y = row


def _line_frame(images: np.ndarray, markers: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per pixel: distance to the marker segment, and to each marker centre; all (n, R, R)."""
    R = images.shape[-1]
    xs, ys = _pixel_grid(R)
    m = np.asarray(markers, dtype=np.float32)
    ax, ay = m[:, 0, 0, None, None], m[:, 0, 1, None, None]
    bx, by = m[:, 1, 0, None, None], m[:, 1, 1, None, None]
    abx, aby = bx - ax, by - ay
    apx, apy = xs - ax, ys - ay
    t = np.clip((apx * abx + apy * aby) / np.maximum(abx * abx + aby * aby, 1e-12), 0.0, 1.0)
    to_line = np.hypot(apx - t * abx, apy - t * aby)
    return to_line, np.hypot(apx, apy), np.hypot(xs - bx, ys - by)


def line_ink(
    images: np.ndarray, markers: np.ndarray, band: float = 5.0, marker_radius: float = 2.0
) -> np.ndarray:
    """(n,) mean ink (image / 255) in the band of pixels within ``band / 2`` of the straight segment
    between the two markers, leaving out pixels within ``marker_radius + 1`` px of either marker
    centre (the discs themselves); 0 where no pixel is left."""
    images = np.asarray(images)
    to_line, to_a, to_b = _line_frame(images, markers)
    keep = (to_line <= band / 2) & (to_a > marker_radius + 1) & (to_b > marker_radius + 1)
    ink = images.astype(np.float32) / 255
    count = keep.sum(axis=(1, 2))
    total = np.where(keep, ink, 0.0).sum(axis=(1, 2))
    return np.where(count > 0, total / np.maximum(count, 1), 0.0).astype(np.float64)


def line_ink_fraction(
    images: np.ndarray,
    markers: np.ndarray,
    band: float = 5.0,
    marker_radius: float = 2.0,
    threshold: float = 0.25,
) -> np.ndarray:
    """(n,) fraction of the points along the straight segment between the markers (every 0.5 px,
    leaving out those within ``marker_radius + 1`` px of a marker centre) where the brightest point
    of the cross-section of the band (offsets -band/2..band/2 every 0.5 px, ink bilinearly
    interpolated) exceeds ``threshold`` (in ink units, image / 255): how much of the straight line
    has a stroke along it. 0 where no point is left."""
    images = np.asarray(images)
    n = images.shape[0]
    m = np.asarray(markers, dtype=np.float64)
    a, b = m[:, 0], m[:, 1]
    length = np.linalg.norm(b - a, axis=-1)  # (n,)
    unit = (b - a) / np.maximum(length, 1e-12)[:, None]
    normal = np.stack([-unit[:, 1], unit[:, 0]], -1)
    K = int(math.ceil(length.max() / _STEP)) + 1 if n else 1
    s = np.arange(K) * _STEP  # (K,) arc length from marker 0
    offsets = np.arange(-band / 2, band / 2 + 1e-9, _STEP)  # (J,)
    centre = a[:, None] + s[None, :, None] * unit[:, None]  # (n, K, 2)
    pts = centre[:, :, None] + offsets[None, None, :, None] * normal[:, None, None]  # (n, K, J, 2)
    idx = np.broadcast_to(np.arange(n, dtype=np.float64)[:, None, None], pts.shape[:3])
    coords = np.stack([idx, pts[..., 1], pts[..., 0]])  # (image, row, col)
    ink = images.astype(np.float32) / 255
    sampled = ndimage.map_coordinates(ink, coords.reshape(3, -1), order=1, mode="constant", cval=0.0)
    peak = sampled.reshape(n, K, len(offsets)).max(axis=-1)  # (n, K)
    clear = marker_radius + 1
    valid = (s[None] <= length[:, None]) & (s[None] > clear) & (s[None] < length[:, None] - clear)
    count = valid.sum(axis=1)
    hits = ((peak > threshold) & valid).sum(axis=1)
    return np.where(count > 0, hits / np.maximum(count, 1), 0.0)


def total_ink(images: np.ndarray) -> np.ndarray:
    """(n,) sum of the ink (image / 255) over the image."""
    return np.asarray(images, dtype=np.float64).reshape(len(images), -1).sum(axis=1) / 255


def marker_ink(images: np.ndarray, markers: np.ndarray, radius: float = 4.0) -> np.ndarray:
    """(n,) sum of the ink (image / 255) within ``radius`` px of each marker centre, both markers
    added (a pixel near both counts twice)."""
    images = np.asarray(images)
    _, to_a, to_b = _line_frame(images, markers)
    ink = images.astype(np.float32) / 255
    near = (to_a <= radius).astype(np.float32) + (to_b <= radius).astype(np.float32)
    return (ink * near).sum(axis=(1, 2)).astype(np.float64)


def straight_line_cue(
    images: np.ndarray,
    markers: np.ndarray,
    band: float = 5.0,
    marker_radius: float = 2.0,
    threshold: float = 0.25,
) -> np.ndarray:
    """(n,) the straight-line cue that reports split images by: :func:`line_ink_fraction` (how much of
    the straight segment between the markers has a stroke along it, in a ``band``-px band, discs
    left out; ``threshold`` in ink units, about half the paddles' contrast). High says "connected";
    :func:`cue_split` gives the per-image verdict.

    Of the two line-ink scores it is the stronger rule (it asks for a stroke along the whole line,
    which the mean ink of :func:`line_ink` dilutes) and the one nearest the reviewer's.
    """
    return line_ink_fraction(images, markers, band=band, marker_radius=marker_radius, threshold=threshold)


# ----------------------------------------------------------------------------- fitting rules


def split_half(n: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """(n,) bool fit mask: a random half of the images (``n // 2`` of them), the rest are scored."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[: n // 2]] = True
    return mask


def _grouped(score: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct score values (sorted) and the count of label-1 and label-0 images at each."""
    values, inverse = np.unique(np.asarray(score, dtype=np.float64), return_inverse=True)
    y = np.asarray(labels).astype(bool)
    pos = np.bincount(inverse, weights=y, minlength=len(values))
    neg = np.bincount(inverse, weights=~y, minlength=len(values))
    return values, pos, neg


def _cut(values: np.ndarray, k: int) -> float:
    """A threshold between the (k-1)-th and k-th distinct values (-inf / inf at the ends)."""
    if k <= 0:
        return -math.inf
    if k >= len(values):
        return math.inf
    return float((values[k - 1] + values[k]) / 2)


def fit_threshold(score: np.ndarray, labels: np.ndarray, direction: int | None = None) -> tuple[float, int]:
    """The most accurate rule "connected iff direction * score > direction * t" on these images.

    Args:
        direction: +1 (high score means connected), -1 (low), or None to fit it too.

    Returns:
        (t, direction); t lies halfway between two distinct scores (or is -inf / inf).
    """
    values, pos, neg = _grouped(score, labels)
    below_pos = np.concatenate([[0.0], np.cumsum(pos)])  # (U + 1,): label 1 among values[:k]
    below_neg = np.concatenate([[0.0], np.cumsum(neg)])
    up = (pos.sum() - below_pos) + below_neg  # correct with "connected iff score > cut k"
    down = below_pos + (neg.sum() - below_neg)  # correct with "connected iff score < cut k"
    if direction is None:
        direction = 1 if up.max() >= down.max() else -1
    k = int(np.argmax(up if direction == 1 else down))
    return _cut(values, k), direction


def fit_interval(score: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The most accurate rule "connected iff a < score < b" on these images (a maximum-sum run of
    +1 per connected, -1 per not-connected image over the sorted scores). Returns (a, b)."""
    values, pos, neg = _grouped(score, labels)
    c = np.concatenate([[0.0], np.cumsum(pos - neg)])  # gain of an interval = c[j] - c[i]
    lowest = np.minimum.accumulate(c)
    j = int(np.argmax(c - lowest))
    i = int(np.argmax(c[: j + 1] == lowest[j]))  # the first prefix at that minimum
    if j == i:  # no interval helps: predict all not connected
        return math.inf, math.inf
    return _cut(values, i), _cut(values, j)


def _fit_mask(n: int, seed: int | np.random.Generator, fit_mask: np.ndarray | None) -> np.ndarray:
    if fit_mask is None:
        return split_half(n, seed)
    fit_mask = np.asarray(fit_mask, dtype=bool)
    if fit_mask.shape != (n,) or fit_mask.all() or not fit_mask.any():
        raise ValueError("fit_mask must be an (n,) bool array with both fit and scored images")
    return fit_mask


def _percent(pred: np.ndarray, labels: np.ndarray) -> float:
    return float(100.0 * np.mean(np.asarray(pred).astype(bool) == np.asarray(labels).astype(bool)))


def held_out_accuracy(
    score: np.ndarray,
    labels: np.ndarray,
    seed: int | np.random.Generator = 0,
    *,
    fit_mask: np.ndarray | None = None,
) -> float:
    """Accuracy (%) of a one-threshold rule on ``score``, its threshold and direction (high or low
    means connected) fit on a random half of the images (``fit_mask``, default :func:`split_half`
    of ``seed``) and scored on the other half."""
    score, labels = np.asarray(score, dtype=np.float64), np.asarray(labels)
    fit = _fit_mask(len(score), seed, fit_mask)
    t, direction = fit_threshold(score[fit], labels[fit])
    return _percent(direction * score[~fit] > direction * t, labels[~fit])


def held_out_interval_accuracy(
    score: np.ndarray,
    labels: np.ndarray,
    seed: int | np.random.Generator = 0,
    *,
    fit_mask: np.ndarray | None = None,
) -> float:
    """Accuracy (%) of "connected iff a < score < b", (a, b) fit on a random half (as
    :func:`held_out_accuracy`) and scored on the other half."""
    score, labels = np.asarray(score, dtype=np.float64), np.asarray(labels)
    fit = _fit_mask(len(score), seed, fit_mask)
    a, b = fit_interval(score[fit], labels[fit])
    return _percent((score[~fit] > a) & (score[~fit] < b), labels[~fit])


def cue_split(cue: np.ndarray, labels: np.ndarray, fit_mask: np.ndarray | None = None) -> np.ndarray:
    """(n,) bool: where the cue says "connected", by the threshold t that makes "connected iff
    cue >= t" most accurate on the ``fit_mask`` images (all images if None).

    A report splits the not-connected images by it: cue says connected (misleading) or not (agrees).
    """
    cue, labels = np.asarray(cue, dtype=np.float64), np.asarray(labels)
    fit = np.ones(len(cue), dtype=bool) if fit_mask is None else np.asarray(fit_mask, dtype=bool)
    t, _ = fit_threshold(cue[fit], labels[fit], direction=1)
    return cue > t  # t lies between distinct fit scores, so > t is >= the next one up


# ----------------------------------------------------------------------------- logistic regression


def _logistic_fit(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Weights (d + 1,) (bias last, not penalised) minimising mean log-loss + lam / 2 * |w|^2."""
    m, d = x.shape

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = np.einsum("ij,j->i", x, w[:d]) + w[d]  # einsum: one thread, no BLAS contention
        p = 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic, without overflow
        value = np.logaddexp(0.0, z).sum() / m - (y @ z) / m + 0.5 * lam * (w[:d] @ w[:d])
        r = (p - y) / m
        grad = np.empty(d + 1)
        grad[:d] = np.einsum("ij,i->j", x, r) + lam * w[:d]
        grad[d] = r.sum()
        return float(value), grad

    res = optimize.minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return res.x


def _logistic_predict(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    z = np.einsum("ij,j->i", x, w[:-1]) + w[-1]
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def logistic_pixels(
    images_fit: np.ndarray,
    labels_fit: np.ndarray,
    images_test: np.ndarray,
    lams: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0),
    seed: int = 0,
) -> np.ndarray:
    """Probabilities (n_test,) of "connected" from L2-regularised logistic regression on the raw
    pixels (image / 255) plus a bias.

    The L2 strength (of mean log-loss + lam / 2 * |w|^2) is chosen from ``lams`` by a 2-fold split of
    the fit images (random halves from ``seed``; the most held-out correct answers, ties to the
    stronger penalty), then the model is refit on all fit images (L-BFGS-B, analytic gradient).
    """
    x = np.asarray(images_fit, dtype=np.float64).reshape(len(images_fit), -1) / 255
    y = np.asarray(labels_fit, dtype=np.float64)
    xt = np.asarray(images_test, dtype=np.float64).reshape(len(images_test), -1) / 255
    fold = split_half(len(y), seed)
    best, best_correct = lams[0], -1.0
    for lam in sorted(lams, reverse=True):
        correct = 0.0
        for part in (fold, ~fold):
            w = _logistic_fit(x[part], y[part], lam)
            correct += np.sum((_logistic_predict(x[~part], w) > 0.5) == (y[~part] > 0.5))
        if correct > best_correct:
            best, best_correct = lam, correct
    return _logistic_predict(xt, _logistic_fit(x, y, best))


# ----------------------------------------------------------------------------- the tracer


def flood_fill_tracer(images: np.ndarray, markers: np.ndarray, threshold: float = 0.225) -> np.ndarray:
    """(n,) bool: connected iff both marker centre pixels lie in one 8-connected component of the
    pixels whose ink (image / 255) exceeds ``threshold`` (a centre pixel without ink: not connected).

    It follows the ink, so it needs no learning; it errs only where separate contours touch in pixels
    (false "connected") or a contour's ink breaks up below the threshold (false "not connected").
    The default, 0.45 of the ``easy`` paddles' contrast 0.5, keeps a 1-px anti-aliased stroke
    8-connected (it needs the pixels within 0.5 px of its centre line, those above half the contrast)
    while thinning the strokes so that neighbours touch less; pass ``0.45 * contrast`` for others.
    """
    images = np.asarray(images)
    n, R = images.shape[0], images.shape[-1]
    mask = images.astype(np.float32) / 255 > threshold
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connectivity within each image, none across images
    components, _ = ndimage.label(mask, structure=structure)
    centre = np.clip(np.rint(np.asarray(markers)).astype(np.int64), 0, R - 1)  # (n, 2, (x, y))
    rows = np.arange(n)
    a = components[rows, centre[:, 0, 1], centre[:, 0, 0]]
    b = components[rows, centre[:, 1, 1], centre[:, 1, 0]]
    return (a == b) & (a > 0)


# ----------------------------------------------------------------------------- the table


def rule_table(cfg: Any, n: int = 2000, seed: int = 123, split_seed: int = 0) -> dict[str, float]:
    """Held-out accuracy (%) of every rule of the module docstring on ``generate(cfg, n, seed)``.

    Every fitted rule is fit on one random half (:func:`split_half` of ``split_seed``, the same for
    all rules) and scored on the other; ``tracer`` is :func:`flood_fill_tracer`'s plain accuracy on
    all n images. Pixel sizes (the marker discs left out of the line band) come from ``cfg``.

    Args:
        cfg: a :class:`~attnbench.ablation.data.pathfinder.PathfinderConfig`.
    """
    from attnbench.ablation.data import pathfinder  # the generator, only for the table

    images, labels, geo = pathfinder.generate(cfg, n, seed, return_geometry=True)
    return rules_on(
        images, labels, geo, marker_radius=cfg.radius, contrast=cfg.contrast, split_seed=split_seed
    )


def rules_on(
    images: np.ndarray,
    labels: np.ndarray,
    geo: dict[str, np.ndarray],
    marker_radius: float = 2.0,
    contrast: float = 0.5,
    split_seed: int = 0,
) -> dict[str, float]:
    """:func:`rule_table` on images already generated (``geo`` from ``return_geometry=True``), drawn
    with marker discs of ``marker_radius`` px and paddles of ``contrast`` (the config's ``radius`` and
    ``contrast``): the line-ink fraction counts a stroke above half the contrast, the tracer follows
    ink above 0.45 of it (thin enough that strokes 2.5 px apart rarely touch, thick enough that a
    1-px stroke stays 8-connected)."""
    markers = geo["markers"]
    fit = split_half(len(labels), split_seed)
    distance = marker_distance(markers)
    scale = images.shape[-1] / 32  # bands in px at 32 px
    scores = {
        "direction": direction_score(geo),
        "direction_max": direction_score(geo, "max"),
        "line_ink": line_ink(images, markers, band=5 * scale, marker_radius=marker_radius),
        "line_ink_fraction": line_ink_fraction(
            images, markers, band=5 * scale, marker_radius=marker_radius, threshold=0.5 * contrast
        ),
        "line_ink_fraction_faint": line_ink_fraction(
            images, markers, band=5 * scale, marker_radius=marker_radius, threshold=0.2 * contrast
        ),
        **{
            f"line_ink_{band}px": line_ink(images, markers, band=band * scale, marker_radius=marker_radius)
            for band in (3, 7)
        },
        **{
            f"line_ink_fraction_{band}px": line_ink_fraction(
                images, markers, band=band * scale, marker_radius=marker_radius, threshold=0.5 * contrast
            )
            for band in (3, 7)
        },
        "total_ink": total_ink(images),
        "marker_ink": marker_ink(images, markers, radius=marker_radius + 2),
        "marker_position": marker_position(markers, images.shape[-1]),
    }
    table = {
        "distance_threshold": held_out_accuracy(distance, labels, fit_mask=fit),
        "distance_interval": held_out_interval_accuracy(distance, labels, fit_mask=fit),
    }
    table.update({name: held_out_accuracy(s, labels, fit_mask=fit) for name, s in scores.items()})
    prob = logistic_pixels(images[fit], labels[fit], images[~fit], seed=split_seed)
    table["logistic_pixels"] = _percent(prob > 0.5, labels[~fit])
    table["tracer"] = _percent(flood_fill_tracer(images, markers, threshold=0.45 * contrast), labels)
    return table
