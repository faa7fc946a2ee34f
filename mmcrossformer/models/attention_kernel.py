"""Grouped multi-head attention with an additive bias that needs a gradient.

LSDA adds the DPB position bias to the logits, and the bias is a function of
trained weights. ``F.scaled_dot_product_attention`` falls back to its math
path whenever ``attn_mask`` requires grad, which keeps a ``(groups, heads,
N, N)`` attention matrix of every block for backward: with long-distance
groups of ~1000 embeddings these are the largest tensors of a training step.
:func:`biased_attention` instead runs the fused kernel forward, saving only
the packed ``qkv`` projection, the bias, the padding and the output, and
recomputes the attention in backward a few heads at a time to get the
gradients of ``qkv`` and of the bias:

- the recomputed ``(heads, N, N)`` tiles are small (:data:`BACKWARD_CHUNK_
  ELEMENTS`) and reused from one step of the loop to the next, so on a CPU
  they stay in cache and never come from fresh pages (a tensor of more than
  32 MiB is a new ``mmap`` for glibc, whose page faults cost more than the
  arithmetic on it);
- the gradient of ``qkv`` is written in its packed layout, and the bias
  gradient is summed over groups and images tile by tile, so neither a
  ``(groups, heads, N, N)`` mask gradient nor the copies of autograd's
  unbind / permute backward are ever made.
"""
import itertools
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .caching import capturing_graph

# Logits recomputed at once in backward (elements of each of the two tiles,
# S/P and dS): 2**20 float32 elements = 4 MiB. One head of one group is never
# split, so a tile holds at least N * N elements.
BACKWARD_CHUNK_ELEMENTS = 1 << 20


