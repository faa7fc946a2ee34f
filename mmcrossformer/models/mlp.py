"""The block's MLP: mmcv's ``FFN`` (same modules and state-dict names) with a
GELU + second Linear that keeps one hidden tensor for backward, not two."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import FFN

from .caching import capturing_graph


class _GeluLinear(torch.autograd.Function):
    """``linear(gelu(h), weight, bias)`` saving only ``h``: backward
    recomputes ``gelu(h)`` (element-wise, cheap) instead of keeping it, which
    halves the MLP's share of a training step's memory (the hidden tensors
    are 4x the embedding width)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias):
        ctx.save_for_backward(hidden, weight)
        ctx.has_bias = bias is not None
        return F.linear(F.gelu(hidden), weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight = ctx.saved_tensors
        grad_flat = grad_out.reshape(-1, grad_out.shape[-1])
        grad_weight = grad_flat.t() @ F.gelu(hidden).reshape(
            -1, hidden.shape[-1])
        grad_bias = grad_flat.sum(0) if ctx.has_bias else None
        grad_hidden = torch.ops.aten.gelu_backward(grad_out @ weight, hidden)
        return grad_hidden, grad_weight, grad_bias


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
