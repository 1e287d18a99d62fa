"""The seed models: sizes and FLOPs against the released code's counts, released key layout, timm API.

Logits are not compared with the released BiFormer forward (re-implementing the whole released
model in a test would be a second copy of the model): the BRA-level equivalence with the released
algorithm (tests/test_checkpoint.py) plus the exact released key layout and a lossless round trip
through it (here) are what ties our models to the released checkpoints.
"""

import functools
from pathlib import Path

import pytest
import timm
import torch
import yaml
from torch import nn

import attnbench
from attnbench.models import (
    SEED_MODELS,
    AttentionLePE,
    CheckpointMismatchError,
    load_official_checkpoint,
    measure_model,
    published_numbers,
    to_official_state_dict,
)

ROOT = Path(__file__).resolve().parents[1]

# Released-code counts at 224² (docs/reference-numbers.md; fvcore 0.1.5): params (M), GMACs.
RELEASED = {
    "biformer_tiny": (13.14, 2.228),
    "biformer_small": (25.54, 4.487),
    "biformer_base": (56.80, 9.795),
    "biformer_stl": (28.37, 4.59),
    # fvcore on maclong01/DeBiFormer with its 'uto_pad' typos fixed (auto_pad=True)
    "debiformer_tiny": (21.50, 2.654),
    "debiformer_small": (44.01, 5.440),
    "debiformer_base": (95.50, 11.741),
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def within(value: float, target: float, rel: float = 0.01) -> bool:
    return abs(value - target) <= rel * target


@functools.cache
def built(name: str) -> nn.Module:
    """One default instance per model for the tests that only read it."""
    torch.manual_seed(0)
    return timm.create_model(name).eval()


@pytest.mark.parametrize("name", SEED_MODELS)
def test_params_match_released_code(name):
    assert within(n_params(built(name)) / 1e6, RELEASED[name][0])


def _check_measured(name, **kwargs):
    row = measure_model(name, 224, **kwargs)
    assert row["flops_uncounted"] == "{}"
    assert within(row["flops"] / 1e9, RELEASED[name][1]), row["flops"]
    assert row["params"] == n_params(built(name))
    return row


def test_measure_biformer_tiny():
    row = _check_measured("biformer_tiny", repeats=1, warmup=0)
    assert row["flops_torch"] is not None and within(row["flops_torch"], row["flops"], 0.02)
    assert row["latency_ms"] > 0 and row["throughput"] > 0
    assert row["peak_mem_mb"] is None and row["mem_method"] is None


def test_flops_debiformer_tiny():
    model = timm.create_model("debiformer_tiny", bra_backend="reference")
    report = attnbench.count_flops(model, torch.randn(1, 3, 224, 224), cross_check=False)
    assert report.uncounted == {}
    assert within(report.total / 1e9, RELEASED["debiformer_tiny"][1]), report.total


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["biformer_small", "biformer_base", "biformer_stl", "debiformer_small", "debiformer_base"]
)
def test_flops_larger_models(name):
    _check_measured(name)


# --- the released key layout, written out from models/biformer.py and models/biformer_stl.py ---

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
WB = ("weight", "bias")


def _keys(prefix, names):
    return {f"{prefix}.{n}" for n in names}


def _released_attn(prefix, topk):
    if topk > 0:  # ops/bra_legacy.py: QKVLinear, wo, lepe
        return _keys(f"{prefix}.qkv.qkv", WB) | _keys(f"{prefix}.wo", WB) | _keys(f"{prefix}.lepe", WB)
    # models/_common.py AttentionLePE: qkv without bias, proj, lepe
    return {f"{prefix}.qkv.weight"} | _keys(f"{prefix}.proj", WB) | _keys(f"{prefix}.lepe", WB)


