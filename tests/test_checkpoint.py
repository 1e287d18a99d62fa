"""Released-checkpoint loading: the released BRA's weights give the same outputs in our ``bra``.

``ReleasedBRA`` below is a plain re-implementation of the forward of BiFormer's
``ops/bra_legacy.py`` (as every released model uses it), written for this test with the released
module names (``qkv.qkv``, ``wo``, ``lepe``): regions as (n, S², h, w, c) tensors, the ``QKVLinear``
wrapper, region means, detached top-k routing, a per-region Python-indexed gather, explicit
softmax attention with the whole-qk-dim scale, LCE on v, ``wo``, bottom/right padding and crop.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attnbench
from attnbench.models import (
    CheckpointMismatchError,
    load_official_checkpoint,
    official_key_map,
    to_official_state_dict,
)
from mechanisms.bra import BACKENDS


class _QKVLinear(nn.Module):
    def __init__(self, dim: int, qk_dim: int) -> None:
        super().__init__()
        self.qk_dim = qk_dim
        self.qkv = nn.Linear(dim, 2 * qk_dim + dim)

    def forward(self, x):
        return self.qkv(x).split([self.qk_dim, self.qk_dim + x.shape[-1]], dim=-1)  # q, kv


class ReleasedBRA(nn.Module):
    def __init__(self, dim, num_heads, n_win, topk, side_dwconv=5, auto_pad=False):
        super().__init__()
        self.dim, self.num_heads, self.n_win, self.topk, self.auto_pad = dim, num_heads, n_win, topk, auto_pad
        self.scale = dim**-0.5
        self.qkv = _QKVLinear(dim, dim)
        self.wo = nn.Linear(dim, dim)
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim)

    def forward(self, x):
        n, H_in, W_in, C = x.shape
        S, m = self.n_win, self.num_heads
        x = F.pad(x, (0, 0, 0, (-W_in) % S, 0, (-H_in) % S)) if self.auto_pad else x
        H, W = x.shape[1:3]
        h, w = H // S, W // S
        # (n, S, h, S, w, c) -> (n, S², h, w, c): region j*S+i holds rows j*h.., columns i*w..
        x = x.view(n, S, h, S, w, C).permute(0, 1, 3, 2, 4, 5).reshape(n, S * S, h, w, C)
        q, kv = self.qkv(x)  # (n, S², h, w, C), (n, S², h, w, 2C)
        q_pix = q.reshape(n, S * S, h * w, C)
        kv_pix = kv.reshape(n, S * S, h * w, 2 * C)
        q_win, k_win = q.mean(dim=(2, 3)), kv[..., :C].mean(dim=(2, 3))  # (n, S², C)

        v_map = kv[..., C:].reshape(n, S, S, h, w, C).permute(0, 5, 1, 3, 2, 4).reshape(n, C, H, W)
        lepe = self.lepe(v_map).permute(0, 2, 3, 1)  # (n, H, W, C)

        logits = (q_win.detach() * self.scale) @ k_win.detach().transpose(-2, -1)  # (n, S², S²)
        idx = torch.topk(logits, k=self.topk, dim=-1).indices  # (n, S², k)

        out = torch.empty(n, S * S, h * w, C)
        for b in range(n):
            for r in range(S * S):
                sel = torch.cat([kv_pix[b, int(j)] for j in idx[b, r]], dim=0)  # (k·hw, 2C)
                k_sel = sel[:, :C].reshape(-1, m, C // m).transpose(0, 1)  # (m, k·hw, C/m)
                v_sel = sel[:, C:].reshape(-1, m, C // m).transpose(0, 1)
                q_r = q_pix[b, r].reshape(-1, m, C // m).transpose(0, 1)  # (m, hw, C/m)
                attn = ((q_r * self.scale) @ k_sel.transpose(-2, -1)).softmax(dim=-1)
                out[b, r] = (attn @ v_sel).transpose(0, 1).reshape(h * w, C)
        out = out.view(n, S, S, h, w, C).permute(0, 1, 3, 2, 4, 5).reshape(n, H, W, C)
        out = self.wo(out + lepe)
        return out[:, :H_in, :W_in].contiguous()


CASES = [
    # (H, W, C, heads, n_win, topk, auto_pad)
    (28, 28, 64, 2, 7, 4, False),
    (14, 21, 32, 1, 7, 3, False),
    (20, 18, 32, 2, 7, 5, True),  # padded to 21 x 21
    (13, 17, 64, 4, 4, 2, True),  # padded to 16 x 20
]


def _released(case, seed=0):
    H, W, C, heads, n_win, topk, auto_pad = case
    torch.manual_seed(seed)
    ref = ReleasedBRA(C, heads, n_win, topk, auto_pad=auto_pad)
    for p in ref.parameters():  # non-trivial weights everywhere, biases included
        nn.init.normal_(p, std=0.2)
    return ref


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("case", CASES)
def test_released_bra_weights_give_released_outputs(case, backend):
    H, W, C, heads, n_win, topk, auto_pad = case
    ref = _released(case)
    ours = attnbench.build_mechanism(
        "bra", C, heads, n_win=n_win, topk=topk, auto_pad=auto_pad, backend=backend
    )
    result = load_official_checkpoint(ours, ref.state_dict())
    assert result.missing == [] and result.unexpected == []
    x = torch.randn(2, H, W, C)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_bra_key_map_is_the_released_layout():
    ours = attnbench.build_mechanism("bra", 32, 2)
    assert official_key_map(ours) == {
        "qkv.weight": "qkv.qkv.weight",
        "qkv.bias": "qkv.qkv.bias",
        "lepe.weight": "lepe.weight",
        "lepe.bias": "lepe.bias",
        "wo.weight": "wo.weight",
        "wo.bias": "wo.bias",
    }
    assert set(to_official_state_dict(ours)) == set(_released(CASES[1]).state_dict())


def test_checkpoint_formats_dict_model_and_path(tmp_path):
    ref = _released(CASES[0])
    state = ref.state_dict()
    path = tmp_path / "bra.pth"
    torch.save({"model": state, "epoch": 300}, path)
    x = torch.randn(1, 28, 28, 64)
    for source in (state, {"model": state}, path, str(path)):
        ours = attnbench.build_mechanism("bra", 64, 2, topk=4)
        load_official_checkpoint(ours, source)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def _unchanged(module, before):
    return all(torch.equal(v, before[k]) for k, v in module.state_dict().items())


def test_missing_and_unexpected_keys_are_listed_and_nothing_is_loaded():
    state = _released(CASES[0]).state_dict()
    del state["wo.bias"]
    state["qkv.weight"] = state["qkv.qkv.weight"]  # our name, not the released one
    ours = attnbench.build_mechanism("bra", 64, 2, topk=4)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as info:
        load_official_checkpoint(ours, state)
    msg = str(info.value)
    assert "missing from the checkpoint (our keys) (1):\n    wo.bias" in msg
    assert "unexpected in the checkpoint (released keys) (1):\n    qkv.weight" in msg
    assert _unchanged(ours, before)


def test_non_strict_load_reports_what_it_left_out():
    state = _released(CASES[0]).state_dict()
    del state["lepe.bias"]
    state["router.emb.weight"] = torch.zeros(64, 64)
    ours = attnbench.build_mechanism("bra", 64, 2, topk=4)
    result = load_official_checkpoint(ours, state, strict=False)
    assert result.missing == ["lepe.bias"]
    assert result.unexpected == ["router.emb.weight"]
    torch.testing.assert_close(ours.wo.weight, state["wo.weight"])


def test_shape_mismatch_raises_even_when_not_strict():
    state = _released(CASES[0]).state_dict()  # C = 64
    ours = attnbench.build_mechanism("bra", 32, 2, topk=4)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    with pytest.raises(
        CheckpointMismatchError, match=r"qkv\.qkv\.weight -> qkv\.weight: checkpoint \(192, 64\)"
    ):
        load_official_checkpoint(ours, state, strict=False)
    assert _unchanged(ours, before)


def test_bad_sources_are_explained(tmp_path):
    ours = attnbench.build_mechanism("bra", 32, 2)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_official_checkpoint(ours, tmp_path / "nope.pth")
    with pytest.raises(TypeError, match="not tensors"):
        load_official_checkpoint(ours, {"model": {"wo.weight": [1, 2]}})
