"""Training and evaluation: an easy set is learned, a killed run resumes to the same result, the
recipe's pieces, and the local datasets (fake CIFAR pickles and image folders made here)."""

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnbench.ablation.data import (
    VAL_SEED_OFFSET,
    augment,
    check_available,
    dataset_shape,
    load_dataset,
    train_split_seed,
)
from attnbench.ablation.train import (
    TrainConfig,
    _lr_at,
    build_for_dataset,
    check_run,
    run_key,
    train_and_evaluate,
)

NANO = {"preset": "stl-nano"}


def fake_cifar10(root, n_train=500, n_test=200, seed=0):
    """CIFAR-10 pickles in ``root/cifar-10-batches-py`` where the class is the image's colour (easy)."""
    rng = np.random.default_rng(seed)
    colours = rng.uniform(30, 225, size=(10, 3))
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(n):
        labels = rng.integers(0, 10, size=n)
        images = colours[labels][:, :, None, None] + rng.normal(0, 12, size=(n, 3, 32, 32))
        data = np.clip(images, 0, 255).astype(np.uint8).reshape(n, 3072)
        return {b"data": data, b"labels": labels.tolist()}

    per = math.ceil(n_train / 5)
    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(per), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(n_test), f)
    return root


@pytest.mark.slow  # 13 s of training; the ablation end-to-end test keeps training in the default run
def test_easy_set_is_learned(tmp_path):
    cfg = {"name": "cifar10", "root": str(fake_cifar10(tmp_path / "data"))}
    lines = []
    result = train_and_evaluate(
        "vanilla",
        {},
        cfg,
        NANO,
        {"epochs": 4, "batch": 50, "lr": 2e-3, "warmup_epochs": 0.5},
        0,
        "cpu",
        tmp_path / "run",
        progress=lines.append,
    )
    assert result["top1"] >= 80.0  # chance is 10%
    assert result["top5"] >= result["top1"] and result["top5"] is not None
    assert result["epochs"] == 4 and len(result["history"]) == 4 and len(lines) == 4
    assert result["history"][-1]["train_loss"] < result["history"][0]["train_loss"]
    assert result["params"] == sum(
        p.numel() for p in build_for_dataset("vanilla", {}, cfg, NANO).parameters()
    )
    assert result["train_time_s"] > 0 and result["resumed_from"] == 0
    assert "epoch 4/4" in lines[-1] and "val_top1" in lines[-1]


class Killed(Exception):
    pass