def released_biformer_keys(depths, topks=(1, 4, 16, -2)):
    keys = _keys("downsample_layers.0.0", WB) | _keys("downsample_layers.0.1", BN)
    keys |= _keys("downsample_layers.0.3", WB) | _keys("downsample_layers.0.4", BN)
    for i in range(1, 4):
        keys |= _keys(f"downsample_layers.{i}.0", WB) | _keys(f"downsample_layers.{i}.1", BN)
    for i, depth in enumerate(depths):
        for j in range(depth):
            p = f"stages.{i}.{j}"
            keys |= _keys(f"{p}.pos_embed", WB) | _keys(f"{p}.norm1", WB) | _keys(f"{p}.norm2", WB)
            keys |= _released_attn(f"{p}.attn", topks[i])
            keys |= _keys(f"{p}.mlp.0", WB) | _keys(f"{p}.mlp.3", WB)  # Linear, Identity, GELU, Linear
    return keys | _keys("norm", BN) | _keys("head", WB)


def released_stl_keys(depths=(2, 2, 6, 2), topks=(1, 4, 16, -2)):
    keys = _keys("downsample_layers.0.0", WB) | _keys("downsample_layers.0.1", BN)
    for i in range(1, 4):  # norm, then conv
        keys |= _keys(f"downsample_layers.{i}.0", BN) | _keys(f"downsample_layers.{i}.1", WB)
    for i, depth in enumerate(depths):
        for j in range(depth):
            p = f"stages.{i}.blocks.{j}"
            keys |= _keys(f"{p}.norm1", WB) | _keys(f"{p}.norm2", WB) | _released_attn(f"{p}.attn", topks[i])
            keys |= _keys(f"{p}.mlp.0", WB) | _keys(f"{p}.mlp.2", WB)  # Linear, GELU, Linear
    return keys | _keys("norm", BN) | _keys("head", WB)


def _released_dbra(prefix):
    """DeBiLevelRoutingAttention of maclong01/DeBiFormer (router and kv_down have no parameters)."""
    keys = {f"{prefix}.rpe_table", f"{prefix}.conv_offset_q.0.weight", f"{prefix}.conv_offset_q.3.weight"}
    keys |= _keys(f"{prefix}.conv_offset_q.1.norm", WB) | _keys(f"{prefix}.qkv_conv.qkv", WB)
    for name in ("lepe1", "proj_q", "proj_k", "proj_v", "proj_out", "unifyheads1", "norm", "norm2"):
        keys |= _keys(f"{prefix}.{name}", WB)
    return keys | _released_conv_mlp(f"{prefix}.mlp")


def _released_conv_mlp(prefix):  # TransformerMLPWithConv
    return _keys(f"{prefix}.linear1.0", WB) | _keys(f"{prefix}.dwc", WB) | _keys(f"{prefix}.linear2.0", WB)


def released_debiformer_keys(depths):
    keys = _keys("downsample_layers.0.0", WB) | _keys("downsample_layers.0.1", BN)
    keys |= _keys("downsample_layers.0.3", WB) | _keys("downsample_layers.0.4", BN)
    for i in range(1, 4):
        keys |= _keys(f"downsample_layers.{i}.0", WB) | _keys(f"downsample_layers.{i}.1", BN)
    for i, depth in enumerate(depths):
        for j in range(depth):
            p = f"stages.{i}.{j}"
            keys |= _keys(f"{p}.pos_embed1", WB) | _keys(f"{p}.pos_embed2", WB)
            for n in range(1, 5):
                keys |= _keys(f"{p}.norm{n}", WB)
            keys |= _released_attn(f"{p}.attn1", 1) if i < 3 else _released_dbra(f"{p}.attn1")
            keys |= _released_dbra(f"{p}.attn2")
            keys |= _released_conv_mlp(f"{p}.mlp1") | _released_conv_mlp(f"{p}.mlp2")
    return keys | _keys("norm", BN) | _keys("head", WB)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("debiformer_tiny", released_debiformer_keys((1, 1, 4, 1))),
        ("debiformer_small", released_debiformer_keys((2, 2, 9, 3))),
        ("debiformer_base", released_debiformer_keys((2, 2, 9, 2))),
        ("biformer_tiny", released_biformer_keys((2, 2, 8, 2))),
        ("biformer_small", released_biformer_keys((4, 4, 18, 4))),
        ("biformer_base", released_biformer_keys((4, 4, 18, 4))),
        ("biformer_stl", released_stl_keys()),
    ],
)
def test_official_state_dict_has_exactly_the_released_keys(name, expected):
    assert set(to_official_state_dict(built(name))) == expected


