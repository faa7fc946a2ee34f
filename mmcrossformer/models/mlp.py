"""The block's MLP: mmcv's ``FFN`` (same modules and state-dict names) run as
one autograd function that keeps one hidden tensor for backward, not two,
and never makes a whole hidden-sized tensor in backward."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import FFN

from .caching import capturing_graph
from .residual import residual_add

# Rows of the hidden tensor processed at once (elements): 2**20 float32 = 4
# MiB, so each chunk's GELU output (and in backward its gradient) is
# consumed by the next matmul while it is still in cache, instead of a
# (tokens, hidden) tensor written to fresh pages and read back.
CHUNK_ELEMENTS = 1 << 20


def _row_chunks(rows: int, width: int):
    """Slices of ``rows`` covering :data:`CHUNK_ELEMENTS` each."""
    step = max(1, CHUNK_ELEMENTS // width)
    return [slice(r, min(rows, r + step)) for r in range(0, rows, step)]


class _Mlp(torch.autograd.Function):
    """``linear(gelu(linear(x, weight1, bias1)), weight2, bias2)`` saving
    only ``x`` and the hidden ``h = linear(x, weight1, bias1)``, as the first
    Linear alone would: backward recomputes ``gelu(h)`` (element-wise,
    cheap) instead of keeping it, which halves the MLP's share of a training
    step's memory (the hidden tensors are 4x the embedding width).

    After the first Linear, both passes go through the rows in chunks, so
    neither ``gelu(h)`` nor the gradients of ``gelu(h)`` and ``h`` ever exist
    as whole tensors: each chunk of ``dh`` goes into the first Linear's
    gradients while in cache, and backward allocates only its outputs and
    one chunk.

    Input ``(..., C)``, weights ``(H, C)`` and ``(C_out, H)``; output
    ``(..., C_out)``.
    """

    @staticmethod
    def forward(ctx, x, weight1, bias1, weight2, bias2):
        flat = x.reshape(-1, x.shape[-1])
        hidden = F.linear(flat, weight1, bias1)
        ctx.save_for_backward(flat, hidden, weight1, weight2)
        ctx.input_shape = x.shape
        ctx.has_bias = (bias1 is not None, bias2 is not None)
        out = flat.new_empty(flat.shape[0], weight2.shape[0])
        for rows in _row_chunks(*hidden.shape):
            activation = F.gelu(hidden[rows])
            if bias2 is None:
                torch.mm(activation, weight2.t(), out=out[rows])
            else:
                torch.addmm(bias2, activation, weight2.t(), out=out[rows])
        return out.view(*x.shape[:-1], weight2.shape[0])

    @staticmethod
    def backward(ctx, grad_out):
        flat, hidden, weight1, weight2 = ctx.saved_tensors
        needs_x, needs_w1, needs_b1, needs_w2, needs_b2 = (
            ctx.needs_input_grad)
        needs_b1 &= ctx.has_bias[0]
        needs_b2 &= ctx.has_bias[1]
        grad_flat = grad_out.reshape(-1, grad_out.shape[-1])
        grad_x = torch.empty_like(flat) if needs_x else None
        grad_w1 = torch.zeros_like(weight1) if needs_w1 else None
        grad_b1 = hidden.new_zeros(hidden.shape[1]) if needs_b1 else None
        grad_w2 = torch.zeros_like(weight2) if needs_w2 else None
        chunks = _row_chunks(*hidden.shape)
        # d(gelu(h)) and dh of one chunk, reused.
        chunk_rows = chunks[0].stop if chunks else 0
        grad_act_chunk, grad_hidden_chunk = (
            hidden.new_empty(chunk_rows, hidden.shape[1])
            for _ in range(2))
        for rows in chunks:
            grad_chunk = grad_flat[rows]
            count = grad_chunk.shape[0]
            # dW2 += dY^T gelu(h); dh = gelu'(h) * (dY W2).
            if needs_w2:
                grad_w2.addmm_(grad_chunk.t(), F.gelu(hidden[rows]))
            grad_act = torch.mm(grad_chunk, weight2,
                                out=grad_act_chunk[:count])
            grad_hidden = torch.ops.aten.gelu_backward.grad_input(
                grad_act, hidden[rows], grad_input=grad_hidden_chunk[:count])
            # dx = dh W1, dW1 += dh^T x, db1 += rowsum(dh).
            if needs_x:
                torch.mm(grad_hidden, weight1, out=grad_x[rows])
            if needs_w1:
                grad_w1.addmm_(grad_hidden.t(), flat[rows])
            if needs_b1:
                grad_b1 += grad_hidden.sum(0)
        grad_b2 = grad_flat.sum(0) if needs_b2 else None
        if needs_x:
            grad_x = grad_x.view(ctx.input_shape)
        return grad_x, grad_w1, grad_b1, grad_w2, grad_b2


class CrossFormerFFN(FFN):
    """mmcv's :class:`~mmcv.cnn.bricks.transformer.FFN` (two fcs), whose
    Linear, GELU and Linear run as one memory-light autograd function when
    gradients are needed (no autocast, no hidden dropout, not traced, so FLOP
    counters see plain Linear ops, nor compiled, where the compiler fuses
    itself; the fcs' module hooks are then not called); the result is the
    same as ``FFN.forward``.

    Input and output: ``(..., embed_dims)``.
    """

    def forward(self, x, identity=None):
        (fc1, act, hidden_drop), fc2, out_drop = self.layers
        fusable = (type(act) is nn.GELU and act.approximate == 'none'
                   and isinstance(fc1, nn.Linear)
                   and isinstance(fc2, nn.Linear)
                   and not (hidden_drop.p and self.training)
                   and torch.is_grad_enabled() and not capturing_graph()
                   and not torch.is_autocast_enabled(x.device.type))
        if not fusable:
            return super().forward(x, identity)
        out = _Mlp.apply(x, fc1.weight, fc1.bias, fc2.weight, fc2.bias)
        out = self.gamma2(out_drop(out))
        if not self.add_identity:
            return self.dropout_layer(out)
        return residual_add(x if identity is None else identity, out,
                            self.dropout_layer)
