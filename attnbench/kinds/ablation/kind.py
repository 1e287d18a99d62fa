"""Ablation studies: train one backbone per (dataset, mechanism, params, seed), compare accuracy.

Each run is one row (pass ``train``): :func:`attnbench.ablation.train_and_evaluate` trains in
``RUN_DIR/ablation/<run_key>``, so a killed run resumes from the last epoch's checkpoint and a
finished one is read back from its ``result.json`` without training. ``flops`` are fvcore MACs of
the backbone at batch 1 (counted once per configuration in a worker; seeds share it), ``params``
its parameter count, ``latency`` the median of timed eval forwards at batch 1 on the run device
under the noise guard.
"""

from __future__ import annotations

import dataclasses
import json
import types
from typing import Any

import torch

from attnbench.ablation import build_for_dataset, dataset_shape, run_key, train_and_evaluate
from attnbench.ablation.data import level_label
from attnbench.flops import count_flops
from attnbench.kind import Kind, RunContext, Task, config_id
from attnbench.kinds._common import (
    NOISE_DOCS,
    finish,
    free,
    measure_speed,
    message,
    param_column,
    table_text,
)
from attnbench.registry import available_mechanisms, get_mechanism
from attnbench.worker import emit

__all__ = ["ABLATION_COLUMN_DOCS", "KIND"]

PASS = "train"
LATENCY_REPEATS, LATENCY_WARMUP = 50, 10

_HEAD_DOCS = {
    "point_id": "hash of the run key (mechanism, params, dataset, backbone, train, seed), the device, "
    "the measures and the environment key; the resume key",
    "env_id": "key into manifest.json 'environments'",
    "study": "study name",
    "mechanism": "registered mechanism name (in every attention stage of the backbone but the last)",
}
_TAIL_DOCS = {
    "seed": "training seed (model init, data order, augmentation)",
    "dataset": "dataset name",
    "level": "the dataset entry in words (difficulty preset and overridden knobs), e.g. 'easy, contour 8'",
    "level_index": "position of the dataset entry in the study's list (the difficulty ladder's order)",
    "contour_length": "Pathfinder: paddles per main contour (empty for other datasets)",
    "n_distractors": "Pathfinder: distractor contours per image",
    "paddle_gap": "Pathfinder: gap between consecutive paddles, pixels",
    "generator_version": "Pathfinder: the generator's version (4: cues matched across labels; 3: the "
    "shipped results/ablation-v3; attnbench.ablation.data.pathfinder)",
    "train_images": "Pathfinder: per_seed (each training seed drew its own train split) or shared",
    "resolution": "input image side (pixels)",
    "H": "input image height (pixels; = resolution)",
    "W": "input image width (pixels; = resolution)",
    "C": "empty: the backbone's stages have different widths",
    "num_heads": "empty: the backbone's stages have different head counts",
    "batch": "training batch size",
    "dtype": "float32 (CPU) or bfloat16 autocast (CUDA with train.amp)",
    "device": "cpu or cuda",
    "pass": "train: trained from scratch, then evaluated on the val split",
    "status": "ok | error (message in error)",
    "error": "why the row failed; empty when ok",
    "top1": "top-1 accuracy on the val split, %",
    "top5": "top-5 accuracy on the val split, % (empty for <= 5 classes)",
    "val_loss": "mean cross-entropy on the val split",
    "train_time_s": "seconds spent in training steps (summed over resumed calls)",
    "epochs": "training epochs",
    "final_train_loss": "mean training loss of the last epoch",
    "final_train_acc": "training accuracy of the last epoch, %",
    "epochs_run": "epochs trained (fewer than epochs when the run stopped early)",
    "stopped": "why the run stopped before its last epoch (learned and plateaued, or gave up); empty "
    "when it ran every epoch",
    "learned_epoch": "the first epoch whose val top-1 reached train.learned_top1; empty when never (or "
    "not judged)",
    "val_correct": "per-image top-1 correctness on the val split, in val order: hex of the little-endian bit "
    "stream (attnbench.ablation.decode_correct); the report's intervals and paired differences read it",
    "val_n": "images in the val split",
    "curve": "learning curve: JSON list of [epoch, val top-1 %] for every evaluated epoch",
    "dispatch": "JSON list of the backend choices the mechanisms logged",
    "params": "parameters of the whole backbone (elements)",
    "flops": "MACs of one backbone forward at batch 1, fp32, fvcore convention (1 MAC = 1 FLOP)",
    "latency_ms": "median eval forward at batch 1 on the run device, milliseconds",
    "latency_iqr_ms": "inter-quartile range (p75 - p25) of the samples, milliseconds",
    "throughput": "images per second = 1 / median latency",
    "peak_mem_mb": "empty: not measured in an ablation run (the report's sweep plots read the column)",
    "workdir": "the run's folder under the run folder (checkpoint.pt, result.json)",
    **NOISE_DOCS,
    "timestamp": "UTC time the row was written",
}
ABLATION_COLUMN_DOCS = {**_HEAD_DOCS, **_TAIL_DOCS}
_RESULT_FIELDS = (
    "top1",
    "top5",
    "val_loss",
    "train_time_s",
    "epochs",
    "final_train_loss",
    "final_train_acc",
    "val_correct",
    "val_n",
    "epochs_run",
    "stopped",
    "learned_epoch",
)
# how the backbone's latency is taken (an ablation study has no timing keys of its own)
_LATENCY = types.SimpleNamespace(
    measure=("latency",), warmup=LATENCY_WARMUP, repeats=LATENCY_REPEATS, max_time_s=None
)
_model_cache: dict[str, dict[str, Any]] = {}  # per worker process: seeds share one count


