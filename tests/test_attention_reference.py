"""The fast LSDA path (fused SDPA, cached tables, one mask) against the naive
transcription of the official dense block (explicit softmax attention,
per-call index tables, -1e6 masks) on random weights and inputs with
padding, so the optimised path can never drift."""
import pytest
import torch
from helpers.official_block import official_block, official_forward

from mmcrossformer.models import CrossFormer, CrossFormerBlock
from mmcrossformer.models.attention_kernel import biased_attention


@pytest.mark.parametrize('shared_mask', [True, False])
def test_biased_attention_gradcheck(shared_mask):
    """The recomputing backward is the exact derivative (float64 in, float64
    recomputation, hence the tolerance float32 would fail) for q, k, v and
    the mask, shared or per group."""
    q, k, v = (torch.randn(2, 3, 2, 5, 4, dtype=torch.float64,
                           requires_grad=True) for _ in range(3))
    mask = torch.randn(1 if shared_mask else 3, 2, 5, 5, dtype=torch.float64,
                       requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda q, k, v, m: biased_attention(q, k, v, m, 0.5, training=True),
        (q, k, v, mask), atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize('long_distance', [False, True])
@pytest.mark.parametrize('hw, group_size, interval', [
    ((14, 21), 7, 7),   # no padding
    ((19, 26), 7, 4),   # padding on both sides
    ((30, 17), 5, 8),   # LDA groups of 4x3, padded
    ((6, 11), 7, 2),    # short side <= G: SDA with G = 6
    ((9, 30), 3, 12),   # interval larger than H: padded-only groups
])
def test_block_matches_naive_official(long_distance, hw, group_size,
                                      interval):
    block = CrossFormerBlock(32, 4, group_size=group_size, interval=interval,
                             long_distance=long_distance).eval()
    for p in block.parameters():  # make the DPB bias matter
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(2, hw[0] * hw[1], 32)
    with torch.no_grad():
        fast = block(x, hw)
        naive = official_block(block, x, *hw)
    torch.testing.assert_close(fast, naive, atol=2e-5, rtol=1e-5)


def test_backbone_matches_naive_official_with_batch_and_padding():
    model = CrossFormer(arch=dict(embed_dims=32, depths=[2, 2, 2, 2],
                                  num_heads=[1, 2, 4, 8])).eval()
    x = torch.randn(2, 3, 100, 148)  # pads SDA groups in every stage
    with torch.no_grad():
        fast = model(x)
        with official_forward(model):
            naive = model(x)
    for f, n in zip(fast, naive):
        torch.testing.assert_close(f, n, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('long_distance', [False, True])
@pytest.mark.parametrize('hw', [(14, 21), (19, 26)])
def test_block_gradients_match_naive_official(long_distance, hw):
    """The recomputing backward of the fused attention gives the gradients
    that autograd gives through the explicit softmax, for q, k, v and the
    DPB weights (whose bias is the mask that needs a gradient)."""
    # 64 channels: DPB width 4 (at width 2, LayerNorm passes no gradient).
    block = CrossFormerBlock(64, 4, group_size=7, interval=4,
                             long_distance=long_distance).train()
    for p in block.attn.position_bias.parameters():  # a bias that matters
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(2, hw[0] * hw[1], 64)
    weights = torch.randn(2, hw[0] * hw[1], 64)
    grads = []
    for run in (block, lambda x, hw: official_block(block, x, *hw)):
        block.zero_grad()
        x_in = x.clone().requires_grad_()
        (run(x_in, hw) * weights).sum().backward()
        grads.append({'input': x_in.grad,
                      **{n: p.grad.clone()
                         for n, p in block.named_parameters()}})
    fast, naive = grads
    assert fast.keys() == naive.keys()
    for name in naive:
        # Relative 1e-5, with an absolute floor for gradients that are 0
        # analytically (a per-head constant bias does not move a softmax)
        # and come out as rounding noise on both paths.
        error = (fast[name] - naive[name]).norm()
        assert error <= 1e-5 * naive[name].norm() + 1e-5, (
            f'{name}: error {error:.2e}, norm {naive[name].norm():.2e}')
    assert naive['attn.position_bias.proj.weight'].norm() > 1e-3


def test_backbone_gradients_match_naive_official():
    """A training step's gradients through the whole backbone (cross-scale
    embeddings, fused attention, fused MLP, padded groups, both attention
    kinds) equal those through the naive official transcription, for every
    parameter: the fast training path learns what the official one learns."""
    torch.manual_seed(0)
    model = CrossFormer(arch=dict(embed_dims=32, depths=[1, 1, 2, 1],
                                  num_heads=[1, 2, 4, 8])).train()
    model.init_weights()
    x = torch.randn(2, 3, 100, 148)  # pads SDA and LDA groups
    weights = [torch.randn_like(out) for out in model(x)]
    grads = []
    for naive in (False, True):
        model.zero_grad()
        if naive:
            with official_forward(model):
                outs = model(x)
        else:
            outs = model(x)
        sum((out * w).sum() for out, w in zip(outs, weights)).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    fast, naive = grads
    for name in naive:
        # The DPB's last bias shifts all logits of a head equally: its
        # gradient is 0 analytically and rounding noise on both paths.
        error = (fast[name] - naive[name]).norm()
        assert error <= 1e-4 * naive[name].norm() + 1e-5, (
            f'{name}: error {error:.2e}, norm {naive[name].norm():.2e}')
