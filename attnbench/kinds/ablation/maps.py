"""Pictures of where each mechanism looks: ``attnbench maps``.

For a few query positions on one input image, each mechanism's :meth:`attention_map` hook says what
the query attends to (weights on the map, regions, sampled points); this module draws only what the
hook returns and never reaches into a mechanism. Beside it, the effective receptive field (ERF) of
the mechanism's output at the query:

    ERF(q) = | d (sum over channels of y[q]) / d image |, summed over image channels,

where ``y`` is the output of the first attention module of the chosen stage (the mechanism's own
output, before the block's residual) and ``image`` the normalized input (Luo et al., NeurIPS 2016,
set the output gradient to 1 at the centre unit in every channel: the same thing). Pictures show it
normalized to max 1; ``erf.csv`` gives, averaged over several validation images, the radius around the
query's pixel centre that holds 50 % and 90 % of the gradient mass (``r50_px``, ``r90_px``).

- :func:`draw_run_maps`: an ablation run folder: one trained model per configuration (mechanism and
  parameters), at initialisation and trained, ``RUN_DIR/maps/<config>.png|.svg``, ``all.png|.svg``
  and ``erf.csv``;
- :func:`draw_model_maps`: a seed model (``biformer_tiny``, ...) with a released checkpoint or at
  random initialisation, on an image file or a synthetic pattern.

Everything runs on CPU in eval mode, batch 1 for the attention maps. Bad input raises
:class:`MapsError`, whose message is one line naming the problem and the fix.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attnbench.mechanism import AttentionMap, AttentionMechanism
from attnbench.registry import get_mechanism

__all__ = ["ERF_IMAGES", "MapsError", "draw_model_maps", "draw_run_maps", "erf_radii"]

ERF_IMAGES = 16  # validation images the ERF numbers are averaged over
ERF_DEFINITION = (
    "ERF: |d(sum over channels of the attention output at the query)/d(input image)|, summed over "
    "image channels, shown relative to its maximum; dashed circles hold 50 % and 90 % of it"
)
CSV_FIELDS = (
    "configuration",
    "file",
    "seed",
    "level",
    "query",
    "state",
    "r50_px",
    "r90_px",
    "n_images",
)


class MapsError(ValueError):
    """Bad input to ``attnbench maps``: the message is one line naming the problem and the fix."""


# ----------------------------------------------------------------------------- what is drawn


@dataclasses.dataclass
class Query:
    """One query: a name, its token ``(row, col)`` on the stage map, per image (the ERF images)."""

    name: str
    tokens: list[tuple[int, int]]  # one per image; tokens[0] is the pictured image's


@dataclasses.dataclass
class Panel:
    """One picture: the image, a heat map on it, and what the hook adds.

    ``heat`` is on the token grid (attention) or the pixel grid (ERF), scaled to max 1; ``missing``
    replaces the heat map with a labelled placeholder.
    """

    image: np.ndarray  # (H, W) or (H, W, 3) in [0, 1]
    query_px: tuple[float, float]  # (row, col) pixel centre of the query token
    scale: tuple[float, float]  # image pixels per token (rows, cols)
    title: str = ""
    heat: np.ndarray | None = None
    regions: tuple = ()
    points: np.ndarray | None = None  # (P, 2) token (row, col)
    point_weights: np.ndarray | None = None  # (P,)
    radii: tuple[float, float] | None = None  # r50, r90 in pixels (ERF panels)
    missing: str = ""


# ----------------------------------------------------------------------------- model plumbing


def attention_modules(model: nn.Module, stage: int) -> list[AttentionMechanism]:
    """The attention mechanisms of 1-based ``stage`` of a staged model (``model.stages``), in order.

    Raises:
        MapsError: the model has no such stage or no mechanism in it.
    """
    stages = getattr(model, "stages", None)
    if not isinstance(stages, nn.ModuleList) or not stages:
        raise MapsError(f"{type(model).__name__} has no .stages; maps need a staged model")
    if not 1 <= stage <= len(stages):
        raise MapsError(
            f"stage {stage} does not exist; the model has stages 1..{len(stages)}: "
            f"pass --stage 1..{len(stages)}"
        )
    found = [m for m in stages[stage - 1].modules() if isinstance(m, AttentionMechanism)]
    if not found:
        raise MapsError(
            f"stage {stage} of {type(model).__name__} holds no attention mechanism; pick another --stage"
        )
    return found


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the attention module has been seen."""


def capture_input(model: nn.Module, attn: nn.Module, image: Tensor) -> Tensor:
    """The ``(1, H, W, C)`` input ``attn`` receives when ``model`` runs on ``image`` (1, C, H, W).

    The forward pass stops at ``attn`` (nothing after it runs).
    """
    seen: list[Tensor] = []

    def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
        seen.append(args[0].detach())
        raise _Stop

    handle = attn.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            model(image)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not seen:
        raise MapsError(f"{type(attn).__name__} did not run in the forward pass; pick another --stage")
    return seen[0]