def test_official_shapes_biformer_tiny():
    sd = to_official_state_dict(built("biformer_tiny"))
    assert sd["downsample_layers.0.0.weight"].shape == (32, 3, 3, 3)
    assert sd["stages.0.0.pos_embed.weight"].shape == (64, 1, 3, 3)
    assert sd["stages.0.0.attn.qkv.qkv.weight"].shape == (192, 64)
    assert sd["stages.0.0.attn.lepe.weight"].shape == (64, 1, 5, 5)
    assert sd["stages.2.7.mlp.0.weight"].shape == (768, 256)
    assert sd["stages.3.1.attn.qkv.weight"].shape == (1536, 512)
    assert sd["stages.3.1.attn.lepe.weight"].shape == (512, 1, 5, 5)
    assert sd["head.weight"].shape == (1000, 512)


def test_official_shapes_debiformer():
    tiny = to_official_state_dict(built("debiformer_tiny"))
    assert tiny["stages.0.0.attn2.rpe_table"].shape == (2, 111, 111)  # heads, 2·56-1, 2·56-1
    assert tiny["stages.1.0.attn2.conv_offset_q.0.weight"].shape == (64, 1, 7, 7)  # 2 groups of 64
    assert tiny["stages.1.0.attn2.conv_offset_q.3.weight"].shape == (1, 64, 1, 1)  # ONE offset channel
    assert tiny["stages.2.3.attn1.qkv.qkv.weight"].shape == (768, 256)
    assert tiny["stages.3.0.attn1.rpe_table"].shape == (16, 13, 13)
    assert tiny["stages.3.0.mlp2.linear1.0.weight"].shape == (1536, 512, 1, 1)
    small = to_official_state_dict(built("debiformer_small"))
    assert small["stages.3.2.mlp1.linear1.0.weight"].shape == (1024, 512, 1, 1)  # block MLP ratio 2
    assert small["stages.3.2.attn2.mlp.linear1.0.weight"].shape == (512, 512, 1, 1)  # DBRA MLP ratio 1
    base = to_official_state_dict(built("debiformer_base"))
    assert base["stages.2.0.attn2.conv_offset_q.0.weight"].shape == (128, 1, 5, 5)  # 3 groups of 128


def _randomize(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif name.endswith("running_var"):
                t.uniform_(0.5, 2.0)
            else:
                t.normal_(0, 0.05)
    return model.eval()


@pytest.mark.parametrize("name", ["biformer_tiny", "biformer_stl", "debiformer_tiny"])
def test_round_trip_through_released_layout(tmp_path, name):
    torch.manual_seed(1)
    src = _randomize(timm.create_model(name))
    path = tmp_path / f"{name}_in1k.pth"
    torch.save({"model": to_official_state_dict(src)}, path)
    torch.manual_seed(2)
    dst = timm.create_model(name).eval()
    load_official_checkpoint(dst, path)
    for key, value in src.state_dict().items():
        assert torch.equal(dst.state_dict()[key], value), key
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))


def test_loading_into_the_wrong_model_lists_the_problems():
    small = to_official_state_dict(built("biformer_small"))
    tiny = timm.create_model("biformer_tiny")
    with pytest.raises(
        CheckpointMismatchError, match=r"unexpected in the checkpoint \(released keys\) \(254\)"
    ):
        load_official_checkpoint(tiny, small)


# --- timm API ---


@pytest.fixture
def tiny():
    return built("biformer_tiny")


def test_forward_features_and_head(tiny):
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        feats = tiny.forward_features(x)
        assert feats.shape == (2, 512, 4, 4)
        assert tiny.forward_head(feats, pre_logits=True).shape == (2, 512)
        torch.testing.assert_close(tiny.forward_head(feats), tiny(x))