def split_qkv(qkv: torch.Tensor, num_groups: int, num_heads: int
              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Views ``q, k, v``, each ``(B, num_groups, heads, N, head_dims)``, of a
    packed projection ``(B * num_groups, N, 3 * C)``."""
    batch_groups, length, channels3 = qkv.shape
    head_dims = channels3 // (3 * num_heads)
    # (B, nG, N, 3, heads, d) -> (3, B, nG, heads, N, d)
    return qkv.view(-1, num_groups, length, 3, num_heads,
                    head_dims).permute(3, 0, 1, 4, 2, 5).unbind(0)


def attention_mask(bias: torch.Tensor,
                   padding: Optional[torch.Tensor]) -> torch.Tensor:
    """The additive mask ``(1 or num_groups, heads, N, N)``: the bias
    ``(heads, N, N)`` of every group, plus ``padding`` ``(num_groups, N)``
    on the keys of each group."""
    mask = bias.unsqueeze(0)
    if padding is not None:
        mask = mask + padding.to(mask.dtype)[:, None, None, :]
    return mask


def grouped_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 mask: torch.Tensor, scale: float,
                 dropout_p: float = 0.) -> torch.Tensor:
    """Fused attention of ``(B, G, heads, N, d)`` groups with a mask
    ``(G or 1, heads, N, N)`` shared by the ``B`` images.

    The fused kernels take 4-D inputs; a per-group mask is applied image by
    image rather than copied ``B`` times.
    """
    batch, groups = q.shape[:2]
    mask = mask.to(q.dtype)
    if mask.shape[0] == 1 or batch == 1:
        out = F.scaled_dot_product_attention(
            q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1),
            attn_mask=mask, dropout_p=dropout_p, scale=scale)
        return out.view(batch, groups, *out.shape[1:])
    return torch.stack([
        F.scaled_dot_product_attention(
            q[b], k[b], v[b], attn_mask=mask, dropout_p=dropout_p,
            scale=scale) for b in range(batch)
    ])


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(B, G, heads, N, d)`` -> ``(B * G, N, heads * d)``."""
    batch, groups, heads, length, head_dims = x.shape
    return x.transpose(2, 3).reshape(batch * groups, length, heads * head_dims)


def _tile_shape(num_groups: int, num_heads: int, length: int):
    """(groups, heads) recomputed at once: whole groups while a group's
    heads fit in :data:`BACKWARD_CHUNK_ELEMENTS`, else a few heads."""
    per_group = num_heads * length * length
    if per_group <= BACKWARD_CHUNK_ELEMENTS:
        return min(num_groups, BACKWARD_CHUNK_ELEMENTS // per_group), num_heads
    return 1, max(1, BACKWARD_CHUNK_ELEMENTS // (length * length))


class _BiasedAttention(torch.autograd.Function):

    @staticmethod
    def forward(ctx, qkv, bias, padding, num_groups, scale):
        num_heads = bias.shape[0]
        # Detached: SDPA takes its math path for a mask that requires grad,
        # even without grad mode.
        with torch.no_grad():
            out = grouped_sdpa(
                *split_qkv(qkv.detach(), num_groups, num_heads),
                attention_mask(bias.detach(), padding), scale)
        # (B * G, N, C), the layout the output projection reads, so that the
        # projection's saved input is this same storage.
        out = merge_heads(out)
        ctx.save_for_backward(qkv, bias, padding, out)
        ctx.num_groups, ctx.scale = num_groups, scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        qkv, bias, padding, out = ctx.saved_tensors
        scale, num_groups = ctx.scale, ctx.num_groups
        num_heads, length = bias.shape[:2]
        q, k, v = split_qkv(qkv, num_groups, num_heads)
        batch, _, _, _, head_dims = q.shape
        grad_qkv = torch.empty_like(qkv, memory_format=torch.contiguous_format)
        grad_q, grad_k, grad_v = split_qkv(grad_qkv, num_groups, num_heads)
        # (B * G, N, C) -> (B, G, heads, N, d), like q.
        out, grad_out = (t.reshape(batch, num_groups, length, num_heads,
                                   head_dims).transpose(2, 3)
                         for t in (out, grad_out))
        # Half-precision inputs are recomputed in float32, float64 in float64.
        compute = torch.promote_types(qkv.dtype, torch.float32)
        bias_dtype, bias = bias.dtype, bias.to(compute)
        grad_bias = torch.zeros_like(bias)
        if padding is not None:
            padding = padding.to(compute)
        # rowsum(dO * O): (B, G, heads, N, 1).
        delta = (grad_out.to(compute) * out).sum(-1, keepdim=True)
        q_scaled = q * scale
        group_step, head_step = _tile_shape(num_groups, num_heads, length)
        tiles = [torch.empty(group_step * head_step, length, length,
                             dtype=compute, device=qkv.device)
                 for _ in range(2)]
        # Heads outermost: one head's bias and bias gradient stay in cache
        # while its groups go by.
        for h0, b, g0 in itertools.product(
                range(0, num_heads, head_step), range(batch),
                range(0, num_groups, group_step)):
            h1 = min(num_heads, h0 + head_step)
            g1 = min(num_groups, g0 + group_step)
            count = (g1 - g0) * (h1 - h0)
            index = (b, slice(g0, g1), slice(h0, h1))
            # (g, h, N, d) -> (g * h, N, d); q is pre-scaled.
            qc, kc, vc, doc, dc = (
                t[index].to(compute).reshape(count, length, -1)
                for t in (q_scaled, k, v, grad_out, delta))
            # P = softmax(scale * q k^T + bias + padding), in place.
            probs = torch.bmm(qc, kc.transpose(1, 2), out=tiles[0][:count])
            logits = probs.view(g1 - g0, h1 - h0, length, length)
            logits += bias[h0:h1]
            if padding is not None:
                logits += padding[g0:g1, None, None, :]
            torch.softmax(probs, -1, out=probs)
            grad_v[index] = (probs.transpose(1, 2) @ doc).view(
                g1 - g0, h1 - h0, length, head_dims)
            # dS = P * (dP - rowsum(dO * O)), dP = dO v^T.
            grad_s = torch.bmm(doc, vc.transpose(1, 2), out=tiles[1][:count])
            grad_s -= dc
            grad_s *= probs
            grad_s4 = grad_s.view(g1 - g0, h1 - h0, length, length)
            grad_bias[h0:h1] += (grad_s4[0] if g1 - g0 == 1 else
                                 grad_s4.sum(0))
            grad_q[index] = (grad_s @ kc).mul_(scale).view(
                g1 - g0, h1 - h0, length, head_dims)
            # d(scale * q k^T)/dk = scale * q: qc is already scaled.
            grad_k[index] = (grad_s.transpose(1, 2) @ qc).view(
                g1 - g0, h1 - h0, length, head_dims)
        return grad_qkv, grad_bias.to(bias_dtype), None, None, None


def fused_bias_gradient(qkv: torch.Tensor) -> bool:
    """Whether ``qkv``'s device has a fused attention kernel that takes an
    additive mask requiring grad and returns its gradient: CUDA's
    memory-efficient attention. On CPU, PyTorch's fused kernel refuses such
    a mask and SDPA falls back to its math path."""
    return qkv.is_cuda


def sdpa_with_bias_gradient(qkv: torch.Tensor, bias: torch.Tensor,
                            padding: Optional[torch.Tensor], num_groups: int,
                            scale: float,
                            dropout_p: float = 0.) -> torch.Tensor:
    """The attention of :func:`biased_attention` in one 4-D SDPA call whose
    mask keeps its autograd graph, for devices where
    :func:`fused_bias_gradient` holds: the kernel saves its log-sum-exp
    rather than the attention matrix, applies dropout itself and returns the
    mask's gradient, ``(B * G, heads, N, N)`` for the moment of its
    backward, which autograd sums over the groups and images into the
    ``(heads, N, N)`` bias gradient. Elsewhere the same call is SDPA's math
    path (exact, but it keeps the attention matrix), which
    :func:`biased_attention` takes for what its recomputing backward cannot
    do: attention dropout, and graphs being captured (compiled, traced)."""
    q, k, v = split_qkv(qkv, num_groups, bias.shape[0])
    batch = q.shape[0]
    # (1 or G, heads, N, N) -> (B * G, heads, N, N): a view of the bias
    # without padding, a copy per image with it.
    mask = attention_mask(bias, padding).to(q.dtype)
    mask = mask.expand(batch, num_groups, *mask.shape[1:]).flatten(0, 1)
    out = F.scaled_dot_product_attention(
        q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), attn_mask=mask,
        dropout_p=dropout_p, scale=scale)
    return merge_heads(out.view(batch, num_groups, *out.shape[1:]))


def biased_attention(qkv: torch.Tensor,
                     bias: torch.Tensor,
                     padding: Optional[torch.Tensor],
                     scale: float,
                     dropout_p: float = 0.,
                     training: bool = False) -> torch.Tensor:
    """``softmax(scale * q @ k^T + bias + padding) @ v`` in every group and
    head, from the packed projection.

    Args:
        qkv (Tensor): ``(B * G, N, 3 * C)``, the qkv projection of ``B``
            images' ``G`` groups (image-major), channels ordered
            ``(q|k|v, head, head_dims)``.
        bias (Tensor): ``(heads, N, N)`` additive position bias, the same in
            every group; may require grad.
        padding (Tensor, optional): ``(G, N)`` additive key mask of each
            group (0, or a large negative value on padded keys).
        scale (float): Logit scale.
        dropout_p (float): Attention dropout, applied when ``training``.

    Returns:
        Tensor: ``(B * G, N, C)``, heads concatenated per embedding.
    """
    num_groups = 1 if padding is None else padding.shape[0]
    num_heads = bias.shape[0]
    dropout_p = dropout_p if training else 0.
    needs_grad = torch.is_grad_enabled() and (qkv.requires_grad
                                              or bias.requires_grad)
    # The recomputing backward cannot replay dropout; under torch.compile
    # the compiler plans what to save and recompute itself, and a traced
    # graph (FLOP counting) should show the plain attention op.
    if needs_grad and (fused_bias_gradient(qkv) or dropout_p > 0
                       or capturing_graph()):
        return sdpa_with_bias_gradient(qkv, bias, padding, num_groups, scale,
                                       dropout_p)
    if not needs_grad:  # a mask that requires grad forces SDPA's math path
        q, k, v = split_qkv(qkv, num_groups, num_heads)
        mask = attention_mask(bias.detach(), padding)
        return merge_heads(grouped_sdpa(q, k, v, mask, scale, dropout_p))
    if torch.is_autocast_enabled(qkv.device.type):
        with torch.autocast(qkv.device.type, enabled=False):
            return _BiasedAttention.apply(qkv, bias.to(qkv.dtype), padding,
                                          num_groups, scale)
    return _BiasedAttention.apply(qkv, bias, padding, num_groups, scale)