def attention_at(attn: AttentionMechanism, x: Tensor, query: tuple[int, int]) -> AttentionMap | str:
    """The hook's answer, or why there is none (a placeholder panel says it)."""
    if not type(attn).has_attention_map():
        return f"no attention_map\n({type(attn).display_name or type(attn).__name__} has no hook)"
    try:
        with torch.no_grad():
            return attn.attention_map(x, query)
    except Exception as exc:  # noqa: BLE001 - drawn as a labelled panel, the other panels go on
        return "attention_map failed:\n" + textwrap.fill(f"{type(exc).__name__}: {exc}", 40)[:200]


def erf_maps(
    model: nn.Module, attn: nn.Module, images: Tensor, tokens: Sequence[Sequence[tuple[int, int]]]
) -> np.ndarray:
    """``|d sum_c y[b, r, c, :] / d images[b]|`` summed over image channels, ``(Q, B, H, W)``.

    ``y`` is ``attn``'s output; ``tokens[q][b]`` is image ``b``'s ``q``-th query. Images are
    independent in eval mode, so the batch is repeated once per query and one backward pass gives
    every map; the forward pass stops at ``attn``.
    """
    out: list[Tensor] = []

    def hook(_module: nn.Module, _args: tuple[Any, ...], output: Tensor) -> None:
        out.append(output)
        raise _Stop

    Q, B = len(tokens), images.shape[0]
    x = images.repeat(Q, 1, 1, 1).requires_grad_(True)  # (Q·B, C, H, W), query-major
    handle = attn.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            try:
                model(x)
            except _Stop:
                pass
            y = out[0]  # (Q·B, H', W', C)
            flat = [t for per_query in tokens for t in per_query]
            rows = torch.tensor([t[0] for t in flat])
            cols = torch.tensor([t[1] for t in flat])
            picked = y[torch.arange(Q * B), rows, cols]  # (Q·B, C)
            (grad,) = torch.autograd.grad(picked.sum(), x)
    finally:
        handle.remove()
    return grad.abs().sum(1).view(Q, B, *images.shape[2:]).numpy()  # (Q, B, H, W)


def erf_radii(
    maps: np.ndarray, centres: Sequence[tuple[float, float]], step: float = 0.25
) -> tuple[float, float]:
    """Radii (pixels) around each map's centre holding 50 % and 90 % of its mass, from the mean profile.

    Each map is normalized to sum 1; the fraction of mass within distance ``r`` of its own centre is
    averaged over the maps, and the smallest ``r`` (on a ``step``-pixel grid) where the mean reaches
    0.5 and 0.9 is returned. A map with no mass (a zero gradient) is left out; none at all gives NaN.
    """
    B, H, W = maps.shape
    ys, xs = np.mgrid[0:H, 0:W]
    radii = np.arange(0.0, math.hypot(H, W) + step, step)
    profiles = []
    for b in range(B):
        total = maps[b].sum()
        if not total > 0:
            continue
        d = np.hypot(ys - centres[b][0], xs - centres[b][1]).ravel()
        order = np.argsort(d)
        cum = np.cumsum(maps[b].ravel()[order]) / total
        idx = np.searchsorted(d[order], radii, side="right")  # pixels within each radius
        profiles.append(np.where(idx > 0, cum[np.maximum(idx - 1, 0)], 0.0))
    if not profiles:
        return math.nan, math.nan
    mean = np.mean(profiles, axis=0)
    r50 = radii[np.argmax(mean >= 0.5 - 1e-9)]
    r90 = radii[np.argmax(mean >= 0.9 - 1e-9)]
    return float(r50), float(r90)


def _token_centre(token: tuple[int, int], scale: tuple[float, float]) -> tuple[float, float]:
    return (token[0] + 0.5) * scale[0] - 0.5, (token[1] + 0.5) * scale[1] - 0.5


def _to_token(pixel: tuple[float, float], img: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int]:
    """The token of a (row, col) pixel position on a ``grid`` map of an ``img``-sized image."""
    return tuple(  # type: ignore[return-value]
        int(min(g - 1, max(0, math.floor((p + 0.5) * g / s)))) for p, s, g in zip(pixel, img, grid)
    )


def _check_queries(queries: Sequence[tuple[int, int]], grid: tuple[int, int], stage: int) -> None:
    for r, c in queries:
        if not (0 <= r < grid[0] and 0 <= c < grid[1]):
            raise MapsError(
                f"query ({r}, {c}) is outside the stage-{stage} map of {grid[0]}x{grid[1]} tokens; "
                f"give ROW,COL with 0 <= ROW < {grid[0]} and 0 <= COL < {grid[1]}"
            )


# ----------------------------------------------------------------------------- labels


def config_label(mechanism: str, params: dict[str, Any]) -> str:
    """The report's label: display name and parameter symbols, e.g. ``BRA (S=4, k=4)``."""
    try:
        cls = get_mechanism(mechanism)
        name, symbols = cls.display_name, cls.param_symbols
    except (KeyError, ValueError):
        name, symbols = mechanism, {}
    if not params:
        return name
    return f"{name} ({', '.join(f'{symbols.get(k, k)}={v}' for k, v in params.items())})"