def _knobs(dataset: dict[str, Any]) -> dict[str, Any]:
    """Pathfinder's difficulty knobs as the generator resolves them (empty for other datasets)."""
    if dataset["name"] != "pathfinder":
        return {}
    from attnbench.ablation.data.pathfinder import PathfinderConfig

    cfg = PathfinderConfig.from_dataset(dataset)
    return {
        "contour_length": cfg.contour_length,
        "n_distractors": cfg.n_distractors,
        "paddle_gap": round(cfg.gap, 3),
        "generator_version": cfg.version,
        "train_images": dataset.get("train_images", "shared"),
    }


@dataclasses.dataclass(frozen=True)
class _Run:
    dataset: dict[str, Any]
    level_index: int
    mechanism: str
    params: dict[str, Any]
    seed: int

    @property
    def label(self) -> str:
        words = [self.mechanism, *(f"{k}={v}" for k, v in self.params.items()), f"seed {self.seed}"]
        return " ".join(words) + f" ({level_label(self.dataset)})"


class AblationKind(Kind):
    name = "ablation"
    unit = "run"
    remote_ok = False  # checkpoints and result.json live in the run folder

    def columns(self, study: Any) -> dict[str, str]:
        params: dict[str, str] = {
            "n_win": "BRA: regions per side (S)",
            "topk": "BRA: routed regions per query (k)",
        }
        for spec in study.mechanisms:
            for pname in get_mechanism(spec.name).hyperparameters():
                params.setdefault(param_column(pname, ABLATION_COLUMN_DOCS), f"{spec.name} parameter {pname}")
        return {**_HEAD_DOCS, **params, **_TAIL_DOCS}

    def protocol(self, study: Any, threads: int) -> dict[str, Any]:
        return {"measure": sorted(study.measure), "threads": threads, "seed": study.seed}

    def point_id(self, ctx: RunContext, run: _Run) -> str:
        s = ctx.study
        config = {
            "kind": "ablation",
            "run_key": run_key(run.mechanism, run.params, run.dataset, s.backbone, s.train, run.seed),
            "device": ctx.device,
            "measure": sorted(s.measure),
            "environment": ctx.env_key,
        }
        return config_id(config)

    def tasks(self, ctx: RunContext) -> list[Task]:
        out = []
        for dataset, mechanism, params, seed in ctx.study.runs():
            run = _Run(dataset, ctx.study.datasets.index(dataset), mechanism, params, seed)
            out.append(Task(run.label, ((self.point_id(ctx, run), PASS),), run))
        return out

    def describe(self, ctx: RunContext, n_tasks: int) -> str:
        s = ctx.study
        return (
            f"ablation study {s.name!r}: {n_tasks} trainings ({len(s.seeds)} seeds) on {ctx.device} "
            f"({ctx.env['device_name']}, {ctx.threads} threads)"
        )

    def base_row(self, ctx: RunContext, run: _Run, pid: str) -> dict[str, Any]:
        s = ctx.study
        full = {
            **{k: p.default for k, p in get_mechanism(run.mechanism).hyperparameters().items()},
            **run.params,
        }
        cfg = s.train.settings
        side = dataset_shape(run.dataset)[2]
        key = run_key(run.mechanism, run.params, run.dataset, s.backbone, s.train, run.seed)
        return {
            "point_id": pid,
            "env_id": ctx.env_id,
            "study": s.name,
            "mechanism": run.mechanism,
            **{param_column(k, ABLATION_COLUMN_DOCS): "None" if v is None else v for k, v in full.items()},
            "seed": run.seed,
            "dataset": run.dataset["name"],
            "level": level_label(run.dataset),
            "level_index": run.level_index,
            **_knobs(run.dataset),
            "resolution": side,
            "H": side,
            "W": side,
            "batch": cfg.batch,
            "dtype": "bfloat16 autocast" if ctx.device == "cuda" and cfg.amp else "float32",
            "device": ctx.device,
            "pass": PASS,
            "workdir": f"ablation/{key}",
            "protocol_id": ctx.protocol_id,
            "threads": ctx.threads,
        }

    def error_rows(
        self, ctx: RunContext, task: Task, missing: list[str], message: str
    ) -> list[dict[str, Any]]:
        return [finish(self.base_row(ctx, task.payload, task.rows[0][0]), "error", [message])]

    def measure(self, ctx: RunContext, task: Task) -> None:
        emit(("row", _train_row(self, ctx, task)))

    def manifest(self, ctx: RunContext) -> dict[str, Any]:
        s = ctx.study
        return {
            "conditions": {
                "datasets": list(s.datasets),
                "backbone": s.backbone,
                "train": dataclasses.asdict(s.train.settings),
                "levels": [level_label(d) for d in s.datasets],
                "seeds": list(s.seeds),
                "baseline": s.baseline,
                "analysis": s.analysis,
                "device": ctx.device,
                "pass": PASS,
            },
            "protocol_text": {
                "passes": [PASS],
                "accuracy": "attnbench.ablation.train_and_evaluate: trained from scratch per seed, "
                "top-1/top-5 on the val split after the last epoch; checkpoint and result.json in the row's "
                "workdir",
                "flops": "fvcore MACs (1 MAC = 1 FLOP) of one backbone forward at batch 1 in fp32 on CPU",
                "latency": f"eval mode under torch.no_grad() at batch 1, {LATENCY_WARMUP} untimed calls, "
                f"then {LATENCY_REPEATS} samples; median and IQR in ms",
            },
        }

    def summary_table(self, rows: list[dict[str, Any]]) -> str:
        def num(name: str, scale: float, digits: int) -> list[Any]:
            return [None if r.get(name) is None else round(float(r[name]) / scale, digits) for r in rows]

        return table_text(
            {
                "mechanism": [r.get("mechanism") for r in rows],
                "dataset": [r.get("level") or f"{r.get('dataset')}-{r.get('resolution')}" for r in rows],
                "seed": [r.get("seed") for r in rows],
                "status": [r.get("status") for r in rows],
                "top1 %": num("top1", 1, 2),
                "GMACs(fvcore)": num("flops", 1e9, 4),
                "train s": num("train_time_s", 1, 1),
                "note": [(r.get("error") or "")[:60] for r in rows],
            }
        )


