"""Train the ablation backbone with one mechanism on one dataset and evaluate it: one result row.

The recipe is the same for every mechanism: AdamW (no weight decay on norms, biases and position
bias tables), linear warmup then cosine decay, both per step; cross-entropy with optional label
smoothing; gradient clipping by global norm; bf16 autocast on CUDA (fp32 on CPU). Evaluation
reports top-1 and, where there are more than 5 classes, top-5 (both in % of the val images).

Reproducible and resumable: python, numpy and torch are seeded from ``seed`` before the model is
built, and every epoch draws its data order, augmentation and dropout from generators seeded with
``(seed, epoch)``. After every epoch the model, optimizer, history and elapsed training time are
saved to ``workdir/checkpoint.pt`` (atomically); a later call with the same configuration resumes
after the last saved epoch and ends with the same result as an uninterrupted run. A finished run
writes ``workdir/result.json``, which a repeated call returns without training again.

Before training, one forward and backward pass in eval mode (batch 2) records which backend each
mechanism dispatches to (BRA's ``auto`` backend, NATTEN or the torch path of neighborhood
attention); the lines are logged and returned in ``dispatch``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attnbench.ablation.backbone import AblationBackbone, build_backbone
from attnbench.ablation.data import Dataset, augment, check_available, dataset_shape, load_dataset
from attnbench.stats import encode_correct

__all__ = [
    "TRAIN_DEFAULTS",
    "TrainConfig",
    "build_for_dataset",
    "check_run",
    "evaluate",
    "initial_model",
    "load_trained",
    "probe_dispatch",
    "run_key",
    "train_and_evaluate",
]

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"  # the trained weights alone, with the run's configuration (for attnbench maps)
RESULT = "result.json"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The study's ``train:`` mapping (``seeds`` is the runner's: one run per seed).

    Attributes:
        epochs: passes over the train split.
        batch: images per step (the last incomplete batch of an epoch is dropped).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW's decoupled weight decay (not on norms, biases, position bias tables).
        warmup_epochs: linear warmup from 0, in epochs (may be fractional).
        min_lr: the cosine decays to this.
        label_smoothing: of the cross-entropy.
        clip_grad: max global gradient norm; None disables clipping.
        amp: bf16 autocast on CUDA (ignored on CPU, which trains in fp32).
        eval_batch: images per evaluation step.
        eval_every: evaluate every this many epochs (the last epoch always).
    """

    epochs: int = 10
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr: float = 1e-5
    label_smoothing: float = 0.0
    clip_grad: float | None = 1.0
    amp: bool = True
    eval_batch: int = 256
    eval_every: int = 1

    def __post_init__(self) -> None:
        def need(ok: bool, key: str, allowed: str) -> None:
            if not ok:
                raise ValueError(f"train.{key} = {getattr(self, key)!r} is out of range; allowed: {allowed}")

        for key in ("epochs", "batch", "eval_batch", "eval_every"):
            value = getattr(self, key)
            need(isinstance(value, int) and not isinstance(value, bool) and value >= 1, key, "an int >= 1")
        for key in ("lr", "weight_decay", "warmup_epochs", "min_lr", "label_smoothing"):
            value = getattr(self, key)
            need(
                isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0,
                key,
                "a number >= 0",
            )
        need(self.lr > 0, "lr", "a number > 0")
        need(self.min_lr <= self.lr, "min_lr", f"<= lr = {self.lr}")
        need(self.label_smoothing < 1, "label_smoothing", "a number in [0, 1)")
        need(self.clip_grad is None or self.clip_grad > 0, "clip_grad", "a number > 0 or null")
        need(isinstance(self.amp, bool), "amp", "true or false")

    @classmethod
    def from_dict(cls, cfg: dict[str, Any] | None) -> TrainConfig:
        cfg = dict(cfg or {})
        cfg.pop("seeds", None)
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(cfg) - set(fields))
        if unknown:
            raise ValueError(f"train: unknown keys {unknown}; allowed: {fields} and seeds")
        return cls(**cfg)