def config_slug(mechanism: str, params: dict[str, Any]) -> str:
    """A file name for a configuration: ``bra-n_win4-topk4``."""
    parts = [mechanism, *(f"{k}{v}" for k, v in sorted(params.items()))]
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", "-".join(parts))


# ----------------------------------------------------------------------------- drawing


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


HEAT_CMAP, HEAT_ALPHA = "magma", 0.65


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image


def _blend(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The image with ``heat`` (any grid, values in [0, 1]) over it, one RGB array of the image's size.

    A coarser heat map is upsampled by repeating each cell over the pixels it covers.
    """
    from matplotlib import colormaps

    H, W = image.shape[:2]
    h, w = heat.shape
    rows = (np.arange(H) * h) // H
    cols = (np.arange(W) * w) // W
    colour = colormaps[HEAT_CMAP](heat[rows][:, cols])[..., :3]  # (H, W, 3)
    return (1 - HEAT_ALPHA) * _rgb(image) + HEAT_ALPHA * colour


def draw_panel(ax: Any, panel: Panel) -> None:
    """Draw one panel on ``ax``."""
    from matplotlib.patches import Circle, Rectangle

    H, W = panel.image.shape[:2]
    ax.set_xticks([])
    ax.set_yticks([])
    if panel.title:
        ax.set_title(panel.title, fontsize=8)
    if panel.missing:
        ax.imshow(0.35 * _rgb(panel.image), interpolation="nearest")
        ax.text(
            W / 2,
            H / 2,
            panel.missing,
            ha="center",
            va="center",
            fontsize=7,
            color="white",
            bbox={"facecolor": "black", "alpha": 0.6, "edgecolor": "none"},
        )
        return
    shown = _rgb(panel.image) if panel.heat is None else _blend(panel.image, panel.heat)
    ax.imshow(shown, interpolation="nearest")
    sy, sx = panel.scale
    for region in panel.regions:
        ax.add_patch(
            Rectangle(
                (region.left * sx - 0.5, region.top * sy - 0.5),
                region.width * sx,
                region.height * sy,
                fill=False,
                edgecolor="cyan",
                linewidth=1.0,
            )
        )
    if panel.points is not None and len(panel.points):
        wts = panel.point_weights
        size = (
            np.full(len(panel.points), 12.0) if wts is None else 4 + 60 * wts / max(float(wts.max()), 1e-12)
        )
        ax.scatter(
            (panel.points[:, 1] + 0.5) * sx - 0.5,
            (panel.points[:, 0] + 0.5) * sy - 0.5,
            s=size,
            facecolor="lime",
            edgecolor="black",
            linewidth=0.4,
            zorder=3,
        )
    qy, qx = panel.query_px
    if panel.radii is not None:
        for r in panel.radii:
            if r > 0 and math.isfinite(r):
                ax.add_patch(
                    Circle(
                        (qx, qy),
                        r,
                        fill=False,
                        edgecolor="white",
                        linestyle="--",
                        linewidth=0.8,
                    )
                )
    ax.add_patch(
        Rectangle(
            (qx - sx / 2, qy - sy / 2),
            sx,
            sy,
            fill=False,
            edgecolor="deepskyblue",
            linewidth=1.4,
            zorder=4,
        )
    )
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)


def draw_grid(
    panels: list[list[Panel]],
    row_labels: list[str],
    title: str,
    caption: str,
    stem: Path,
    col_titles: list[str] | None = None,
) -> list[Path]:
    """A grid of panels (rows x columns) with one colour bar; writes ``stem.png`` and ``stem.svg``."""
    plt = _plt()
    n_rows, n_cols = len(panels), max(len(r) for r in panels)
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(2.3 * n_cols + 1.2, 2.3 * n_rows + 1.4),
        squeeze=False,
        layout="constrained",
    )
    for i, row in enumerate(panels):
        for j in range(n_cols):
            ax = axes[i][j]
            if j >= len(row):
                ax.axis("off")
                continue
            draw_panel(ax, row[j])
            if j == 0:
                ax.set_ylabel(row_labels[i], fontsize=8)
            if i == 0 and col_titles:
                ax.set_title(
                    col_titles[j] + ("\n" + row[j].title if row[j].title else ""),
                    fontsize=8,
                )
    if any(p.heat is not None for row in panels for p in row):
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        mappable = ScalarMappable(Normalize(0, 1), HEAT_CMAP)
        cbar = fig.colorbar(mappable, ax=axes, shrink=0.6, pad=0.01)
        cbar.set_label(f"fraction of the panel's maximum (drawn at opacity {HEAT_ALPHA})", fontsize=8)
        cbar.ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    width = max(60, int(18 * n_cols + 20))
    fig.supxlabel(
        "\n".join(textwrap.fill(p, width) for p in caption.split("\n")),
        fontsize=7,
        ha="center",
    )
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for ext in ("png", "svg"):
        path = stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=130)
        fig.set_layout_engine("none")  # laid out once: the SVG keeps the PNG's positions
        written.append(path)
    plt.close(fig)
    return written


def _attention_panel(
    att: AttentionMap | str,
    image: np.ndarray,
    query: tuple[int, int],
    scale: tuple[float, float],
) -> Panel:
    panel = Panel(image=image, query_px=_token_centre(query, scale), scale=scale)
    if isinstance(att, str):
        panel.missing = att
        return panel
    weights = att.weights.detach().float()
    if not att.normalized:
        weights = weights.abs()
    heat = weights.mean(0).numpy()  # (H', W'): head average
    panel.heat = heat / max(float(heat.max()), 1e-12)
    panel.regions = tuple(att.regions)
    if att.points is not None:
        panel.points = att.points.detach().float().reshape(-1, 2).numpy()
        if att.point_weights is not None:
            panel.point_weights = att.point_weights.detach().float().reshape(-1).abs().numpy()
    return panel


def _erf_panel(
    erf: np.ndarray,
    image: np.ndarray,
    query: tuple[int, int],
    scale: tuple[float, float],
) -> Panel:
    centre = _token_centre(query, scale)
    r50, r90 = erf_radii(erf[None], [centre])
    return Panel(
        image=image,
        query_px=centre,
        scale=scale,
        heat=erf / max(float(erf.max()), 1e-12),
        radii=(r50, r90),
        title=f"r50 {r50:.1f} px, r90 {r90:.1f} px",
    )


# ----------------------------------------------------------------------------- one model, both states


@dataclasses.dataclass
class _Pictures:
    """What one configuration contributes: attention panels per query, ERF panels, ERF numbers."""

    label: str
    slug: str
    query_names: list[str]
    notes: list[str]
    attention: list[Panel]
    erf: dict[str, list[Panel]]  # state -> one panel per query
    numbers: list[dict[str, Any]]
    map_side: tuple[int, int]


def _picture_model(
    models: dict[str, nn.Module],
    stage: int,
    images: Tensor,
    shown: np.ndarray,
    queries: Callable[[tuple[int, int], tuple[int, int]], list[Query]],
    label: str,
    slug: str,
) -> _Pictures:
    """Attention maps (of the last state, the trained one) and ERFs of every state of one model.

    Args:
        models: state name ("init", "trained") -> model in eval mode; the attention is drawn for the
            last one.
        images: (B, C, H, W) normalized; image 0 is the one pictured.
        shown: image 0 for display, (H, W) or (H, W, 3) in [0, 1].
        queries: ``(image size, stage map size) -> queries`` (tokens per image).
    """
    img_hw = (images.shape[2], images.shape[3])
    final = list(models.values())[-1]
    attn = attention_modules(final, stage)[0]
    x = capture_input(final, attn, images[:1])  # (1, H', W', C)
    grid = (x.shape[1], x.shape[2])
    scale = (img_hw[0] / grid[0], img_hw[1] / grid[1])
    qs = queries(img_hw, grid)
    attention, notes = [], []
    for q in qs:
        att = attention_at(attn, x, q.tokens[0])
        attention.append(_attention_panel(att, shown, q.tokens[0], scale))
        if isinstance(att, AttentionMap) and att.note and att.note not in notes:
            notes.append(att.note)
        if isinstance(att, str) and att.split("\n")[0] not in notes:
            notes.append(att.replace("\n", " "))
    erf: dict[str, list[Panel]] = {}
    numbers = []
    for state, model in models.items():
        module = attention_modules(model, stage)[0]
        erf[state] = []
        for q, maps in zip(qs, erf_maps(model, module, images, [q.tokens for q in qs])):
            erf[state].append(_erf_panel(maps[0], shown, q.tokens[0], scale))
            r50, r90 = erf_radii(maps, [_token_centre(t, scale) for t in q.tokens])
            numbers.append(
                {
                    "query": q.name,
                    "state": state,
                    "r50_px": r50,
                    "r90_px": r90,
                    "n_images": len(maps),
                }
            )
    for panel, q in zip(attention, qs):
        panel.title = f"{q.name} {q.tokens[0]}"
    return _Pictures(label, slug, [q.name for q in qs], notes, attention, erf, numbers, grid)


def _config_figure(pic: _Pictures, headline: str, image_text: str, stage: int, stem: Path) -> list[Path]:
    states = list(pic.erf)
    rows = [pic.attention] + [pic.erf[s] for s in states]
    labels = [f"attention ({states[-1]})"] + [f"ERF ({s})" for s in states]
    caption = (
        f"{image_text}. Stage {stage}, first attention layer, map "
        f"{pic.map_side[0]}x{pic.map_side[1]} tokens; "
        "blue square: the query token. Attention: weights averaged over heads, relative to the panel's "
        "maximum; cyan: regions; green dots: sampled points or agents sized by weight. "
        + ("Hook: " + "; ".join(pic.notes) + ". " if pic.notes else "")
        + ERF_DEFINITION
        + "."
    )
    return draw_grid(rows, labels, f"{pic.label}: {headline}", caption, stem)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: (f"{row[k]:.2f}" if isinstance(row[k], float) else row[k]) for k in CSV_FIELDS}
            )
    return path


# ----------------------------------------------------------------------------- ablation runs


@dataclasses.dataclass
class _Trained:
    row: dict[str, Any]
    workdir: Path
    config: dict[str, Any]
    level: str
    level_index: int


def _finished_runs(run_dir: Path) -> list[_Trained]:
    from attnbench.ablation.data import level_label
    from attnbench.store import DB_NAME, load_rows, read_manifest

    if not run_dir.is_dir():
        raise MapsError(f"{run_dir} is not a folder; give the run folder of an ablation study (runs/<name>)")
    try:
        _, rows = load_rows(run_dir)
    except FileNotFoundError:
        raise MapsError(
            f"{run_dir} holds no {DB_NAME}: not a run folder; give the folder `attnbench run` wrote for an "
            "ablation study"
        ) from None
    ablation = [r for r in rows if r.get("pass") == "train" and r.get("workdir")]
    if not ablation:
        raise MapsError(
            f"{run_dir} is not an ablation run (no trained rows with a workdir); give the folder of a "
            "`kind: ablation` study"
        )
    datasets = (read_manifest(run_dir).get("conditions") or {}).get("datasets") or []
    found = []
    for row in ablation:
        path = run_dir / row["workdir"] / "model.pt"
        if row.get("status") != "ok" or not path.is_file():
            continue
        try:
            config = torch.load(path, map_location="cpu", weights_only=True)["config"]
        except Exception:  # noqa: BLE001 - a damaged or foreign file counts as no finished model
            continue
        ds = config["dataset"]
        index = row.get("level_index")
        if index is None:
            index = next((i for i, d in enumerate(datasets) if d == ds), len(datasets))
        found.append(
            _Trained(
                row,
                run_dir / row["workdir"],
                config,
                str(row.get("level") or level_label(ds)),  # rows written before the level column
                int(index),
            )
        )
    if not found:
        raise MapsError(
            f"{run_dir}: none of its {len(ablation)} ablation rows has a finished model.pt; finish the study "
            f"(attnbench run STUDY.yaml --out {run_dir}), or run it again with --fresh if an older attnbench "
            "made it"
        )
    return found


def _choose(found: list[_Trained], level: str | int | None, seed: int | None) -> tuple[str, list[_Trained]]:
    levels: dict[str, int] = {}
    for t in sorted(found, key=lambda t: t.level_index):
        levels.setdefault(t.level, t.level_index)
    names = list(levels)
    if level is None:
        chosen = names[0]
    elif str(level) in levels:
        chosen = str(level)
    elif str(level).isdigit() and int(level) in levels.values():
        chosen = next(n for n, i in levels.items() if i == int(level))
    else:
        raise MapsError(f"level {level!r} has no trained model in this run; pass --level one of {names}")
    on_level = [t for t in found if t.level == chosen]
    configs: dict[str, list[_Trained]] = {}
    for t in on_level:
        key = json.dumps(
            [t.config["mechanism"], t.config["params"], t.config["backbone"]],
            sort_keys=True,
        )
        configs.setdefault(key, []).append(t)
    picked = []
    for runs in configs.values():
        seeds = sorted(runs, key=lambda t: t.config["seed"])
        if seed is None:
            picked.append(seeds[0])
        else:
            picked += [t for t in seeds if t.config["seed"] == seed][:1]
    if not picked:
        have = sorted({t.config["seed"] for t in on_level})
        raise MapsError(f"seed {seed} has no trained model on level {chosen!r}; pass --seed one of {have}")
    return chosen, picked


def _pathfinder_geometry(data: Any, dataset_cfg: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """Marker and contour geometry of the val split, regenerated; None if it does not match the images."""
    from attnbench.ablation.data import VAL_SEED_OFFSET
    from attnbench.ablation.data.pathfinder import PathfinderConfig, generate

    fields = {f.name for f in dataclasses.fields(PathfinderConfig)}
    pf = PathfinderConfig(**{k: v for k, v in data.info.items() if k in fields})
    n = len(data.val)
    images, _, geo = generate(pf, n, dataset_cfg.get("seed", 0) + VAL_SEED_OFFSET, return_geometry=True)
    loaded = data.val.__getitems__(list(range(n)))[0][:, 0].numpy()
    return geo if np.array_equal(images, loaded) else None


def _pathfinder_queries(geo: dict[str, np.ndarray], index: int) -> list[tuple[str, tuple[float, float]]]:
    """(name, (row, col) pixel) of the first marker, the middle of its contour and the second marker."""
    markers = geo["markers"][index]  # (2, 2) of (x, y)
    contour = int(geo["marker_ends"][index, 0, 0])
    slots = np.flatnonzero(geo["contour_of"] == contour)
    middle = geo["segments"][index, slots[len(slots) // 2]].mean(0)  # midpoint of the middle paddle, (x, y)
    return [
        ("marker 1", (float(markers[0, 1]), float(markers[0, 0]))),
        ("contour middle", (float(middle[1]), float(middle[0]))),
        ("marker 2", (float(markers[1, 1]), float(markers[1, 0]))),
    ]


def _reach_geometry(data: Any, dataset_cfg: dict[str, Any]) -> Any | None:
    """The reach val split regenerated (distances, marked tokens); None if it does not match the images."""
    from attnbench.ablation.data import reach_val_split

    cfg, split = reach_val_split(dataset_cfg)
    loaded = data.val.__getitems__(list(range(len(data.val))))[0][:, 0].numpy()
    return (split, cfg) if np.array_equal(split.images, loaded) else None


def _reach_queries(geo: Any, index: int) -> list[tuple[str, tuple[float, float]]]:
    """(name, (row, col) pixel) of the centres of the two marked glyphs' tokens."""
    split, cfg = geo
    half = cfg.patch * cfg.frame_tokens / 2
    return [
        (f"glyph {k + 1}", (float(r * cfg.patch + half), float(c * cfg.patch + half)))
        for k, (r, c) in enumerate(split.marked[index])
    ]


def _plain_queries(img: tuple[int, int]) -> list[tuple[str, tuple[float, float]]]:
    return [
        (name, (f * img[0], g * img[1]))
        for name, f, g in (
            ("upper left", 0.25, 0.25),
            ("centre", 0.5, 0.5),
            ("lower right", 0.75, 0.75),
        )
    ]


def _as_display(images: Tensor) -> np.ndarray:
    """uint8 (C, H, W) -> (H, W) or (H, W, 3) floats in [0, 1]."""
    arr = images.float().numpy() / 255
    return arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)


