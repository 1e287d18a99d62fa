"""The primary analysis of an ablation run: did each training learn, and do the declared contrasts
resolve a difference? (:mod:`attnbench.kinds.ablation.outcomes`, docs/outcomes.md.)

Ablation trainings are bimodal: each either learns (jumps to about 85-95 % validation top-1) or
stays near chance. So the report counts, per dataset level and configuration, the trainings that
*learned* (final validation top-1 at or above the run's threshold, ``analysis.learned_top1``) and
compares configurations only along the contrasts declared before the run:

- :func:`analysis_plan`: the threshold, the contrasts (pairs of mechanism names) and alpha from the
  manifest's ``conditions.analysis``; a run without one gets 70 % and every mechanism against the
  baseline, and the report says that these were not declared before the run;
- :func:`arms_of`: one arm per (level, configuration): its trainings (:class:`outcomes.Training`)
  from the ok rows, a seed run twice counted once (its last row);
- :func:`outcome_analysis`: each arm's success rate (Clopper-Pearson), Kaplan-Meier median epoch to
  learn and the top-1 of its learned trainings; every contrast ``(a, b)`` applied to every
  configuration of ``a`` against the first configuration of ``b`` at every level, all of these
  (level, contrast) pairs tested in one :func:`outcomes.compare` call, so that Holm counts
  them as one family per endpoint; the best configuration of a level only where
  :func:`attnbench.kinds.ablation.outcomes.resolved_best` names one; the exact Fisher power of the design;
- :func:`cue_reliance`: on Pathfinder levels of a known generator version (3 or 4), the learned
  trainings' accuracy on the not-connected validation images where the straight-line cue agrees
  with the label and where it misleads (:mod:`attnbench.ablation.data.probes`);
- :func:`outcome_tables`, :func:`cue_tables`, :func:`outcome_findings`, :func:`outcome_method_text`:
  the tables, the summary's sentences and the method paragraph.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from attnbench import stats
from attnbench.kinds.ablation import outcomes
from attnbench.kinds.ablation.accuracy import (
    DASH,
    _levels,
    _seed,
    _slug,
    ablation_findings,
    baseline_mechanism,
    method_text,
)
from attnbench.kinds.ablation.outcomes import Best, Contrast, KaplanMeier, SuccessRate, Training
from attnbench.report._document import Doc, Table, Tex, latex_escape
from attnbench.report._results import latex_labels

__all__ = [
    "DEFAULT_LEARNED_TOP1",
    "POWER_CHANCES",
    "Arms",
    "CueLevel",
    "OutcomeAnalysis",
    "Plan",
    "analysis_plan",
    "arms_of",
    "cue_reliance",
    "cue_tables",
    "fmt_p",
    "outcome_analysis",
    "outcome_findings",
    "outcome_method_text",
    "outcome_tables",
]

DEFAULT_LEARNED_TOP1 = 70.0  # % val top-1 of a run that declared no threshold (two classes: chance 50 %)
POWER_CHANCES = (0.9, 0.3)  # the chances to learn whose difference the power line is about
CUE_VERSIONS = (3, 4)  # Pathfinder generator versions the straight-line cue is computed for


# --- the plan: threshold, contrasts, alpha --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the report tests, from the manifest's ``conditions.analysis``.

    Attributes:
        threshold: validation top-1 (%) from which a training counts as learned.
        contrasts: ``(a, b)`` mechanism names: every configuration of a against b's first.
        alpha: family-wise error rate of each Holm family.
        primary: the primary endpoints (``counts``, or ``counts`` and ``final``), one Holm family.
        declared: the study file declared the contrasts before the run.
        given: the manifest has an ``analysis`` mapping (runs made since the study wrote one).
        baseline, baseline_why: the baseline mechanism and where it came from.
    """

    threshold: float
    contrasts: tuple[tuple[str, str], ...]
    alpha: float
    declared: bool
    given: bool
    baseline: str
    baseline_why: str
    primary: tuple[str, ...] = ("counts",)

    def words(self) -> str:
        """Where the threshold and the contrasts come from, in one clause."""
        if self.declared:
            return "the threshold and the contrasts were declared in the study file before the run"
        if self.given:
            return (
                "the study file declared no contrasts, so these are its defaults (every mechanism against "
                "the baseline); the threshold is the study's learned_top1"
            )
        return (
            "**not declared before the run**: the run predates declared analyses, so the report applies "
            f"its defaults (learned at {self.threshold:g} %, every mechanism against the baseline); read "
            "every contrast as exploratory"
        )


def analysis_plan(df: pd.DataFrame, manifest: Mapping[str, Any] | None = None) -> Plan:
    """The run's threshold, contrasts and alpha: ``conditions.analysis`` of the manifest
    (``learned_top1``, ``contrasts`` as ``[[a, b], ...]``, ``alpha``, and ``declared`` where the study
    wrote it); defaults where absent: 70 %, every other mechanism against the baseline
    (:func:`attnbench.kinds.ablation.accuracy.baseline_mechanism`), 0.05. Pairs naming one mechanism twice are
    dropped, and a pair given twice counts once."""
    conditions = (manifest or {}).get("conditions") or {}
    given = conditions.get("analysis")
    baseline, why = baseline_mechanism(df, dict(manifest or {}))
    names = list(dict.fromkeys(str(m) for m in df["mechanism"])) if not df.empty else []
    default = [(n, baseline) for n in names if n != baseline]
    if isinstance(given, Mapping):
        threshold = float(given.get("learned_top1", DEFAULT_LEARNED_TOP1))
        alpha = float(given.get("alpha", outcomes.ALPHA))
        pairs = given.get("contrasts")
        declared = bool(given.get("declared", bool(pairs)))
        primary = _primary(given.get("primary"))
        if not pairs:
            pairs, declared = default, False
    else:
        threshold, alpha, pairs, declared = DEFAULT_LEARNED_TOP1, outcomes.ALPHA, default, False
        primary = ("counts",)
    contrasts = tuple(dict.fromkeys((str(a), str(b)) for a, b in pairs if str(a) != str(b)))
    return Plan(
        threshold=threshold,
        contrasts=contrasts,
        alpha=alpha,
        declared=declared,
        given=isinstance(given, Mapping),
        baseline=baseline,
        baseline_why=why,
        primary=primary,
    )


