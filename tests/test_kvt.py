"""KVT k-NN attention: against the released forward re-written here, against dense attention, FLOPs."""

import pytest
import torch

import attnbench

NANO = {"preset": "stl-nano"}
PATHFINDER = {"name": "pathfinder", "resolution": 32, "difficulty": "easy"}


def released_knn_attention(qkv, proj, x, num_heads: int, topk: int) -> torch.Tensor:
    """The forward of KVT's released ``kNNAttention`` on a token sequence, step by step as written
    there: a 0/1 mask filled by scattering ones at the top-k indices, ``torch.where`` to -inf."""
    B, N, C = x.shape
    qkv = qkv(x).reshape(B, N, 3, num_heads, C // num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q @ k.transpose(-2, -1)) * (C // num_heads) ** -0.5
    mask = torch.zeros(B, num_heads, N, N)
    index = torch.topk(attn, k=topk, dim=-1, largest=True)[1]
    mask.scatter_(-1, index, 1.0)
    attn = torch.where(mask > 0, attn, torch.full_like(attn, float("-inf")))
    attn = attn.softmax(dim=-1)
    return proj((attn @ v).transpose(1, 2).reshape(B, N, C))


def grads(m, x, out):
    """Input and parameter gradients of a fixed random projection of ``out``."""
    g = torch.Generator().manual_seed(7)
    weight = torch.randn(out.shape, generator=g)
    names = [n for n, _ in m.named_parameters()]
    got = torch.autograd.grad((out * weight).sum(), [x, *m.parameters()])
    return dict(zip(["input", *names], got))


@pytest.mark.parametrize(
    "H,W,C,heads,topk",
    [(14, 14, 32, 2, 100), (14, 14, 32, 2, 1), (13, 17, 48, 3, 37), (7, 9, 32, 4, 63), (8, 8, 64, 2, 5)],
)
def test_matches_released_forward_and_gradients(H, W, C, heads, topk):
    m = attnbench.build_mechanism("kvt", C, heads, topk=topk)
    x = torch.randn(2, H, W, C, requires_grad=True)
    out = m(x)
    ref = released_knn_attention(m.qkv, m.proj, x.flatten(1, 2), heads, topk).view(2, H, W, C)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    ours, theirs = grads(m, x, out), grads(m, x, ref)
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("topk", [14 * 14, 500])
def test_topk_at_least_the_map_is_dense_attention(topk):
    """topk = H·W keeps every key (and a larger topk keeps them all too): vanilla's output."""
    m = attnbench.build_mechanism("kvt", 32, 2, topk=topk)
    dense = attnbench.build_mechanism("vanilla", 32, 2)
    dense.load_state_dict(m.state_dict())
    x = torch.randn(2, 14, 14, 32, requires_grad=True)
    out, ref = m(x), dense(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads(m, x, out)["input"], grads(dense, x, ref)["input"], rtol=1e-5, atol=1e-5)


def test_fewer_keys_change_the_output():
    m = attnbench.build_mechanism("kvt", 32, 2, topk=196)
    x = torch.randn(1, 14, 14, 32)
    dense = m(x)
    m.topk = 20
    assert not torch.allclose(dense, m(x), atol=1e-3)


def test_each_query_attends_to_exactly_topk_keys():
    """With v = one-hot token ids, the attention row itself comes out: topk non-zeros per query."""
    from mechanisms.kvt import knn_attention

    N, topk = 30, 7
    q, k = torch.randn(1, 1, N, 8), torch.randn(1, 1, N, 8)
    rows = knn_attention(q, k, torch.eye(N).view(1, 1, N, N), topk, 8**-0.5)[0, 0]  # (N, N)
    assert ((rows > 0).sum(-1) == topk).all()
    torch.testing.assert_close(rows.sum(-1), torch.ones(N))
    scores = q[0, 0] @ k[0, 0].T
    kept_min = scores.masked_fill(rows == 0, float("inf")).amin(-1)
    dropped_max = scores.masked_fill(rows > 0, float("-inf")).amax(-1)
    assert (kept_min > dropped_max).all()  # the kept keys are the highest-scoring ones


@pytest.mark.parametrize("H,W,C,topk", [(14, 14, 32, 100), (56, 56, 64, 100), (5, 9, 32, 100)])
def test_analytic_flops_equal_counted(H, W, C, topk):
    m = attnbench.build_mechanism("kvt", C, 2, topk=topk)
    analytic = m.analytic_flops(H, W)
    report = attnbench.count_flops(m, torch.randn(1, H, W, C))
    assert report.uncounted == {}
    assert sum(analytic.values()) == report.total == report.torch_total
    assert analytic["attention"] == report.by_operator["matmul"]
    assert report.convention_zero["aten::topk"] == 1
    vanilla = attnbench.build_mechanism("vanilla", C, 2).analytic_flops(H, W)
    assert sum(vanilla.values()) == report.total  # the selection is free: dense attention's cost


def test_defaults_and_bad_topk():
    m = attnbench.build_mechanism("kvt", 64, 2)
    assert (m.topk, m.qkv_bias, m.scale) == (100, True, 32**-0.5)
    assert (m.kept(56, 56), m.kept(8, 8)) == (100, 64)
    with pytest.raises(ValueError, match="topk"):
        attnbench.build_mechanism("kvt", 32, 2, topk=0)


def test_ablation_backbone_builds_and_runs():
    from attnbench.ablation import build_for_dataset

    model = build_for_dataset("kvt", {}, PATHFINDER, NANO)
    x = model.example_input(2)
    assert model(x).shape == (2, 2)
