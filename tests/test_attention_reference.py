"""The fast LSDA path (fused SDPA, cached tables, one mask) against the naive
transcription of the official dense block (explicit softmax attention,
per-call index tables, -1e6 masks) on random weights and inputs with
padding, so the optimised path can never drift."""
import pytest
import torch
from helpers.official_block import official_block, official_forward

from mmcrossformer.models import (CrossFormer, CrossFormerBlock,
                                  attention_kernel, native_kernel)
from mmcrossformer.models.attention_kernel import biased_attention
from mmcrossformer.models.position_bias import RelativeBias


def _relative_bias(heads, group_h, group_w, dtype=torch.float32):
    table = torch.randn(heads, 2 * group_h - 1, 2 * group_w - 1, dtype=dtype)
    return RelativeBias(table.requires_grad_(), group_h, group_w)


@pytest.mark.parametrize('padded', [False, True])
@pytest.mark.parametrize('tile_elements', [1 << 20, 72, 36])
@pytest.mark.parametrize('block_elements', [1 << 17, 24])
@pytest.mark.parametrize('threads', [1, 2])
def test_biased_attention_gradcheck(padded, tile_elements, block_elements,
                                    threads, torch_threads, monkeypatch):
    """The pure-PyTorch tiled backward is the exact derivative (float64 in,
    float64 recomputation, hence the tolerance float32 would fail) for the
    packed qkv and the bias table, without and with padded keys, whether a
    tile holds whole groups (2**20), one group's heads (72 = 2 heads of 2x3)
    or one head (36); tiles of one group run in threads when there are two
    (each thread's part of the table gradient summed), and in blocks of
    query rows when a block holds fewer than a tile's logits (24: 2 rows of
    2 heads' 6 keys, or 4 + 2 rows of one head's)."""
    monkeypatch.setenv(native_kernel.ENV_SWITCH, '0')
    monkeypatch.setattr(attention_kernel, 'TILE_ELEMENTS', tile_elements)
    monkeypatch.setattr(attention_kernel, 'BLOCK_ELEMENTS', block_elements)
    torch_threads(threads)
    images, groups, heads, head_dims = 2, 3, 2, 4
    bias = _relative_bias(heads, 2, 3, torch.float64)
    qkv = torch.randn(images * groups, bias.length, 3 * heads * head_dims,
                      dtype=torch.float64, requires_grad=True)
    padding = None
    if padded:  # group 1 has 2 padded keys, group 2 one
        padding = torch.zeros(groups, bias.length, dtype=torch.float64)
        padding[1, 4:] = padding[2, 1] = -1e4
    assert torch.autograd.gradcheck(
        lambda qkv, table: biased_attention(
            qkv, bias._replace(table=table), padding, 0.5, training=True),
        (qkv, bias.table), atol=1e-9, rtol=1e-7)


def test_biased_attention_training_path_equals_inference_path(
        attention_path):
    """The autograd Function's forward gives the no-grad path's output."""
    bias = _relative_bias(2, 2, 5)
    qkv = torch.randn(6, 10, 24, requires_grad=True)
    padding = torch.zeros(3, 10)
    padding[2, 7:] = -1e4
    trained = biased_attention(qkv, bias, padding, 0.3, training=True)
    assert trained.grad_fn is not None
    with torch.no_grad():
        inferred = biased_attention(qkv, bias, padding, 0.3)
    torch.testing.assert_close(trained, inferred, atol=1e-6, rtol=1e-6)


def test_keys_reversed_view_is_the_dense_bias():
    """The strided view the tiles read is the dense bias with the keys in
    reverse order, and :meth:`table_gradient` is its adjoint (the gradient
    autograd gives through the dense gather)."""
    bias = _relative_bias(3, 4, 5)
    dense = bias.dense()
    reversed_keys = bias.keys_reversed().reshape(3, 20, 20)
    torch.testing.assert_close(reversed_keys, dense.flip(-1))
    grad = torch.randn(3, 20, 20)
    expected, = torch.autograd.grad(dense, bias.table, grad)
    torch.testing.assert_close(
        bias.table_gradient(grad.flip(-1)), expected)
    torch.testing.assert_close(
        bias.table_gradient(grad, keys_reversed=False), expected)


def _attention_and_grads(fn, qkv, bias, grad_out):
    qkv = qkv.detach().clone().requires_grad_()
    table = bias.table.detach().clone().requires_grad_()
    out = fn(qkv, bias._replace(table=table))
    out.backward(grad_out)
    return out, qkv.grad, table.grad


@pytest.mark.parametrize('padded', [False, True])
def test_sdpa_with_bias_gradient_equals_tiled_backward(padded):
    """The one-call path that CUDA takes (its memory-efficient kernel
    returns the mask's gradient), run here as SDPA's math path, gives the
    tiled path's output and gradients, for 2 images of 3 groups, with and
    without padded keys."""
    qkv = torch.randn(6, 10, 24)
    bias = _relative_bias(2, 2, 5)
    padding = None
    if padded:
        padding = torch.zeros(3, 10)
        padding[2, 7:] = padding[0, 4] = -1e4
    grad_out = torch.randn(6, 10, 8)
    fused = _attention_and_grads(
        lambda q, b: attention_kernel.sdpa_with_bias_gradient(
            q, b.dense(), padding, 3 if padded else 1, 0.3), qkv, bias,
        grad_out)
    tiled = _attention_and_grads(
        lambda q, b: biased_attention(q, b, padding, 0.3, training=True),
        qkv, bias, grad_out)
    for a, b in zip(fused, tiled):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_other_devices_take_one_sdpa_call(monkeypatch):
    """Where :func:`tiled_kernel` does not hold (CUDA), training goes
    through the one SDPA call, never the tiled autograd Function; the result
    is the same."""
    qkv, bias = torch.randn(6, 10, 24), _relative_bias(2, 2, 5)
    grad_out = torch.randn(6, 10, 8)
    expected = _attention_and_grads(
        lambda q, b: biased_attention(q, b, None, 0.3, training=True),
        qkv, bias, grad_out)

    def refuse(*args):
        raise AssertionError('the tiled backward was used')

    monkeypatch.setattr(attention_kernel, 'tiled_kernel', lambda qkv: False)
    monkeypatch.setattr(attention_kernel._BiasedAttention, 'apply', refuse)
    got = _attention_and_grads(
        lambda q, b: biased_attention(q, b, None, 0.3, training=True),
        qkv, bias, grad_out)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


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
def test_block_gradients_match_naive_official(long_distance, hw,
                                              attention_path):
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


def test_backbone_gradients_match_naive_official(attention_path):
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