def _primary(value: Any) -> tuple[str, ...]:
    """The manifest's ``primary`` endpoints, in the order of :data:`outcomes.ENDPOINTS`;
    counts alone where absent or unreadable (a run made before studies could declare them)."""
    if not isinstance(value, list | tuple):
        return ("counts",)
    chosen = {str(v) for v in value} & set(outcomes.PRIMARY_CHOICES)
    return tuple(e for e in outcomes.ENDPOINTS if e in chosen) or ("counts",)


# --- arms: the trainings of each (level, configuration) ------------------------------------------


def _number(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _curve(text: Any) -> tuple[tuple[int, float], ...]:
    """A row's ``curve`` (JSON list of [epoch, top-1]) as increasing (epoch, top-1) pairs; an
    epoch given twice keeps its last value; unreadable text gives no curve."""
    if not isinstance(text, str) or not text.strip():
        return ()
    try:
        points = json.loads(text)
    except ValueError:
        return ()
    by_epoch: dict[int, float] = {}
    for point in points if isinstance(points, list) else []:
        try:
            epoch, top1 = int(float(point[0])), float(point[1])
        except (TypeError, ValueError, IndexError):
            continue
        if math.isfinite(top1):
            by_epoch[epoch] = top1
    return tuple(sorted(by_epoch.items()))


def _stopped(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text if text and text.lower() not in ("nan", "none", "<na>") else None


def _planned_epochs(manifest: Mapping[str, Any] | None) -> int:
    train = ((manifest or {}).get("conditions") or {}).get("train") or {}
    epochs = _number(train.get("epochs")) if isinstance(train, Mapping) else math.nan
    return int(epochs) if math.isfinite(epochs) else 0


def _training(row: pd.Series, seed: int, planned: int) -> Training:
    curve = _curve(row.get("curve"))
    epochs = _number(row.get("epochs_run"))
    if not math.isfinite(epochs):
        epochs = curve[-1][0] if curve else _number(row.get("epochs"))
    if not math.isfinite(epochs):
        epochs = planned
    return Training(
        seed=seed,
        top1=float(row["top1"]),
        curve=curve,
        epochs_run=int(epochs),
        stopped=_stopped(row.get("stopped")),
    )


@dataclasses.dataclass
class Arms:
    """The run's trainings, per (level, configuration).

    Attributes:
        levels: level labels in the study's order (``level_index``).
        level_index: ``{level: position in the study's list}``.
        labels: configuration labels in run order.
        mechanism: ``{label: mechanism name}``.
        trainings: ``{(level, label): [Training, ...]}`` for the arms with at least one ok training.
        rows: ``{(level, label): ok rows}`` (one per seed, the last row of a seed run twice), in the
            order of ``trainings``.
        present: ``{level: labels with any row there}``; ``status``: ``{(level, label): why no
            training}`` for those without an ok one.
        curves: whether any training stores a curve of two or more evaluated epochs.
    """

    levels: list[str]
    level_index: dict[str, int]
    labels: list[str]
    mechanism: dict[str, str]
    trainings: dict[tuple[str, str], list[Training]]
    rows: dict[tuple[str, str], pd.DataFrame]
    present: dict[str, list[str]]
    status: dict[tuple[str, str], str]
    curves: bool


def arms_of(df: pd.DataFrame, manifest: Mapping[str, Any] | None = None) -> Arms:
    """One arm per (level, configuration): the trainings of its ok rows with a top-1 (seed, final
    top-1, curve, epochs run where the row stores it, else the curve's last epoch, else the planned
    epochs, and why it stopped early)."""
    empty = Arms([], {}, [], {}, {}, {}, {}, {}, False)
    if df.empty:
        return empty
    df = df.copy()
    df["level_"], df["level_index_"] = _levels(df)
    labels = list(dict.fromkeys(df["label"].astype(str)))
    mechanism = {str(lb): str(m) for lb, m in zip(df["label"], df["mechanism"])}
    order = df.drop_duplicates("level_").sort_values("level_index_", kind="stable")
    levels = [str(v) for v in order["level_"]]
    level_index = {str(lv): int(i) for lv, i in zip(order["level_"], order["level_index_"])}
    planned = _planned_epochs(manifest)
    trainings: dict[tuple[str, str], list[Training]] = {}
    rows: dict[tuple[str, str], pd.DataFrame] = {}
    present: dict[str, list[str]] = {}
    status: dict[tuple[str, str], str] = {}
    curves = False
    for level in levels:
        at = df[df["level_"] == level]
        present[level] = [lb for lb in labels if (at["label"].astype(str) == lb).any()]
        for label in present[level]:
            mine = at[at["label"].astype(str) == label]
            ok = mine[(mine["status"] == "ok") & pd.to_numeric(mine["top1"], errors="coerce").notna()]
            by_seed: dict[int, Any] = {}
            for k, (i, r) in enumerate(ok.iterrows()):  # a seed run twice: its last row counts
                by_seed[_seed(r, k)] = i
            if not by_seed:
                statuses = sorted(set(mine["status"].astype(str)) - {"ok"})
                status[(level, label)] = "/".join(statuses) if statuses else "no top-1"
                continue
            kept = ok.loc[list(by_seed.values())]
            arm = [_training(r, seed, planned) for seed, (_, r) in zip(by_seed, kept.iterrows())]
            curves = curves or any(len(t.curve) >= 2 for t in arm)
            trainings[(level, label)] = arm
            rows[(level, label)] = kept
    return Arms(levels, level_index, labels, mechanism, trainings, rows, present, status, curves)


# --- the analysis ---------------------------------------------------------------------------------


class _Name(str):
    """A configuration label whose repr is the label itself, for the reasons of resolved_best."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


@dataclasses.dataclass
class OutcomeAnalysis:
    """Everything the outcome tables, findings and method text say.

    Attributes:
        plan: the threshold, contrasts and alpha (:func:`analysis_plan`).
        arms: the trainings (:func:`arms_of`).
        summary: one row per (level, configuration with a row there): ``level``, ``level_index``,
            ``label``, ``mechanism``, ``status`` (``ok`` or why no training), ``n``, ``k``, ``rate``,
            ``lo``, ``hi`` (Clopper-Pearson, 0-1), ``median_epoch`` (Kaplan-Meier; NaN when not
            reached), ``top1_median``, ``top1_min``, ``top1_max`` (of the learned trainings),
            ``final_median``, ``final_min``, ``final_max`` (of every training), and the objects
            ``success`` and ``km``.
        contrasts: the tested contrasts, keyed ``(level, label)``, in one Holm family per endpoint.
        missing: the (level, contrast) pairs that could not be formed, and why.
        best: ``{level: Best}`` from :func:`attnbench.kinds.ablation.outcomes.resolved_best` (arms as labels).
        power: ``n`` seeds per arm (the most common arm size), ``alpha``, ``family`` (the number of
            p-values in the primary family: contrasts times primary endpoints), ``at_alpha`` and
            ``at_family``: the exact Fisher power for the chances :data:`POWER_CHANCES` at alpha and
            at alpha / family, and ``min_p``: the smallest p Fisher's test can give at ``n`` per
            arm. Empty when no arm has a training.
    """

    plan: Plan
    arms: Arms
    summary: pd.DataFrame
    contrasts: list[Contrast]
    missing: list[str]
    best: dict[str, Best]
    power: dict[str, float]

    def family(self, endpoint: str = "counts") -> int:
        """The number of p-values Holm adjusted together with ``endpoint``'s (untestable pairs left
        out): all the primary endpoints' together, another endpoint's on its own."""
        members = self.plan.primary if endpoint in self.plan.primary else (endpoint,)
        return sum(math.isfinite(getattr(c, e).p) for c in self.contrasts for e in members)

    def at_level(self, level: str) -> list[Contrast]:
        return [c for c in self.contrasts if c.a[0] == level]


def _summary_rows(arms: Arms, threshold: float) -> pd.DataFrame:
    columns = [
        *("level", "level_index", "label", "mechanism", "status", "n", "k", "rate", "lo", "hi"),
        *("median_epoch", "top1_median", "top1_min", "top1_max"),
        *("final_median", "final_min", "final_max", "success", "km"),
    ]
    out = []
    for level in arms.levels:
        for label in arms.present[level]:
            entry: dict[str, Any] = dict.fromkeys(columns, math.nan)
            entry.update(
                level=level,
                level_index=arms.level_index[level],
                label=label,
                mechanism=arms.mechanism[label],
                success=None,
                km=None,
            )
            arm = arms.trainings.get((level, label))
            if not arm:
                entry.update(status=arms.status.get((level, label), "no top-1"), n=0, k=0)
                out.append(entry)
                continue
            rate = outcomes.success_rate(arm, threshold)
            km = outcomes.kaplan_meier(arm, threshold)
            top = [t.top1 for t in arm if outcomes.learned(t, threshold)]
            final = [t.top1 for t in arm]
            entry.update(
                status="ok",
                n=rate.n,
                k=rate.k,
                rate=rate.rate,
                lo=rate.lo,
                hi=rate.hi,
                median_epoch=km.median if km.median is not None else math.nan,
                top1_median=float(np.median(top)) if top else math.nan,
                top1_min=min(top) if top else math.nan,
                top1_max=max(top) if top else math.nan,
                final_median=float(np.median(final)),
                final_min=min(final),
                final_max=max(final),
                success=rate,
                km=km,
            )
            out.append(entry)
    return pd.DataFrame(out, columns=columns)


def _pairs(arms: Arms, plan: Plan) -> tuple[list[tuple[tuple[str, str], tuple[str, str]]], list[str]]:
    """The (level, contrast) pairs to test, level by level in the plan's order, and the ones that
    cannot be formed (why)."""
    first: dict[str, str] = {}
    for label in arms.labels:
        first.setdefault(arms.mechanism[label], label)
    pairs, missing, seen = [], [], set()
    usable = []
    for a, b in plan.contrasts:
        absent = [m for m in (a, b) if m not in first]
        if absent:
            missing.append(f"{a} vs {b}: the run has no rows of {' or '.join(absent)}")
        else:
            usable.append((a, b))
    for level in arms.levels:
        for a, b in usable:
            base = first[b]
            if (level, base) not in arms.trainings:
                missing.append(f"{level}: {a} vs {b} not tested, {base} has no ok training there")
                continue
            for label in arms.present[level]:
                if arms.mechanism[label] != a or label == base:
                    continue
                if (level, label) not in arms.trainings:
                    missing.append(f"{level}: {label} vs {base} not tested, {label} has no ok training there")
                    continue
                key = frozenset(((level, label), (level, base)))
                if key in seen:
                    missing.append(f"{level}: {label} vs {base} is declared twice; tested once")
                    continue
                seen.add(key)
                pairs.append(((level, label), (level, base)))
    return pairs, missing


def _mode(values: Sequence[int]) -> int:
    counts = collections.Counter(values)
    top = max(counts.values())
    return min(v for v, c in counts.items() if c == top)


def outcome_analysis(df: pd.DataFrame, manifest: Mapping[str, Any] | None = None) -> OutcomeAnalysis:
    """The primary analysis of an ablation run's rows (see the module docstring)."""
    plan = analysis_plan(df, manifest)
    arms = arms_of(df, manifest)
    summary = _summary_rows(arms, plan.threshold)
    pairs, missing = _pairs(arms, plan)
    contrasts = (
        outcomes.compare(arms.trainings, pairs, plan.threshold, plan.alpha, primary=plan.primary)
        if pairs
        else []
    )
    best = {}
    for level in arms.levels:
        names = [_Name(lb) for lb in arms.present[level] if (level, lb) in arms.trainings]
        mine = [
            dataclasses.replace(c, a=_Name(c.a[1]), b=_Name(c.b[1])) for c in contrasts if c.a[0] == level
        ]
        best[level] = outcomes.resolved_best(mine, among=names)
    sizes = [len(t) for t in arms.trainings.values()]
    power: dict[str, float] = {}
    if sizes:
        n, m = _mode(sizes), max(1, len(contrasts) * len(plan.primary))
        pa, pb = POWER_CHANCES
        power = {
            "n": n,
            "alpha": plan.alpha,
            "family": m,
            "at_alpha": outcomes.fisher_power(pa, pb, n, plan.alpha),
            "at_family": outcomes.fisher_power(pa, pb, n, plan.alpha / m),
            "min_p": float(outcomes.fisher_pvalues(n).min()),
        }
    return OutcomeAnalysis(plan, arms, summary, contrasts, missing, best, power)


# --- formatting -----------------------------------------------------------------------------------


def fmt_p(p: float) -> str:
    """A p-value as the tables print it: three significant digits, ``<0.001`` below 0.001, a dash
    when untested (NaN)."""
    if p is None or not math.isfinite(p):
        return DASH
    return "<0.001" if p < 0.001 else f"{p:.3g}"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}"