TRAIN_DEFAULTS = dataclasses.asdict(TrainConfig())


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def run_key(
    mechanism: str,
    params: dict[str, Any] | None,
    dataset_cfg: dict[str, Any],
    backbone_cfg: dict[str, Any] | None,
    train_cfg: dict[str, Any] | None,
    seed: int,
) -> str:
    """A 16-hex-digit hash of everything that determines a run's result (``train.seeds`` excluded,
    defaults filled in): the checkpoint's fingerprint, usable as the run's folder name or id."""
    config = _config(mechanism, params, dataset_cfg, backbone_cfg, TrainConfig.from_dict(train_cfg), seed)
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def _config(
    mechanism: str,
    params: dict[str, Any] | None,
    dataset_cfg: dict[str, Any],
    backbone_cfg: dict[str, Any] | None,
    cfg: TrainConfig,
    seed: int,
) -> dict[str, Any]:
    return {
        "mechanism": mechanism,
        "params": params or {},
        "dataset": dataset_cfg,
        "backbone": backbone_cfg or {},
        "train": dataclasses.asdict(cfg),
        "seed": seed,
    }


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device = {str(device)!r} but torch.cuda.is_available() is False; use 'cpu' or 'auto'"
        )
    return dev


def build_for_dataset(
    mechanism: str,
    params: dict[str, Any] | None,
    dataset_cfg: dict[str, Any],
    backbone_cfg: dict[str, Any] | None,
) -> AblationBackbone:
    """The backbone a run with these settings trains (classes, channels and size from the dataset).

    For measuring its FLOPs, params and latency beside the accuracy: ``model.example_input()`` is
    an input of the right size.
    """
    num_classes, in_chans, img_size = dataset_shape(dataset_cfg)
    cfg = dict(backbone_cfg or {})
    preset = cfg.pop("preset", "stl-nano")
    return build_backbone(
        mechanism, params, preset=preset, num_classes=num_classes, in_chans=in_chans, img_size=img_size, **cfg
    )


def initial_model(
    mechanism: str,
    params: dict[str, Any] | None,
    dataset_cfg: dict[str, Any],
    backbone_cfg: dict[str, Any] | None,
    seed: int,
) -> AblationBackbone:
    """The backbone exactly as a run with this seed starts training (same seeding, same weights)."""
    _seed_everything(seed)
    return build_for_dataset(mechanism, params, dataset_cfg, backbone_cfg)


def load_trained(workdir: str | Path) -> tuple[AblationBackbone, dict[str, Any]]:
    """The trained backbone of a finished run's folder and the run's configuration (``mechanism``,
    ``params``, ``dataset``, ``backbone``, ``train``, ``seed``), in eval mode on CPU.

    Raises:
        FileNotFoundError: the folder holds no ``model.pt`` (the run did not finish, or finished
            before attnbench saved trained weights: run it again with ``--fresh``).
    """
    path = Path(workdir) / MODEL
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no trained weights; the run has not finished, or was made by an attnbench that did "
            "not keep them (run the study again with --fresh)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    config = state["config"]
    model = build_for_dataset(config["mechanism"], config["params"], config["dataset"], config["backbone"])
    model.load_state_dict(state["model"])
    return model.eval(), config


def check_run(
    mechanism: str,
    params: dict[str, Any] | None,
    dataset_cfg: dict[str, Any],
    backbone_cfg: dict[str, Any] | None,
    train_cfg: dict[str, Any] | None,
) -> None:
    """Validate a run's settings before anything trains (for a study loader): the train mapping,
    the dataset mapping and that its local files are there (without reading images), and that the
    backbone builds with this mechanism and parameters at the dataset's size.

    Raises:
        ValueError: naming the setting; FileNotFoundError: a local dataset that is not there.
    """
    TrainConfig.from_dict(train_cfg)
    check_available(dataset_cfg)
    build_for_dataset(mechanism, params, dataset_cfg, backbone_cfg)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        table = name.endswith("relative_position_bias_table") or name.endswith("rpe_table")
        (no_decay if p.ndim <= 1 or table else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_at(step: int, total: int, warmup: int, cfg: TrainConfig) -> float:
    """Linear warmup over ``warmup`` steps, then cosine from ``lr`` to ``min_lr`` at ``total``."""
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"
    )


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        if line not in self.lines:
            self.lines.append(line)


