"""Statistics for trainings that either learn or stay at chance, with comparisons declared in advance.

The ablation trains one small backbone per (mechanism, seed) on a Pathfinder task, and its runs are
bimodal: a training either jumps off chance (to about 85-95 % top-1) or stays near 50 %. A mean and
a Student interval over 3 seeds (:mod:`attnbench.stats`) describe neither mode; this module treats
each training as an outcome that is learned or not, and asks three questions of every declared
comparison of two arms A and B (an arm: one configuration's trainings, one per seed).

**Definitions.** A training has *learned* (:func:`learned`) when its final validation top-1 is at
or above a threshold set in advance (e.g. 70 % on a two-class Pathfinder task, well clear of the
chance mode). Its *time to learn* (:func:`time_to_learn`) is the first evaluated epoch whose
validation top-1 reaches the threshold; a training that never reaches it is *censored* at its last
evaluated epoch: all we know is that it had not learned by then. (A training that crosses the
threshold and then falls back has an event in time but is not learned at the end; both views are
kept as they are.)

**Endpoints**, each tested two-sided with an exact or rank-based test, so no normal approximation
over a handful of seeds is needed (the log-rank test is the one asymptotic test, see below):

- ``counts`` (primary): k learned of n in each arm, Fisher's exact test
  (:func:`fisher_counts`, ``scipy.stats.fisher_exact``). The effect is the difference in success
  rates; the conditional maximum-likelihood odds ratio and its exact interval come from
  ``scipy.stats.contingency.odds_ratio``. One rate with its Clopper-Pearson interval:
  :func:`success_rate` (``scipy.stats.binomtest(...).proportion_ci(method="exact")``).
- ``time``: the epochs to learn, censored, compared by the log-rank test (:func:`logrank_times`,
  ``scipy.stats.logrank``, asymptotically normal: at 12 seeds per arm its raw p falls under 0.05 in
  4-6 % of null comparisons); the effect is the difference of the Kaplan-Meier
  median epochs to learn (:func:`kaplan_meier`, ``scipy.stats.ecdf`` on ``scipy.stats.CensoredData``).
- ``final``: the final top-1 of *every* training, compared by the Mann-Whitney U test
  (:func:`rank_final`), the effect the Hodges-Lehmann shift. Where trainings climb rather than jump
  (the outcome is not bimodal), the threshold throws information away and this is the stronger
  test; a study may declare it a co-primary endpoint (``primary`` in :func:`compare`).
- ``accuracy``: the final top-1 of the trainings that learned, compared by the Mann-Whitney U test
  (:func:`rank_accuracy`, ``scipy.stats.mannwhitneyu``: the exact distribution without ties, an
  exact or seeded Monte Carlo permutation distribution with ties); the effect is the Hodges-Lehmann
  shift, the median of all differences a - b. It asks how well an arm learns *given* that it
  learns; an arm with fewer than 2 learned trainings cannot be tested (p is NaN, with the reason).

**Multiplicity** (:func:`holm`, :func:`compare`). The contrasts are declared before the results are
read. The p-values of the primary endpoints (``counts``, or ``counts`` and ``final`` where both are
declared primary) of all contrasts passed to one :func:`compare` call form one family; each other
endpoint is a family of its own. Each family is adjusted by Holm's step-down method, which keeps
the chance of any false call in the family at or under ``alpha`` whatever the dependence between
the tests. A contrast is *resolved* on
an endpoint when its Holm-adjusted p-value is below ``alpha``. Anything else - a raw p-value, a
contrast picked after looking, an arm ranked by its observed rate - is *exploratory*: it may suggest
the next study, it supports no claim. Arms may be keyed by anything hashable, so a study with several
dataset levels keys them ``(level, name)`` and declares contrasts ``((level, a), (level, b))``: all of
them, passed in one call, are one family. :func:`resolved_best` names a best arm only when its
``counts`` contrasts against every other arm are resolved in its favour.

**Performance profiles** (:func:`performance_profile`): per arm, the fraction of runs whose top-1
is at or above each tau, with Clopper-Pearson bands, as in the performance profiles of rliable
(Agarwal et al., 2021): the whole distribution of outcomes instead of one mean.

**Planning** (:func:`fisher_power`, :func:`power_table`, :func:`seeds_for_power`): the exact power
of the two-sided Fisher test, by summing the probabilities of every pair of binomial outcomes whose
p-value is below ``alpha``.

Everything is deterministic. This module imports numpy alone at import time; scipy (and pandas, for
:func:`power_table`) are imported inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "ALPHA",
    "ENDPOINTS",
    "LEVEL",
    "PRIMARY_CHOICES",
    "AccuracyTest",
    "Best",
    "Contrast",
    "CountsTest",
    "Endpoint",
    "KaplanMeier",
    "OddsRatio",
    "Profile",
    "SuccessRate",
    "TimeTest",
    "Training",
    "compare",
    "fisher_counts",
    "fisher_power",
    "fisher_pvalues",
    "holm",
    "hodges_lehmann",
    "kaplan_meier",
    "learned",
    "logrank_times",
    "performance_profile",
    "power_table",
    "rank_accuracy",
    "rank_final",
    "resolved_best",
    "seeds_for_power",
    "success_rate",
    "time_to_learn",
]

ALPHA = 0.05  # family-wise error rate of the declared contrasts, per endpoint
LEVEL = 0.95  # two-sided confidence level of the intervals
ENDPOINTS = ("counts", "final", "time", "accuracy")  # "counts" is the primary endpoint by default
PRIMARY_CHOICES = ("counts", "final")  # endpoints a study may declare primary (one Holm family)
_GAMMA = 1 + 1e-14  # scipy.stats.fisher_exact's relative tolerance for "as or less likely"
_PERMUTATIONS = 9999  # Mann-Whitney with ties: resamples of the (seeded) permutation distribution


# --- trainings --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Training:
    """One training of one arm.

    Attributes:
        seed: the training seed.
        top1: final validation top-1, in points (0-100).
        curve: ``(epoch, validation top-1 in points)`` at each evaluated epoch, epochs increasing
            (stored as a tuple of tuples).
        epochs_run: epochs trained.
        stopped: why the training stopped early, if it did (e.g. ``"diverged"``); None otherwise.
    """

    seed: int
    top1: float
    curve: tuple[tuple[int, float], ...] = ()
    epochs_run: int = 0
    stopped: str | None = None

    def __post_init__(self):
        curve = tuple((int(e), float(v)) for e, v in self.curve)
        epochs = [e for e, _ in curve]
        if any(b <= a for a, b in zip(epochs, epochs[1:])):
            raise ValueError(f"Training seed {self.seed}: curve epochs must increase; got {epochs}")
        object.__setattr__(self, "curve", curve)
        object.__setattr__(self, "top1", float(self.top1))

    @classmethod
    def from_result(cls, result: Mapping) -> Training:
        """A training from the result of ``attnbench.ablation.train``: ``seed``, ``top1`` and the
        ``history`` records (``epoch``, and ``top1`` at evaluated epochs); ``stopped`` if present."""
        history = result.get("history") or []
        curve = tuple((int(h["epoch"]), float(h["top1"])) for h in history if h.get("top1") is not None)
        epochs_run = int(history[-1]["epoch"]) if history else int(result.get("epochs", 0))
        return cls(
            seed=int(result["seed"]),
            top1=float(result["top1"]),
            curve=curve,
            epochs_run=epochs_run,
            stopped=result.get("stopped"),
        )


def _check_threshold(threshold: float) -> float:
    if not math.isfinite(threshold):
        raise ValueError(f"threshold = {threshold}: needs a finite top-1 in points, e.g. 70")
    return float(threshold)


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level = {level}: a confidence level lies between 0 and 1, e.g. 0.95")


def learned(t: Training, threshold: float) -> bool:
    """True when the final validation top-1 is at or above ``threshold`` (points)."""
    return bool(t.top1 >= _check_threshold(threshold))


def time_to_learn(t: Training, threshold: float) -> tuple[int, bool]:
    """``(epoch, True)`` for the first evaluated epoch from which the top-1 stays at or above
    ``threshold`` to the end (so a training has a time to learn exactly when it :func:`learned`; a
    passing spike that falls back is not learning); else ``(last evaluated epoch, False)``: censored
    there. A training without a curve counts as one evaluation of its final top-1 at ``epochs_run``."""
    threshold = _check_threshold(threshold)
    curve = t.curve or ((t.epochs_run, t.top1),)
    if not learned(t, threshold):
        return curve[-1][0], False
    epoch = curve[-1][0]
    for e, top1 in reversed(curve):
        if top1 < threshold:
            break
        epoch = e
    return epoch, True


def _times(trainings: Sequence[Training], threshold: float) -> tuple[np.ndarray, np.ndarray]:
    pairs = [time_to_learn(t, threshold) for t in trainings]
    return np.array([p[0] for p in pairs], dtype=float), np.array([p[1] for p in pairs], dtype=bool)


def _censored(times: np.ndarray, events: np.ndarray):
    from scipy.stats import CensoredData

    return CensoredData(uncensored=times[events], right=times[~events])


# --- one arm ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SuccessRate:
    """k trainings learned of n, the rate k/n and its Clopper-Pearson interval [lo, hi] (0-1)."""

    k: int
    n: int
    rate: float
    lo: float
    hi: float
    level: float = LEVEL


def _clopper_pearson(k: int, n: int, level: float) -> tuple[float, float]:
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def success_rate(trainings: Sequence[Training], threshold: float, level: float = LEVEL) -> SuccessRate:
    """How many of the trainings learned, with the exact (Clopper-Pearson) interval of the rate."""
    _check_level(level)
    n = len(trainings)
    if n == 0:
        raise ValueError("success_rate: no training to count")
    k = sum(learned(t, threshold) for t in trainings)
    lo, hi = _clopper_pearson(k, n, level)
    return SuccessRate(k=k, n=n, rate=k / n, lo=lo, hi=hi, level=level)


@dataclasses.dataclass(frozen=True)
class KaplanMeier:
    """The Kaplan-Meier estimate of the fraction of trainings not yet learned after each epoch.

    Attributes:
        times: the distinct epochs at which a training learned or was censored, increasing.
        survival: fraction not yet learned just after each of ``times`` (a right-continuous step
            function, 1 before the first time).
        lo, hi: pointwise ``level`` confidence band of ``survival`` (scipy's ``"log-log"`` method;
            NaN where that formula is undefined, e.g. where survival is 0 or 1).
        median: the first epoch at which survival is at or below 0.5; None when not reached.
        events, n: trainings that learned during their curve, trainings in all.
    """

    times: tuple[float, ...]
    survival: tuple[float, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    median: float | None
    events: int
    n: int
    level: float = LEVEL


def _km_median(times: np.ndarray, survival: np.ndarray) -> float | None:
    reached = np.flatnonzero(survival <= 0.5 + 1e-12)
    return float(times[reached[0]]) if reached.size else None


def _km_curve(times: np.ndarray, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy.stats import ecdf

    sf = ecdf(_censored(times, events)).sf
    return np.asarray(sf.quantiles, dtype=float), np.asarray(sf.probabilities, dtype=float)


def kaplan_meier(trainings: Sequence[Training], threshold: float, level: float = LEVEL) -> KaplanMeier:
    """The step function of "not yet learned" over epochs (``scipy.stats.ecdf`` of the censored times
    to learn), its pointwise band and the median epoch to learn."""
    import warnings

    from scipy.stats import ecdf

    _check_level(level)
    if not trainings:
        raise ValueError("kaplan_meier: no training")
    times, events = _times(trainings, threshold)
    sf = ecdf(_censored(times, events)).sf
    with warnings.catch_warnings():  # "undefined at some observations": NaN there, as documented
        warnings.simplefilter("ignore", RuntimeWarning)
        band = sf.confidence_interval(confidence_level=level, method="log-log")
    q = np.asarray(sf.quantiles, dtype=float)
    s = np.asarray(sf.probabilities, dtype=float)
    return KaplanMeier(
        times=tuple(q.tolist()),
        survival=tuple(s.tolist()),
        lo=tuple(np.asarray(band.low.probabilities, dtype=float).tolist()),
        hi=tuple(np.asarray(band.high.probabilities, dtype=float).tolist()),
        median=_km_median(q, s),
        events=int(events.sum()),
        n=len(trainings),
        level=level,
    )


@dataclasses.dataclass(frozen=True)
class Profile:
    """A performance profile: for each tau, the fraction of runs with top-1 >= tau and its
    Clopper-Pearson band (each 0-1), over ``n`` runs."""

    taus: tuple[float, ...]
    fraction: tuple[float, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    n: int
    level: float = LEVEL


def performance_profile(top1s: Sequence[float], taus: Iterable[float], level: float = LEVEL) -> Profile:
    """The fraction of runs (one arm's final top-1, in points) at or above each tau, with exact
    pointwise bands; plot one per arm, fraction against tau (rliable's performance profile)."""
    _check_level(level)
    x = np.asarray(top1s, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("performance_profile: needs one top-1 per run, and at least one run")
    taus = tuple(float(t) for t in taus)
    ks = [int((x >= tau).sum()) for tau in taus]
    bands = [_clopper_pearson(k, x.size, level) for k in ks]
    return Profile(
        taus=taus,
        fraction=tuple(k / x.size for k in ks),
        lo=tuple(b[0] for b in bands),
        hi=tuple(b[1] for b in bands),
        n=int(x.size),
        level=level,
    )


# --- two arms ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OddsRatio:
    """Conditional maximum-likelihood odds ratio of learning (A over B) and its exact interval."""

    estimate: float
    lo: float
    hi: float
    level: float = LEVEL


@dataclasses.dataclass(frozen=True)
class CountsTest:
    """Fisher's exact test of k_a/n_a against k_b/n_b learned (two-sided).

    ``diff`` is rate A minus rate B (positive: A learns more often). ``odds_ratio`` (conditional
    MLE and its exact interval, ``scipy.stats.contingency.odds_ratio``) is computed on first use.
    """

    k_a: int
    n_a: int
    k_b: int
    n_b: int
    diff: float
    p: float
    level: float = LEVEL
    reason: str | None = None

    @functools.cached_property
    def odds_ratio(self) -> OddsRatio:
        from scipy.stats.contingency import odds_ratio

        res = odds_ratio(self._table(), kind="conditional")
        ci = res.confidence_interval(confidence_level=self.level)
        return OddsRatio(float(res.statistic), float(ci.low), float(ci.high), self.level)

    def _table(self) -> list[list[int]]:
        return [[self.k_a, self.n_a - self.k_a], [self.k_b, self.n_b - self.k_b]]


@dataclasses.dataclass(frozen=True)
class TimeTest:
    """The log-rank test of the times to learn of A against B (two-sided).

    ``z`` is scipy's signed statistic for A (positive: A learns sooner than expected under the null).
    ``diff`` is A's Kaplan-Meier median epoch to learn minus B's (negative: A learns sooner); NaN when
    either median is not reached. ``p`` is NaN, with ``reason``, when no training learned.
    """

    median_a: float | None
    median_b: float | None
    diff: float
    events_a: int
    events_b: int
    z: float
    p: float
    reason: str | None = None


@dataclasses.dataclass(frozen=True)
class AccuracyTest:
    """The Mann-Whitney U test of the final top-1 of the learned trainings of A against B.

    ``shift`` is the Hodges-Lehmann estimate of A minus B in points (the median of all differences);
    ``method`` is ``"exact"`` (no ties) or ``"permutation"`` (ties). ``p`` is NaN, with ``reason``,
    when an arm has fewer than 2 learned trainings.
    """

    n_a: int
    n_b: int
    median_a: float
    median_b: float
    shift: float
    u: float
    p: float
    method: str | None
    reason: str | None = None


def fisher_counts(
    a: Sequence[Training], b: Sequence[Training], threshold: float, level: float = LEVEL
) -> CountsTest:
    """Fisher's exact test (two-sided) of how many trainings learned in A and in B."""
    from scipy.stats import fisher_exact

    _check_level(level)
    if not a or not b:
        raise ValueError("fisher_counts: each arm needs at least one training")
    k_a = sum(learned(t, threshold) for t in a)
    k_b = sum(learned(t, threshold) for t in b)
    n_a, n_b = len(a), len(b)
    p = float(fisher_exact([[k_a, n_a - k_a], [k_b, n_b - k_b]]).pvalue)
    return CountsTest(k_a=k_a, n_a=n_a, k_b=k_b, n_b=n_b, diff=k_a / n_a - k_b / n_b, p=p, level=level)


def logrank_times(a: Sequence[Training], b: Sequence[Training], threshold: float) -> TimeTest:
    """The log-rank test (two-sided) of the censored epochs to learn of A and B."""
    from scipy.stats import logrank

    if not a or not b:
        raise ValueError("logrank_times: each arm needs at least one training")
    ta, ea = _times(a, threshold)
    tb, eb = _times(b, threshold)
    med_a = _km_median(*_km_curve(ta, ea))
    med_b = _km_median(*_km_curve(tb, eb))
    diff = med_a - med_b if med_a is not None and med_b is not None else math.nan
    common = dict(median_a=med_a, median_b=med_b, diff=diff, events_a=int(ea.sum()), events_b=int(eb.sum()))
    if not ea.any() and not eb.any():
        return TimeTest(**common, z=math.nan, p=math.nan, reason="no training learned in either arm")
    with np.errstate(invalid="ignore", divide="ignore"):
        res = logrank(_censored(ta, ea), _censored(tb, eb))
    z, p = float(res.statistic), float(res.pvalue)
    if not math.isfinite(p):
        return TimeTest(**common, z=math.nan, p=math.nan, reason="the log-rank statistic is undefined here")
    return TimeTest(**common, z=z, p=p)


def hodges_lehmann(x: Sequence[float], y: Sequence[float]) -> float:
    """The Hodges-Lehmann shift of x over y: the median of all differences x_i - y_j."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size == 0 or y.size == 0:
        return math.nan
    return float(np.median(np.subtract.outer(x, y)))


def _mann_whitney(x: np.ndarray, y: np.ndarray, what: str) -> AccuracyTest:
    """The two-sided Mann-Whitney U test of x against y: exact without ties; with ties, scipy's
    permutation distribution (exhaustive when there are at most 9,999 splits, otherwise 9,999
    resamples from a fixed seed). ``what`` names the values, for the reason when an arm has fewer
    than 2."""
    from scipy.stats import PermutationMethod, mannwhitneyu

    common = dict(
        n_a=int(x.size),
        n_b=int(y.size),
        median_a=float(np.median(x)) if x.size else math.nan,
        median_b=float(np.median(y)) if y.size else math.nan,
        shift=hodges_lehmann(x, y),
    )
    if x.size < 2 or y.size < 2:
        few = [f"{arm} has {n} {what}" for arm, n in (("A", x.size), ("B", y.size)) if n < 2]
        reason = " and ".join(few) + f" (the test needs 2 or more {what} trainings per arm)"
        return AccuracyTest(**common, u=math.nan, p=math.nan, method=None, reason=reason)
    ties = np.unique(np.concatenate([x, y])).size < x.size + y.size
    if ties:
        method = PermutationMethod(n_resamples=_PERMUTATIONS, rng=np.random.default_rng(0))
        res = mannwhitneyu(x, y, alternative="two-sided", method=method)
    else:
        res = mannwhitneyu(x, y, alternative="two-sided", method="exact")
    return AccuracyTest(
        **common,
        u=float(res.statistic),
        p=float(res.pvalue),
        method="permutation" if ties else "exact",
    )


def rank_accuracy(a: Sequence[Training], b: Sequence[Training], threshold: float) -> AccuracyTest:
    """The Mann-Whitney U test (two-sided) of the final top-1 of the trainings that learned in A and
    in B (:func:`_mann_whitney`); p is NaN, with the reason, when an arm has fewer than 2 learned."""
    x = np.array([t.top1 for t in a if learned(t, threshold)], dtype=float)
    y = np.array([t.top1 for t in b if learned(t, threshold)], dtype=float)
    return _mann_whitney(x, y, "learned")


def rank_final(a: Sequence[Training], b: Sequence[Training]) -> AccuracyTest:
    """The Mann-Whitney U test (two-sided) of the final top-1 of every training of A and of B,
    learned or not (:func:`_mann_whitney`): no threshold, so it keeps what a count throws away where
    trainings climb rather than jump."""
    x = np.array([t.top1 for t in a], dtype=float)
    y = np.array([t.top1 for t in b], dtype=float)
    return _mann_whitney(x, y, "finished")


# --- declared contrasts -----------------------------------------------------------------------


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the order given.

    The i-th smallest of m p-values becomes max over j <= i of min(1, (m - j + 1) p_(j)): monotone in
    the raw p-values (ties get equal values) and capped at 1. A NaN (an untested endpoint) stays NaN
    and does not count in m.
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"holm: needs a flat sequence of p-values; got shape {p.shape}")
    ok = ~np.isnan(p)
    if ((p[ok] < 0) | (p[ok] > 1)).any():
        raise ValueError(f"holm: p-values lie in [0, 1]; got {p.tolist()}")
    out = np.full(p.shape, math.nan)
    q = p[ok]
    m = q.size
    if m:
        order = np.argsort(q, kind="stable")
        steps = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * q[order]))
        adjusted = np.empty(m)
        adjusted[order] = steps
        out[ok] = adjusted
    return out


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One endpoint of one declared contrast.

    Attributes:
        effect: ``counts``: rate A - rate B; ``time``: median epoch to learn A - B (NaN when a
            median is not reached); ``accuracy``: Hodges-Lehmann shift of A's learned top-1 over B's.
        p: the raw two-sided p-value (exploratory on its own); NaN when untested.
        p_holm: Holm-adjusted within the endpoint's family (the contrasts of one :func:`compare`;
            the primary endpoints together).
        resolved: ``p_holm < alpha``.
        family: ``"primary"`` for a primary endpoint (one Holm family for all of them), else the
            endpoint's own name (its own family).
        reason: why the endpoint could not be tested; None when it was.
        test: the full test result (:class:`CountsTest`, :class:`TimeTest` or :class:`AccuracyTest`).
    """

    effect: float
    p: float
    p_holm: float
    resolved: bool
    reason: str | None
    test: CountsTest | TimeTest | AccuracyTest
    family: str = "primary"


@dataclasses.dataclass(frozen=True)
class Contrast:
    """A declared contrast of arm ``a`` against arm ``b`` and its four endpoints; ``primary``: the
    endpoints declared primary."""

    a: Hashable
    b: Hashable
    counts: Endpoint
    final: Endpoint
    time: Endpoint
    accuracy: Endpoint
    alpha: float = ALPHA
    primary: tuple[str, ...] = ("counts",)

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        return {name: getattr(self, name) for name in ENDPOINTS}


def _effect(test: CountsTest | TimeTest | AccuracyTest) -> float:
    return float(test.shift if isinstance(test, AccuracyTest) else test.diff)


def compare(
    arms: Mapping[Hashable, Sequence[Training]],
    contrasts: Sequence[tuple[Hashable, Hashable]],
    threshold: float,
    alpha: float = ALPHA,
    level: float = LEVEL,
    primary: Sequence[str] = ("counts",),
) -> list[Contrast]:
    """The four tests of each declared contrast (a, b), Holm-adjusted across all the contrasts
    given: the ``primary`` endpoints (``counts``, or ``counts`` and ``final``) together form one
    family, each other endpoint a family of its own.

    Arms are keyed by anything hashable. With several dataset levels, key them ``(level, name)`` and
    declare ``((level, a), (level, b))`` for every level in one call, so that Holm counts every
    (level, contrast) pair; calling once per level would make one family per level instead.

    Raises:
        ValueError: a contrast names an unknown arm, an arm against itself, or a pair twice; or
            ``primary`` is empty or names an endpoint other than counts and final.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha = {alpha}: lies between 0 and 1, e.g. 0.05")
    primary = tuple(dict.fromkeys(primary))
    if not primary or not set(primary) <= set(PRIMARY_CHOICES):
        raise ValueError(f"compare: primary = {list(primary)}: one or both of {list(PRIMARY_CHOICES)}")
    threshold = _check_threshold(threshold)
    seen: set[frozenset] = set()
    for pair in contrasts:
        if len(pair) != 2:
            raise ValueError(f"compare: a contrast is a pair (a, b); got {pair!r}")
        a, b = pair
        for arm in (a, b):
            if arm not in arms:
                raise ValueError(f"compare: contrast {a!r} vs {b!r} names {arm!r}, which is not an arm")
        if a == b:
            raise ValueError(f"compare: contrast {a!r} vs itself")
        if frozenset(pair) in seen:
            raise ValueError(f"compare: contrast {a!r} vs {b!r} is declared twice")
        seen.add(frozenset(pair))
    tests = {
        "counts": [fisher_counts(arms[a], arms[b], threshold, level) for a, b in contrasts],
        "final": [rank_final(arms[a], arms[b]) for a, b in contrasts],
        "time": [logrank_times(arms[a], arms[b], threshold) for a, b in contrasts],
        "accuracy": [rank_accuracy(arms[a], arms[b], threshold) for a, b in contrasts],
    }
    family = {name: "primary" if name in primary else name for name in ENDPOINTS}
    adjusted: dict[str, np.ndarray] = {}
    for fam in dict.fromkeys(family.values()):
        members = [name for name in ENDPOINTS if family[name] == fam]
        joint = holm([t.p for name in members for t in tests[name]])
        for j, name in enumerate(members):
            adjusted[name] = joint[j * len(contrasts) : (j + 1) * len(contrasts)]
    out = []
    for i, (a, b) in enumerate(contrasts):
        ends = {}
        for name in ENDPOINTS:
            t = tests[name][i]
            q = float(adjusted[name][i])
            ends[name] = Endpoint(
                effect=_effect(t),
                p=t.p,
                p_holm=q,
                resolved=bool(q < alpha),
                reason=t.reason,
                test=t,
                family=family[name],
            )
        out.append(Contrast(a=a, b=b, alpha=alpha, primary=primary, **ends))
    return out


@dataclasses.dataclass(frozen=True)
class Best:
    """The arm that resolved ``counts`` contrasts name best, or None; ``reason`` says why."""

    arm: Hashable | None
    reason: str


def resolved_best(contrasts: Sequence[Contrast], among: Sequence[Hashable] | None = None) -> Best:
    """The arm whose primary (``counts``) contrast against every other arm is declared and resolved
    in its favour (it learns more often); None, with the reason, when there is no such arm.

    ``among``: the arms in the running (default: every arm in ``contrasts``, e.g. one level's). With
    contrasts each against one baseline only the baseline can be named best: declare the pairs
    among the candidates too if a best is wanted.
    """
    arms = list(among) if among is not None else list(dict.fromkeys(x for c in contrasts for x in (c.a, c.b)))
    if len(arms) < 2:
        return Best(None, "fewer than two arms to compare")
    by_pair = {frozenset((c.a, c.b)): c for c in contrasts}

    def verdict(x, y) -> str | None:
        """None when x beats y; else why not."""
        c = by_pair.get(frozenset((x, y)))
        if c is None:
            return f"no declared contrast {x!r} vs {y!r}"
        e = c.counts
        favour = e.effect if c.a == x else -e.effect
        if not e.resolved:
            return f"{x!r} vs {y!r} is not resolved on counts (Holm p = {e.p_holm:.3g})"
        if favour <= 0:
            return f"{y!r} learns more often than {x!r} (Holm p = {e.p_holm:.3g})"
        return None

    for x in arms:
        if all(verdict(x, y) is None for y in arms if y != x):
            return Best(x, f"{x!r} learns more often than each of the other {len(arms) - 1} arms (resolved)")
    rates: dict[Hashable, float] = {}
    for c in contrasts:
        rates.setdefault(c.a, c.counts.test.k_a / c.counts.test.n_a)
        rates.setdefault(c.b, c.counts.test.k_b / c.counts.test.n_b)
    top = max(arms, key=lambda x: rates.get(x, -1.0))
    why = next(v for y in arms if y != top and (v := verdict(top, y)) is not None)
    return Best(None, f"no best arm: the highest observed rate is {top!r}'s, but {why}")


# --- planning ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _fisher_table(n_a: int, n_b: int) -> np.ndarray:
    from scipy.stats import hypergeom

    x = np.arange(n_a + 1)
    y = np.arange(n_b + 1)
    r = np.arange(n_a + n_b + 1)
    pmf = hypergeom.pmf(x[None, :], n_a + n_b, n_a, r[:, None])  # (margin r, k_a)
    # p of each k_a at margin r: the total probability of the k_a' as likely as k_a or less
    less = pmf[:, None, :] <= pmf[:, :, None] * _GAMMA
    p_r = np.minimum(1.0, (less * pmf[:, None, :]).sum(axis=-1))  # (margin r, k_a)
    ka, kb = np.meshgrid(x, y, indexing="ij")
    out = p_r[ka + kb, ka]
    out.setflags(write=False)
    return out


def fisher_pvalues(n_a: int, n_b: int | None = None) -> np.ndarray:
    """Two-sided Fisher p-value of every outcome: entry [k_a, k_b] is the p of k_a learned of n_a
    against k_b of n_b, by the rule of ``scipy.stats.fisher_exact`` (the total hypergeometric
    probability of the tables as likely as the observed or less), all at once (read-only)."""
    n_b = n_a if n_b is None else n_b
    if n_a < 1 or n_b < 1:
        raise ValueError(f"fisher_pvalues: needs at least one training per arm; got {n_a}, {n_b}")
    return _fisher_table(int(n_a), int(n_b))


def fisher_power(p_a: float, p_b: float, n_per_arm: int, alpha: float = ALPHA) -> float:
    """Exact power of the two-sided Fisher test at level ``alpha`` (resolved: p < alpha) with
    ``n_per_arm`` trainings per arm that learn with chances ``p_a`` and ``p_b``: the total
    probability of the pairs of binomial outcomes that it resolves."""
    from scipy.stats import binom

    for p in (p_a, p_b):
        if not 0 <= p <= 1:
            raise ValueError(f"fisher_power: a chance to learn lies in [0, 1]; got {p}")
    k = np.arange(n_per_arm + 1)
    weight = np.outer(binom.pmf(k, n_per_arm, p_a), binom.pmf(k, n_per_arm, p_b))
    return float(weight[fisher_pvalues(n_per_arm) < alpha].sum())


def _chance(p: float) -> str:
    text = f"{p:g}"
    return text if "." in text else f"{p:.1f}"


def power_table(n_values: Iterable[int], pairs: Iterable[tuple[float, float]], alpha: float = ALPHA):
    """A pandas DataFrame of :func:`fisher_power`: one row per seeds-per-arm in ``n_values`` (index
    ``seeds per arm``), one column per (p_a, p_b) named ``"0.9 vs 0.3"`` (``"1.0 vs 0.5"``)."""
    import pandas as pd

    n_values, pairs = list(n_values), list(pairs)
    data = {
        f"{_chance(pa)} vs {_chance(pb)}": [fisher_power(pa, pb, n, alpha) for n in n_values]
        for pa, pb in pairs
    }
    return pd.DataFrame(data, index=pd.Index(n_values, name="seeds per arm"))


def seeds_for_power(
    p_a: float, p_b: float, power: float = 0.8, alpha: float = ALPHA, n_max: int = 100
) -> int | None:
    """The smallest seeds per arm from which the exact Fisher power stays at or above ``power`` for
    every n up to ``n_max``; None when it does not by ``n_max``.

    Fisher's power is not monotone in n (the test is discrete: one more seed can move the
    resolvable outcomes so that power drops), so the first n that reaches ``power`` may be followed
    by one that does not; this returns the n from which it stays.
    """
    if not 0 < power < 1:
        raise ValueError(f"power = {power}: lies between 0 and 1, e.g. 0.8")
    ok = [fisher_power(p_a, p_b, n, alpha) >= power for n in range(1, n_max + 1)]
    if not ok[-1]:
        return None
    n = n_max
    while n > 1 and ok[n - 2]:
        n -= 1
    return n
