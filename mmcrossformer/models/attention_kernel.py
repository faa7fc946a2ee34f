"""Scaled dot-product attention with an additive mask that needs a gradient.

LSDA adds the DPB position bias to the logits, and the bias is a function of
trained weights. ``F.scaled_dot_product_attention`` falls back to its math
path whenever ``attn_mask`` requires grad, which keeps a ``(groups, heads,
N, N)`` attention matrix of every block for backward: with long-distance
groups of ~1000 embeddings these are the largest tensors of a training step.
:func:`biased_attention` instead runs the fused kernel forward (saving only
q, k, v, the mask and the output) and recomputes the attention in backward,
a bounded number of groups at a time, to get the gradients of q, k, v and
of the mask.
"""
import torch
import torch.nn.functional as F

# Attention logits held at once in backward (elements of S / P / dS each).
BACKWARD_CHUNK_ELEMENTS = 1 << 23


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


class _BiasedAttention(torch.autograd.Function):

    @staticmethod
    def forward(ctx, q, k, v, mask, scale):
        with torch.no_grad():
            out = grouped_sdpa(q, k, v, mask, scale)
        # Kept as (B, G, N, heads, d), the layout the output projection reads,
        # so that the projection's saved input is this same storage.
        out = out.transpose(-3, -2).contiguous().transpose(-3, -2)
        ctx.save_for_backward(q, k, v, mask, out)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, mask, out = ctx.saved_tensors
        scale = ctx.scale
        batch, groups, heads, length, _ = q.shape
        shared_mask = mask.shape[0] == 1
        grad_q, grad_k, grad_v = (torch.empty_like(t) for t in (q, k, v))
        # Half-precision inputs are recomputed in float32, float64 in float64.
        compute = torch.promote_types(q.dtype, torch.float32)
        grad_mask = torch.zeros(mask.shape, dtype=compute, device=mask.device)
        step = max(1, BACKWARD_CHUNK_ELEMENTS // (heads * length * length))
        for b in range(batch):
            for g0 in range(0, groups, step):
                g1 = min(groups, g0 + step)
                qc, kc, vc, oc, doc = (t[b, g0:g1].to(compute) for t in (
                    q, k, v, out, grad_out))
                mc = mask if shared_mask else mask[g0:g1]
                # Recompute P = softmax(scale * q k^T + mask).
                probs = torch.baddbmm(
                    mc.to(compute).expand(g1 - g0, -1, -1, -1).flatten(0, 1),
                    qc.flatten(0, 1), kc.flatten(0, 1).transpose(1, 2),
                    alpha=scale).softmax(-1).view(g1 - g0, heads, length, -1)
                grad_v[b, g0:g1] = (probs.transpose(-2, -1) @ doc).to(v.dtype)
                # dS = P * (dP - rowsum(dO * O)), dP = dO v^T.
                grad_s = doc @ vc.transpose(-2, -1)
                grad_s -= (doc * oc).sum(-1, keepdim=True)
                grad_s *= probs
                del probs
                if shared_mask:
                    grad_mask += grad_s.sum(0, keepdim=True)
                else:
                    grad_mask[g0:g1] += grad_s
                grad_q[b, g0:g1] = (grad_s @ kc * scale).to(q.dtype)
                grad_k[b, g0:g1] = (grad_s.transpose(-2, -1) @ qc *
                                    scale).to(k.dtype)
        return grad_q, grad_k, grad_v, grad_mask.to(mask.dtype), None


def biased_attention(q: torch.Tensor,
                     k: torch.Tensor,
                     v: torch.Tensor,
                     mask: torch.Tensor,
                     scale: float,
                     dropout_p: float = 0.,
                     training: bool = False) -> torch.Tensor:
    """``softmax(scale * q @ k^T + mask) @ v`` for grouped multi-head input.

    Args:
        q, k, v (Tensor): ``(B, G, heads, N, head_dims)``.
        mask (Tensor): ``(G or 1, heads, N, N)`` additive mask (position
            bias plus padding), shared by the ``B`` images; may require grad.
        scale (float): Logit scale.
        dropout_p (float): Attention dropout, applied when ``training``.

    Returns:
        Tensor: ``(B, G, heads, N, head_dims)``.
    """
    dropout_p = dropout_p if training else 0.
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (q, k, v, mask))
    if not needs_grad:
        return grouped_sdpa(q, k, v, mask, scale, dropout_p)
    # The recomputing backward cannot replay dropout; under torch.compile
    # the compiler plans what to save and recompute itself.
    if dropout_p > 0 or torch.compiler.is_compiling():
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask.to(q.dtype).unsqueeze(0),
            dropout_p=dropout_p, scale=scale)
    if torch.is_autocast_enabled(q.device.type):
        with torch.autocast(q.device.type, enabled=False):
            dtype = q.dtype
            return _BiasedAttention.apply(q, k.to(dtype), v.to(dtype),
                                          mask.to(dtype), scale)
    return _BiasedAttention.apply(q, k, v, mask, scale)
