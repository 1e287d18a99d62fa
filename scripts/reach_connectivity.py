"""Which token pairs of the reach study's backbone can exchange information at all.

For each configuration of ``studies/reach.yaml`` this builds the ``iso-8`` backbone (random weights,
float64, evaluation mode) and, for every output token b, the gradient of b's features with respect
to the input pixels on one random image: token a reaches b when that gradient is non-zero on a's
pixels. It prints, per Chebyshev distance d, the share of token pairs (a, b) at distance d where a
reaches b or b reaches a, i.e. where the two marked glyphs could meet at one of their own tokens
(the ``readout: bright`` head reads only those). For content-routed mechanisms (BRA, DBRA, DAT, KVT)
this is what the routing of that one random image connects, not every pair routing could connect.

    python scripts/reach_connectivity.py [--seed N]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import attnbench  # noqa: F401  (before timm)
from attnbench.ablation.backbone import build_backbone

CONFIGS = (
    [("vanilla", None)]
    + [("bra", {"n_win": s, "topk": k}) for s in (4, 8) for k in (1, 2, 4, 8)]
    + [
        (m, None)
        for m in (
            "swin",
            "axial",
            "neighborhood",
            "dilated",
            "deformable",
            "dbra",
            "agent",
            "flatten",
            "maxvit",
            "kvt",
        )
    ]
)


def connectivity(name: str, params: dict | None, seed: int) -> np.ndarray:
    """(64, 64) bool: [b, a] = output token b depends on input token a."""
    torch.manual_seed(seed)
    model = (
        build_backbone(name, params, preset="iso-8", num_classes=2, in_chans=1, img_size=32).double().eval()
    )
    x = torch.randn(1, 1, 32, 32, dtype=torch.float64, requires_grad=True)
    feats = model.forward_features(x)[0]  # (C, 8, 8)
    out = np.zeros((64, 64), dtype=bool)
    for b in range(64):
        (grad,) = torch.autograd.grad(feats[:, b // 8, b % 8].sum(), x, retain_graph=True)
        per_token = grad[0, 0].abs().reshape(8, 4, 8, 4).sum((1, 3)).flatten()
        out[b] = (per_token > 1e-12).numpy()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    seed = parser.parse_args().seed
    rows, cols = np.divmod(np.arange(64), 8)
    dist = np.maximum(abs(rows[:, None] - rows[None, :]), abs(cols[:, None] - cols[None, :]))
    print("configuration".ljust(22) + "".join(f"d={d}".rjust(7) for d in range(1, 8)))
    for name, params in CONFIGS:
        c = connectivity(name, params, seed)
        meet = c | c.T
        label = name + (f" S={params['n_win']} k={params['topk']}" if params else "")
        print(label.ljust(22) + "".join(f"{100 * meet[dist == d].mean():6.0f}%" for d in range(1, 8)))


if __name__ == "__main__":
    main()