def probe_dispatch(model: AblationBackbone, device: torch.device, amp: bool) -> list[str]:
    """One forward and backward pass (eval mode, batch 2: no BatchNorm update) that checks the
    backward exists and returns the backend choices the mechanisms logged."""
    handler = _Capture()
    logger = logging.getLogger("mechanisms")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    model.eval()
    try:
        with _autocast(device, amp):
            out = model(model.example_input(2))
        out.float().sum().backward()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        model.zero_grad(set_to_none=True)
        model.train()
    return handler.lines


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Dataset, device: torch.device, *, batch: int = 256, amp: bool = True
) -> dict[str, Any]:
    """Top-1 (and top-5 where classes > 5) in %, and the mean cross-entropy, on the val split."""
    model.eval()
    n, loss_sum, correct1, correct5 = len(data.val), 0.0, 0, 0
    hits = []
    for lo in range(0, n, batch):
        images, labels = data.val.__getitems__(list(range(lo, min(n, lo + batch))))
        x, y = data.normalize(images.to(device)), labels.to(device)
        with _autocast(device, amp):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, k)
        hits.append((top[:, 0] == y).cpu())
        correct1 += int(hits[-1].sum())
        correct5 += (top == y[:, None]).any(dim=1).sum().item()
    model.train()
    return {
        "top1": 100.0 * correct1 / n,
        "top5": 100.0 * correct5 / n if data.num_classes > 5 else None,
        "val_loss": loss_sum / n,
        "val_correct": encode_correct(torch.cat(hits).numpy()) if hits else "",
        "val_n": n,
    }


