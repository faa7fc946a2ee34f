"""Grouped multi-head attention with the DPB bias, whose gradient is needed.

LSDA adds the DPB position bias to the logits, and the bias is a function of
trained weights. ``F.scaled_dot_product_attention`` falls back to its math
path whenever ``attn_mask`` requires grad, which keeps a ``(groups, heads,
N, N)`` attention matrix of every block for backward: with long-distance
groups of ~1000 embeddings these are the largest tensors of a training step.

On CPU, float32 and float64 attention runs in a compiled kernel
(``mmcrossformer/csrc/biased_attention.cpp``, built on first use by
:mod:`.native_kernel`): per tile (one head of one group), blocks of query
rows whose logits stay in L2, every step of forward and backward fused
between BLAS calls that read and write ``q, k, v`` and their gradients in
the packed layout, and the bias table's gradient summed straight from each
block (:class:`_NativeBiasedAttention`). Where it cannot be built, and for
other dtypes, the pure-PyTorch path below computes the same.

That path goes through the groups and heads in tiles
of at most :data:`TILE_ELEMENTS` logits, so that what it makes stays in
cache and is reused (a tensor of more than 32 MiB is a new ``mmap`` for
glibc, whose page faults cost more than the arithmetic on it):

- forward: PyTorch's fused CPU kernel (flash attention) per tile, which
  also gives the log-sum-exp of every row; the autograd Function saves only
  the packed ``qkv``, the output and that log-sum-exp;
- backward: per tile, ``P = exp(logits - lse)`` recomputed (as a power of
  two, :data:`LOG2E`), then the gradients of ``qkv`` written in its packed
  layout (no copies of autograd's unbind / permute backward);
- the bias comes as its ``(heads, 2Gh-1, 2Gw-1)`` table of offsets
  (:class:`~.position_bias.RelativeBias`) and is made dense only a few heads
  at a time, as is its gradient: a head's bias gradient is summed over
  groups and images in one ``(N, N)`` tile, then folded into the table.
  Tiles of one long-distance group (N ~ 1000) take their keys in reverse
  order, which makes every (query, key) pair's bias a strided view of the
  table (:meth:`~.position_bias.RelativeBias.keys_reversed`), so a head's
  dense bias is a plain copy rather than a gather.

Other devices (CUDA's memory-efficient kernel takes a mask that requires
grad and returns its gradient), attention dropout and graph capture
(``torch.compile``, export, FLOP counting) take one SDPA call with the dense
bias instead.
"""
import math
from itertools import groupby
from operator import itemgetter
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from . import native_kernel
from .caching import capturing_graph
from .position_bias import RelativeBias
from .tile_threads import map_in_threads

# Backward recomputes P = exp(x) as 2 ** (x * log2(e)), the factor folded
# into the GEMM and the small operands: on CPU torch.exp goes through MKL's
# vector math, which on some CPUs (AMD's, measured on a Zen 4) takes 3x the
# time of torch.exp2 (0.75 ms against 0.25 ms for 2**20 float32 values, as
# long as one of the GEMMs of the tile).
LOG2E = math.log2(math.e)

# Logits of one tile (elements of each of the backward's two tiles, P and
# dS): 2**20 float32 elements = 4 MiB. One head of one group is never split,
# so a tile holds at least N * N elements.
TILE_ELEMENTS = 1 << 20

# The backward goes through a tile of one long-distance group in blocks of
# query rows with at most this many logits: 2**17 float32 = 512 KiB, so
# that a block's P and dS (R x N each, R ~ 128 at N ~ 1000) stay in a
# core's L2 cache (1 MiB on a Zen 4) from the GEMM that makes them to the
# GEMMs that read them, instead of going through the shared L3 cache five
# times per tile. Two threads on such blocks took a tile (N = 950, one head)
# from 4.9 ms to 3.6-4.1 ms (medians of 12; one thread, little change).
BLOCK_ELEMENTS = 1 << 17


