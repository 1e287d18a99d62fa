"""Checking BRA's complexity formula against the fvcore count of the real module, term by term.

Three variants of the formula are compared with the measurement, all in MACs (fvcore: 1 MAC = 1 FLOP):

- ``quoted``: ``3HWC² + 2S⁴C + 2HWkC``, the summary copied around the web;
- ``paper``: ``3HWC² + 2(S²)²C + 2HWk(HW/S²)C``, BiFormer Sec. 3.3 (the author: the routing's 2
  covers the top-k, BiFormer issue #24);
- ``analytic``: the mechanism's own ``analytic_flops``.

"Measured" is what :func:`attnbench.count_flops` attributes to BRA's submodules (``qkv``, ``router``,
``attn``, ``lepe``, ``wo``) on a ``(1, H, W, C)`` input, as the sweep stored it with each row when
it counted the point (column ``flops_detail``, :func:`attnbench.kinds.sweep.kind.flops_detail`);
whatever the count finds outside them is the term ``other``. The check is a function of the stored
rows: it builds and counts nothing. Formula terms are evaluated at
the size the module computes on (the padded size under ``auto_pad``); terms a formula does not have
get 0 MACs there, so each variant's rows add up to the measured total.

Scaling: the paper minimises routing + attention over S, ``S* = (k (HW)² / 2)^(1/6)``, giving the
bound ``3HWC² + 3·2^(1/3) C k^(2/3) (HW)^(4/3)``. The check compares it with the measured minimum
over the S values a run swept, and fits log-log slopes against HW.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attnbench.report._document import Doc, Table, Tex, latex_escape
from attnbench.report._results import resolution_label, scaled_unit
from attnbench.report.references import cite

__all__ = [
    "FormulaCheck",
    "VARIANTS",
    "formula_terms",
    "loglog_slope",
    "measured_terms",
    "paper_bound",
    "paper_optimal_s",
    "run_formula_check",
    "verdict",
]

VARIANTS = {
    "quoted": "3HWC² + 2S⁴C + 2HWkC",
    "paper": "3HWC² + 2(S²)²C + 2HWk(HW/S²)C",
    "analytic": "analytic_flops()",
}
MODULE_TERMS = {"qkv": "qkv_proj", "router": "routing", "attn": "attention", "lepe": "lce", "wo": "out_proj"}
TERM_NAMES = {
    "qkv_proj": "QKV projection",
    "routing": "region routing",
    "attention": "token-to-token attention",
    "lce": "LCE (depthwise conv on v)",
    "out_proj": "output projection",
    "other": "outside BRA's submodules",
}
POINT_COLUMNS = "H W H_pad W_pad C num_heads n_win topk side_dwconv qk_dim auto_pad".split()
GROUP_COLUMNS = ["C", "num_heads", "topk", "side_dwconv", "qk_dim", "auto_pad"]
CLAIMED_SLOPE = 4 / 3


def formula_terms(variant: str, H: int, W: int, C: int, n_win: int, topk: int) -> dict[str, tuple[str, int]]:
    """A published formula's terms as ``{term: (expression, MACs)}`` for an H x W map (padded size).

    Raises:
        ValueError: ``variant`` is not ``"quoted"`` or ``"paper"``.
    """
    N, S = H * W, n_win
    if variant == "quoted":
        return {
            "qkv_proj": ("3HWC²", 3 * N * C * C),
            "routing": ("2S⁴C", 2 * S**4 * C),
            "attention": ("2HWkC", 2 * N * topk * C),
        }
    if variant == "paper":
        return {
            "qkv_proj": ("3HWC²", 3 * N * C * C),
            "routing": ("2(S²)²C", 2 * S**4 * C),
            "attention": ("2HWk(HW/S²)C", 2 * N * topk * N * C // (S * S)),
        }
    raise ValueError(f"formula variant {variant!r} is not a published formula; choose 'quoted' or 'paper'")


def measured_terms(by_module: dict[str, int], total: int) -> dict[str, int]:
    """A BRA count split into its terms, from the MACs of its submodules (``by_module``) and its
    ``total``; ``other`` is what no BRA submodule holds."""
    terms = {MODULE_TERMS[m]: macs for m, macs in by_module.items() if m in MODULE_TERMS and macs}
    other = total - sum(terms.values())
    if other:
        terms["other"] = other
    return terms


def paper_optimal_s(HW: float, topk: int) -> float:
    """The paper's S* = (k (HW)² / 2)^(1/6), minimising 2S⁴C + 2HWk(HW/S²)C over a continuous S."""
    return (topk * HW**2 / 2) ** (1 / 6)


