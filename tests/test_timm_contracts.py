"""The seed models as timm users use them: timm's public model contracts, checked here in our own words.

What a timm model promises (timm's docs and model API): ``forward_features`` gives the unpooled
last-stage map, of ``pool_size`` at the config's ``input_size`` and ``num_features`` channels;
``forward_head(x, pre_logits=True)`` gives what the classifier reads (``head_hidden_size``
channels); ``reset_classifier(0)`` makes ``forward`` return pooled features and
``reset_classifier(0, '')`` the unpooled (B, C, H, W) map; ``features_only=True`` gives one map per
``feature_info`` entry with its channels and reduction; the model traces with torch.fx (timm's FX
feature extraction); ``set_grad_checkpointing`` changes memory, not results; ``no_weight_decay``
names the parameters the optimizer factory leaves out of weight decay.

The default run uses the three smallest models (one per class) and small inputs; the other models
and the detection sizes (512x640, 800x1216) are ``slow``.
"""

from __future__ import annotations

import copy
import functools
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import get_notrace_functions, get_notrace_modules
from timm.models import create_feature_extractor
from timm.optim import create_optimizer_v2
from torch import nn

import attnbench
from attnbench.mechanism import AttentionMechanism
from attnbench.models import DENSE_PREDICTION, SEED_MODELS, AttentionLePE
from attnbench.models._base import crop_like, pad_to_min_size
from tests.test_checkpoint import ReleasedBRA

SMALL = ("biformer_tiny", "biformer_stl", "debiformer_tiny")  # one of each class
LARGER = tuple(name for name in SEED_MODELS if name not in SMALL)
ALL = [*SMALL, *(pytest.param(name, marks=pytest.mark.slow) for name in LARGER)]


@functools.cache
def built(name: str) -> nn.Module:
    """One default instance per model for the tests that only read it."""
    torch.manual_seed(0)
    return timm.create_model(name).eval()


def _attentions(model: nn.Module) -> list[AttentionMechanism]:
    return [m for m in model.modules() if isinstance(m, AttentionMechanism)]


# --- the classification contracts ---


@pytest.mark.parametrize("name", ALL)
def test_default_cfg_describes_the_model(name):
    model = built(name)
    cfg = model.pretrained_cfg
    state = model.state_dict()
    assert f"{cfg['first_conv']}.weight" in state and f"{cfg['classifier']}.weight" in state
    assert model.num_classes == cfg["num_classes"] and model.num_features == model.head_hidden_size > 0
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, *cfg["input_size"]))
    assert feats.shape == (1, model.num_features, *cfg["pool_size"])


@pytest.mark.parametrize("name", SMALL)
def test_forward_head_pre_logits_is_what_the_head_reads(name):
    model = built(name)
    feats = torch.randn(2, model.num_features, 4, 5)
    with torch.no_grad():
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.head_hidden_size)
        torch.testing.assert_close(pre, feats.mean(dim=(2, 3)))
        torch.testing.assert_close(model.get_classifier()(pre), model.forward_head(feats))


@pytest.mark.parametrize("name", SMALL)
def test_reset_classifier_without_pooling_gives_the_unpooled_map(name):
    model = copy.deepcopy(built(name))
    model.reset_classifier(7)
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert model.forward_head(feats).shape == (1, 7)
        model.reset_classifier(0)  # pooling kept
        assert model.num_classes == 0 and model.forward_head(feats).shape == (1, model.num_features)
        model.reset_classifier(0, "")  # no classifier, no pooling
        torch.testing.assert_close(model(x), feats)
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats)
        model.reset_classifier(5, "avg")
        assert model.forward_head(feats).shape == (1, 5)
        unpooled = timm.create_model(name, num_classes=0, global_pool="").eval()
        assert unpooled(x).shape == feats.shape


def test_head_settings_that_cannot_work_are_explained():
    model = timm.create_model("biformer_tiny", num_classes=0, global_pool="")
    with pytest.raises(ValueError, match="needs num_classes = 0"):
        model.reset_classifier(10)  # keeps global_pool='': a linear head needs pooled features
    with pytest.raises(ValueError, match="global_pool = 'max' is not supported"):
        model.reset_classifier(0, "max")
    with pytest.raises(ValueError, match="needs num_classes = 0"):
        timm.create_model("debiformer_tiny", global_pool="")


