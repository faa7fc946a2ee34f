"""Activation cooling layer (ACL) of CrossFormer++."""
from typing import Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule


def has_cooling_layer(block_index: int, depth: int) -> bool:
    """The official rule: every third block of a stage (blocks 2, 5, 8, ...)
    has a cooling layer, except the stage's last block."""
    return (block_index + 1) % 3 == 0 and block_index < depth - 1


class ActivationCoolingLayer(BaseModule):
    """A 3x3 depthwise conv and a norm that replace a block's output
    (CrossFormer++, section 4.1): no residual, no drop path. It keeps the
    activations' magnitude from growing with depth.

    ``conv`` and ``norm`` are the official ``ex_conv`` and ``ex_ln``.

    Args:
        embed_dims (int): Channels ``C``.
        norm_cfg (dict): Norm layer. Default: ``dict(type='LN')``.
    """

    def __init__(self, embed_dims: int, norm_cfg: dict = dict(type='LN'),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.conv = nn.Conv2d(embed_dims, embed_dims, 3, padding=1,
                              groups=embed_dims)
        self.norm = build_norm_layer(norm_cfg, embed_dims)[1]

    def forward(self, x: torch.Tensor,
                hw_shape: Tuple[int, int]) -> torch.Tensor:
        """``(B, H*W, C)`` tokens, row-major, in and out."""
        batch, _, channels = x.shape
        x = x.transpose(1, 2).reshape(batch, channels, *hw_shape)
        x = self.conv(x).flatten(2).transpose(1, 2)
        return self.norm(x)