def split_qkv(qkv: torch.Tensor, num_groups: int, num_heads: int
              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Views ``q, k, v``, each ``(B, num_groups, heads, N, head_dims)``, of a
    packed projection ``(B * num_groups, N, 3 * C)``."""
    batch_groups, length, channels3 = qkv.shape
    head_dims = channels3 // (3 * num_heads)
    # (B, nG, N, 3, heads, d) -> (3, B, nG, heads, N, d)
    return qkv.view(-1, num_groups, length, 3, num_heads,
                    head_dims).permute(3, 0, 1, 4, 2, 5).unbind(0)


def split_heads(x: torch.Tensor, num_groups: int,
                num_heads: int) -> torch.Tensor:
    """``(B * G, N, heads * d)`` -> a ``(B, G, heads, N, d)`` view."""
    _, length, channels = x.shape
    return x.view(-1, num_groups, length, num_heads,
                  channels // num_heads).transpose(2, 3)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(B, G, heads, N, d)`` -> ``(B * G, N, heads * d)``."""
    batch, groups, heads, length, head_dims = x.shape
    return x.transpose(2, 3).reshape(batch * groups, length, heads * head_dims)


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


def _tile_shape(num_groups: int, num_heads: int, length: int):
    """(groups, heads) attended at once: whole groups while a group's heads
    fit in :data:`TILE_ELEMENTS`, else a few heads."""
    per_group = num_heads * length * length
    if per_group <= TILE_ELEMENTS:
        return min(num_groups, TILE_ELEMENTS // per_group), num_heads
    return 1, max(1, TILE_ELEMENTS // (length * length))


def _tiles(batch: int, num_groups: int, num_heads: int, length: int
           ) -> List[Tuple[slice, int, slice]]:
    """The tiles as ``(heads, image, groups)`` slices of the ``(B, G,
    heads)`` axes, heads outermost: a head's bias, and in backward its bias
    gradient, stay in cache while its groups go by (and a thread that takes
    a run of tiles, :func:`~.tile_threads.map_in_threads`, makes them for
    few heads)."""
    group_step, head_step = _tile_shape(num_groups, num_heads, length)
    return [(slice(h0, min(num_heads, h0 + head_step)), b,
             slice(g0, min(num_groups, g0 + group_step)))
            for h0 in range(0, num_heads, head_step) for b in range(batch)
            for g0 in range(0, num_groups, group_step)]


def _size(s: slice) -> int:
    return s.stop - s.start


def _reverses_keys(num_groups: int, num_heads: int, length: int) -> bool:
    """Whether the tiles take their keys (and values) in reverse order:
    when a tile holds one group (long-distance groups of many embeddings).
    A head's bias is then a strided view of the table, made dense by a fast
    copy, where the bias in key order is a gather from it; tiles of many
    small groups share one bias in key order instead, and need no reversed
    copies of their keys."""
    return _tile_shape(num_groups, num_heads, length)[0] == 1


def _head_bias(bias: RelativeBias, heads: slice, reverse: bool,
               out: torch.Tensor) -> torch.Tensor:
    """The ``(h, N, N)`` bias of ``heads``, keys reversed if ``reverse``,
    copied into ``out`` (a buffer of the thread's, reused from head to
    head: a fresh 3.6 MB tensor per head of a 25x38 group cost 1-9 ms of
    page faults, against 0.1 ms for the copy)."""
    out = out[:_size(heads)]
    if reverse:
        out.view(-1, bias.group_h, bias.group_w, bias.group_h,
                 bias.group_w).copy_(bias.keys_reversed()[heads])
    else:
        out.copy_(bias.dense()[heads])
    return out


def _keys(t: torch.Tensor, reverse: bool, dim: int = -2) -> torch.Tensor:
    """Keys, values or their gradients ``(..., N, d)``, or the padding
    ``(G, N)`` with ``dim=-1``, in the tiles' key order (a reversed copy if
    ``reverse``; the same for the inverse)."""
    return t.flip(dim) if reverse else t


def _map_tiles(work: Callable[[Sequence], Any], tiles: Sequence,
               one_group_per_tile: bool) -> List[Any]:
    """``work`` over runs of ``tiles``: tiles of one group each (one or a few
    ``(N, N)`` heads) in threads (:func:`~.tile_threads.map_in_threads`),
    since op by op two threads gain little on one such matrix; tiles of many
    small groups in one call here, their batched ops being parallel
    already."""
    if one_group_per_tile:
        return map_in_threads(work, tiles)
    return [work(tiles)]


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            bias: RelativeBias, padding: Optional[torch.Tensor],
            scale: float, out: torch.Tensor,
            lse: Optional[torch.Tensor] = None) -> None:
    """The tiled forward: attention of ``(B, G, heads, N, d)`` views ``q, k,
    v``, written into ``out`` (a view of the same shape) and the rows'
    log-sum-exp into ``lse`` ``(B, G, heads, N)`` if given. ``bias`` and
    ``padding`` ``(G, N)`` are in ``q``'s dtype."""
    batch, num_groups, num_heads, length, _ = q.shape
    reverse = _reverses_keys(num_groups, num_heads, length)
    if padding is not None:
        padding = _keys(padding, reverse, dim=-1)
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    group_step, head_step = _tile_shape(num_groups, num_heads, length)

    def attend(tiles):
        # The thread's buffers: the heads' bias, and bias + padding.
        bias_tile = q.new_empty(head_step, length, length)
        if padding is not None:
            mask_tile = q.new_empty(group_step, head_step, length, length)
        for heads, head_tiles in groupby(tiles, key=itemgetter(0)):
            # These heads' bias (1, h, N, N), made once for their groups.
            head_bias = _head_bias(bias, heads, reverse,
                                   bias_tile).unsqueeze(0)
            for _, b, groups in head_tiles:
                index = (b, groups, heads)
                mask = head_bias
                if padding is not None:
                    mask = torch.add(
                        head_bias, padding[groups, None, None, :],
                        out=mask_tile[:_size(groups), :_size(heads)])
                # (g, h, N, d) tiles, keys and values in the tiles' order.
                tile_out, tile_lse = flash(
                    q[index], _keys(k[index], reverse),
                    _keys(v[index], reverse), attn_mask=mask, scale=scale)
                out[index] = tile_out
                if lse is not None:
                    lse[index] = tile_lse

    _map_tiles(attend, _tiles(batch, num_groups, num_heads, length), reverse)


def _row_block(count: int, length: int, one_group_per_tile: bool) -> int:
    """Query rows per backward block of a tile of ``count`` ``(N, N)``
    matrices: all ``N`` for tiles of many small groups, else as many as
    :data:`BLOCK_ELEMENTS` allow."""
    if not one_group_per_tile:
        return length
    return max(1, min(length, BLOCK_ELEMENTS // (count * length)))


def _block_gradients(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     grad_out: torch.Tensor, delta: torch.Tensor,
                     probs: torch.Tensor, grad_logits: torch.Tensor,
                     grad_q: torch.Tensor, grad_k: torch.Tensor,
                     grad_v: torch.Tensor, scale: float,
                     first: bool) -> None:
    """The gradients of one block of ``R`` query rows of ``T`` attention
    matrices with ``N`` keys.

    Args:
        q, grad_out (Tensor): ``(T, R, d)``, the block's queries (times the
            logit ``scale``) and output gradient.
        k, v (Tensor): ``(T, N, d)``; keys and values in the tile's key
            order.
        delta (Tensor): ``(T, R, 1)``, ``rowsum(dO * O)``.
        probs (Tensor): ``(T, R, N)``, the logits without ``q k^T`` (the
            bias and padding, minus each row's log-sum-exp) times
            :data:`LOG2E`; becomes the attention ``P`` in place.
        grad_logits (Tensor): ``(T, R, N)`` buffer, filled with ``dS``, the
            gradient of the logits (and so of the bias).
        grad_q (Tensor): ``(T, R, d)``, filled with the gradient of the
            queries before scaling.
        grad_k, grad_v (Tensor): ``(T, N, d)``, the block's part of the
            keys' and values' gradients, in the tile's key order: written
            if ``first``, else added.
    """
    beta = 0. if first else 1.  # beta=0 ignores what the buffer holds
    # P = exp(scale * q k^T + bias + padding - lse)
    #   = 2 ** (log2(e) * (...)), in place.
    probs.baddbmm_(q, k.transpose(1, 2), alpha=LOG2E).exp2_()
    grad_v.baddbmm_(probs.transpose(1, 2), grad_out, beta=beta)
    # dS = P * (dP - rowsum(dO * O)), dP = dO v^T.
    torch.bmm(grad_out, v.transpose(1, 2), out=grad_logits)
    grad_logits.sub_(delta).mul_(probs)
    # d(scale * q k^T)/dq = scale * k; /dk = scale * q, q already scaled.
    grad_q.baddbmm_(grad_logits, k, beta=0., alpha=scale)
    grad_k.baddbmm_(grad_logits.transpose(1, 2), q, beta=beta)


def _save_for_backward(ctx, tensors: Tuple[Optional[torch.Tensor], ...],
                       shape: Tuple[int, int, int], scale: float) -> None:
    """What both attention Functions keep for backward: ``(qkv, table,
    padding, out, lse)``, ``(num_groups, Gh, Gw)`` and the logit scale."""
    ctx.save_for_backward(*tensors)
    ctx.shape = shape
    ctx.scale = scale


class _BiasedAttention(torch.autograd.Function):

    @staticmethod
    def forward(ctx, qkv, table, group_h, group_w, padding, num_groups,
                scale):
        num_heads, length = table.shape[0], group_h * group_w
        q, k, v = split_qkv(qkv, num_groups, num_heads)
        # (B * G, N, C), the layout the output projection reads, so that the
        # projection's saved input is this same storage.
        out = qkv.new_empty(qkv.shape[0], length, qkv.shape[-1] // 3)
        lse = qkv.new_empty(*q.shape[:-1], dtype=torch.promote_types(
            qkv.dtype, torch.float32))
        _attend(q, k, v, RelativeBias(table, group_h, group_w), padding,
                scale, split_heads(out, num_groups, num_heads), lse)
        _save_for_backward(ctx, (qkv, table, padding, out, lse),
                           (num_groups, group_h, group_w), scale)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        qkv, table, padding, out, lse = ctx.saved_tensors
        num_groups, group_h, group_w = ctx.shape
        scale, num_heads, length = ctx.scale, table.shape[0], group_h * group_w
        q, k, v = split_qkv(qkv, num_groups, num_heads)
        batch, head_dims = q.shape[0], q.shape[-1]
        grad_qkv = torch.empty_like(qkv, memory_format=torch.contiguous_format)
        grad_q, grad_k, grad_v = split_qkv(grad_qkv, num_groups, num_heads)
        out, grad_out = (split_heads(t, num_groups, num_heads)
                         for t in (out, grad_out))
        # Half-precision inputs are recomputed in float32, float64 in float64.
        compute = torch.promote_types(qkv.dtype, torch.float32)
        bias = RelativeBias(table.to(compute), group_h, group_w)
        # The logits' parts other than q k^T, in base-2 units (LOG2E).
        log2_bias = RelativeBias(bias.table * LOG2E, group_h, group_w)
        reverse = _reverses_keys(num_groups, num_heads, length)
        if padding is not None:
            padding = _keys(padding, reverse, dim=-1).to(compute) * LOG2E
        group_step, head_step = _tile_shape(num_groups, num_heads, length)

        def tiles_backward(tiles):
            """Writes the tiles' gradients of q, k and v; returns their part
            of the table's gradient. The two blocks of logits, and a head's
            bias and bias gradient, are made once and reused."""
            block = _row_block(group_step * head_step, length, reverse)
            probs_tile, grad_tile = (
                qkv.new_empty(group_step * head_step, block, length,
                              dtype=compute) for _ in range(2))
            bias_tile, head_grad_tile = (
                qkv.new_empty(head_step, length, length, dtype=compute)
                for _ in range(2))
            grad_table = torch.zeros_like(bias.table)
            for heads, head_tiles in groupby(tiles, key=itemgetter(0)):
                # (h, N, N), times LOG2E.
                head_bias = _head_bias(log2_bias, heads, reverse,
                                       bias_tile)
                head_grad = head_grad_tile[:_size(heads)]
                for tile_index, (_, b, groups) in enumerate(head_tiles):
                    index = (b, groups, heads)
                    tile = (_size(groups), _size(heads))
                    count = tile[0] * tile[1]

                    def rows(t, in_key_order=False):
                        # (g, h, N, d) -> (g * h, N, d) in compute dtype.
                        t = _keys(t[index], reverse and in_key_order)
                        return t.to(compute).reshape(count, length, -1)

                    grad_out_t = rows(grad_out)
                    # (g * h, N, 1): rowsum(dO * O), read in place.
                    delta = (grad_out[index].to(compute) *
                             out[index].to(compute)).sum(-1, keepdim=True)
                    delta = delta.view(count, length, 1)
                    # (g, h, N, 1): the rows' log-sum-exp, times LOG2E.
                    lse_t = (lse[index] * LOG2E).unsqueeze(-1)
                    scaled_q = torch.mul(q[index], scale, out=qkv.new_empty(
                        *tile, length, head_dims, dtype=compute)).view(
                            count, length, head_dims)
                    keys, values = rows(k, True), rows(v, True)
                    grads = [qkv.new_empty(count, length, head_dims,
                                           dtype=compute) for _ in range(3)]
                    for r0 in range(0, length, block):
                        part = slice(r0, min(length, r0 + block))
                        probs = probs_tile[:count, :_size(part)]
                        grad_s = grad_tile[:count, :_size(part)]
                        # (g, h, R, N): bias + padding - lse, of these rows.
                        logits = probs.view(*tile, *probs.shape[1:])
                        if padding is None:
                            torch.sub(head_bias[:, part], lse_t[..., part, :],
                                      out=logits)
                        else:
                            torch.add(head_bias[:, part],
                                      padding[groups, None, None, :],
                                      out=logits).sub_(lse_t[..., part, :])
                        _block_gradients(
                            scaled_q[:, part], keys, values,
                            grad_out_t[:, part], delta[:, part], probs,
                            grad_s, grads[0][:, part], grads[1], grads[2],
                            scale, first=r0 == 0)
                        # The heads' bias gradient, summed over groups
                        # (the first tile writes it).
                        grad_s = grad_s.view(*tile, *grad_s.shape[1:])
                        if tile_index == 0:
                            torch.sum(grad_s, 0, out=head_grad[:, part])
                        elif tile[0] == 1:
                            head_grad[:, part] += grad_s[0]
                        else:
                            head_grad[:, part] += grad_s.sum(0)
                    for grad, target, order in zip(
                            grads, (grad_q, grad_k, grad_v),
                            (False, True, True)):
                        grad = grad.view(*tile, length, -1)
                        target[index] = _keys(grad, reverse) if order else grad
                # These heads' bias gradient, into the table.
                grad_table[heads] += bias.table_gradient(head_grad, reverse)
            return grad_table

        # Each run of tiles' part of the table gradient, summed in order.
        grad_table = sum(
            _map_tiles(tiles_backward,
                       _tiles(batch, num_groups, num_heads, length), reverse))
        return (grad_qkv, grad_table.to(table.dtype), None, None, None, None,
                None)


class _NativeBiasedAttention(torch.autograd.Function):
    """The attention of :class:`_BiasedAttention` through the compiled CPU
    kernel (:mod:`.native_kernel`): the same saved tensors (``qkv``, the
    output and the rows' log-sum-exp, here in base 2), with the whole tile
    arithmetic of forward and backward fused per block of query rows, ``q``,
    ``k``, ``v`` and their gradients read and written in the packed layout,
    and the bias table's gradient summed straight from each block."""

    @staticmethod
    def forward(ctx, qkv, table, group_h, group_w, padding, num_groups,
                scale):
        kernel = native_kernel.cpu_kernel()
        padding_arg = _NO_PADDING if padding is None else padding
        out, lse = kernel.forward(qkv, table, padding_arg, num_groups,
                                  group_h, group_w, scale, NATIVE_BLOCK_ROWS)
        _save_for_backward(ctx, (qkv, table, padding_arg, out, lse),
                           (num_groups, group_h, group_w), scale)
        ctx.kernel = kernel  # the module that made the forward
        return out

    @staticmethod
    def backward(ctx, grad_out):
        qkv, table, padding, out, lse = ctx.saved_tensors
        grad_qkv, grad_table = ctx.kernel.backward(
            grad_out.contiguous(), qkv, table, padding, out, lse,
            *ctx.shape, ctx.scale, NATIVE_BLOCK_ROWS)
        return grad_qkv, grad_table, None, None, None, None, None


# Query rows per block of the compiled kernel; 0: as many as fit its L2
# budget (2**16 logits: 68 rows at N = 950, whole tiles of 7x7 windows).
NATIVE_BLOCK_ROWS = 0

# The kernel's "no padding" (it takes tensors only).
_NO_PADDING = torch.empty(0)


def native_kernel_for(qkv: torch.Tensor) -> bool:
    """Whether ``qkv`` goes through the compiled CPU kernel: float32 or
    float64 on CPU, with the kernel enabled and built (see
    :mod:`.native_kernel`; otherwise the pure-PyTorch tiled path)."""
    return (qkv.device.type == 'cpu'
            and qkv.dtype in (torch.float32, torch.float64)
            and native_kernel.cpu_kernel() is not None)


def tiled_kernel(qkv: torch.Tensor) -> bool:
    """Whether ``qkv``'s device takes the tiled path (CPU, whose fused
    kernel refuses a mask that requires grad). Elsewhere one SDPA call with
    the dense bias: CUDA's memory-efficient attention takes such a mask and
    returns its gradient."""
    return qkv.device.type == 'cpu'


def sdpa_with_bias_gradient(qkv: torch.Tensor, bias: torch.Tensor,
                            padding: Optional[torch.Tensor], num_groups: int,
                            scale: float,
                            dropout_p: float = 0.) -> torch.Tensor:
    """The attention of :func:`biased_attention` in one 4-D SDPA call whose
    dense mask keeps its autograd graph, for devices where
    :func:`tiled_kernel` does not hold: CUDA's memory-efficient kernel saves
    its log-sum-exp rather than the attention matrix, applies dropout itself
    and returns the mask's gradient, ``(B * G, heads, N, N)`` for the moment
    of its backward, which autograd sums over the groups and images into the
    ``(heads, N, N)`` bias gradient. Elsewhere the same call is SDPA's math
    path (exact, but it keeps the attention matrix), which
    :func:`biased_attention` takes for what the tiled path cannot do:
    attention dropout, and graphs being captured (compiled, traced)."""
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
                     bias: RelativeBias,
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
        bias (RelativeBias): the position bias of the group shape, the same
            in every group; its table may require grad.
        padding (Tensor, optional): ``(G, N)`` additive key mask of each
            group (0, or a large negative value on padded keys).
        scale (float): Logit scale.
        dropout_p (float): Attention dropout, applied when ``training``.

    Returns:
        Tensor: ``(B * G, N, C)``, heads concatenated per embedding.
    """
    num_groups = 1 if padding is None else padding.shape[0]
    num_heads = bias.table.shape[0]
    dropout_p = dropout_p if training else 0.
    needs_grad = torch.is_grad_enabled() and (qkv.requires_grad
                                              or bias.table.requires_grad)
    # The tiled backward cannot replay dropout; under torch.compile the
    # compiler plans what to save and recompute itself, and a traced graph
    # (FLOP counting, export) should show the plain attention op.
    if not tiled_kernel(qkv) or dropout_p > 0 or capturing_graph():
        if needs_grad:
            return sdpa_with_bias_gradient(qkv, bias.dense(), padding,
                                           num_groups, scale, dropout_p)
        q, k, v = split_qkv(qkv, num_groups, num_heads)
        mask = attention_mask(bias.dense().detach(), padding)
        return merge_heads(grouped_sdpa(q, k, v, mask, scale, dropout_p))
    if padding is not None:
        padding = padding.to(qkv.dtype).contiguous()
    if native_kernel_for(qkv):
        # (Without gradients, apply() only runs the forward.)
        return _NativeBiasedAttention.apply(
            qkv.contiguous(), bias.table.to(qkv.dtype), bias.group_h,
            bias.group_w, padding, num_groups, scale)
    if not needs_grad:
        out = qkv.new_empty(qkv.shape[0], bias.length, qkv.shape[-1] // 3)
        table = bias.table.detach().to(qkv.dtype)
        _attend(*split_qkv(qkv, num_groups, num_heads),
                RelativeBias(table, bias.group_h, bias.group_w), padding,
                scale, split_heads(out, num_groups, num_heads))
        return out
    args = (bias.table.to(qkv.dtype), bias.group_h, bias.group_w, padding,
            num_groups, scale)
    if torch.is_autocast_enabled(qkv.device.type):
        with torch.autocast(qkv.device.type, enabled=False):
            return _BiasedAttention.apply(qkv, *args)
    return _BiasedAttention.apply(qkv, *args)