def _learned_cell(rate: SuccessRate) -> str:
    return f"{rate.k}/{rate.n} [{_pct(rate.lo)}, {_pct(rate.hi)}]"


def _median_cell(km: KaplanMeier) -> str:
    return f"{km.median:g}" if km.median is not None else "not reached"


def _range_cell(median: float, lo: float, hi: float) -> str:
    if not math.isfinite(median):
        return DASH
    if lo == hi:
        return f"{median:.1f}"
    return f"{median:.1f} [{lo:.1f}, {hi:.1f}]"


def _top1_cell(r: Any) -> str:
    return _range_cell(r.top1_median, r.top1_min, r.top1_max)


def _final_cell(r: Any) -> str:
    return _range_cell(r.final_median, r.final_min, r.final_max)


def _endpoint_cell(e: outcomes.Endpoint) -> str:
    return DASH if not math.isfinite(e.p) else f"{fmt_p(e.p)} ({fmt_p(e.p_holm)})"


_ENDPOINT_WORDS = {  # endpoint: (what, test), for the table headers
    "counts": ("Counts", "Fisher"),
    "final": ("Final top-1", "Mann–Whitney"),
    "time": ("Time", "log-rank"),
    "accuracy": ("Top-1 of learned", "Mann–Whitney"),
}


