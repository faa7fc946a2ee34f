"""Multi-head self-attention inside groups, with dynamic position bias."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from .attention_kernel import biased_attention
from .position_bias import DynamicPositionBias

# Additive mask for padded keys. The official -1e6 overflows to -inf in fp16
# (and then NaN where a whole group is padding); -1e4 is representable in
# fp16/bf16 and still gives those keys an exactly-zero softmax weight.
PADDING_MASK_VALUE = -1e4


class GroupAttention(BaseModule):
    """Self-attention within each group of embeddings (the attention of LSDA).

    The attention logits get the DPB bias of the group shape, and padded keys
    an additive mask; both go with the packed qkv projection to the fused
    attention kernel (see :func:`~.attention_kernel.biased_attention`), the
    bias as its table of offsets, so no ``(groups, heads, N, N)`` attention
    matrix or mask is kept for backward.

    Args:
        embed_dims (int): Channels ``C``.
        num_heads (int): Heads; must divide ``embed_dims``.
        qkv_bias (bool): Bias in the qkv projection.
        qk_scale (float, optional): Logit scale; ``head_dims ** -0.5`` if None.
        attn_drop_rate (float): Dropout on the attention weights.
        proj_drop_rate (float): Dropout after the output projection.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 qkv_bias: bool = True,
                 qk_scale: Optional[float] = None,
                 attn_drop_rate: float = 0.,
                 proj_drop_rate: float = 0.,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims {embed_dims} is not divisible by '
                             f'num_heads {num_heads}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.scale = qk_scale or (embed_dims // num_heads)**-0.5
        self.attn_drop_rate = attn_drop_rate
        self.position_bias = DynamicPositionBias(
            max(embed_dims // 16, 1), num_heads)
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop_rate)

    def forward(self,
                x: torch.Tensor,
                group_shape: Tuple[int, int],
                key_padding_mask: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
        """
        Args:
            x (Tensor): ``(B * num_groups, N, C)`` groups, ``N = Gh * Gw``
                embeddings each, row-major in the group.
            group_shape (tuple): ``(Gh, Gw)``.
            key_padding_mask (Tensor, optional): ``(num_groups, N)`` bool,
                True for padded embeddings (never attended to).

        Returns:
            Tensor: ``(B * num_groups, N, C)``.
        """
        bias = self.position_bias.relative_bias(*group_shape)
        padding = None
        if key_padding_mask is not None:  # (nG, N)
            padding = key_padding_mask.to(
                bias.table.dtype) * PADDING_MASK_VALUE
        x = biased_attention(self.qkv(x), bias, padding, self.scale,
                             self.attn_drop_rate, self.training)
        return self.proj_drop(self.proj(x))
