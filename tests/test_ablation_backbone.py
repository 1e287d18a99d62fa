"""The ablation backbone: every registered mechanism trains in it, per-stage parameters, presets, errors."""

import re

import pytest
import timm
import torch

import attnbench
import attnbench.models  # registers the seed models with timm
from attnbench.ablation.backbone import PRESETS, build_backbone
from attnbench.ablation.train import probe_dispatch
from tests.conftest import MECHANISMS


def attention_modules(model):
    return [block.attn for stage in model.stages for block in stage.blocks]


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_every_mechanism_runs_forward_and_backward(mechanism):
    model = build_backbone(mechanism, preset="stl-nano", num_classes=3, in_chans=1, img_size=32)
    x = torch.randn(2, 1, 32, 32)
    out = model(x)
    assert out.shape == (2, 3)
    out.logsumexp(dim=1).sum().backward()
    for stage in range(3):  # the mechanism's own stages: every parameter gets a finite gradient
        for name, p in model.stages[stage].named_parameters():
            if p.requires_grad:
                assert p.grad is not None and torch.isfinite(p.grad).all(), f"stage {stage} {name}"
    kinds = {type(a).name for a in attention_modules(model)}
    assert kinds == {mechanism, "vanilla"}  # stl-nano: the last stage is global


def test_only_the_attention_differs():
    a = build_backbone("vanilla", preset="stl-nano", num_classes=2, in_chans=1)
    b = build_backbone("swin", preset="stl-nano", num_classes=2, in_chans=1)
    strip = {n: p.shape for n, p in a.named_parameters() if ".attn." not in n}
    assert strip == {n: p.shape for n, p in b.named_parameters() if ".attn." not in n}


def test_cpu_dispatch_trains_without_flex_or_natten():
    # on CPU neither FlexAttention nor NATTEN has a backward: the project's own paths must run
    lines = {}
    for mechanism in ("bra", "neighborhood", "dilated"):
        model = build_backbone(mechanism, preset="stl-nano", num_classes=2, in_chans=1)
        lines[mechanism] = probe_dispatch(model, torch.device("cpu"), amp=False)
    assert any("chosen" in line for line in lines["bra"])
    assert not any("'flex' chosen" in line for line in lines["bra"])
    for mechanism in ("neighborhood", "dilated"):
        assert lines[mechanism] and all("backend 'tiled'" in line for line in lines[mechanism])


def test_stage_parameters_precedence_and_cycling():
    stage_params = {"swin": [{"window_size": 4}, {}, {"shift_size": [0, None]}, {}]}
    model = build_backbone("swin", preset="stl-nano", stage_params=stage_params, num_classes=2, in_chans=1)
    attn = attention_modules(model)  # depths 1, 1, 2, 1
    assert [a.window_size for a in attn[:4]] == [4, 4, 2, 2]  # stage 0 overridden, others the preset's
    assert [a.shift_size for a in attn[2:4]] == [0, 1]  # cycled over the blocks of stage 2
    model = build_backbone(
        "swin", {"window_size": 2}, preset="stl-nano", stage_params=stage_params, in_chans=1
    )
    assert [a.window_size for a in attention_modules(model)[:4]] == [2, 2, 2, 2]  # study params win
    described = model.describe()
    assert described[0]["map"] == 16 and described[0]["blocks"][0] == {
        "mechanism": "swin",
        "window_size": 2,
    }


def test_study_params_apply_to_every_mechanism_stage():
    model = build_backbone("bra", {"n_win": 2, "topk": 3}, preset="stl-nano", in_chans=1)
    attn = attention_modules(model)
    assert [(a.n_win, a.topk) for a in attn[:-1]] == [(2, 3)] * 4
    assert type(attn[-1]).name == "vanilla"


def test_stl_is_the_biformer_stl_layout():
    # with BRA the stl preset is BiFormer-STL (docs/reference-numbers.md); the one difference is
    # stage 4, which here is BRA with top-k = all regions (qkv with bias) instead of global
    # attention without qkv bias
    ours = build_backbone("bra", preset="stl", num_classes=1000, in_chans=3)
    ref = timm.create_model("biformer_stl")

    def count(m):
        return sum(p.numel() for p in m.parameters())

    for i in range(3):
        assert count(ours.stages[i]) == count(ref.stages[i])
    for i in range(4):
        assert count(ours.downsample_layers[i]) == count(ref.downsample_layers[i])
    assert count(ours) - count(ref) == 2 * 3 * 768  # two blocks' qkv bias
    assert ours.map_sizes == [56, 28, 14, 7] and ours.patch_size == 4


@pytest.mark.parametrize(
    ("preset", "img_size", "patch"), [("stl-s32", 128, 4), ("stl-s32", 32, 1), ("stl-nano", 64, 4)]
)
def test_patch_size_follows_the_input(preset, img_size, patch):
    depths = (1, 1, 1, 1)
    model = build_backbone("vanilla", preset=preset, img_size=img_size, depths=depths, dims=(32, 32, 32, 32))
    assert model.patch_size == patch and model.map_sizes[0] == PRESETS[preset].stage1_map


def test_errors_name_the_setting():
    with pytest.raises(ValueError, match=r"stage 0 \(16x16 map.*n_win = 5"):
        build_backbone("bra", {"n_win": 5, "topk": 1}, preset="stl-nano")
    with pytest.raises(ValueError, match="stage 1.*kernel_size"):
        build_backbone(
            "neighborhood", preset="stl-nano", stage_params={"neighborhood": [{}, {"kernel_size": 9}, {}, {}]}
        )
    with pytest.raises(ValueError, match="preset"):
        build_backbone("vanilla", preset="stl-huge")
    with pytest.raises(ValueError, match="unknown keys"):
        build_backbone("vanilla", preset="stl-nano", depth=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="4 mappings"):
        build_backbone("bra", preset="stl-nano", stage_params={"bra": [{"n_win": 2}]})
    with pytest.raises(ValueError, match="no parameters"):
        build_backbone("vanilla", {"n_win": 2}, preset="stl-nano")
    with pytest.raises(ValueError, match="patch_size"):
        build_backbone("vanilla", preset="stl-nano", img_size=36)
    with pytest.raises(ValueError, match="unknown mechanism"):
        build_backbone("brra", preset="stl-nano")


def test_flops_are_counted_for_the_whole_backbone():
    model = build_backbone("bra", {"n_win": 4, "topk": 4}, preset="stl-nano", num_classes=2, in_chans=1)
    report = attnbench.count_flops(model, model.example_input(1), cross_check=False)
    attn = sum(v for k, v in report.by_module.items() if re.fullmatch(r"stages\.\d+\.blocks\.\d+\.attn", k))
    expected = sum(
        sum(a.analytic_flops(s, s).values())
        for stage, s in zip(model.stages, model.map_sizes)
        for a in (b.attn for b in stage.blocks)
    )
    assert report.uncounted == {} and attn == expected