def test_resume_after_a_kill_gives_the_uninterrupted_result(tmp_path):
    data = {
        "name": "pathfinder",
        "version": 3,
        "difficulty": "easy",
        "train_size": 96,
        "val_size": 40,
        "cache_dir": str(tmp_path),
    }
    train = {"epochs": 3, "batch": 32, "lr": 1e-3, "eval_every": 1}
    whole = train_and_evaluate("bra", {}, data, NANO, train, 1, "cpu", tmp_path / "whole", progress=None)

    def kill_after_first(epoch, record):
        if epoch == 0:
            raise Killed

    with pytest.raises(Killed):
        train_and_evaluate(
            "bra",
            {},
            data,
            NANO,
            train,
            1,
            "cpu",
            tmp_path / "cut",
            progress=None,
            on_epoch_end=kill_after_first,
        )
    saved = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1 and not (tmp_path / "cut" / "result.json").exists()
    lines = []
    resumed = train_and_evaluate(
        "bra", {}, data, NANO, train, 1, "cpu", tmp_path / "cut", progress=lines.append
    )
    assert resumed["resumed_from"] == 1 and "resuming after epoch 1/3" in lines[0]
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    for a, b in zip(whole["history"], resumed["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["top1"] == pytest.approx(b["top1"])
    assert resumed["top1"] == pytest.approx(whole["top1"]) and resumed["top5"] is None  # 2 classes


def test_finished_run_is_not_trained_again(tmp_path):
    data = {
        "name": "pathfinder",
        "version": 3,
        "difficulty": "easy",
        "train_size": 32,
        "val_size": 16,
        "cache_dir": str(tmp_path),
    }
    train = {"epochs": 1, "batch": 16}
    first = train_and_evaluate("swin", {}, data, NANO, train, 0, "cpu", tmp_path / "run", progress=None)
    again = train_and_evaluate(
        "swin", {}, data, NANO, {**train, "seeds": [0, 1]}, 0, "cpu", tmp_path / "run", progress=pytest.fail
    )  # seeds is the runner's key, not part of the run
    assert again == first
    with pytest.raises(ValueError, match="another configuration"):
        train_and_evaluate(
            "swin", {}, data, NANO, {**train, "lr": 5e-4}, 0, "cpu", tmp_path / "run", progress=None
        )


def test_check_run_and_run_key(tmp_path):
    data = {"name": "pathfinder", "version": 3, "train_size": 32}
    check_run("bra", {"n_win": 4, "topk": 4}, data, NANO, {"epochs": 1})
    with pytest.raises(ValueError, match="stage 0"):
        check_run("bra", {"n_win": 5, "topk": 1}, data, NANO, {})
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        check_run("vanilla", {}, {"name": "cifar100", "root": str(tmp_path)}, NANO, {})
    key = run_key("bra", {}, data, NANO, {"epochs": 1, "seeds": [0, 1]}, 0)
    assert key == run_key("bra", {}, data, NANO, {"epochs": 1, "lr": 1e-3}, 0)  # defaults filled in
    assert key != run_key("bra", {}, data, NANO, {"epochs": 1}, 1)
    assert key != run_key("bra", {"topk": 2}, data, NANO, {"epochs": 1}, 0)


def test_train_config_checks():
    assert TrainConfig.from_dict({"epochs": 2, "seeds": [0, 1]}).epochs == 2
    with pytest.raises(ValueError, match="unknown keys"):
        TrainConfig.from_dict({"epoch": 2})
    with pytest.raises(ValueError, match="train.lr"):
        TrainConfig.from_dict({"lr": 0})
    with pytest.raises(ValueError, match="train.batch"):
        TrainConfig.from_dict({"batch": 0})


def test_warmup_then_cosine():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-5)
    lrs = [_lr_at(s, 100, 10, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # decays monotonically after warmup
    assert _lr_at(100, 100, 10, cfg) == pytest.approx(1e-5)


def test_augment_is_seeded_and_label_safe():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.uint8).view(2, 1, 8, 8) + 1
    a = augment(x, torch.Generator().manual_seed(0), crop_padding=2, hflip=True)
    b = augment(x, torch.Generator().manual_seed(0), crop_padding=2, hflip=True)
    assert torch.equal(a, b) and a.shape == x.shape
    flipped = augment(x, torch.Generator().manual_seed(1), hflip=True, vflip=True)
    for i in range(2):  # a flip moves pixels, never changes them
        assert sorted(flipped[i].flatten().tolist()) == sorted(x[i].flatten().tolist())
    cropped = augment(
        torch.full((4, 1, 8, 8), 9, dtype=torch.uint8), torch.Generator().manual_seed(2), crop_padding=2
    )
    assert set(cropped.unique().tolist()) <= {0, 9} and (cropped[:, :, 2:6, 2:6] == 9).all()


def fake_pathfinder(calls):
    """A stand-in for ``load_pathfinder`` that records the seeds asked for and returns images drawn
    from the seed (the generator itself is tested in test_pathfinder.py)."""

    def load(cfg, n, seed, cache_dir=None):
        calls.append((n, seed))
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, size=(n, cfg.resolution, cfg.resolution), dtype=np.uint8)
        return images, np.arange(n) % 2, Path(f"fake-{n}-{seed}.npz")

    return load


def test_per_seed_train_images(monkeypatch):
    calls = []
    monkeypatch.setattr("attnbench.ablation.data.pathfinder.load_pathfinder", fake_pathfinder(calls))
    base = {"name": "pathfinder", "difficulty": "easy", "train_size": 16, "val_size": 8, "seed": 5}
    shared = load_dataset(base)
    assert calls == [(16, 5), (8, 5 + VAL_SEED_OFFSET)]  # shared: as before, the dataset's seed
    for cfg in (base, {**base, "train_images": "shared"}):
        assert torch.equal(load_dataset(cfg, train_seed=3).train.images, shared.train.images)
    assert calls[-2:] == [(16, 5), (8, 5 + VAL_SEED_OFFSET)] and "train_images" not in shared.info
    per = {**base, "train_images": "per_seed"}
    calls.clear()
    a, b = load_dataset(per, train_seed=0), load_dataset(per, train_seed=1)
    seeds = (train_split_seed(5, 0), train_split_seed(5, 1))
    assert calls == [(16, seeds[0]), (8, 5 + VAL_SEED_OFFSET), (16, seeds[1]), (8, 5 + VAL_SEED_OFFSET)]
    assert len({5, 5 + VAL_SEED_OFFSET, *seeds}) == 4
    assert not torch.equal(a.train.images, b.train.images) and not torch.equal(
        a.train.images, shared.train.images
    )
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.val.images, shared.val.images)
    assert a.info["train_split_seed"] == seeds[0] and a.info["train_images"] == "per_seed"
    assert seeds[0] == train_split_seed(5, 0) != train_split_seed(6, 0)  # the dataset's seed counts too
    with pytest.raises(ValueError, match="needs the training seed"):
        load_dataset(per)
    with pytest.raises(ValueError, match="dataset.train_images"):
        check_available({**base, "train_images": "each"})