def test_num_classes_and_reset_classifier():
    model = timm.create_model("biformer_tiny", num_classes=10).eval()
    x = torch.randn(1, 3, 112, 112)
    assert model(x).shape == (1, 10)
    model.reset_classifier(0)
    assert model(x).shape == (1, 512)
    stl = timm.create_model("biformer_stl", num_classes=0)
    assert stl.forward_head(torch.randn(1, 768, 7, 7)).shape == (1, 768)


def test_features_only():
    model = timm.create_model("biformer_tiny", features_only=True, out_indices=(1, 3)).eval()
    assert model.feature_info.channels() == [128, 512]
    assert model.feature_info.reduction() == [8, 32]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 112, 112))
    assert [tuple(f.shape) for f in feats] == [(1, 128, 14, 14), (1, 512, 4, 4)]


def test_forward_intermediates_match_stage_outputs(tiny):
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        final, inter = tiny.forward_intermediates(x, indices=[0, 3])
        torch.testing.assert_close(final, tiny.forward_features(x))
    assert [f.shape[1] for f in inter] == [64, 512]


def test_pretrained_is_refused_with_the_way_to_load():
    with pytest.raises(ValueError, match="load_official_checkpoint"):
        timm.create_model("biformer_tiny", pretrained=True)


def test_bad_configuration_is_explained():
    with pytest.raises(ValueError, match="'topks'"):
        timm.create_model("biformer_tiny", topks=(1, 4, 0, -2))
    with pytest.raises(ValueError, match="'depths'.*4 entries"):
        attnbench.models.BiFormer(depths=(2, 2, 8))
    with pytest.raises(ValueError, match="'topk' = 64"):
        timm.create_model("biformer_tiny", topks=(1, 4, 64, -2))


def test_auto_pad_allows_sizes_not_divisible_by_n_win():
    x = torch.randn(1, 3, 128, 128)  # stages 1-3 are 32, 16, 8: not multiples of 7
    with pytest.raises(ValueError, match="auto_pad=True"):
        timm.create_model("biformer_tiny", num_classes=0)(x)
    model = timm.create_model("biformer_tiny", num_classes=0, auto_pad=True).eval()
    with torch.no_grad():
        assert model(x).shape == (1, 512)


# --- stage-4 attention ---


def test_attention_lepe_is_global_attention_plus_conv_of_the_input():
    torch.manual_seed(0)
    m = AttentionLePE(64, 8).eval()
    x = torch.randn(2, 5, 6, 64)
    B, H, W, C = x.shape
    q, k, v = m.qkv(x).reshape(B, H * W, 3, 8, 8).permute(2, 0, 3, 1, 4)
    attn = ((q @ k.transpose(-2, -1)) * 8**-0.5).softmax(-1)
    out = (attn @ v).transpose(1, 2).reshape(B, H, W, C)
    lepe = m.lepe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    torch.testing.assert_close(m(x), m.proj(out + lepe), rtol=1e-5, atol=1e-5)
    assert m.qkv.bias is None


def test_attention_lepe_analytic_flops_equal_fvcore():
    m = AttentionLePE(128, 8)
    report = attnbench.count_flops(m, torch.randn(1, 7, 7, 128), cross_check=False)
    assert report.total == sum(m.analytic_flops(7, 7).values())


# --- the models table ---


def test_paper_table_yaml_matches_published_numbers():
    study = yaml.safe_load((ROOT / "studies" / "paper_table.yaml").read_text())
    table = {entry["name"]: entry for entry in study["models"]}
    numbers = published_numbers()
    assert set(table) == set(numbers)
    for name, entry in table.items():
        expected = {k: v for k, v in numbers[name].items() if k != "counted"}
        assert entry["published"] == expected, name
        assert entry["counted"] == numbers[name]["counted"], name


def test_measure_model_unknown_name():
    with pytest.raises(ValueError, match="unknown model 'biformer_tiniest'.*biformer_tiny"):
        measure_model("biformer_tiniest")