def _endpoint_header(endpoint: str, plan: Plan) -> str:
    what, test = _ENDPOINT_WORDS[endpoint]
    role = " (primary)" if endpoint in plan.primary else ""
    return f"{what}{role}: {test} p (Holm p)"


def _families_words(analysis: OutcomeAnalysis) -> str:
    """The Holm families in words: ``the primary endpoints counts and final together (m = 8); time
    (m = 4); ...``."""
    plan = analysis.plan
    first = " and ".join(plan.primary)
    parts = [
        f"the primary endpoint{'s' if len(plan.primary) > 1 else ''} {first}"
        f"{' together' if len(plan.primary) > 1 else ''} (m = {analysis.family(plan.primary[0])})"
    ]
    parts += [f"{e} (m = {analysis.family(e)})" for e in outcomes.ENDPOINTS if e not in plan.primary]
    return "; ".join(parts)


def _resolved_words(c: Contrast) -> str:
    done = [name for name, e in c.endpoints.items() if e.resolved]
    return ", ".join(done) if done else "no"


def _seed_words(part: pd.DataFrame) -> str:
    ns = sorted({int(n) for n in part["n"] if n})
    if not ns:
        return "no ok training"
    return f"{ns[0]} seed{'s' if ns[0] != 1 else ''} each" if len(ns) == 1 else "seeds as listed"


def _tex_label(label: str, tex_of: Mapping[str, str]) -> Tex:
    return Tex(label, tex_of.get(label, latex_escape(label)))


# --- tables ---------------------------------------------------------------------------------------


def outcome_tables(analysis: OutcomeAnalysis, df: pd.DataFrame) -> list[Table]:
    """One table per level, one row per configuration (a further row per further comparator):
    seeds, learned k/n with its Clopper-Pearson interval, Kaplan-Meier median epoch to learn, the
    top-1 of the learned trainings, and against its declared comparator each endpoint's raw and
    Holm-adjusted p and the endpoints resolved; configurations in no contrast are exploratory."""
    if analysis.summary.empty:
        return []
    tex_of = latex_labels(df) if not df.empty else {}
    plan = analysis.plan
    tables = []
    for level in analysis.arms.levels:
        part = analysis.summary[analysis.summary["level"] == level]
        mine = analysis.at_level(level)
        as_a: dict[str, list[Contrast]] = collections.defaultdict(list)
        as_b = set()
        for c in mine:
            as_a[c.a[1]].append(c)
            as_b.add(c.b[1])
        rows, bold = [], []
        for r in part.itertuples():
            if r.status != "ok":
                head = [str(r.n), f"{r.status}, no training", DASH, DASH, DASH]
            else:
                head = [str(r.n), _learned_cell(r.success), _median_cell(r.km), _top1_cell(r), _final_cell(r)]
            ends = len(outcomes.ENDPOINTS)
            against = as_a.get(r.label, [])
            if not against:
                role = "comparator" if r.label in as_b else "exploratory"
                rows.append([_tex_label(r.label, tex_of), *head, DASH, *[DASH] * ends, role])
                bold.append([False] * (len(head) + ends + 3))
            for j, c in enumerate(against):
                cells = [_endpoint_cell(e) for e in c.endpoints.values()]
                first = [_tex_label(r.label, tex_of), *head] if j == 0 else [""] * (len(head) + 1)
                rows.append([*first, _tex_label(c.b[1], tex_of), *cells, _resolved_words(c)])
                bold.append([False] * (len(head) + 2) + [e.resolved for e in c.endpoints.values()] + [False])
        tables.append(
            Table(
                name=f"outcomes_{_slug(level)}",
                caption=(
                    f"Learning outcomes on {level} ({_seed_words(part)}): learned = final val top-1 "
                    f"≥ {plan.threshold:g} %"
                ),
                header=[
                    "Configuration",
                    "Seeds",
                    "Learned (k/n [95 % CI, %])",
                    "Median epoch to learn (Kaplan–Meier)",
                    "Top-1 of learned (%, median [range])",
                    "Final top-1 (%, median [range])",
                    "vs",
                    *(_endpoint_header(e, plan) for e in outcomes.ENDPOINTS),
                    f"Resolved (Holm p < {plan.alpha:g})",
                ],
                rows=rows,
                bold=bold,
                align="l" + "r" * 5 + "l" + "r" * len(outcomes.ENDPOINTS) + "l",
                note=_outcome_note(analysis),
            )
        )
    return tables


