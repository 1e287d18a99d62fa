"""Early stopping of an ablation training (off by default): the decision, the settings' checks, the
run key of a configuration without it, and tiny trainings that stop, give up and resume."""

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from attnbench.ablation.data import load_dataset
from attnbench.ablation.train import (
    TrainConfig,
    _config,
    _stop_reason,
    evaluate,
    load_trained,
    run_key,
    train_and_evaluate,
    train_config_for_key,
)

NANO = {"preset": "stl-nano"}
# the TrainConfig fields before early stopping: a run key hashes exactly these when it is off
KEYED_BEFORE = [
    "epochs",
    "batch",
    "lr",
    "weight_decay",
    "warmup_epochs",
    "min_lr",
    "label_smoothing",
    "clip_grad",
    "amp",
    "eval_batch",
    "eval_every",
]


def history(*top1s):
    """One record per epoch with this val top-1 (None: not evaluated that epoch)."""
    return [{"epoch": e + 1, **({} if t is None else {"top1": t})} for e, t in enumerate(top1s)]


# ----------------------------------------------------------------------------- the decision


def test_plateau_needs_learned_then_no_gain_for_n_evaluations():
    cfg = TrainConfig(epochs=10, learned_top1=80, plateau_epochs=2, plateau_delta=0.5)
    assert _stop_reason(history(50, 50, 50, 50), cfg) is None  # flat but not learned
    assert _stop_reason(history(50, 85), cfg) is None  # the jump is an improvement
    assert _stop_reason(history(50, 85, 85.4), cfg) is None  # one evaluation without a gain
    assert _stop_reason(history(50, 85, 85.4, 85.2), cfg) == "learned and plateaued at epoch 4"
    assert _stop_reason(history(50, 85, 85.4, 85.5), cfg) is None  # +0.5 over 85 counts
    assert _stop_reason(history(50, 85, 85.3, 85.6, 85.0), cfg) is None  # gains add up to 0.6
    # never at the last epoch, where the run ends anyway
    last = TrainConfig(epochs=4, learned_top1=80, plateau_epochs=2)
    assert _stop_reason(history(50, 85, 85.4, 85.2), last) is None


def test_give_up_when_plainly_not_learned_by_the_epoch():
    cfg = TrainConfig(epochs=10, give_up_epoch=3, give_up_top1=60)
    assert _stop_reason(history(50, 55), cfg) is None  # too early
    assert _stop_reason(history(50, 55, 58), cfg) == "gave up at epoch 3: best val top-1 58.00 % < 60 %"
    assert _stop_reason(history(50, 61, 55), cfg) is None  # the best so far counts
    every2 = TrainConfig(epochs=10, eval_every=2, give_up_epoch=3, give_up_top1=60)
    assert _stop_reason(history(None, 50, None), every2) is None  # no evaluation at epoch 3
    assert _stop_reason(history(None, 50, None, 52), every2).startswith("gave up at epoch 4")


def test_settings_are_checked_with_their_key():
    for bad, key in (
        ({"plateau_epochs": 2}, "train.plateau_epochs"),  # needs learned_top1
        ({"learned_top1": 80, "plateau_epochs": 2, "eval_every": 2}, "train.plateau_epochs"),
        ({"learned_top1": 80, "plateau_epochs": 0}, "train.plateau_epochs"),
        ({"plateau_delta": 1.0}, "train.plateau_delta"),  # without plateau_epochs
        ({"learned_top1": 80, "plateau_epochs": 2, "plateau_delta": -1}, "train.plateau_delta"),
        ({"learned_top1": 0}, "train.learned_top1"),
        ({"learned_top1": 101}, "train.learned_top1"),
        ({"learned_top1": True}, "train.learned_top1"),
        ({"give_up_epoch": 3}, "train.give_up_epoch"),  # without give_up_top1
        ({"give_up_top1": 60}, "train.give_up_top1"),  # without give_up_epoch
        ({"epochs": 5, "give_up_epoch": 5, "give_up_top1": 60}, "train.give_up_epoch"),
        ({"learned_top1": 80, "give_up_epoch": 3, "give_up_top1": 90}, "train.give_up_top1"),
    ):
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            TrainConfig.from_dict(bad)
    TrainConfig.from_dict(
        {"learned_top1": 85, "plateau_epochs": 2, "plateau_delta": 1, "give_up_epoch": 5, "give_up_top1": 60}
    )