def _save(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill during the save leaves the previous checkpoint intact


def _default_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def train_and_evaluate(
    mechanism: str,
    params: dict[str, Any] | None,
    dataset_cfg: dict[str, Any],
    backbone_cfg: dict[str, Any] | None,
    train_cfg: dict[str, Any] | None,
    seed: int,
    device: str | torch.device,
    workdir: str | Path,
    *,
    progress: Callable[[str], None] | None = _default_log,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train the backbone with ``mechanism`` and evaluate it; resumes from ``workdir`` if possible.

    Args:
        mechanism: a registered mechanism name.
        params: its parameters, applied to every stage that runs it (the study's ``params``).
        dataset_cfg: the study's ``dataset:`` mapping (see :mod:`attnbench.ablation.data`).
        backbone_cfg: the study's ``backbone:`` mapping: ``preset`` and overrides
            (see :func:`attnbench.ablation.backbone.build_backbone`).
        train_cfg: the study's ``train:`` mapping (see :class:`TrainConfig`; ``seeds`` is ignored).
        seed: this run's seed.
        device: "cpu", "cuda", "cuda:N" or "auto".
        workdir: this run's folder (checkpoint and result); one folder per run.
        progress: called with one line per epoch (default: print to stderr); None for silence.
        on_epoch_end: called with (epoch index, history record) after each epoch's checkpoint is
            saved; an exception raised there stops the run as a kill would.

    Returns:
        ``top1``, ``top5`` (None for <= 5 classes), ``val_loss``, ``train_time_s`` (training steps
        only, summed over resumed calls), ``epochs``, ``seed``, ``params`` (parameter count),
        ``final_train_loss``, ``final_train_acc``, ``history`` (one record per epoch), ``dispatch``,
        ``backbone`` (per-stage attention), ``dataset`` (its facts), ``device``, ``resumed_from``
        (the epoch this call started at, 0 if from scratch).

    Raises:
        ValueError: a bad setting (naming it), or a workdir holding a run with another configuration.
        FloatingPointError: the loss became NaN or infinite.
    """
    cfg = TrainConfig.from_dict(train_cfg)
    dev = _resolve_device(device)
    workdir = Path(workdir)
    say = progress or (lambda line: None)
    config = _config(mechanism, params, dataset_cfg, backbone_cfg, cfg, seed)
    fingerprint = run_key(mechanism, params, dataset_cfg, backbone_cfg, train_cfg, seed)
    result_path, ckpt_path = workdir / RESULT, workdir / CHECKPOINT
    if result_path.is_file():
        saved = json.loads(result_path.read_text())
        if saved.get("fingerprint") == fingerprint:
            return saved["result"]
        raise ValueError(
            f"workdir {str(workdir)!r} holds a finished run of another configuration; use a new workdir"
        )

    data = load_dataset(dataset_cfg)
    model = initial_model(mechanism, params, dataset_cfg, backbone_cfg, seed).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    dispatch = probe_dispatch(model, dev, cfg.amp)
    for line in dispatch:
        log.info("%s dispatch: %s", mechanism, line)

    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    n_train = len(data.train)
    steps_per_epoch = max(1, n_train // cfg.batch)
    batch = min(cfg.batch, n_train)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)

    start_epoch, history, train_time = 0, [], 0.0
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location=dev, weights_only=True)
        if state["fingerprint"] != fingerprint:
            raise ValueError(
                f"workdir {str(workdir)!r} holds a checkpoint of another configuration; use a new workdir "
                "or delete it to start over"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, history, train_time = state["epoch"], state["history"], state["train_time_s"]
        say(f"[{mechanism} seed {seed}] resuming after epoch {start_epoch}/{cfg.epochs} from {ckpt_path}")
    workdir.mkdir(parents=True, exist_ok=True)

    for epoch in range(start_epoch, cfg.epochs):
        gen = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
        torch.manual_seed(_epoch_seed(seed, epoch))  # dropout, drop path
        order = torch.randperm(n_train, generator=gen)
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        t0 = time.perf_counter()
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            lr = _lr_at(step, total_steps, warmup_steps, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, labels = data.train.__getitems__(order[i * batch : (i + 1) * batch].tolist())
            images = augment(images.to(dev), gen, **data.augment)
            x, y = data.normalize(images), labels.to(dev)
            with _autocast(dev, cfg.amp):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{mechanism}: loss is {loss.item()} at epoch {epoch + 1}, step {i + 1}; lower train.lr "
                    f"(= {cfg.lr}) or set train.clip_grad"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            optimizer.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(dim=1) == y).sum().item()
            seen += len(y)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        epoch_time = time.perf_counter() - t0
        train_time += epoch_time
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / seen,
            "train_acc": 100.0 * correct / seen,
            "lr": lr,
            "time_s": epoch_time,
        }
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            scores = evaluate(model, data, dev, batch=cfg.eval_batch, amp=cfg.amp)
            record.update({k: v for k, v in scores.items() if k != "val_correct"})
            record["val_correct"] = scores["val_correct"] if epoch + 1 == cfg.epochs else None
        history.append(record)
        _save(
            ckpt_path,
            {
                "fingerprint": fingerprint,
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "history": history,
                "train_time_s": train_time,
            },
        )
        val = f" val_top1 {record['top1']:.2f}%" if "top1" in record else ""
        say(
            f"[{mechanism} seed {seed}] epoch {epoch + 1}/{cfg.epochs} loss {record['train_loss']:.4f} "
            f"train_acc {record['train_acc']:.1f}%{val} lr {lr:.2e} {epoch_time:.1f}s"
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)

    final = (
        history[-1]
        if history and history[-1].get("val_correct")
        else evaluate(model, data, dev, batch=cfg.eval_batch, amp=cfg.amp)
    )
    _save(workdir / MODEL, {"fingerprint": fingerprint, "config": config, "model": model.state_dict()})
    result = {
        "top1": final["top1"],
        "top5": final["top5"],
        "val_loss": final["val_loss"],
        "train_time_s": train_time,
        "epochs": cfg.epochs,
        "seed": seed,
        "params": n_params,
        "final_train_loss": history[-1]["train_loss"] if history else None,
        "final_train_acc": history[-1]["train_acc"] if history else None,
        "val_correct": final["val_correct"],
        "val_n": final["val_n"],
        "history": [{k: v for k, v in h.items() if k != "val_correct"} for h in history],
        "dispatch": dispatch,
        "backbone": model.describe(),
        "dataset": data.info,
        "device": str(dev),
        "resumed_from": start_epoch,
    }
    result_path.write_text(
        json.dumps({"fingerprint": fingerprint, "config": config, "result": result}, indent=1, default=repr)
    )
    return result
