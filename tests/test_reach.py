"""The reach task and the isotropic backbone it trains (issue: how far each attention sees).

Gates of the dataset: no rule that looks at one marked glyph alone, and no pixel statistic, scores
above 60 %; a matcher that compares the two marked glyphs scores at least 98 %. And the backbone's
no-leak property: with an attention that lets each token see only itself, the logits are a sum of
per-token terms, so nothing but the attention can bring two far glyphs together.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnbench import AttentionMechanism, register_mechanism
from attnbench.ablation import load_dataset
from attnbench.ablation.backbone import build_backbone
from attnbench.ablation.data.probes import held_out_accuracy, logistic_pixels, split_half
from attnbench.ablation.data.reach import ReachConfig, generate, glyph_set, matcher_accuracy

CFG = ReachConfig()  # the first design (framed glyphs), which the pilots used
# the design the study uses: one glyph per token, the marked pair bright, on an 8x8 token map
BRIGHT = ReachConfig(resolution=32, patch=4, glyph=4, mark="bright", distances=(1, 2, 3, 4, 5, 6, 7))
DESIGNS = {"frame": CFG, "bright": BRIGHT}


@pytest.fixture(scope="module", params=sorted(DESIGNS))
def design(request):
    cfg = DESIGNS[request.param]
    n = 200 * len(cfg.distances)
    return cfg, generate(cfg, n, 5, stratified=True)


@pytest.fixture(scope="module")
def split():
    return generate(CFG, 1200, 5, stratified=True)


def test_generation_is_deterministic_stratified_and_of_constant_ink(design):
    CFG, split = design
    again = generate(CFG, len(split.labels), 5, stratified=True)
    assert (again.images == split.images).all() and (again.labels == split.labels).all()
    for d in CFG.distances:  # 200 images per distance, 100 of each class
        at = split.distances == d
        assert at.sum() == 200 and split.labels[at].sum() == 100
    ink = split.images.reshape(len(split.images), -1).astype(np.int64).sum(1)
    assert len(set(ink.tolist())) == 1  # every image holds the same amount of ink
    rows, cols = split.marked[:, 1, 0] - split.marked[:, 0, 0], split.marked[:, 1, 1] - split.marked[:, 0, 1]
    assert (np.maximum(abs(rows), abs(cols)) == split.distances).all()  # Chebyshev, in tokens
    glyphs = glyph_set(CFG.glyph, CFG.n_glyphs, CFG.ink, CFG.glyph_seed)
    assert len({g.tobytes() for g in glyphs}) == CFG.n_glyphs and (glyphs.sum((1, 2)) == CFG.ink).all()


def test_a_matcher_that_compares_the_two_glyphs_is_right(design):
    CFG, split = design
    assert matcher_accuracy(split, CFG) >= 0.98


def test_bright_marking_puts_one_glyph_in_a_token_and_marks_only_the_pair():
    split = generate(BRIGHT, 70, 2)
    p = BRIGHT.patch
    tiles = split.images.reshape(70, 8, p, 8, p).transpose(0, 1, 3, 2, 4)
    lit = (tiles > 0).any(axis=(3, 4))
    bright = (tiles == 255).any(axis=(3, 4))
    assert (bright.sum((1, 2)) == 2).all() and (lit.sum((1, 2)) == 2 + BRIGHT.n_distractors).all()
    for i in range(70):
        for r, c in split.marked[i]:
            assert bright[i, r, c]  # the marked tokens are the bright ones
    assert set(np.unique(split.images).tolist()) == {0, 96, 255}


@pytest.mark.parametrize("which", [0, 1])
def test_one_marked_glyph_alone_says_nothing(design, which):
    CFG, split = design
    # the best rule on one glyph's identity: the majority label of each glyph, fit on one half
    fit = split_half(len(split.labels), 0)
    g, y = split.glyphs[:, which], split.labels
    rate = np.array(
        [y[fit & (g == k)].mean() if (fit & (g == k)).any() else 0.5 for k in range(CFG.n_glyphs)]
    )
    accuracy = ((rate[g[~fit]] > 0.5) == (y[~fit] == 1)).mean()
    assert accuracy <= 0.60, accuracy


def test_pixel_statistics_say_nothing(design):
    CFG, split = design
    ink = split.images.reshape(len(split.images), -1).astype(np.float64).sum(1)
    assert held_out_accuracy(ink, split.labels) <= 60.0
    bright = (split.images == 255).reshape(len(split.images), -1).sum(1).astype(np.float64)
    assert held_out_accuracy(bright, split.labels) <= 60.0
    distance = split.distances.astype(np.float64)  # drawn apart from the label
    assert held_out_accuracy(distance, split.labels) <= 60.0
    fit = split_half(len(split.labels), 1)
    p = logistic_pixels(split.images[fit], split.labels[fit], split.images[~fit], lams=(1e-2, 1.0))
    assert ((p > 0.5) == (split.labels[~fit] == 1)).mean() <= 0.60


def test_the_loader_gives_a_stratified_val_split_with_its_distances():
    data = load_dataset(
        {"name": "reach", "train_size": 64, "val_size": 120, "train_images": "per_seed"}, train_seed=3
    )
    assert data.img_size == 32 and data.num_classes == 2 and len(data.val) == 120
    assert sorted(set(data.info["val_distances"])) == list(CFG.distances)
    other = load_dataset(
        {"name": "reach", "train_size": 64, "val_size": 120, "train_images": "per_seed"}, train_seed=4
    )
    assert not torch.equal(data.train.images, other.train.images)  # each seed its own images
    assert torch.equal(data.val.images, other.val.images)  # one val split


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"distances": (2,)}, "out of range"),
        ({"distances": (14,)}, "out of range"),
        ({"glyph": 5}, "multiple of patch"),
        ({"ink": 0}, "do not fit"),
        ({"mark": "circle"}, "not one of frame, bright"),
        ({"mark": "bright", "glyph": 4, "patch": 2}, "inside one token"),
        ({"mark": "bright", "patch": 4, "distances": (8,)}, "out of range"),
    ],
)
def test_bad_settings_say_what_is_wrong(fields, message):
    with pytest.raises(ValueError, match=message):
        ReachConfig(**fields)


@pytest.fixture
def self_only(temp_registry):
    @register_mechanism("self_only")
    class SelfOnly(AttentionMechanism):
        """Attention with zero reach: each token attends to itself (its value projection)."""

        def __init__(self, dim, num_heads):
            super().__init__(dim, num_heads)
            self.v = torch.nn.Linear(dim, dim)

        def forward(self, x):
            return self.v(x)

    return "self_only"


def test_the_isotropic_backbone_leaks_nothing_but_through_attention(self_only, split):
    torch.manual_seed(0)

    def built(name):  # weights larger than at initialisation, so that any coupling shows
        m = build_backbone(name, preset="iso-16", num_classes=2, in_chans=1).double().eval()
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0, 0.3)
        return m

    model = built(self_only)
    assert len(model.stages) == 1 and model.map_sizes == [16]
    x = torch.as_tensor(split.images[:8, None]).double() / 255
    a, b = torch.zeros_like(x), torch.zeros_like(x)
    a[..., :16, :] = x[..., :16, :]  # the top half of each image
    b[..., 16:, :] = x[..., 16:, :]  # the bottom half
    with torch.no_grad():
        f = model(x) - model(a) - model(b) + model(torch.zeros_like(x))
    # a sum of per-token terms: the two halves never meet, so the cross term is zero
    assert f.abs().max() < 1e-10, f.abs().max()
    global_model = built("vanilla")
    with torch.no_grad():
        g = global_model(x) - global_model(a) - global_model(b) + global_model(torch.zeros_like(x))
    assert g.abs().max() > 1e-5  # global attention does bring the halves together


def test_the_reach_pilots_validate():
    from pathlib import Path

    from attnbench.study import load_study

    studies = Path(__file__).resolve().parents[1] / "studies"
    for name in ("reach-pilot.yaml", "reach-pilot2.yaml", "reach-pilot3.yaml"):
        study = load_study(studies / name)
        assert study.datasets[0]["name"] == "reach" and study.backbone["preset"] == "iso-16"
        assert {r[1] for r in study.runs()} == {"vanilla"}


def test_the_bright_readout_reads_only_the_marked_tokens_and_leaks_nothing(self_only):
    """``iso-8`` with ``readout: bright`` (the study's backbone): the head averages the tokens whose
    pixels are lit at 255. With a self-only attention the logits of an image are the mean of what
    each marked glyph gives alone, so "same" cannot be told from "different" (docs/ablation.md);
    distractors and blank tokens change nothing."""
    torch.manual_seed(0)
    split = generate(BRIGHT, 8, 3)

    def built(name):
        m = build_backbone(name, preset="iso-8", num_classes=2, in_chans=1, readout="bright").double().eval()
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0, 0.3)
        return m

    def norm(images):  # the loader's normalization: mean 0.5, std 0.5
        return (torch.as_tensor(images[:, None]).double() / 255 - 0.5) / 0.5

    p = BRIGHT.patch
    x = split.images.copy()
    only = [np.zeros_like(x), np.zeros_like(x)]
    for i in range(len(x)):
        for k, (r, c) in enumerate(split.marked[i]):
            only[k][i, r * p : (r + 1) * p, c * p : (c + 1) * p] = x[
                i, r * p : (r + 1) * p, c * p : (c + 1) * p
            ]
    model = built(self_only)
    assert model.map_sizes == [8] and len(model.stages[0].blocks) == 2
    with torch.no_grad():
        both, a, b = model(norm(x)), model(norm(only[0])), model(norm(only[1]))
    assert (both - (a + b) / 2).abs().max() < 1e-10  # an average of per-glyph terms
    global_model = built("vanilla")
    with torch.no_grad():
        g = global_model(norm(x)) - (global_model(norm(only[0])) + global_model(norm(only[1]))) / 2
    assert g.abs().max() > 1e-5  # global attention brings the glyphs together
    with pytest.raises(ValueError, match="one-stage"):
        build_backbone("vanilla", preset="stl-nano", num_classes=2, in_chans=1, readout="bright")
    with pytest.raises(ValueError, match="readout"):
        build_backbone("vanilla", preset="iso-8", num_classes=2, in_chans=1, readout="max")


def test_maps_of_a_reach_run_query_the_two_marked_glyphs():
    from attnbench.kinds.ablation.maps import _reach_geometry, _reach_queries

    cfg = {
        "name": "reach",
        "resolution": 32,
        "patch": 4,
        "glyph": 4,
        "mark": "bright",
        "distances": [1, 2, 3, 4, 5, 6, 7],
        "val_size": 70,
        "train_size": 32,
        "seed": 0,
    }
    data = load_dataset(cfg, train_seed=1)
    geo = _reach_geometry(data, cfg)
    assert geo is not None
    split, _ = geo
    queries = _reach_queries(geo, 5)
    assert [q[1] for q in queries] == [(r * 4 + 2.0, c * 4 + 2.0) for r, c in split.marked[5]]


def test_the_reach_study_validates_with_its_declared_design():
    from pathlib import Path

    from attnbench.study import load_study

    study = load_study(Path(__file__).resolve().parents[1] / "studies" / "reach.yaml")
    runs = study.runs()
    assert len(runs) == 19 * 6 and study.backbone == {"preset": "iso-8", "readout": "bright"}
    bra = {(r[2]["n_win"], r[2]["topk"]) for r in runs if r[1] == "bra"}
    assert bra == {(s, k) for s in (4, 8) for k in (1, 2, 4, 8)}
    assert len({r[1] for r in runs}) == 12  # every mechanism


def test_the_gpu_reach_study_validates():
    from pathlib import Path

    from attnbench.study import load_study

    path = Path(__file__).resolve().parents[1] / "studies" / "reach-gpu.yaml"
    study = load_study(path, device="cpu")  # validated here, run on a GPU
    assert len(study.runs()) == 19 * 6 and study.backbone["preset"] == "iso-16"