def test_run_key_input_is_unchanged_without_early_stopping():
    # version 3: what a mapping without a version meant before generator version 4 existed
    data = {"name": "pathfinder", "difficulty": "easy", "train_size": 12000, "version": 3}
    plain = TrainConfig.from_dict({"epochs": 10, "batch": 32, "plateau_delta": 0.5})
    keyed = train_config_for_key(plain)
    assert list(keyed) == KEYED_BEFORE
    assert keyed == {k: v for k, v in dataclasses.asdict(plain).items() if k in KEYED_BEFORE}
    # the hash a run key takes of it: the value it had before early stopping existed
    config = {**_config("bra", {"topk": 4}, data, NANO, plain, 0), "train": keyed}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=repr).encode()).hexdigest()[:16]
    assert digest == "1537a45b5223d1e4"  # run_key of this run before early stopping existed
    assert run_key("bra", {"topk": 4}, data, NANO, {"epochs": 10, "batch": 32}, 0) == digest
    # the same mapping without a version now means version 4: a key of its own
    assert run_key("bra", {"topk": 4}, {**data, "version": 4}, NANO, {"epochs": 10, "batch": 32}, 0) != digest
    del data["version"]
    assert run_key("bra", {"topk": 4}, data, NANO, {"epochs": 10, "batch": 32}, 0) != digest
    stopping = train_config_for_key(dataclasses.replace(plain, learned_top1=85.0, plateau_epochs=2))
    assert stopping["learned_top1"] == 85.0 and stopping["plateau_epochs"] == 2
    assert "plateau_delta" not in stopping and "give_up_epoch" not in stopping  # at their defaults


# ----------------------------------------------------------------------------- tiny trainings


@pytest.fixture
def data(monkeypatch):
    """A tiny Pathfinder mapping whose images are noise drawn from the seed (no generator: these
    tests are about the loop), trained on one thread (two fight over a shared CPU)."""

    def load(cfg, n, seed, cache_dir=None):
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, size=(n, cfg.resolution, cfg.resolution), dtype=np.uint8)
        return images, np.arange(n) % 2, Path(f"fake-{n}-{seed}.npz")

    monkeypatch.setattr("attnbench.ablation.data.pathfinder.load_pathfinder", load)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {"name": "pathfinder", "difficulty": "easy", "train_size": 64, "val_size": 32}
    torch.set_num_threads(threads)


BASE = {"epochs": 4, "batch": 32, "lr": 1e-3}
# every evaluation counts as learned and none as an improvement after the first: stops after epoch 2
PLATEAU = {**BASE, "learned_top1": 1.0, "plateau_epochs": 1, "plateau_delta": 100.0}


def run(data, train, workdir, **kw):
    kw.setdefault("progress", None)
    return train_and_evaluate("vanilla", {}, data, NANO, train, 0, "cpu", workdir, **kw)


def test_off_by_default_runs_every_epoch(data, tmp_path):
    whole = run(data, BASE, tmp_path / "whole")
    assert whole["stopped"] is None and whole["epochs_run"] == 4 and whole["learned_epoch"] is None
    assert [h["epoch"] for h in whole["history"]] == [1, 2, 3, 4]


def test_stops_when_learned_and_plateaued(data, tmp_path):
    whole = run(data, BASE, tmp_path / "whole")
    lines = []
    result = run(data, PLATEAU, tmp_path / "stop", progress=lines.append)
    assert result["stopped"] == "learned and plateaued at epoch 2" and lines[-1].endswith(result["stopped"])
    assert result["epochs_run"] == 2 and result["learned_epoch"] == 1 and result["epochs"] == 4
    # the same first epochs as the whole run: the schedule stays defined over epochs
    for a, b in zip(whole["history"], result["history"]):
        assert a["lr"] == b["lr"] and a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
    assert result["top1"] == result["history"][-1]["top1"]
    assert result["final_train_loss"] == result["history"][-1]["train_loss"]
    # the result is the evaluation of the model it stopped with (saved as model.pt)
    model, _ = load_trained(tmp_path / "stop")
    again = evaluate(model, load_dataset(data, train_seed=0), torch.device("cpu"))
    assert result["val_correct"] == again["val_correct"] and result["top1"] == again["top1"]
    assert run(data, PLATEAU, tmp_path / "stop", progress=pytest.fail) == result  # not trained again


def test_gives_up(data, tmp_path):
    train = {**BASE, "give_up_epoch": 1, "give_up_top1": 100.0}
    result = run(data, train, tmp_path / "run")
    assert result["stopped"].startswith("gave up at epoch 1: best val top-1")
    assert result["epochs_run"] == 1 and len(result["history"]) == 1 and result["learned_epoch"] is None
    assert result["val_correct"] and result["top1"] == result["history"][0]["top1"]


class Killed(Exception):
    pass


def kill_at(index):
    def on_epoch_end(epoch, record):
        if epoch == index:
            raise Killed

    return on_epoch_end


def test_resume_reproduces_the_stop(data, tmp_path):
    whole = run(data, PLATEAU, tmp_path / "whole")
    for index in (0, 1):  # killed before the stopping epoch, and just after its checkpoint
        cut = tmp_path / f"cut{index}"
        with pytest.raises(Killed):
            run(data, PLATEAU, cut, on_epoch_end=kill_at(index))
        lines = []
        resumed = run(data, PLATEAU, cut, progress=lines.append)
        assert resumed["resumed_from"] == index + 1 and f"resuming after epoch {index + 1}/4" in lines[0]
        assert len(lines) == 3 - index  # resuming, [epoch 2,] stopped
        assert resumed["stopped"] == whole["stopped"] and resumed["epochs_run"] == 2
        assert resumed["val_correct"] == whole["val_correct"] and resumed["top1"] == whole["top1"]
        for a, b in zip(whole["history"], resumed["history"], strict=True):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6) and a["top1"] == b["top1"]
