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

Optional early stopping (off by default, see :class:`TrainConfig`): a run that has learned and
then plateaued, or that has plainly not learned by a given epoch, stops after that epoch's
evaluation. The schedule stays defined over ``epochs`` (stopping only ends the run early), the
decision is taken from the history alone (so a resumed run takes the same one), and the result is
the evaluation of the model it stopped with.

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
    "train_config_for_key",
]

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"  # the trained weights alone, with the run's configuration (for attnbench maps)
RESULT = "result.json"


_EARLY_STOP_FIELDS = ("learned_top1", "plateau_epochs", "plateau_delta", "give_up_epoch", "give_up_top1")
_PLATEAU_DELTA = 0.5


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
        learned_top1: val top-1 (%) at which a run counts as learned (its result's
            ``learned_epoch``); null: not judged. Needed by ``plateau_epochs``.
        plateau_epochs: stop once learned and the val top-1 has not improved by at least
            ``plateau_delta`` points for this many evaluations (needs ``learned_top1`` and
            ``eval_every`` 1); null: never.
        plateau_delta: the least gain (points of top-1) that counts as an improvement.
        give_up_epoch: with ``give_up_top1``: stop after this epoch (or the first evaluated one
            after it) if the best val top-1 so far is below ``give_up_top1``; null: never.
        give_up_top1: the val top-1 (%) below which a run has plainly not learned by
            ``give_up_epoch``.
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
    learned_top1: float | None = None
    plateau_epochs: int | None = None
    plateau_delta: float = _PLATEAU_DELTA
    give_up_epoch: int | None = None
    give_up_top1: float | None = None

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

        def number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        def count(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= 1

        for key in ("learned_top1", "give_up_top1"):
            value = getattr(self, key)
            need(value is None or (number(value) and 0 < value <= 100), key, "a top-1 in (0, 100] or null")
        need(number(self.plateau_delta) and self.plateau_delta >= 0, "plateau_delta", "a number >= 0")
        need(
            self.plateau_epochs is None or count(self.plateau_epochs), "plateau_epochs", "an int >= 1 or null"
        )
        if self.plateau_epochs is not None:
            need(self.learned_top1 is not None, "plateau_epochs", "null unless train.learned_top1 is set")
            need(self.eval_every == 1, "plateau_epochs", "null unless train.eval_every is 1")
        need(
            self.plateau_delta == _PLATEAU_DELTA or self.plateau_epochs is not None,
            "plateau_delta",
            f"{_PLATEAU_DELTA} (the default) unless train.plateau_epochs is set",
        )
        need(
            self.give_up_epoch is None or (count(self.give_up_epoch) and self.give_up_epoch < self.epochs),
            "give_up_epoch",
            f"an int in [1, epochs = {self.epochs}) or null",
        )
        need(
            (self.give_up_epoch is None) == (self.give_up_top1 is None),
            "give_up_epoch" if self.give_up_top1 is not None else "give_up_top1",
            "set together with train.give_up_epoch and train.give_up_top1, or both null",
        )
        if self.give_up_top1 is not None and self.learned_top1 is not None:
            need(
                self.give_up_top1 <= self.learned_top1,
                "give_up_top1",
                f"<= learned_top1 = {self.learned_top1}",
            )

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

# The early-stopping fields and their defaults (all off): left out of a run's key while at them.
_EARLY_STOP_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name in _EARLY_STOP_FIELDS
}


def train_config_for_key(cfg: TrainConfig) -> dict[str, Any]:
    """``dataclasses.asdict(cfg)`` without the early-stopping fields that are at their defaults:
    what a run's key hashes, so that a configuration without early stopping keeps the key it had
    before those fields existed."""
    out = dataclasses.asdict(cfg)
    for key, default in _EARLY_STOP_DEFAULTS.items():
        if out[key] == default:
            del out[key]
    return out


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
        "dataset": _dataset_for_key(dataset_cfg),
        "backbone": backbone_cfg or {},
        "train": train_config_for_key(cfg),
        "seed": seed,
    }


def _dataset_for_key(dataset_cfg: dict[str, Any]) -> dict[str, Any]:
    """The dataset mapping a run's key hashes: a Pathfinder mapping names the generator's version
    unless it is 3. Keys of version-3 runs stay what they were before version 4 existed (when a
    mapping named no version and meant 3), and a mapping that names no version now (version 4)
    gets a key of its own, so an old run folder never resumes it from a version-3 checkpoint."""
    if dataset_cfg.get("name") != "pathfinder":
        return dataset_cfg
    from attnbench.ablation.data.pathfinder import GENERATOR_VERSION

    out = {k: v for k, v in dataset_cfg.items() if k != "version"}
    version = dataset_cfg.get("version", GENERATOR_VERSION)
    if version != 3:
        out["version"] = version
    return out


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


def _learned_epoch(history: list[dict[str, Any]], cfg: TrainConfig) -> int | None:
    """The first epoch whose val top-1 reached ``learned_top1`` (None: not yet, or not judged)."""
    if cfg.learned_top1 is None:
        return None
    return next((h["epoch"] for h in history if h.get("top1", -1.0) >= cfg.learned_top1), None)


