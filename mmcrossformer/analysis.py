"""FLOP counting that includes the attention matmuls.

MMEngine's :class:`~mmengine.analysis.FlopAnalyzer` (fvcore's counter) traces
the model with ``torch.jit`` and counts each traced operator with a handle:
convolutions, linear layers and matmuls as multiply-accumulates (one per
FMA, the convention of papers' "FLOPs"), norms and upsampling per element.
Operators without a handle count 0; CrossFormer computes attention with
``torch.nn.functional.scaled_dot_product_attention``, traced as
``aten::scaled_dot_product_attention`` (or, with gradients on, its own
autograd Function, traced as ``prim::PythonOp._BiasedAttention``), which
have none, so ``q @ k^T`` and ``attn @ v`` would be missed (as mmcv's
hook-based counter missed them in the official code, whose models add them
by hand). :func:`flop_analyzer`
registers :func:`attention_flop_jit` for it (and for the fused kernels'
names, in case a trace records those).

Example:
    >>> import torch, mmcrossformer
    >>> from mmcrossformer.analysis import count_flops
    >>> model = mmcrossformer.CrossFormer(arch='small').eval()
    >>> result = count_flops(model, torch.rand(1, 3, 224, 224))
    >>> round(result.flops / 1e9, 2), round(result.attention_flops / 1e9, 2)
    (4.92, 0.14)
"""
from collections import Counter
from typing import Any, List, NamedTuple, Tuple, Union

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.analysis.jit_handles import get_shape
from mmengine.analysis.print_helper import complexity_stats_table

# Traced names of scaled-dot-product attention, all with q, k, v as their
# first three inputs and the attention output first: the public op (what
# ``torch.jit.trace`` records for ``F.scaled_dot_product_attention``, as
# CrossFormer runs it without gradients), CrossFormer's recomputing-backward
# Function (``models/attention_kernel.py``, run when gradients are on) and
# the kernels SDPA dispatches to.
ATTENTION_OPS = (
    'aten::scaled_dot_product_attention',
    'prim::PythonOp._BiasedAttention',
    'aten::_scaled_dot_product_attention_math',
    'aten::_scaled_dot_product_flash_attention',
    'aten::_scaled_dot_product_flash_attention_for_cpu',
    'aten::_scaled_dot_product_efficient_attention',
    'aten::_scaled_dot_product_cudnn_attention',
)
# The operator name the counts appear under in ``by_operator()``.
ATTENTION_KEY = 'attention_matmul'


def attention_flop_jit(inputs: List[Any], outputs: List[Any]) -> Counter:
    """Multiply-accumulates of ``softmax(q @ k^T + mask) @ v``.

    ``q`` is ``(*batch, L, E)``, ``k`` ``(*batch, S, E)``, ``v``
    ``(*batch, S, Ev)`` (batch dimensions broadcast, e.g. groups x heads):
    ``q @ k^T`` costs ``batch * L * S * E`` and ``attn @ v``
    ``batch * L * S * Ev``, i.e. ``2 * batch * heads * L * S * head_dim``
    for a usual multi-head attention. Softmax, scale and mask are
    element-wise and not counted, like every element-wise op here.
    """
    q, k, v = (get_shape(t) for t in inputs[:3])
    out = get_shape(outputs[0])
    batch = 1
    for size in out[:-2]:
        batch *= size
    length, keys = q[-2], k[-2]
    return Counter({ATTENTION_KEY: batch * length * keys * (q[-1] + v[-1])})


def flop_analyzer(model: nn.Module,
                  inputs: Union[torch.Tensor, Tuple[Any, ...]],
                  count_attention: bool = True) -> FlopAnalyzer:
    """A quiet :class:`FlopAnalyzer` of ``model(*inputs)`` that counts the
    attention matmuls under ``'attention_matmul'`` (unless
    ``count_attention`` is False). Results are computed lazily by its
    ``total(module_name)``, ``by_operator(module_name)``, ``by_module()``
    and ``unsupported_ops()``; the trace runs once."""
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs, )
    analyzer = FlopAnalyzer(model, tuple(inputs))
    if count_attention:
        analyzer.set_op_handle(
            **{op: attention_flop_jit for op in ATTENTION_OPS})
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    return analyzer


class FlopCount(NamedTuple):
    """Result of :func:`count_flops`.

    Attributes:
        flops (int): Multiply-accumulates of one forward pass, attention
            matmuls included.
        params (int): Parameters of the model.
        table (str): Per-module parameters and FLOPs (markdown table).
        attention_flops (int): The part of ``flops`` from attention matmuls
            (``flops - attention_flops`` is what the plain counter reports).
        uncounted (Counter): Traced operators counted as 0 (element-wise
            ops, and custom ops such as mmcv's RoIAlign), with occurrences.
    """
    flops: int
    params: int
    table: str
    attention_flops: int
    uncounted: Counter


def count_flops(model: nn.Module,
                inputs: Union[torch.Tensor, Tuple[Any, ...]],
                max_depth: int = 3) -> FlopCount:
    """FLOPs (multiply-accumulates) and parameters of ``model(*inputs)``,
    attention matmuls included.

    Args:
        model (nn.Module): Traced in eval mode without gradients; its
            training mode is restored afterwards.
        inputs (Tensor | tuple): The forward's arguments, e.g. a
            ``(1, 3, H, W)`` image batch.
        max_depth (int): Depth of the per-module table.

    Returns:
        FlopCount: ``(flops, params, table, attention_flops, uncounted)``.
    """
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            analyzer = flop_analyzer(model, inputs)
            flops = analyzer.total()
        table = complexity_stats_table(
            analyzer, max_depth=max_depth, show_param_shapes=False)
    finally:
        model.train(training)
    return FlopCount(
        flops=flops,
        params=parameter_count(model)[''],
        table=table,
        attention_flops=analyzer.by_operator().get(ATTENTION_KEY, 0),
        uncounted=analyzer.unsupported_ops())
