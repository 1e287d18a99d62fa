"""One scratch training on the reach task outside a study, as the version-2 pilots ran
(docs/ablation.md#the-pilots-of-version-2): prints each epoch and the accuracy at each distance.

    python scripts/reach_pilot.py MECHANISM LR EPOCHS WORKDIR ['{"preset": ..., "ds": {...}}']

The JSON holds the backbone preset (default iso-16) and overrides of the dataset (``ds``), the
backbone (``bb``) and the training (``tr``) settings below; e.g. the pilot of NAT with half the
pairs at d = 1:

    python scripts/reach_pilot.py neighborhood 2e-3 8 /tmp/nat '{"preset": "iso-8",
        "ds": {"resolution": 32, "distances": [1,2,3,4,5,6,7], "n_distractors": 4,
               "near_fraction": 0.5}, "bb": {"readout": "bright"}}'
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

import attnbench  # noqa: F401  (before timm)
from attnbench.ablation.train import train_and_evaluate
from attnbench.stats import decode_correct


def main(argv: list[str]) -> None:
    if len(argv) not in (4, 5):
        sys.exit(__doc__)
    mechanism, lr, epochs, workdir = argv[0], float(argv[1]), int(argv[2]), argv[3]
    extra = json.loads(argv[4]) if len(argv) == 5 else {}
    torch.set_num_threads(1)
    dataset = {
        "name": "reach",
        "resolution": 64,
        "patch": 4,
        "glyph": 4,
        "mark": "bright",
        "distances": [2, 4, 6, 8, 10, 12, 14],
        "n_distractors": 8,
        "train_size": 4000,
        "val_size": 1400,
        "seed": 0,
        "train_images": "per_seed",
        **extra.get("ds", {}),
    }
    backbone = {"preset": extra.get("preset", "iso-16"), **extra.get("bb", {})}
    train = {
        "epochs": epochs,
        "batch": 32,
        "lr": lr,
        "warmup_epochs": 0.5,
        "eval_every": 1,
        **extra.get("tr", {}),
    }
    result = train_and_evaluate(
        mechanism, extra.get("params"), dataset, backbone, train, 301, "cpu", workdir, progress=print
    )
    distances = np.array(result["dataset"]["val_distances"])
    hits = decode_correct(result["val_correct"], len(distances))
    per_d = {int(d): round(100 * float(hits[distances == d].mean()), 1) for d in np.unique(distances)}
    print(f"top-1 {result['top1']:.2f} %, train {result['train_time_s']:.0f} s, per distance {per_d}")


if __name__ == "__main__":
    main(sys.argv[1:])