def paper_formula(HW: float, C: int, S: float, topk: int) -> float:
    """The paper's total 3HWC² + 2S⁴C + 2HWk(HW/S²)C for a real-valued S (MACs)."""
    return 3 * HW * C * C + 2 * S**4 * C + 2 * HW * topk * HW / S**2 * C


def paper_bound(HW: float, C: int, topk: int) -> float:
    """The paper's formula at S*: 3HWC² + 3·2^(1/3) C k^(2/3) (HW)^(4/3) (MACs)."""
    return 3 * HW * C * C + 3 * 2 ** (1 / 3) * C * topk ** (2 / 3) * HW ** (4 / 3)


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log y against log x (NaN for fewer than two distinct x)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(np.unique(x)) < 2:
        return math.nan
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def stored_point(row: Any) -> dict[str, Any] | None:
    """The counted point of one BRA row, from what the run stored with it (``flops``,
    ``flops_uncounted`` and ``flops_detail``: :func:`attnbench.kinds.sweep.kind.flops_detail`); None
    when the row stores no count by term (measured before attnbench stored one).

    Raises:
        ValueError: the stored detail cannot be read.
    """
    text = row.get("flops_detail")
    if text is None or (isinstance(text, float) and math.isnan(text)) or text == "":
        return None
    detail = json.loads(text) if isinstance(text, str) else dict(text)
    resolved = detail.get("resolved", {})
    H, W = int(row["H"]), int(row["W"])
    H_pad, W_pad = detail.get("padded", [H, W])
    geometry = {
        "H": H,
        "W": W,
        "H_pad": int(H_pad),
        "W_pad": int(W_pad),
        "C": int(row["C"]),
        "num_heads": int(row["num_heads"]),
        **{k: resolved.get(k) for k in ("n_win", "topk", "side_dwconv", "qk_dim", "auto_pad")},
    }
    by_module = {str(k): int(v) for k, v in detail.get("by_module", {}).items()}
    total = int(float(row["flops"]))
    measured = measured_terms(by_module, total)
    uncounted = row.get("flops_uncounted")
    return {
        "geometry": geometry,
        "measured": measured,
        "total": total,
        "analytic": {k: int(v) for k, v in detail.get("analytic", {}).items()},
        "free_ops": {str(k): int(v) for k, v in detail.get("free_ops", {}).items()},
        "uncounted": json.loads(uncounted) if isinstance(uncounted, str) and uncounted else {},
    }


