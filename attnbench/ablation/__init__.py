"""The ablation: swap the attention inside one fixed backbone, train on offline data, compare accuracy.

- :mod:`attnbench.ablation.backbone`: the STL-layout pyramid and its presets (:func:`build_backbone`);
- :mod:`attnbench.ablation.data`: Pathfinder (generated), CIFAR and image folders (local copies);
- :mod:`attnbench.ablation.train`: :func:`train_and_evaluate`, one (mechanism, params, seed) run.
"""

from attnbench.ablation.backbone import PRESETS, AblationBackbone, build_backbone
from attnbench.ablation.data import dataset_shape, load_dataset
from attnbench.ablation.train import (
    TRAIN_DEFAULTS,
    TrainConfig,
    build_for_dataset,
    check_run,
    initial_model,
    load_trained,
    run_key,
    train_and_evaluate,
)
from attnbench.stats import decode_correct

__all__ = [
    "PRESETS",
    "TRAIN_DEFAULTS",
    "AblationBackbone",
    "TrainConfig",
    "build_backbone",
    "build_for_dataset",
    "check_run",
    "dataset_shape",
    "decode_correct",
    "initial_model",
    "load_trained",
    "load_dataset",
    "run_key",
    "train_and_evaluate",
]
