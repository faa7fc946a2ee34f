"""The block's MLP: mmcv's ``FFN`` (same modules and state-dict names) with a
GELU + second Linear that keeps one hidden tensor for backward, not two."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import FFN

from .caching import capturing_graph

# Rows of the hidden tensor processed at once (elements): 2**20 float32 = 4
# MiB, so each chunk's GELU output is consumed by the next matmul while it is
# still in cache, instead of a (tokens, hidden) tensor written to fresh pages
# and read back.
CHUNK_ELEMENTS = 1 << 20


def _row_chunks(rows: int, width: int):
    """Slices of ``rows`` covering :data:`CHUNK_ELEMENTS` each."""
    step = max(1, CHUNK_ELEMENTS // width)
    return [slice(r, min(rows, r + step)) for r in range(0, rows, step)]


class _GeluLinear(torch.autograd.Function):
    """``linear(gelu(h), weight, bias)`` saving only ``h``: backward
    recomputes ``gelu(h)`` (element-wise, cheap) instead of keeping it, which
    halves the MLP's share of a training step's memory (the hidden tensors
    are 4x the embedding width).

    Both passes go through the rows in chunks, so neither ``gelu(h)`` nor
    the gradient of ``gelu(h)`` ever exists as a whole tensor: backward
    allocates only its outputs.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias):
        ctx.save_for_backward(hidden, weight)
        ctx.has_bias = bias is not None
        flat = hidden.reshape(-1, hidden.shape[-1])
        out = flat.new_empty(flat.shape[0], weight.shape[0])
        for rows in _row_chunks(*flat.shape):
            activation = F.gelu(flat[rows])
            if bias is None:
                torch.mm(activation, weight.t(), out=out[rows])
            else:
                torch.addmm(bias, activation, weight.t(), out=out[rows])
        return out.view(*hidden.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight = ctx.saved_tensors
        flat = hidden.reshape(-1, hidden.shape[-1])
        grad_flat = grad_out.reshape(-1, grad_out.shape[-1])
        grad_hidden = torch.empty_like(flat)
        needs_weight = ctx.needs_input_grad[1]
        grad_weight = torch.zeros_like(weight) if needs_weight else None
        for rows in _row_chunks(*flat.shape):
            # dW += dY^T gelu(h), dh = gelu'(h) * (dY W), per chunk of rows.
            if needs_weight:
                grad_weight.addmm_(grad_flat[rows].t(), F.gelu(flat[rows]))
            torch.ops.aten.gelu_backward.grad_input(
                grad_flat[rows] @ weight, flat[rows],
                grad_input=grad_hidden[rows])
        grad_bias = (grad_flat.sum(0)
                     if ctx.has_bias and ctx.needs_input_grad[2] else None)
        return grad_hidden.view_as(hidden), grad_weight, grad_bias


class CrossFormerFFN(FFN):
    """mmcv's :class:`~mmcv.cnn.bricks.transformer.FFN` (two fcs), whose
    GELU and second Linear run as one memory-light autograd function when
    gradients are needed (no autocast, no hidden dropout, not traced, so FLOP
    counters see plain Linear ops, nor compiled, where the compiler fuses
    itself); the result is the same as ``FFN.forward``.

    Input and output: ``(..., embed_dims)``.
    """

    def forward(self, x, identity=None):
        (fc1, act, hidden_drop), fc2, out_drop = self.layers
        fusable = (type(act) is nn.GELU and act.approximate == 'none'
                   and not (hidden_drop.p and self.training)
                   and torch.is_grad_enabled() and not capturing_graph()
                   and not torch.is_autocast_enabled(x.device.type))
        if not fusable:
            return super().forward(x, identity)
        out = _GeluLinear.apply(fc1(x), fc2.weight, fc2.bias)
        out = self.gamma2(out_drop(out))
        if not self.add_identity:
            return self.dropout_layer(out)
        return (x if identity is None else identity) + self.dropout_layer(out)