def _measure_model(ctx: RunContext, run: _Run) -> dict[str, Any]:
    """FLOPs, params and latency of the untrained backbone (they do not depend on the weights)."""
    study, device = ctx.study, torch.device(ctx.device)
    ident = json.dumps(
        [run.dataset, run.mechanism, run.params, study.backbone, ctx.device], sort_keys=True, default=repr
    )
    if ident in _model_cache:
        return _model_cache[ident]
    out: dict[str, Any] = {"_errors": []}
    torch.manual_seed(study.seed)
    model = build_for_dataset(run.mechanism, run.params, run.dataset, study.backbone).eval()
    out["params"] = sum(p.numel() for p in model.parameters())
    if "flops" in study.measure:
        try:
            out["flops"] = count_flops(model, model.example_input(1), cross_check=False).total
        except Exception as exc:  # noqa: BLE001 - recorded in the row
            out["_errors"].append(f"flops: {message(exc)}")
    if "latency" in study.measure:
        model = model.to(device)
        x = model.example_input(1).to(device)  # (1, in_chans, S, S)

        def step() -> None:
            with torch.no_grad():
                model(x)

        measure_speed(step, _LATENCY, device, 1, lambda: 0, out, out["_errors"])
        out.pop("latency_samples_ms", None)
        out.pop("latency_n", None)
    model = None
    free(device, collect=False)
    _model_cache[ident] = out
    return out


def _train_row(kind: AblationKind, ctx: RunContext, task: Task) -> dict[str, Any]:
    """The row of one (dataset, mechanism, params, seed); failures become ``status = error``."""
    study, device, run = ctx.study, torch.device(ctx.device), task.payload
    row = kind.base_row(ctx, run, task.rows[0][0])
    errors: list[str] = []

    def progress(line: str) -> None:
        emit(("progress", line))

    try:
        result = train_and_evaluate(
            run.mechanism,
            run.params,
            run.dataset,
            study.backbone,
            study.train,
            run.seed,
            device,
            f"{ctx.run_dir}/{row['workdir']}",
            progress=None if ctx.quiet else progress,
        )
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - recorded in the row, the study goes on
        errors.append(f"train: {message(exc)}")
        free(device)
    else:
        for field in _RESULT_FIELDS:
            row[field] = result.get(field)
        row["dispatch"] = json.dumps(result.get("dispatch", []))
        row["curve"] = json.dumps([[h["epoch"], h["top1"]] for h in result.get("history", []) if "top1" in h])
        row["params"] = result.get("params")
    try:
        measured = _measure_model(ctx, run)
    except Exception as exc:  # noqa: BLE001 - recorded in the row
        errors.append(f"build: {message(exc)}")
    else:
        errors.extend(measured["_errors"])
        row.update({k: v for k, v in measured.items() if k != "_errors" and k not in row})
    if "params" not in study.measure:
        row.pop("params", None)
    return finish(row, "error" if errors else "ok", errors)


# Workers read this module before a task starts: load the registered mechanisms (NATTEN and all)
# then, so that their import is not charged to the first point's time limit.
available_mechanisms()

KIND = AblationKind()
