"""A transcription of the official dense CrossFormer block's forward
(``detection/crossformer_backbone.py`` of the ICLR code), run on the weights
of our :class:`~mmcrossformer.models.CrossFormerBlock`.

It keeps the official algorithm and costs: position-bias tables rebuilt on
every call, DPB evaluated per call, explicit ``q @ k^T`` + softmax, masks
built with ``-1e6`` per call, ``.contiguous()`` copies. Only the mutation of
``lsda_flag`` / ``group_size`` is left out. ``test_attention_reference.py``
checks the fast path against it on random inputs, and
``tools/analysis/benchmark_backbone.py`` times it as the official
implementation (that tool puts ``tests/`` on ``sys.path`` to import this
module).
"""
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import FFN

NEG_INF = -1e6  # the official mask value


def official_position_bias(block, gh, gw, device=None):
    """DPB as the official Attention.forward builds it on every call."""
    bias_h = torch.arange(1 - gh, gh, device=device)
    bias_w = torch.arange(1 - gw, gw, device=device)
    biases = torch.stack(torch.meshgrid([bias_h, bias_w], indexing='ij'))
    biases = biases.flatten(1).transpose(0, 1).contiguous().float()
    coords = torch.stack(torch.meshgrid(
        [torch.arange(gh, device=device),
         torch.arange(gw, device=device)], indexing='ij'))
    coords = torch.flatten(coords, 1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    rel = rel.contiguous()
    rel[:, :, 0] += gh - 1
    rel[:, :, 1] += gw - 1
    rel[:, :, 0] *= 2 * gw - 1
    index = rel.sum(-1)
    dpb = block.attn.position_bias
    pos = dpb.proj(biases)
    for layer in dpb.layers:
        pos = layer(pos)
    bias = pos[index.view(-1)].view(gh * gw, gh * gw, -1)
    return bias.permute(2, 0, 1).contiguous()


def official_attention(block, x, gh, gw, mask):
    attn_mod = block.attn
    b_, n, c = x.shape
    heads = attn_mod.num_heads
    qkv = attn_mod.qkv(x).reshape(b_, n, 3, heads, c // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    attn = (q * attn_mod.scale) @ k.transpose(-2, -1)
    attn = attn + official_position_bias(block, gh, gw, x.device).unsqueeze(0)
    if mask is not None:
        ng = mask.shape[0]
        attn = attn.view(b_ // ng, ng, heads, n, n) + mask.unsqueeze(
            1).unsqueeze(0)
        attn = attn.view(-1, heads, n, n)
    attn = attn.softmax(dim=-1)
    x = (attn @ v).transpose(1, 2).reshape(b_, n, c)
    return attn_mod.proj(x)


def official_mask(mask, ng, n):
    """The official ``(ng, n, n)`` attention mask, ``NEG_INF`` at the padded
    keys, from the grouped padding ``mask`` (``-1`` at padding) of ``ng``
    groups of ``n`` embeddings."""
    mask = mask.reshape(ng, 1, n)
    return torch.zeros((ng, n, n), device=mask.device).masked_fill(
        mask < 0, NEG_INF)


def official_block(block, x, h, w):
    """The official dense CrossFormerBlock.forward, without its mutation."""
    b, _, c = x.shape
    group_size, lsda_flag = block.group_size, int(block.long_distance)
    interval = block.interval
    if min(h, w) <= group_size:
        lsda_flag, group_size = 0, min(h, w)
    shortcut = x
    x = block.norm1(x).view(b, h, w, c)
    size_div = interval if lsda_flag == 1 else group_size
    pad_r = (size_div - w % size_div) % size_div
    pad_b = (size_div - h % size_div) % size_div
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    _, hp, wp, _ = x.shape
    mask = torch.zeros((1, hp, wp, 1), device=x.device)
    if pad_b > 0:
        mask[:, -pad_b:, :, :] = -1
    if pad_r > 0:
        mask[:, :, -pad_r:, :] = -1
    if lsda_flag == 0:
        g = gh = gw = group_size
        x = x.reshape(b, hp // g, g, wp // g, g, c).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(b * hp * wp // g**2, g**2, c)
        ng = hp * wp // g**2
        attn_mask = official_mask(mask.reshape(
            1, hp // g, g, wp // g, g, 1).permute(0, 1, 3, 2, 4, 5), ng,
            g * g) if pad_r > 0 or pad_b > 0 else None
    else:
        i, gh, gw = interval, hp // interval, wp // interval
        x = x.reshape(b, gh, i, gw, i, c).permute(0, 2, 4, 1, 3, 5)
        x = x.reshape(b * i * i, gh * gw, c)
        ng = i**2
        attn_mask = official_mask(mask.reshape(
            1, gh, i, gw, i, 1).permute(0, 2, 4, 1, 3, 5), ng,
            gh * gw) if pad_r > 0 or pad_b > 0 else None
    x = official_attention(block, x, gh, gw, attn_mask)
    if lsda_flag == 0:
        x = x.reshape(b, hp // g, wp // g, g, g, c).permute(0, 1, 3, 2, 4, 5)
    else:
        x = x.reshape(b, i, i, gh, gw, c).permute(0, 3, 1, 4, 2, 5)
    x = x.reshape(b, hp, wp, c)[:, :h, :w, :].reshape(b, h * w, c)
    x = shortcut + block.drop_path(x)
    # The official Mlp: fc1, GELU, fc2 with autograd keeping both hidden
    # tensors (mmcv's FFN.forward, not our fused one).
    return FFN.forward(block.ffn, block.norm2(x), identity=x)


@contextmanager
def official_forward(model):
    """Run every CrossFormer block of ``model`` with :func:`official_block`
    inside the context."""
    from mmcrossformer.models import CrossFormerBlock
    blocks = [m for m in model.modules() if isinstance(m, CrossFormerBlock)]

    def make_forward(block):
        return lambda x, hw_shape: official_block(block, x, *hw_shape)

    try:
        for block in blocks:
            block.forward = make_forward(block)
        yield model
    finally:
        for block in blocks:
            del block.forward