def _stop_reason(history: list[dict[str, Any]], cfg: TrainConfig) -> str | None:
    """Why the run stops after the last epoch of ``history``, or None to go on.

    Taken from the history alone (its val top-1 per evaluated epoch), so that a resumed run takes
    the same decision; never at the last epoch, where the run ends anyway.
    """
    if not history or "top1" not in history[-1] or history[-1]["epoch"] >= cfg.epochs:
        return None
    epoch = history[-1]["epoch"]
    scores = [h["top1"] for h in history if "top1" in h]
    if cfg.give_up_epoch is not None and epoch >= cfg.give_up_epoch and max(scores) < cfg.give_up_top1:
        return f"gave up at epoch {epoch}: best val top-1 {max(scores):.2f} % < {cfg.give_up_top1} %"
    if cfg.plateau_epochs is not None and _learned_epoch(history, cfg) is not None:
        reference, since = -math.inf, 0  # top-1 at the last improvement; evaluations since
        for top1 in scores:
            if top1 >= reference + cfg.plateau_delta:
                reference, since = top1, 0
            else:
                since += 1
        if since >= cfg.plateau_epochs:
            return f"learned and plateaued at epoch {epoch}"
    return None


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
        (the epoch this call started at, 0 if from scratch), ``stopped`` (why the run stopped
        early, None if it ran every epoch), ``epochs_run`` and ``learned_epoch`` (the first epoch
        that reached ``train.learned_top1``; None if none did or it is not set). ``epochs`` is
        the schedule's; ``top1`` and ``val_correct`` are of the last epoch run.

    Raises:
        ValueError: a bad setting (naming it), or a workdir holding a run with another configuration.
        FloatingPointError: the loss became NaN or infinite (raised at the end of that epoch).
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

    data = load_dataset(dataset_cfg, train_seed=seed)
    model = initial_model(mechanism, params, dataset_cfg, backbone_cfg, seed).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    dispatch = probe_dispatch(model, dev, cfg.amp)
    for line in dispatch:
        log.info("%s dispatch: %s", mechanism, line)

    # foreach (multi-tensor) AdamW and clipping: the same numbers as the per-tensor loops (bitwise,
    # checked), fewer kernel calls; already torch's default on CUDA (docs/training-speed.md)
    foreach = True if dev.type in ("cpu", "cuda") else None
    optimizer = torch.optim.AdamW(
        _param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999), foreach=foreach
    )
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
        for group in optimizer.param_groups:  # a checkpoint of an older attnbench says foreach None
            group["foreach"] = foreach
        start_epoch, history, train_time = state["epoch"], state["history"], state["train_time_s"]
        say(f"[{mechanism} seed {seed}] resuming after epoch {start_epoch}/{cfg.epochs} from {ckpt_path}")
    workdir.mkdir(parents=True, exist_ok=True)

    stopped = _stop_reason(history, cfg)  # a run killed after its stopping epoch's checkpoint
    if stopped is not None:
        say(f"[{mechanism} seed {seed}] stopped: {stopped}")
    for epoch in range(start_epoch, cfg.epochs):
        if stopped is not None:
            break
        gen = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
        torch.manual_seed(_epoch_seed(seed, epoch))  # dropout, drop path
        order = torch.randperm(n_train, generator=gen)
        model.train()
        # summed on the device and read once per epoch: no host sync per step
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        first_bad = torch.full(
            (), steps_per_epoch, dtype=torch.int64, device=dev
        )  # step of a non-finite loss
        seen = 0
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
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad, foreach=foreach)
            optimizer.step()
            with torch.no_grad():
                loss_sum += loss.detach().double() * len(y)
                correct += (logits.argmax(dim=1) == y).sum()
                first_bad = torch.where(torch.isfinite(loss) | (first_bad < i), first_bad, i)
            seen += len(y)
        bad = int(first_bad)
        if bad < steps_per_epoch:
            raise FloatingPointError(
                f"{mechanism}: the loss became NaN or infinite at epoch {epoch + 1}, step {bad + 1}; lower "
                f"train.lr (= {cfg.lr}) or set train.clip_grad"
            )
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        epoch_time = time.perf_counter() - t0
        train_time += epoch_time
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": float(loss_sum) / seen,
            "train_acc": 100.0 * int(correct) / seen,
            "lr": lr,
            "time_s": epoch_time,
        }
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            scores = evaluate(model, data, dev, batch=cfg.eval_batch, amp=cfg.amp)
            record.update({k: v for k, v in scores.items() if k != "val_correct"})
        history.append(record)
        stopped = _stop_reason(history, cfg)
        if "top1" in record:  # the images' hits are kept for the final model only
            record["val_correct"] = scores["val_correct"] if epoch + 1 == cfg.epochs or stopped else None
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
        if stopped is not None:
            say(f"[{mechanism} seed {seed}] stopped: {stopped}")
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
        "stopped": stopped,
        "epochs_run": len(history),
        "learned_epoch": _learned_epoch(history, cfg),
    }
    result_path.write_text(
        json.dumps({"fingerprint": fingerprint, "config": config, "result": result}, indent=1, default=repr)
    )
    return result