def draw_run_maps(
    run_dir: str | Path,
    *,
    level: str | int | None = None,
    seed: int | None = None,
    image_index: int | None = None,
    queries: Sequence[tuple[int, int]] | None = None,
    stage: int = 1,
    erf_images: int = ERF_IMAGES,
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Draw every configuration of an ablation run: ``RUN_DIR/maps/<config>.png|.svg``, ``all.png|.svg``
    and ``erf.csv``.

    Args:
        run_dir: the run folder of an ablation study (``results.db`` and ``ablation/<key>/model.pt``).
        level: a dataset level's index in the study, or its label: the rows' ``level`` column
            (``"easy, contour 8"``; for rows written before that column, the same words made
            from the study's dataset entry by :func:`attnbench.ablation.data.level_label`);
            default the first level with trained models.
        seed: the training seed to draw; default the smallest per configuration.
        image_index: the val image; default the first connected one (label 1) of a two-class
            dataset, else image 0.
        queries: token ``(row, col)`` positions on the stage's map; default: on Pathfinder the first
            marker, the middle of its contour and the second marker, else three points on the
            diagonal.
        stage: 1-based stage whose first attention layer is drawn.
        erf_images: val images the ERF numbers are averaged over (the pictured one first).
        progress: called with a line per configuration.

    Returns:
        The files written.

    Raises:
        MapsError: not an ablation run, no finished model, an unknown level or seed, an image index
            or query off the val split or the map, a stage that does not exist.
    """
    from attnbench.ablation import initial_model, load_dataset, load_trained

    run_dir = Path(run_dir)
    chosen, picked = _choose(_finished_runs(run_dir), level, seed)
    trained_models = {id(picked[0]): load_trained(picked[0].workdir)[0]}
    attention_modules(trained_models[id(picked[0])], stage)  # a bad --stage fails before any work
    dataset_cfg = picked[0].config["dataset"]
    data = load_dataset(dataset_cfg, train_seed=picked[0].config["seed"])  # the val split is the same
    val_images, val_labels = data.val.__getitems__(list(range(len(data.val))))
    labels = val_labels.numpy()
    two_class = data.num_classes == 2
    reach = _reach_geometry(data, dataset_cfg) if dataset_cfg.get("name") == "reach" else None
    if image_index is None and reach is not None:  # the farthest pair, the same glyph
        far = reach[0].distances == reach[0].distances.max()
        hits = np.flatnonzero(far & (labels == 1))
        image_index = int(hits[0]) if len(hits) else 0
    elif image_index is None:
        hits = np.flatnonzero(labels == 1) if two_class else np.arange(len(labels))
        image_index = int(hits[0]) if len(hits) else 0
    if not 0 <= image_index < len(labels):
        raise MapsError(
            f"image index {image_index} is not in the val split of {len(labels)} images; "
            f"pass --image-index 0..{len(labels) - 1}"
        )
    pool = np.flatnonzero(labels == labels[image_index]) if two_class else np.arange(len(labels))
    if reach is not None:  # ERF numbers over pairs at the same distance
        pool = pool[reach[0].distances[pool] == reach[0].distances[image_index]]
    others = [int(i) for i in pool if i != image_index][: max(0, erf_images - 1)]
    indices = [image_index, *others]
    images = data.normalize(val_images[indices])  # (B, C, H, W)
    shown = _as_display(val_images[image_index])
    geo = _pathfinder_geometry(data, dataset_cfg) if dataset_cfg.get("name") == "pathfinder" else None

    def make_queries(img: tuple[int, int], grid: tuple[int, int]) -> list[Query]:
        if queries:
            _check_queries(queries, grid, stage)
            return [Query(f"query {i + 1}", [tuple(q)] * len(indices)) for i, q in enumerate(queries)]  # type: ignore[misc]
        per_image = [
            _pathfinder_queries(geo, i)
            if geo is not None
            else _reach_queries(reach, i)
            if reach is not None
            else _plain_queries(img)
            for i in indices
        ]
        return [
            Query(per_image[0][k][0], [_to_token(p[k][1], img, grid) for p in per_image])
            for k in range(len(per_image[0]))
        ]

    image_text = (
        f"Val image {image_index} of {chosen} (label {int(labels[image_index])}"
        + (", connected" if geo is not None and labels[image_index] == 1 else "")
        + (
            ", queries on the markers and the middle of the first marker's contour"
            if geo is not None and not queries
            else ""
        )
        + (
            f", the two marked glyphs {int(reach[0].distances[image_index])} tokens apart, queries on them"
            if reach is not None and not queries
            else ""
        )
        + f"); ERF numbers over {len(indices)} val images of that label"
    )
    out_dir = run_dir / "maps"
    written: list[Path] = []
    pictures: list[_Pictures] = []
    csv_rows: list[dict[str, Any]] = []
    for t in sorted(
        picked,
        key=lambda t: (
            t.config["mechanism"],
            json.dumps(t.config["params"], sort_keys=True),
        ),
    ):
        cfg = t.config
        label = config_label(cfg["mechanism"], cfg["params"])
        init = initial_model(
            cfg["mechanism"],
            cfg["params"],
            cfg["dataset"],
            cfg["backbone"],
            cfg["seed"],
        ).eval()
        trained = trained_models.pop(id(t), None) or load_trained(t.workdir)[0]
        pic = _picture_model(
            {"init": init, "trained": trained},
            stage,
            images,
            shown,
            make_queries,
            label,
            config_slug(cfg["mechanism"], cfg["params"]),
        )
        headline = f"{chosen}, seed {cfg['seed']}"
        written += _config_figure(pic, headline, image_text, stage, out_dir / pic.slug)
        pictures.append(pic)
        if progress is not None:
            progress(f"maps: drew {label} (seed {cfg['seed']})")
        csv_rows += [
            {"configuration": label, "file": pic.slug, "seed": cfg["seed"], "level": chosen, **n}
            for n in pic.numbers
        ]
    written += _overview(
        pictures,
        f"Where each mechanism looks: stage {stage}, {chosen}",
        image_text,
        stage,
        out_dir / "all",
    )
    written.append(_write_csv(out_dir / "erf.csv", csv_rows))
    return written


def _overview(pictures: list[_Pictures], title: str, image_text: str, stage: int, stem: Path) -> list[Path]:
    """One column per configuration: attention at each query, then the ERFs at the first query."""
    n_q = len(pictures[0].attention)
    names = pictures[0].query_names
    rows: list[list[Panel]] = []
    labels: list[str] = []
    for k in range(n_q):
        rows.append([dataclasses.replace(p.attention[k], title="") for p in pictures])
        labels.append(f"attention at {names[k]}")
    for state in pictures[0].erf:
        rows.append([p.erf[state][0] for p in pictures])
        labels.append(f"ERF {state}, {names[0]}")
    caption = (
        f"{image_text}. Stage {stage}, first attention layer; blue square: the query token. Attention: "
        "weights averaged over heads, relative to the panel's maximum; cyan: regions; green dots: sampled "
        f"points or agents sized by weight. {ERF_DEFINITION}; each panel gives r50 and r90 for this image "
        "(erf.csv: averaged)."
    )
    return draw_grid(rows, labels, title, caption, stem, col_titles=[p.label for p in pictures])


# ----------------------------------------------------------------------------- seed models


def _read_image(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """An image file as (H, W, channels) floats in [0, 1], resized to ``size``."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB" if channels == 3 else "L").resize((size[1], size[0]), Image.BICUBIC)
            arr = np.asarray(im, dtype=np.float32) / 255
    except (OSError, ValueError) as exc:
        raise MapsError(f"cannot read image {path} ({exc}); give a PNG or JPEG file") from None
    return arr if arr.ndim == 3 else arr[..., None]


def _test_pattern(size: tuple[int, int], channels: int) -> np.ndarray:
    """A synthetic picture: a bright disc, a diagonal bar and a checker corner on a colour ramp."""
    H, W = size
    ys, xs = np.mgrid[0:H, 0:W] / np.array([H, W])[:, None, None]
    base = np.stack([0.2 + 0.3 * xs, 0.2 + 0.3 * ys, 0.35 - 0.15 * xs], -1)
    disc = np.hypot(ys - 0.3, xs - 0.3) < 0.12
    bar = np.abs(ys - (1.1 - xs)) < 0.04
    checker = ((ys > 0.65) & (xs > 0.65)) & (((ys * 16).astype(int) + (xs * 16).astype(int)) % 2 == 0)
    img = base
    img[disc] = (1.0, 0.9, 0.2)
    img[bar] = (0.2, 0.9, 1.0)
    img[checker] = (0.95, 0.95, 0.95)
    return img[..., :channels] if channels <= 3 else img


def draw_model_maps(
    model_name: str,
    checkpoint: str | Path | None = None,
    image: str | Path | None = None,
    *,
    out_dir: str | Path,
    queries: Sequence[tuple[int, int]] | None = None,
    stage: int = 1,
    img_size: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> list[Path]:
    """Draw a seed model's attention and ERF: ``OUT_DIR/<model>.png|.svg`` and ``OUT_DIR/erf.csv``.

    Args:
        model_name: a timm name of a seed model (``biformer_tiny``, ``debiformer_small``, ...).
        checkpoint: the released ``.pth``; without one the randomly initialised model is drawn (said
            in the title). With one, the ERF is drawn at initialisation and with the checkpoint.
        image: a PNG or JPEG, resized to the input; default a synthetic test pattern (said in the caption).
        out_dir: where to write.
        queries: token ``(row, col)`` positions on the stage's map (default three on the diagonal).
        stage: 1-based stage whose first attention layer is drawn.
        img_size: square input side (default the model's, 224).
        model_kwargs: passed to ``timm.create_model``.

    Raises:
        MapsError: an unknown model, an unreadable image or checkpoint, a stage or query off the map.
    """
    from attnbench.models import build_model, load_official_checkpoint

    if image is not None and not Path(image).is_file():
        raise MapsError(f"cannot read image {image} (no such file); give a PNG or JPEG file")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise MapsError(f"cannot load checkpoint {checkpoint} (no such file); give the released .pth")
    try:
        torch.manual_seed(0)
        init = build_model(model_name, **(model_kwargs or {})).eval()
    except ValueError as exc:
        raise MapsError(f"{exc}; pass --model one of the seed models (docs/seed-models.md)") from None
    cfg = getattr(init, "pretrained_cfg", None) or {}
    side = img_size or int(cfg.get("input_size", (3, 224, 224))[-1])
    size = (side, side)
    mean = np.array(cfg.get("mean", (0.485, 0.456, 0.406)), dtype=np.float32)
    std = np.array(cfg.get("std", (0.229, 0.224, 0.225)), dtype=np.float32)
    channels = len(mean)
    if image is None:
        pixels = _test_pattern(size, channels)
        image_text = f"A synthetic test pattern (no --image), {side}x{side}"
    else:
        pixels = _read_image(Path(image), size, channels)
        image_text = f"{Path(image).name}, resized to {side}x{side}"
    x = torch.from_numpy(((pixels - mean) / std).transpose(2, 0, 1).copy()).float()[None]  # (1, C, H, W)
    models: dict[str, nn.Module] = {"init": init}
    state_text = "randomly initialised (no --checkpoint)"
    if checkpoint is not None:
        import copy

        loaded = copy.deepcopy(init)
        try:
            load_official_checkpoint(loaded, checkpoint)
        except Exception as exc:  # noqa: BLE001 - any failure to load is bad input here
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise MapsError(
                f"cannot load checkpoint {checkpoint} into {model_name}: {msg}; "
                "give the released .pth of this model"
            ) from None
        models["checkpoint"] = loaded.eval()
        state_text = f"weights from {Path(checkpoint).name}"
    shown = pixels if channels == 3 else pixels[..., 0]

    def make_queries(img: tuple[int, int], grid: tuple[int, int]) -> list[Query]:
        if queries:
            _check_queries(queries, grid, stage)
            return [Query(f"query {i + 1}", [tuple(q)]) for i, q in enumerate(queries)]  # type: ignore[misc]
        return [Query(n, [_to_token(p, img, grid)]) for n, p in _plain_queries(img)]

    try:
        pic = _picture_model(
            models,
            stage,
            x,
            shown,
            make_queries,
            model_name,
            re.sub(r"\W+", "_", model_name),
        )
    except MapsError:
        raise
    except ValueError as exc:  # a mechanism refusing the map size
        raise MapsError(
            f"{model_name} at {side}x{side}: {str(exc).splitlines()[0]}; pick another --img-size"
        ) from None
    out = Path(out_dir)
    written = _config_figure(pic, state_text, image_text, stage, out / pic.slug)
    rows = [
        {
            "configuration": model_name,
            "file": pic.slug,
            "seed": "",
            "level": image_text.split(",")[0],
            **n,
        }
        for n in pic.numbers
    ]
    written.append(_write_csv(out / "erf.csv", rows))
    return written