@pytest.fixture
def one_thread():
    """One torch thread for a tiny training (two fight over a shared CPU), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_run_trains_on_its_seeds_images(tmp_path, monkeypatch, one_thread):
    calls = []
    monkeypatch.setattr("attnbench.ablation.data.pathfinder.load_pathfinder", fake_pathfinder(calls))
    data = {
        "name": "pathfinder",
        "version": 3,
        "difficulty": "easy",
        "train_size": 32,
        "val_size": 16,
        "train_images": "per_seed",
    }
    result = train_and_evaluate(
        "vanilla", {}, data, NANO, {"epochs": 1, "batch": 16}, 2, "cpu", tmp_path / "run", progress=None
    )
    assert calls == [(32, train_split_seed(0, 2)), (16, VAL_SEED_OFFSET)]
    assert result["dataset"]["train_split_seed"] == train_split_seed(0, 2)


# ----------------------------------------------------------------------------- local datasets


def test_cifar_from_local_pickles(tmp_path):
    root = fake_cifar10(tmp_path, n_train=50, n_test=20)
    for given in (root, root / "cifar-10-batches-py"):  # the parent or the folder itself
        data = load_dataset({"name": "cifar10", "root": str(given), "train_size": 40})
        assert (len(data.train), len(data.val), data.num_classes, data.in_chans) == (40, 20, 10, 3)
    assert dataset_shape({"name": "cifar100", "label_type": "coarse"}) == (20, 3, 32)


def test_missing_local_data_says_what_to_put_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*data_batch_1"):
        load_dataset({"name": "cifar10", "root": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="dataset.root is not set"):
        load_dataset({"name": "cifar100"})
    with pytest.raises(FileNotFoundError, match=r"<root>/train/<class>/<image>"):
        load_dataset({"name": "imagefolder", "root": str(tmp_path / "nowhere")})
    with pytest.raises(ValueError, match="cifar10"):
        load_dataset({"name": "mnist"})


def test_imagefolder(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2)):
        for cls, shade in (("cats", 40), ("dogs", 200)):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                size = (
                    int(rng.integers(20, 50)),
                    int(rng.integers(20, 50)),
                )  # odd sizes: resized and cropped
                pixels = np.full((size[1], size[0], 3), shade, dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    (tmp_path / "train" / "notes.txt").write_text("not an image")
    data = load_dataset({"name": "imagefolder", "root": str(tmp_path), "resolution": 16})
    assert data.info["classes"] == ["cats", "dogs"] and data.num_classes == 2
    assert data.train.images.shape == (6, 3, 16, 16) and data.val.images.shape == (4, 3, 16, 16)
    assert data.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.train.images[0].float().mean() == pytest.approx(40, abs=1)
    gray = load_dataset(
        {"name": "imagefolder", "root": str(tmp_path), "resolution": 16, "channels": 1, "val_size": 3}
    )
    assert gray.val.images.shape == (3, 1, 16, 16) and gray.in_chans == 1
    assert dataset_shape({"name": "imagefolder", "root": str(tmp_path), "resolution": 16}) == (2, 3, 16)


def test_a_non_finite_loss_names_its_step(tmp_path, monkeypatch, one_thread):
    monkeypatch.setattr("attnbench.ablation.data.pathfinder.load_pathfinder", fake_pathfinder([]))
    cross_entropy, calls = torch.nn.functional.cross_entropy, []

    def nan_at_second_step(*args, **kwargs):
        calls.append(1)
        loss = cross_entropy(*args, **kwargs)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", nan_at_second_step)
    data = {"name": "pathfinder", "version": 3, "difficulty": "easy", "train_size": 48, "val_size": 16}
    with pytest.raises(FloatingPointError, match="epoch 1, step 2; lower train.lr"):
        train_and_evaluate(
            "vanilla", {}, data, NANO, {"epochs": 2, "batch": 16}, 0, "cpu", tmp_path, progress=None
        )
    assert not (tmp_path / "checkpoint.pt").exists()  # the epoch is not saved