def _outcome_note(analysis: OutcomeAnalysis) -> str:
    plan = analysis.plan
    declared = "declared before the run" if plan.declared else "not declared before the run (defaults)"
    return (
        f"Learned: final validation top-1 ≥ {plan.threshold:g} % ({declared}). [a, b]: exact "
        "(Clopper–Pearson) 95 % interval of the rate, in %. Median epoch to learn: Kaplan–Meier, a "
        "training that never reached the threshold censored at its last evaluated epoch (early-stopped "
        "or given-up runs included); not reached: more than half never learned. Final top-1: of every "
        "training, learned or not. vs: the declared comparator (the first configuration of the "
        "contrast's second mechanism). Each endpoint two-sided: counts, Fisher's exact test on "
        "learned/not learned; final top-1, the Mann–Whitney U test of every training's final top-1; "
        "time, the log-rank test of the censored epochs to learn; top-1 of learned, the Mann–Whitney U "
        "test of the learned trainings' top-1 (Mann–Whitney exact without ties, permutation with "
        "ties). p (Holm): raw p, and in parentheses Holm-adjusted over every (level, contrast) pair of "
        f"the run, in families: {_families_words(analysis)}; resolved (bold): Holm p < "
        f"{plan.alpha:g}. —: not testable (an arm with fewer than 2 learned trainings for top-1 of "
        "learned, none learned for time). Exploratory: in no declared contrast; such a configuration's "
        "numbers support no claim."
    )


# --- cue reliance ---------------------------------------------------------------------------------


@dataclasses.dataclass
class CueLevel:
    """The straight-line cue on one level's validation split.

    Attributes:
        level: the level's label.
        reason: why it was not computed (then the rest is empty); None when it was.
        version: the Pathfinder generator version.
        n_images: validation images; ``held_out``: the cue's own held-out accuracy (%).
        n_agree, n_mislead: not-connected images where the cue says not connected / connected.
        rows: one per configuration: ``label``, ``learned`` (trainings that learned), ``used``
            (those with per-image results), ``agree_k``, ``agree_n``, ``agree_lo``, ``agree_hi``,
            ``mislead_k``, ``mislead_n``, ``mislead_lo``, ``mislead_hi`` (pooled over trainings,
            percent), ``diff`` (misleading minus agreeing, points), ``misled`` (trainings with more
            false positives on misleading negatives at Fisher p < 0.05), ``note``.
    """

    level: str
    reason: str | None = None
    version: int | None = None
    n_images: int = 0
    held_out: float = math.nan
    n_agree: int = 0
    n_mislead: int = 0
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _version(rows: pd.DataFrame, dataset: Mapping[str, Any]) -> int | None:
    if "generator_version" in rows.columns:
        values = pd.to_numeric(rows["generator_version"], errors="coerce").dropna().unique()
        if len(values) == 1:
            return int(values[0])
        if len(values) > 1:
            raise ValueError(f"the rows name several generator versions ({sorted(int(v) for v in values)})")
    value = _number(dataset.get("version"))
    return int(value) if math.isfinite(value) else None


def _cp(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=outcomes.LEVEL, method="exact")
    return 100 * float(ci.low), 100 * float(ci.high)


