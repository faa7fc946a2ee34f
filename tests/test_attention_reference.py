"""The fast LSDA path (fused SDPA, cached tables, one mask) against a naive
transcription of the official dense block (explicit softmax attention,
per-call index tables, -1e6 masks), on random weights and inputs with
padding. Keeps the optimised path from ever drifting."""
import pytest
import torch
import torch.nn.functional as F

from mmcrossformer.models import CrossFormerBlock

NEG_INF = -1e6  # the official mask value


def official_position_bias(block, gh, gw):
    """DPB as the official Attention.forward builds it on every call."""
    bias_h = torch.arange(1 - gh, gh)
    bias_w = torch.arange(1 - gw, gw)
    biases = torch.stack(torch.meshgrid([bias_h, bias_w], indexing='ij'))
    biases = biases.flatten(1).transpose(0, 1).contiguous().float()
    coords = torch.stack(torch.meshgrid(
        [torch.arange(gh), torch.arange(gw)], indexing='ij'))
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
    attn = attn + official_position_bias(block, gh, gw).unsqueeze(0)
    if mask is not None:
        ng = mask.shape[0]
        attn = attn.view(b_ // ng, ng, heads, n, n) + mask.unsqueeze(
            1).unsqueeze(0)
        attn = attn.view(-1, heads, n, n)
    attn = attn.softmax(dim=-1)
    x = (attn @ v).transpose(1, 2).reshape(b_, n, c)
    return attn_mod.proj(x)


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
    mask = torch.zeros((1, hp, wp, 1))
    if pad_b > 0:
        mask[:, -pad_b:, :, :] = -1
    if pad_r > 0:
        mask[:, :, -pad_r:, :] = -1
    if lsda_flag == 0:
        g = gh = gw = group_size
        x = x.reshape(b, hp // g, g, wp // g, g, c).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(b * hp * wp // g**2, g**2, c)
        ng = hp * wp // g**2
        if pad_r > 0 or pad_b > 0:
            mask = mask.reshape(1, hp // g, g, wp // g, g, 1).permute(
                0, 1, 3, 2, 4, 5).reshape(ng, 1, g * g)
            attn_mask = torch.zeros((ng, g * g, g * g)).masked_fill(
                mask < 0, NEG_INF)
        else:
            attn_mask = None
    else:
        i, gh, gw = interval, hp // interval, wp // interval
        x = x.reshape(b, gh, i, gw, i, c).permute(0, 2, 4, 1, 3, 5)
        x = x.reshape(b * i * i, gh * gw, c)
        ng = i**2
        if pad_r > 0 or pad_b > 0:
            mask = mask.reshape(1, gh, i, gw, i, 1).permute(
                0, 2, 4, 1, 3, 5).reshape(ng, 1, gh * gw)
            attn_mask = torch.zeros((ng, gh * gw, gh * gw)).masked_fill(
                mask < 0, NEG_INF)
        else:
            attn_mask = None
    x = official_attention(block, x, gh, gw, attn_mask)
    if lsda_flag == 0:
        x = x.reshape(b, hp // g, wp // g, g, g, c).permute(0, 1, 3, 2, 4, 5)
    else:
        x = x.reshape(b, i, i, gh, gw, c).permute(0, 3, 1, 4, 2, 5)
    x = x.reshape(b, hp, wp, c)[:, :h, :w, :].reshape(b, h * w, c)
    x = shortcut + x
    return x + block.ffn.layers(block.norm2(x))


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