def check_rows(point: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``formula_check.csv`` rows of one counted point: one per (variant, term)."""
    g, measured = point["geometry"], point["measured"]
    rows = []
    for variant in VARIANTS:
        if variant == "analytic":
            formula = {t: ("analytic_flops()", v) for t, v in point["analytic"].items()}
        else:
            formula = formula_terms(variant, g["H_pad"], g["W_pad"], g["C"], g["n_win"], g["topk"])
        for term in [*formula, *(t for t in measured if t not in formula)]:
            expression, analytic = formula.get(term, ("not in formula", 0))
            got = measured.get(term, 0)
            if not analytic and not got:
                continue
            rows.append(
                {
                    **g,
                    "term": term,
                    "formula": variant,
                    "expression": expression,
                    "analytic_macs": analytic,
                    "measured_macs": got,
                    "ratio": analytic / got if got else math.nan,
                }
            )
    return rows


@dataclasses.dataclass
class FormulaCheck:
    """Everything the formula report says, as tables.

    Attributes:
        rows: ``formula_check.csv``, one row per (point, variant, term).
        points: one row per counted point: geometry, ``measured_total`` (the run's count),
            ``<variant>_total`` and ``measured_<term>``.
        scaling: one row per (group, resolution): swept S, best swept S, S*, totals there.
        slopes: one row per group with at least two resolutions: the fitted log-log slopes.
        problems: points that could not be counted, with the reason.
        free_ops: operators fvcore counted as zero (papers' convention), calls per forward.
    """

    rows: pd.DataFrame
    points: pd.DataFrame
    scaling: pd.DataFrame
    slopes: pd.DataFrame
    problems: list[str]
    free_ops: dict[str, int]


def run_formula_check(results: pd.DataFrame) -> FormulaCheck | None:
    """Compare the formula variants with the count every BRA row of ``results`` stores by term;
    None when the run has no counted BRA row. Nothing is built or counted again.

    Args:
        results: the stored rows (``results.db``, or ``results.csv``).
    """
    if results.empty or "mechanism" not in results.columns:
        return None
    bra = results[results["mechanism"] == "bra"]
    if "pass" in bra.columns:  # ablation rows (pass "train") count a whole backbone, not one BRA layer
        bra = bra[bra["pass"] != "train"]
    if "flops" not in bra.columns:
        return None
    bra = bra[pd.to_numeric(bra["flops"], errors="coerce").notna()]
    if bra.empty:
        return None
    rows: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    problems: list[str] = []
    free: dict[str, int] = {}
    seen: set[tuple] = set()
    without = 0
    for _, row in bra.iterrows():
        try:
            point = stored_point(row)
        except (ValueError, TypeError, KeyError) as exc:
            problems.append(f"a bra row's stored count could not be read ({exc})")
            continue
        if point is None:
            without += 1
            continue
        key = tuple(point["geometry"].values())
        if key in seen:  # one point, several passes, dtypes or backends: one count
            continue
        seen.add(key)
        if point["uncounted"]:
            problems.append(
                f"{point['geometry']}: operators without a FLOP handle {sorted(point['uncounted'])}"
            )
        for op, n in point["free_ops"].items():
            free.setdefault(op, n)
        point_rows = check_rows(point)
        rows += point_rows
        summary = {**point["geometry"], "measured_total": point["total"]}
        for variant in VARIANTS:
            summary[f"{variant}_total"] = sum(
                r["analytic_macs"] for r in point_rows if r["formula"] == variant
            )
        for term, macs in point["measured"].items():
            summary[f"measured_{term}"] = macs
        points.append(summary)
    if without:
        problems.append(
            f"{without} BRA row(s) store no count by term (column flops_detail; runs measured before "
            "attnbench stored it): `python scripts/store-flops-detail.py RUN_DIR` adds it (it counts "
            "FLOPs again, times nothing), then report again"
        )
    if not points:
        empty = pd.DataFrame()
        return FormulaCheck(empty, empty, empty, empty, problems, free)
    points_df = pd.DataFrame(points).fillna({f"measured_{t}": 0 for t in TERM_NAMES})
    scaling, slopes = _scaling(points_df)
    return FormulaCheck(pd.DataFrame(rows), points_df, scaling, slopes, problems, free)


def _scaling(points: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = []
    for group, g in points.groupby(GROUP_COLUMNS, sort=True):
        C, k = int(group[0]), int(group[2])
        for (H, W), at in g.groupby(["H", "W"], sort=True):
            HW = H * W
            best = at.loc[at["measured_total"].idxmin()]
            s_star = paper_optimal_s(HW, k)
            rows.append(
                {
                    **dict(zip(GROUP_COLUMNS, group)),
                    "H": H,
                    "W": W,
                    "HW": HW,
                    "n_win_swept": " ".join(str(s) for s in sorted(at["n_win"])),
                    "n_swept": len(at),
                    "best_n_win": int(best["n_win"]),
                    "s_star": s_star,
                    "measured_at_best": int(best["measured_total"]),
                    "measured_sdep_at_best": int(best["measured_routing"] + best["measured_attention"]),
                    "paper_bound": paper_bound(HW, C, k),
                    "paper_sdep_bound": paper_bound(HW, C, k) - 3 * HW * C * C,
                }
            )
    scaling = pd.DataFrame(rows)
    slopes = []
    if not scaling.empty:
        for group, g in scaling.groupby(GROUP_COLUMNS, sort=True):
            if g["HW"].nunique() < 2:
                continue
            C, k = int(group[0]), int(group[2])
            slopes.append(
                {
                    **dict(zip(GROUP_COLUMNS, group)),
                    "resolutions": g["HW"].nunique(),
                    "slope_measured_total": loglog_slope(g["HW"], g["measured_at_best"]),
                    "slope_measured_sdep": loglog_slope(g["HW"], g["measured_sdep_at_best"]),
                    "slope_paper_bound": loglog_slope(g["HW"], g["paper_bound"]),
                    "crossover_hw": C**3 / (2 * k * k),
                }
            )
    return scaling, pd.DataFrame(slopes)


# ---------------------------------------------------------------------------------------------
# The report: plain sentences with the numbers, and the tables.


def _range(values: Sequence[float], fmt: str = "{:.4g}") -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if math.isclose(lo, hi, rel_tol=1e-9) else f"{fmt.format(lo)}–{fmt.format(hi)}"


def _term_explanation(variant: str, term: str, sel: pd.DataFrame) -> str:
    """One sentence on why ``variant``'s ``term`` is off the count by what it is (or that it is not)."""
    ratios = sel["ratio"].dropna()
    exact = bool((sel["analytic_macs"] == sel["measured_macs"]).all())
    if (sel["analytic_macs"] == 0).all():
        if term == "lce":
            kernel = _range(sel["side_dwconv"].tolist(), "{:.0f}")
            return f"not in the formula; the {kernel}×{kernel} depthwise conv on v costs HW·C·K² MACs."
        if term == "out_proj":
            return "not in the formula; the output Linear(C → C) costs HW·C² MACs."
        return "not in the formula; MACs the count finds outside BRA's submodules."
    if exact:
        if variant == "analytic":
            return "equals the count at every point."
        return {
            "qkv_proj": "exact: one Linear(C → 3C) gives q, k and v, HW·C·3C MACs (fvcore does not count the "
            "bias additions).",
            "attention": "exact: each of the HW queries meets the k·HW/S² tokens of its k routed "
            "regions, and QKᵀ and AV cost C MACs per query-key pair each.",
        }.get(term, "exact.")
    if term == "routing" and np.allclose(ratios, 2.0) and (sel["qk_dim"] == sel["C"]).all():
        return (
            "2× the count: the region affinity A_r = Q_r K_rᵀ is one (S² × C)·(C × S²) product, S⁴C MACs. "
            "The BiFormer author says the factor 2 covers the top-k (issue #24); fvcore counts top-k as "
            "free. It is not the FLOP-per-MAC factor: the other terms are written in MACs (3HWC² is the "
            "projection's MAC count), so a formula in FLOPs would double them too."
        )
    if term == "attention" and variant == "quoted":
        M = sel["H_pad"] * sel["W_pad"] // (sel["n_win"] ** 2)
        if np.allclose(ratios * M, 1.0):
            return (
                "2HWkC drops the tokens per region HW/S² (here "
                f"{_range(M.tolist(), '{:.0f}')}): it counts k keys per query instead of the k·HW/S² tokens "
                f"of the k routed regions, so it is 1/(HW/S²) of the count (ratio {_range(list(ratios))})."
            )
    if term in ("qkv_proj", "routing", "attention") and (sel["qk_dim"] != sel["C"]).any():
        return (
            f"ratio {_range(list(ratios))}: the formula writes C for the query/key width; these points use "
            f"qk_dim = {_range(sel['qk_dim'].tolist(), '{:.0f}')} ≠ C."
        )
    return f"ratio {_range(list(ratios))} (formula MACs / counted MACs)."


def verdict(check: FormulaCheck) -> str:
    """One sentence for the report's summary: each published form's total as a ratio to the count."""
    pts = check.points
    if pts.empty:
        return "BRA formula check: no BRA point could be counted."
    parts = []
    for variant in ("paper", "quoted"):
        r = pts[f"{variant}_total"] / pts["measured_total"]
        parts.append(f"`{variant}` ×{_range(list(r), '{:.2f}')}")
    return (
        f"BRA formula check over {len(pts)} counted point(s): the published totals are "
        + " and ".join(parts)
        + " the fvcore count (1 = exact); term by term in the BRA formula check below."
    )


def _cited(text: str, tex_tail: str = "") -> Tex:
    """``text`` whose LaTeX form cites the BiFormer paper after the word "paper"."""
    tex = latex_escape(text).replace("paper", "paper~" + cite(["zhu2023biformer"]), 1)
    return Tex(text, tex + tex_tail)


def formula_doc(check: FormulaCheck, figures: Sequence[tuple[str, str]] = ()) -> Doc:
    """``formula_report.md``: the verdict, term by term, padding, free operators and scaling."""
    doc = Doc()
    doc.heading("BRA complexity formula, checked against the count", 1)
    pts, rows = check.points, check.rows
    if pts.empty:
        doc.para("No BRA point could be counted.")
        doc.bullets(check.problems)
        return doc
    doc.para(
        f"{len(pts)} BRA point(s): the count the run made of each with `attnbench.count_flops` (fvcore "
        "convention: 1 multiply-accumulate = 1 FLOP, so every number here is in MACs) on a (1, H, W, C) "
        "input, stored with its rows by term (column `flops_detail`); nothing is counted again here. "
        'Per term, "measured" is the count fvcore attributes to BRA\'s submodules `qkv`, `router`, '
        "`attn`, `lepe` and `wo`; anything outside them would be the term `other`. While FLOPs are "
        "counted, BRA's token attention runs through its `sdpa` backend whatever backend a row timed: "
        "the count is the released algorithm's."
    )
    doc.bullets([f"`{v}`: {expr}" for v, expr in VARIANTS.items()])

    doc.heading("Verdict")
    ratios = {v: pts[f"{v}_total"] / pts["measured_total"] for v in VARIANTS}
    lines = []
    for variant in VARIANTS:
        r = ratios[variant]
        sel = rows[rows["formula"] == variant]
        by_term = {t: g for t, g in sel.groupby("term", sort=False)}
        exact = [t for t, g in by_term.items() if (g["analytic_macs"] == g["measured_macs"]).all()]
        missing = [t for t, g in by_term.items() if (g["analytic_macs"] == 0).all()]
        off = [t for t in by_term if t not in exact and t not in missing]
        if not off and not missing:
            lines.append(f"`{variant}` equals the count, every term at every point (total ratio 1).")
            continue
        parts = []
        if exact:
            parts.append("gets " + ", ".join(TERM_NAMES[t] for t in exact) + " exactly")
        if off:
            parts.append(
                "is off on "
                + ", ".join(f"{TERM_NAMES[t]} (×{_range(list(by_term[t]['ratio']))})" for t in off)
            )
        if missing:
            parts.append("leaves out " + " and ".join(TERM_NAMES[t] for t in missing))
        lines.append(
            f"`{variant}` " + "; ".join(parts) + f". Its total is ×{_range(list(r))} the count "
            f"({100 * (r.min() - 1):+.1f} % to {100 * (r.max() - 1):+.1f} %)."
        )
    doc.bullets(lines)
    published = {v: float(np.mean(np.abs(np.log(ratios[v])))) for v in ("quoted", "paper")}
    closer = min(published, key=published.get)
    other = "quoted" if closer == "paper" else "paper"
    doc.para(
        f"Of the two published forms, `{closer}` is the closer to the measurement (mean |log ratio| "
        f"{published[closer]:.3f} against {published[other]:.3f} for `{other}`). Ratios are formula MACs "
        "over "
        "counted MACs; every number on both sides is in MACs."
    )

    doc.heading("Term by term")
    items = []
    for term in dict.fromkeys(rows["term"]):
        share = _range(list(100 * pts[f"measured_{term}"] / pts["measured_total"]), "{:.1f}")
        why: dict[str, list[str]] = {}
        for variant in VARIANTS:
            sel = rows[(rows["formula"] == variant) & (rows["term"] == term)]
            if sel.empty:
                continue
            expr = sel["expression"].iloc[0]
            who = f"`{variant}`" + (f" (`{expr}`)" if expr != "not in formula" else "")
            why.setdefault(_term_explanation(variant, term, sel), []).append(who)
        items.append(
            f"**{TERM_NAMES.get(term, term)}** ({share} % of the measured total): "
            + " ".join(f"{', '.join(who)}: {text}" for text, who in why.items())
        )
    doc.bullets(items)

    padded = pts[(pts["H_pad"] != pts["H"]) | (pts["W_pad"] != pts["W"])]
    if not padded.empty:
        HW, HWp = padded["H"] * padded["W"], padded["H_pad"] * padded["W_pad"]
        at_input = [
            paper_formula(h * w, c, s, k) for h, w, c, s, k in padded[["H", "W", "C", "n_win", "topk"]].values
        ]
        at_pad = padded["paper_total"]
        ex = padded.iloc[0]
        doc.heading("Padding")
        doc.para(
            f"At {len(padded)} point(s) `auto_pad` pads the input to a multiple of S (e.g. "
            f"{resolution_label(ex['H'], ex['W'])} → {resolution_label(ex['H_pad'], ex['W_pad'])} with S = "
            f"{int(ex['n_win'])}), {_range(list(100 * (HWp / HW - 1)), '{:.1f}')} % more tokens. The module "
            "computes every term on the padded map, so the formula rows use the padded H and W; the paper's "
            "formula at the unpadded size would be "
            f"{_range(list(100 * (1 - np.array(at_input) / at_pad)), '{:.1f}')} "
            "% lower."
        )

    if check.free_ops:
        doc.heading("Operators counted as zero")
        ops = ", ".join(f"`{op.removeprefix('aten::')}` ×{n}" for op, n in sorted(check.free_ops.items()))
        doc.para(
            "fvcore counts element-wise, reduction and selection operators as free (the papers' "
            f"convention). Calls per BRA forward: {ops}. The region pooling (`mean` of q and k over "
            "each region) and the top-k selection are among them, so no formula term for them is expected."
        )
    if check.problems:
        doc.heading("Not counted")
        doc.bullets(check.problems)

    doc.heading("Scaling at the best S")
    if check.scaling.empty:
        doc.para("No resolution was counted.")
    for _, s in check.slopes.iterrows():
        g = check.scaling
        for col in GROUP_COLUMNS:
            g = g[g[col] == s[col]]
        k, C = int(s["topk"]), int(s["C"])
        best = "; ".join(
            f"{resolution_label(r.H, r.W)}: swept S ∈ {{{r.n_win_swept.replace(' ', ', ')}}}, "
            f"best {r.best_n_win}, S* = {r.s_star:.2f}"
            for r in g.itertuples()
        )
        cross, side = s["crossover_hw"], math.sqrt(s["crossover_hw"])
        lo, hi = g["HW"].min(), g["HW"].max()
        where = "all below it" if hi < cross else "all above it" if lo > cross else "on both sides of it"
        doc.para(
            f"C = {C}, k = {k}: {best}. Fitted log-log slope against HW over {int(s['resolutions'])} "
            f"resolutions: measured total at the best swept S {s['slope_measured_total']:.3f}; its "
            f"S-dependent part (routing + attention) {s['slope_measured_sdep']:.3f}; the paper's bound at "
            f"S* {s['slope_paper_bound']:.3f}; claimed 4/3 = {CLAIMED_SLOPE:.3f}, the exact slope of the "
            "bound's S-dependent part alone. The bound's 3HWC² term is larger than its (HW)^(4/3) term "
            f"below HW = C³/(2k²) = {cross:.0f} tokens (about {side:.0f}×{side:.0f}), and there the total "
            f"grows more slowly than (HW)^(4/3); this run's sizes ({lo:.0f}–{hi:.0f} tokens) are {where}."
        )
        if (g["n_swept"] < 2).any():
            doc.para(
                "At "
                + ", ".join(resolution_label(r.H, r.W) for r in g.itertuples() if r.n_swept < 2)
                + ' the run swept a single S, so the "best" S there is not a minimum over S; sweep '
                "`n_win` to make it one."
            )
    if not check.scaling.empty and check.slopes.empty:
        doc.para("The run counted BRA at a single resolution per setting, so no slope can be fitted.")
    for path, caption in figures:
        doc.figure(path, caption)
    for table in formula_tables(check):
        doc.table(table)
    return doc


def formula_tables(check: FormulaCheck) -> list[Table]:
    """The per-point totals, the terms of one representative point, and the scaling table."""
    pts = check.points
    if pts.empty:
        return []
    div, unit = scaled_unit(float(pts["measured_total"].max()), "MACs")
    totals = Table(
        name="formula_totals",
        caption=_cited(
            f"BRA: measured fvcore count ({unit}, batch 1) and each formula's total as a ratio to it; "
            "paper: the BiFormer paper's formula"
        ),
        header=[
            "H×W",
            "C",
            "S",
            "k",
            f"Measured ({unit})",
            "quoted / meas.",
            "paper / meas.",
            "analytic / meas.",
        ],
        rows=[
            [
                resolution_label(p.H, p.W),
                str(p.C),
                str(p.n_win),
                str(p.topk),
                f"{p.measured_total / div:.4g}",
                *(f"{getattr(p, f'{v}_total') / p.measured_total:.4g}" for v in VARIANTS),
            ]
            for p in pts.itertuples()
        ],
        note="Formulas evaluated at the padded size where auto_pad pads.",
    )
    # one point in detail: the best swept S at the largest resolution
    ref = pts.loc[pts["H"] * pts["W"] == (pts["H"] * pts["W"]).max()]
    ref = ref.loc[ref["measured_total"].idxmin()]
    sel = check.rows
    for col in POINT_COLUMNS:
        sel = sel[sel[col] == ref[col]]
    tdiv, tunit = scaled_unit(float(ref["measured_total"]), "MACs")
    term_rows = []
    for term in [*dict.fromkeys(sel["term"]), "total"]:
        t = sel if term == "total" else sel[sel["term"] == term]
        measured = int(t.loc[t["formula"] == "analytic", "measured_macs"].sum())
        cells = [TERM_NAMES.get(term, term), f"{measured / tdiv:.4g}"]
        for variant in VARIANTS:
            v = t[t["formula"] == variant]
            expr = v["expression"].iloc[0] if len(v) else ""
            if v.empty or (term != "total" and expr == "not in formula"):
                cells.append("not in formula" if len(v) else "—")
                continue
            analytic = int(v["analytic_macs"].sum())
            prefix = f"{expr}: " if term != "total" and variant != "analytic" else ""
            ratio = f" ({analytic / measured:.3g}×)" if measured else ""
            cells.append(f"{prefix}{analytic / tdiv:.4g}{ratio}")
        term_rows.append(cells)
    point = (
        f"{resolution_label(ref['H'], ref['W'])}, C = {ref['C']}, {ref['num_heads']} heads, "
        f"S = {ref['n_win']}, k = {ref['topk']}"
    )
    terms_table = Table(
        name="formula_terms",
        caption=_cited(
            f"BRA terms at {point}: measured and per formula ({tunit}, ratio to measured); paper: the "
            "BiFormer paper's formula"
        ),
        header=["Term", f"Measured ({tunit})", "quoted", "paper", "analytic"],
        rows=term_rows,
        align="lrrrr",
        note="Terms a formula lacks count 0 there; rows add up to the measured total.",
    )
    tables = [totals, terms_table]
    if not check.scaling.empty:
        sc = check.scaling
        sdiv, sunit = scaled_unit(float(sc["measured_at_best"].max()), "MACs")
        tables.append(
            Table(
                name="formula_scaling",
                caption=_cited(f"BRA at the best swept S and at the paper's S* ({sunit}, fvcore, batch 1)"),
                header=[
                    "C",
                    "k",
                    "H×W",
                    "S swept",
                    "best S",
                    "S*",
                    f"Measured at best S ({sunit})",
                    f"Paper bound at S* ({sunit})",
                ],
                rows=[
                    [
                        str(r.C),
                        str(r.topk),
                        resolution_label(r.H, r.W),
                        r.n_win_swept,
                        str(r.best_n_win),
                        f"{r.s_star:.2f}",
                        f"{r.measured_at_best / sdiv:.4g}",
                        f"{r.paper_bound / sdiv:.4g}",
                    ]
                    for r in sc.itertuples()
                ],
                note="The paper's bound leaves out the LCE and the output projection and counts routing "
                "twice.",
            )
        )
    return tables


def write_formula_files(check: FormulaCheck, run_dir: Path, figures: Sequence[tuple[str, str]] = ()) -> Doc:
    """Write ``formula_check.csv`` and ``formula_report.md`` into ``run_dir``; returns the report."""
    check.rows.to_csv(run_dir / "formula_check.csv", index=False)
    doc = formula_doc(check, figures)
    (run_dir / "formula_report.md").write_text(doc.to_markdown())
    return doc