def _val_split(dataset: Mapping[str, Any], version: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    from attnbench.ablation.data import VAL_SEED_OFFSET
    from attnbench.ablation.data.pathfinder import PathfinderConfig, load_markers

    cfg = PathfinderConfig.from_dataset({**dataset, "version": version})
    n = int(dataset.get("val_size", 1000))
    seed = int(dataset.get("seed", 0)) + VAL_SEED_OFFSET
    images, labels, markers = load_markers(cfg, n, seed, dataset.get("cache_dir"))
    return images, labels, markers, cfg


def _cue_level(
    level: str, analysis: OutcomeAnalysis, rows: pd.DataFrame, dataset: Mapping[str, Any] | None
) -> CueLevel:
    if not isinstance(dataset, Mapping):
        return CueLevel(level, "the manifest does not list this level's dataset")
    if dataset.get("name") != "pathfinder":
        return CueLevel(level, f"not a Pathfinder level ({dataset.get('name')})")
    try:
        version = _version(rows, dataset)
    except ValueError as exc:
        return CueLevel(level, str(exc))
    if version is None:
        return CueLevel(level, "generator version not recorded")
    if version not in CUE_VERSIONS:
        known = list(CUE_VERSIONS)
        return CueLevel(level, f"generator version {version} no longer exists (versions: {known})")
    from attnbench.ablation.data.probes import cue_split, held_out_accuracy, straight_line_cue

    try:
        images, labels, markers, cfg = _val_split(dataset, version)
    except Exception as exc:  # noqa: BLE001 - any failure to regenerate the split is said, not raised
        why = f"the validation split cannot be loaded ({type(exc).__name__}: {exc})"
        return CueLevel(level, why, version)
    n = len(labels)
    ns = set(pd.to_numeric(rows.get("val_n", pd.Series(dtype=float)), errors="coerce").dropna().astype(int))
    if ns and ns != {n}:
        return CueLevel(level, f"the rows hold {sorted(ns)} validation images, the split {n}", version)
    scale = cfg.resolution / 32  # the cue's band is 5 px at 32 px
    cue = straight_line_cue(
        images, markers, band=5.0 * scale, marker_radius=cfg.radius, threshold=0.5 * cfg.contrast
    )
    labels = np.asarray(labels).astype(bool)
    says = cue_split(cue, labels)
    negative = ~labels
    agree, mislead = negative & ~says, negative & says
    out = CueLevel(
        level,
        None,
        version,
        n,
        held_out_accuracy(cue, labels, seed=0),
        int(agree.sum()),
        int(mislead.sum()),
    )
    from scipy.stats import fisher_exact

    threshold = analysis.plan.threshold
    for label in analysis.arms.present[level]:
        kept = analysis.arms.rows.get((level, label))
        entry: dict[str, Any] = {"label": label, "learned": 0, "used": 0, "misled": 0, "note": ""}
        if kept is None:
            entry["note"] = "no ok training"
            out.rows.append(entry)
            continue
        learned = kept[pd.to_numeric(kept["top1"], errors="coerce") >= threshold]
        entry["learned"] = len(learned)
        a_k = a_n = m_k = m_n = 0
        for _, r in learned.iterrows():
            text, val_n = r.get("val_correct"), _number(r.get("val_n"))
            if not isinstance(text, str) or not text or not math.isfinite(val_n):
                continue
            try:
                correct = stats.decode_correct(text, int(val_n))
            except ValueError:
                continue
            if len(correct) != n:
                continue
            entry["used"] += 1
            ra, rm = int(correct[agree].sum()), int(correct[mislead].sum())
            a_k, a_n, m_k, m_n = a_k + ra, a_n + out.n_agree, m_k + rm, m_n + out.n_mislead
            if out.n_agree and out.n_mislead:
                table = [[out.n_mislead - rm, rm], [out.n_agree - ra, ra]]  # wrong / right
                p = float(fisher_exact(table).pvalue)
                if p < 0.05 and (out.n_mislead - rm) / out.n_mislead > (out.n_agree - ra) / out.n_agree:
                    entry["misled"] += 1
        if not entry["learned"]:
            entry["note"] = "no training learned"
        elif not entry["used"]:
            entry["note"] = "no learned training stores val_correct"
        entry.update(agree_k=a_k, agree_n=a_n, mislead_k=m_k, mislead_n=m_n)
        entry["agree_lo"], entry["agree_hi"] = _cp(a_k, a_n)
        entry["mislead_lo"], entry["mislead_hi"] = _cp(m_k, m_n)
        acc_a = 100 * a_k / a_n if a_n else math.nan
        acc_m = 100 * m_k / m_n if m_n else math.nan
        entry.update(agree=acc_a, mislead=acc_m, diff=acc_m - acc_a)
        out.rows.append(entry)
    return out


def cue_reliance(
    df: pd.DataFrame, manifest: Mapping[str, Any] | None, analysis: OutcomeAnalysis
) -> dict[str, CueLevel]:
    """Per level, whether the learned trainings lean on the straight-line cue: their accuracy on the
    not-connected validation images where the cue agrees (it says not connected) and where it
    misleads (it says connected), pooled over the trainings, with exact intervals, and how many
    trainings each are misled at Fisher p < 0.05 (see :class:`CueLevel`). A level is skipped, with
    the reason, when it is not Pathfinder, its generator version is unknown or gone, or its
    validation split cannot be loaded. Loading a split generates it once if it is not cached
    (1000 images of version 4: about 10-20 s)."""
    datasets = ((manifest or {}).get("conditions") or {}).get("datasets")
    out: dict[str, CueLevel] = {}
    if df.empty:
        return out
    frame = df.copy()
    frame["level_"], _ = _levels(frame)
    for level in analysis.arms.levels:
        index = analysis.arms.level_index[level]
        if not isinstance(datasets, list):
            out[level] = CueLevel(level, "the manifest lists no datasets (conditions.datasets)")
            continue
        dataset = datasets[index] if 0 <= index < len(datasets) else None
        out[level] = _cue_level(level, analysis, frame[frame["level_"] == level], dataset)
    return out


def _interval_cell(value: float, lo: float, hi: float) -> str:
    if not math.isfinite(value):
        return DASH
    return f"{value:.1f} [{lo:.1f}, {hi:.1f}]"


def cue_tables(cue: Mapping[str, CueLevel], df: pd.DataFrame) -> list[Table]:
    """One table per level where the cue was computed: per configuration, its learned trainings'
    accuracy on agreeing and on misleading not-connected images, the difference, and how many
    trainings are individually misled."""
    tex_of = latex_labels(df) if not df.empty else {}
    tables = []
    for level, c in cue.items():
        if c.reason is not None:
            continue
        rows = []
        for r in c.rows:
            if not r.get("used"):
                learned = str(r["learned"]) if r["learned"] else "0"
                rows.append([_tex_label(r["label"], tex_of), learned, DASH, DASH, DASH, r["note"] or DASH])
                continue
            diff = stats.signed(r["diff"], 1, True) if math.isfinite(r["diff"]) else DASH
            used = f"{r['used']}" + (f" of {r['learned']}" if r["used"] != r["learned"] else "")
            rows.append(
                [
                    _tex_label(r["label"], tex_of),
                    used,
                    _interval_cell(r["agree"], r["agree_lo"], r["agree_hi"]),
                    _interval_cell(r["mislead"], r["mislead_lo"], r["mislead_hi"]),
                    diff,
                    f"{r['misled']} of {r['used']}",
                ]
            )
        tables.append(
            Table(
                name=f"cue_{_slug(level)}",
                caption=(
                    f"Straight-line cue on {level} (generator version {c.version}): the learned trainings' "
                    "accuracy on not-connected images where the cue agrees and where it misleads"
                ),
                header=[
                    "Configuration",
                    "Learned trainings",
                    f"Agreeing negatives (% right, n = {c.n_agree})",
                    f"Misleading negatives (% right, n = {c.n_mislead})",
                    "Misleading − agreeing (points)",
                    "Misled (Fisher p < 0.05)",
                ],
                rows=rows,
                align="lrrrrr",
                note=_cue_note(c),
            )
        )
    return tables


def _cue_note(c: CueLevel) -> str:
    return (
        f"The straight-line cue (ink along the segment between the markers, "
        f"attnbench.ablation.data.probes.straight_line_cue) alone scores {c.held_out:.1f} % on the "
        f"{c.n_images} validation images (threshold fit on one half, scored on the other; 50 %: no "
        "information). Its threshold fit on all of them splits the not-connected images into agreeing "
        f"(the cue says not connected, n = {c.n_agree}) and misleading (it says connected, n = "
        f"{c.n_mislead}). Accuracy pooled over the configuration's learned trainings (each image "
        "counted once per training) with exact 95 % intervals, which ignore that the same images recur "
        "across trainings. Misled: learned trainings whose false-positive rate is higher on misleading "
        "than on agreeing negatives with two-sided Fisher p < 0.05, each training tested alone and not "
        "adjusted (exploratory). A training that follows the path scores alike on both."
    )


# --- sentences ------------------------------------------------------------------------------------


def _rate_words(r: Any) -> str:
    return f"{r.label} {r.k}/{r.n} ({_pct(r.lo)}–{_pct(r.hi)} %)"


def _primary_words(plan: Plan) -> str:
    if plan.primary == ("counts",):
        return (
            "A contrast is resolved when its Holm-adjusted p is below α on the counts endpoint "
            "(Fisher's exact test, primary); the final top-1 of every training (Mann–Whitney), the time "
            "to learn (log-rank) and the top-1 of the learned trainings (Mann–Whitney) are secondary."
        )
    if plan.primary == ("final",):
        return (
            "The primary endpoint, declared before the run, is the final top-1 of every training "
            "(Mann–Whitney); a contrast is resolved when its Holm-adjusted p is below α. Counts "
            "(Fisher's exact test), the time to learn (log-rank) and the top-1 of the learned trainings "
            "(Mann–Whitney) are secondary."
        )
    return (
        "Two primary endpoints, declared before the run: counts (Fisher's exact test) and the final "
        "top-1 of every training (Mann–Whitney), their p-values one Holm family; a contrast is resolved "
        "on an endpoint when its Holm-adjusted p is below α. The time to learn (log-rank) and the top-1 "
        "of the learned trainings (Mann–Whitney) are secondary."
    )


def _final_words(c: Contrast) -> str:
    e = c.final
    t = e.test
    if not math.isfinite(e.p):
        return f"final top-1 not testable ({t.reason})"
    head = (
        f"final top-1 {t.median_a:.1f} vs {t.median_b:.1f} % (medians; shift "
        f"{stats.signed(t.shift, 1, True)} points), Mann–Whitney p = {fmt_p(e.p)}, Holm p = {fmt_p(e.p_holm)}"
    )
    if e.resolved:
        who = c.a[1] if t.shift > 0 else c.b[1]
        return head + f": **resolved**, {who} ends more accurate"
    return head + ": not resolved"


def _contrast_sentence(c: Contrast) -> str:
    a, b = c.a[1], c.b[1]
    t = c.counts.test
    diff = stats.signed(100 * t.diff, 0, True)
    counts = (
        f"{a} vs {b}: learned {t.k_a}/{t.n_a} vs {t.k_b}/{t.n_b} ({diff} points), "
        f"Fisher p = {fmt_p(c.counts.p)}, Holm p = {fmt_p(c.counts.p_holm)}"
    )
    if c.counts.resolved:
        who = a if t.diff > 0 else b
        counts += f": **resolved**, {who} learns more often"
    else:
        counts += ": not resolved"
    secondary = []
    if "final" in c.primary:
        counts += "; " + _final_words(c)
    else:
        secondary.append(_final_words(c).replace(": not resolved", ", not resolved"))
    tt = c.time.test
    if math.isfinite(c.time.p):
        med = " vs ".join("not reached" if m is None else f"{m:g}" for m in (tt.median_a, tt.median_b))
        word = "resolved" if c.time.resolved else "not resolved"
        secondary.append(
            f"time to learn (median epoch {med}), log-rank Holm p = {fmt_p(c.time.p_holm)}, {word}"
        )
    else:
        secondary.append(f"time to learn not testable ({c.time.reason.replace(' in either arm', '')})")
    ta = c.accuracy.test
    if math.isfinite(c.accuracy.p):
        word = "resolved" if c.accuracy.resolved else "not resolved"
        secondary.append(
            f"top-1 of the learned (shift {stats.signed(ta.shift, 1, True)} points), Mann–Whitney Holm p = "
            f"{fmt_p(c.accuracy.p_holm)}, {word}"
        )
    else:
        secondary.append(
            f"top-1 of the learned not testable ({ta.n_a} and {ta.n_b} learned; the test needs 2 per arm)"
        )
    return counts + ". Secondary: " + "; ".join(secondary) + "."


def _best_sentence(best: Best) -> str:
    if best.arm is not None:
        return f"best configuration: **{best.arm}**, resolved against every other configuration here"
    reason = best.reason.removeprefix("no best arm: ")
    return f"no best configuration is resolved ({reason})"


def _cue_sentence(c: CueLevel) -> str:
    if c.reason is not None:
        return f"cue reliance not computed: {c.reason}"
    parts = []
    for r in c.rows:
        if r.get("used"):
            parts.append(
                f"{r['label']} {stats.signed(r['diff'], 1, True)} points "
                f"({r['misled']} of {r['used']} learned trainings misled)"
                if math.isfinite(r["diff"])
                else f"{r['label']}: no misleading or agreeing negatives"
            )
    told = "; ".join(parts) if parts else "no learned training stores per-image results"
    return (
        f"straight-line cue (exploratory): alone it scores {c.held_out:.1f} % held out; learned trainings' "
        f"accuracy on misleading minus agreeing not-connected images: {told}"
    )


def _power_sentence(analysis: OutcomeAnalysis) -> str:
    pw = analysis.power
    if not pw or not analysis.plan.contrasts:
        return ""
    n, m = int(pw["n"]), int(pw["family"])
    pa, pb = POWER_CHANCES
    text = (
        f"**Power of this design**: with {n} seed{'s' if n != 1 else ''} per arm, the exact Fisher test "
        f"resolves a chance to learn of {pa:g} against {pb:g} with probability {pw['at_alpha']:.2f} at "
        f"α = {pw['alpha']:g} (one contrast) and {pw['at_family']:.2f} at α/{m} = {pw['alpha'] / m:.3g} "
        f"(what Holm asks of the smallest of the {m} p-values of the primary family)."
    )
    if pw["min_p"] >= pw["alpha"]:
        text += (
            f" At {n} seeds per arm the smallest p Fisher's test can give is {pw['min_p']:.3g}, so **no "
            "counts contrast can be resolved**, whatever the trainings do."
        )
    return text


def outcome_findings(analysis: OutcomeAnalysis, cue: Mapping[str, CueLevel] | None = None) -> Doc:
    """The summary's primary lines: the plan, then per level each configuration's learned k/n, each
    declared contrast in words, the best configuration where resolved (else why none), the cue;
    then the power of the design."""
    doc = Doc()
    plan = analysis.plan
    if analysis.summary.empty:
        doc.para("No ablation row to summarise.")
        return doc
    pairs = ", ".join(f"{a} vs {b}" for a, b in plan.contrasts)
    lead = (
        f"**Primary analysis: did each training learn?** A training has learned when its final "
        f"validation top-1 is at or above {plan.threshold:g} %; {plan.words()}. "
    )
    if not pairs:
        doc.para(lead + "This run has no contrast to test (one mechanism): it counts how often it learns.")
    else:
        doc.para(
            lead + f"Contrasts: {pairs} (each configuration of the first mechanism against the first "
            f"configuration of the second, at every level). {_primary_words(plan)} Holm families: "
            f"{_families_words(analysis)}; α = {plan.alpha:g}. Anything not declared is exploratory."
        )
    reasons = {c.reason for c in (cue or {}).values()}
    same_reason = len(cue or {}) > 1 and len(reasons) == 1 and None not in reasons
    for level in analysis.arms.levels:
        part = analysis.summary[analysis.summary["level"] == level]
        ok = part[part["status"] == "ok"]
        lines = []
        if not ok.empty:
            lines.append("learned (k/n, 95 % CI): " + "; ".join(_rate_words(r) for r in ok.itertuples()))
        lines += [
            f"{r.label}: {r.status}, no training to count" for r in part.itertuples() if r.status != "ok"
        ]
        lines += [_contrast_sentence(c) for c in analysis.at_level(level)]
        lines += [x.split(": ", 1)[1] for x in analysis.missing if x.startswith(f"{level}: ")]
        lines.append(_best_sentence(analysis.best[level]))
        if cue and level in cue and not same_reason:
            lines.append(_cue_sentence(cue[level]))
        doc.para(f"**{level}**:")
        doc.bullets(lines)
    general = [x for x in analysis.missing if not any(x.startswith(f"{lv}: ") for lv in analysis.arms.levels)]
    if general:
        doc.bullets(general)
    if same_reason:
        doc.para(f"Cue reliance not computed at any level: {reasons.pop()}.")
    power = _power_sentence(analysis)
    if power:
        doc.para(power)
    return doc


def outcome_method_text(analysis: OutcomeAnalysis) -> str:
    """The method paragraph of the primary analysis."""
    plan = analysis.plan
    curves = (
        ""
        if analysis.arms.curves
        else " (This run stores no learning curve of two or more evaluated epochs, so every time to "
        "learn is the last epoch: the time endpoint says nothing here.)"
    )
    return (
        "Outcome statistics (docs/outcomes.md), primary: trainings tend to be bimodal "
        "(each learns or stays near chance), so each counts as learned when its final validation top-1 "
        f"is at or above {plan.threshold:g} % ({plan.words()}). Per level and configuration: k learned "
        "of n with the exact Clopper–Pearson 95 % interval; the time to learn, the first evaluated "
        "epoch from which the top-1 stays at or above the threshold, summarised by the Kaplan–Meier "
        "estimate, a training that did not learn being censored at its last evaluated epoch (also when "
        f"it stopped early, or rose above the threshold and fell back).{curves} Each declared contrast "
        "(every configuration of "
        "mechanism a against the first configuration of mechanism b, at every level) is tested on four "
        "endpoints, two-sided: counts, Fisher's exact test of learned against not learned; final "
        "top-1, the Mann–Whitney U test of every training's final top-1; time, the log-rank test of "
        "the censored times to learn; top-1 of learned, the Mann–Whitney U test of the learned "
        f"trainings' final top-1. Primary: {' and '.join(plan.primary)}. The p-values of all (level, "
        f"contrast) pairs are Holm-adjusted in families ({_families_words(analysis)}), which keeps the "
        f"chance of any false call within a family at or under α = {plan.alpha:g}; resolved: adjusted "
        "p < α. "
        "A best configuration is named only when its counts contrast against every other configuration "
        "of its level is declared and resolved in its favour. Power: the exact power of Fisher's test "
        "at the run's seeds per arm. Cue reliance (Pathfinder, generator versions 3 and 4): the "
        "straight-line cue on the validation split, its threshold fit on the split, divides the "
        "not-connected images into those where it agrees and those where it misleads; the learned "
        "trainings' accuracy on each, pooled, with exact intervals, is exploratory."
    )


def report_findings(
    summary: pd.DataFrame, analysis: OutcomeAnalysis | None, cue: Mapping[str, CueLevel] | None = None
) -> Doc:
    """An ablation report's summary: the outcome analysis's lines first (:func:`outcome_findings`,
    with the cue reliance where given), then the secondary mean-top-1 lines
    (:func:`attnbench.kinds.ablation.accuracy.ablation_findings`)."""
    doc = Doc()
    if analysis is not None:
        doc.extend(outcome_findings(analysis, cue))
    doc.extend(ablation_findings(summary, quiet_when_empty=analysis is not None))
    return doc


def report_method(summary: pd.DataFrame, analysis: OutcomeAnalysis | None) -> list[str]:
    """An ablation report's method paragraphs: the outcome statistics first, then the secondary
    intervals of the mean top-1."""
    return [*([outcome_method_text(analysis)] if analysis is not None else []), method_text(summary)]