def test_min_input_size_is_the_smallest_input_of_the_classification_models():
    """BiFormer's classification models keep the released n_win = 7 without padding: the maps of
    stages 1-3 must be multiples of 7, 112² at the smallest. DeBiFormer pads (as released)."""
    model = built("biformer_tiny")
    assert model.pretrained_cfg["min_input_size"] == (3, 112, 112)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 112, 112)).shape == (1, 1000)
        with pytest.raises(ValueError, match="auto_pad=True"):
            model(torch.randn(1, 3, 96, 96))
        assert built("debiformer_tiny")(torch.randn(1, 3, 96, 80)).shape == (1, 1000)
    assert "min_input_size" not in built("debiformer_tiny").pretrained_cfg


# --- backbones: features_only ---


def _check_features(model: nn.Module, size: tuple[int, int], batch: int = 1) -> list[torch.Tensor]:
    with torch.no_grad():
        feats = model(torch.randn(batch, 3, *size))
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert [f.shape[1] for f in feats] == channels
    for f, r in zip(feats, reductions):
        for side, n in zip(f.shape[2:], size):
            assert side in (n // r, math.ceil(n / r)), (tuple(f.shape), size, r)
        assert f.shape[0] == batch and torch.isfinite(f).all()
    return feats


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("size", [(57, 91), (96, 96)])
def test_features_only_takes_any_input_size(name, size):
    """Maps not divisible by n_win, and maps smaller than n_win (stage 3 at 96² is 6 x 6 < 7)."""
    model = timm.create_model(name, features_only=True).eval()
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    _check_features(model, size)


def test_features_only_pads_unless_told_otherwise():
    model = timm.create_model("biformer_tiny", features_only=True, out_indices=(2, 3))
    bras = [m for m in _attentions(model) if m.name == "bra"]
    assert bras and all(m.auto_pad for m in bras)
    strict = timm.create_model("biformer_tiny", features_only=True, auto_pad=False)
    assert not any(getattr(m, "auto_pad", False) for m in _attentions(strict))


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_released_dense_prediction_settings(task):
    """As the released COCO / ADE20K configs build BiFormer: n_win 16 / 8, auto_pad."""
    assert DENSE_PREDICTION == {
        "detection": {"n_win": 16, "auto_pad": True},
        "segmentation": {"n_win": 8, "auto_pad": True},
    }
    model = timm.create_model("biformer_tiny", features_only=True, **DENSE_PREDICTION[task]).eval()
    bras = [m for m in _attentions(model) if m.name == "bra"]
    assert len(bras) == 12 and all(m.n_win == DENSE_PREDICTION[task]["n_win"] and m.auto_pad for m in bras)
    _check_features(model, (96, 128))  # stage 2 is 12 x 16, stage 3 6 x 8: smaller than 16 regions


def test_a_released_classification_checkpoint_loads_into_a_dense_backbone():
    """n_win changes no parameter shape: ImageNet weights start a detection backbone (as the released
    dense code starts); only the classifier's head and final norm are left over."""
    released = attnbench.models.to_official_state_dict(built("biformer_tiny"))
    backbone = timm.create_model("biformer_tiny", features_only=True, **DENSE_PREDICTION["detection"])
    result = attnbench.models.load_official_checkpoint(backbone.model, {"model": released}, strict=False)
    assert result.missing == [] and {k.split(".")[0] for k in result.unexpected} == {"head", "norm"}
    for key, value in backbone.model.state_dict().items():
        assert torch.equal(value, built("biformer_tiny").state_dict()[key]), key


def test_a_map_smaller_than_n_win_is_computed_as_the_released_auto_pad_computes_it():
    """The released BRA pads a 5 x 9 map to 7 x 14 for n_win 7; ours refuses maps smaller than
    n_win, so the blocks pad them up to n_win first: the result is the released one."""
    torch.manual_seed(0)
    ref = ReleasedBRA(32, 1, 7, 3, auto_pad=True)
    for p in ref.parameters():
        nn.init.normal_(p, std=0.2)
    ours = attnbench.build_mechanism("bra", 32, 1, n_win=7, topk=3, auto_pad=True)
    attnbench.models.load_official_checkpoint(ours, ref.state_dict())
    x = torch.randn(2, 5, 9, 32)
    with pytest.raises(ValueError, match="smaller than n_win"):
        ours(x)
    with torch.no_grad():
        out = crop_like(ours(pad_to_min_size(x, 7)), x)
        torch.testing.assert_close(out, ref(x), rtol=1e-5, atol=1e-5)
    assert pad_to_min_size(x, 5) is x and crop_like(x, x) is x  # nothing to do: the same tensor


@pytest.mark.slow
@pytest.mark.parametrize("size", [(512, 640), (800, 1216)])
@pytest.mark.parametrize("name", SEED_MODELS)
def test_features_only_at_detection_and_segmentation_sizes(name, size):
    model = timm.create_model(name, features_only=True).eval()
    feats = _check_features(model, size)
    expected = [(size[0] // r, size[1] // r) for r in (4, 8, 16, 32)]  # both sides divisible by 32
    assert [tuple(f.shape[2:]) for f in feats] == expected


@pytest.mark.slow
@pytest.mark.parametrize(("task", "size"), [("detection", (800, 1216)), ("segmentation", (512, 640))])
@pytest.mark.parametrize("name", ["biformer_small", "biformer_base"])
def test_released_dense_prediction_backbones(name, task, size):
    model = timm.create_model(name, features_only=True, **DENSE_PREDICTION[task]).eval()
    feats = _check_features(model, size)
    assert [tuple(f.shape[2:]) for f in feats] == [(size[0] // r, size[1] // r) for r in (4, 8, 16, 32)]


# --- torch.fx ---


def _fx(model: nn.Module, nodes: dict[str, str] | None = None) -> nn.Module:
    """timm's FX feature extraction of ``model`` (its leaf modules and functions)."""
    return create_feature_extractor(model, return_nodes=nodes or {"stages.3": "out"})


def test_every_mechanism_is_an_fx_leaf_and_the_padding_helpers_are_traced_as_calls():
    assert AttentionMechanism in get_notrace_modules()
    assert {pad_to_min_size, crop_like} <= set(get_notrace_functions())


@pytest.mark.parametrize("name", ["biformer_tiny", "debiformer_tiny"])
def test_fx_feature_extraction_equals_the_model(name):
    torch.manual_seed(0)
    fx_features = timm.create_model(name, features_only=True, feature_cls="fx").eval()
    torch.manual_seed(0)
    features = timm.create_model(name, features_only=True).eval()
    x = torch.randn(1, 3, 72, 100)
    with torch.no_grad():
        for a, b in zip(fx_features(x), features(x)):
            assert torch.equal(a, b)


def test_fx_traced_model_trains():
    torch.manual_seed(0)
    model = timm.create_model("debiformer_tiny", num_classes=5).train()
    traced = create_feature_extractor(model, return_nodes={"head": "logits"})
    out = traced(torch.randn(2, 3, 32, 32))["logits"]
    assert out.shape == (2, 5)
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_the_input_check_skips_fx_proxies_and_keeps_eager_errors():
    torch.manual_seed(0)
    attn = AttentionLePE(64, 8).eval()
    traced = torch.fx.symbolic_trace(attn)  # the check reads a Proxy's shape: skipped
    x = torch.randn(2, 5, 6, 64)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), attn(x))
    with pytest.raises(ValueError, match="looks channels-first"):
        attn(x.permute(0, 3, 1, 2))
    bra = attnbench.build_mechanism("bra", 64, 2, n_win=7)
    with pytest.raises(ValueError, match="not divisible by n_win = 7"):
        bra(torch.randn(1, 8, 8, 64))


# --- training conventions ---


@pytest.mark.parametrize("name", SMALL)
def test_grad_checkpointing_gives_the_same_outputs_and_gradients(name, monkeypatch):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=4, drop_path_rate=0.1, auto_pad=True).train()
    x = torch.randn(2, 3, 32, 32)
    checkpointed = []
    real = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(
        torch.utils.checkpoint, "checkpoint", lambda *a, **k: checkpointed.append(1) or real(*a, **k)
    )

    def run(checkpointing: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        model.set_grad_checkpointing(checkpointing)
        torch.manual_seed(1)  # the same drop-path draws
        out = model(x)
        F.cross_entropy(out, torch.tensor([0, 3])).backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    plain_out, plain_grads = run(False)
    assert not checkpointed
    ckpt_out, ckpt_grads = run(True)
    blocks = sum(len(getattr(stage, "blocks", stage)) for stage in model.stages)
    assert model.grad_checkpointing and len(checkpointed) == blocks  # each block recomputed in backward
    torch.testing.assert_close(ckpt_out, plain_out, rtol=1e-5, atol=1e-6)
    for n, g in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[n], g, rtol=1e-4, atol=1e-6, msg=n)


def test_no_weight_decay_names_the_bias_tables_and_the_optimizer_honours_it():
    debi = built("debiformer_tiny")
    tables = {n for n, _ in debi.named_parameters() if n.endswith("rpe_table")}
    assert len(tables) == 8 and debi.no_weight_decay() == tables  # attn2 everywhere, attn1 in stage 4
    assert built("biformer_tiny").no_weight_decay() == set()
    optimizer = create_optimizer_v2(debi, "adamw", lr=1e-3, weight_decay=0.05)
    no_decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    for n, p in debi.named_parameters():
        assert (id(p) in no_decay) == (n in tables or p.ndim <= 1), n
