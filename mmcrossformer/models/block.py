"""The CrossFormer block: LSDA attention and an MLP, each residual."""
from typing import Optional, Tuple

import torch
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.drop import build_dropout
from mmengine.model import BaseModule

from .attention import GroupAttention
from .cooling import ActivationCoolingLayer
from .grouping import (LONG_IMAGE, check_lda_mode, group_embeddings,
                       group_layout, key_padding_mask, ungroup_embeddings)
from .mlp import CrossFormerFFN
from .residual import residual_add


class CrossFormerBlock(BaseModule):
    """One CrossFormer block: ``x + LSDA(LN(x))`` then ``x + MLP(LN(x))``,
    then, in CrossFormer++ blocks that have one, the activation cooling
    layer, which replaces the result.

    Args:
        embed_dims (int): Channels ``C``.
        num_heads (int): Attention heads.
        group_size (int): ``G``, the side of a short-distance group.
        interval (int): ``I``, the sampling interval of long-distance groups.
        long_distance (bool): LDA block (odd blocks of a stage) if True, SDA
            block (even blocks) otherwise. A map whose short side is at most
            ``G`` always uses SDA (see
            :func:`~mmcrossformer.models.grouping.group_layout`), decided
            per call.
        lda_mode (str): ``'image'``: long-distance groups of ``(H/I) x
            (W/I)`` embeddings spanning the map (CrossFormer); ``'region'``:
            GxG groups sampled every I inside ``(G*I) x (G*I)`` regions
            (CrossFormer++). Default: ``'image'``.
        acl (bool): Add an activation cooling layer after the MLP
            (CrossFormer++). Default: False.
        mlp_ratio (float): MLP hidden channels over ``C``.
        qkv_bias, qk_scale, drop_rate, attn_drop_rate: as
            :class:`GroupAttention`.
        drop_path_rate (float): Stochastic depth of both residual branches.
        act_cfg (dict): MLP activation.
        norm_cfg (dict): Norm layers.
        with_cp (bool): Recompute the block in backward (gradient
            checkpointing) to save memory.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 group_size: int = 7,
                 interval: int = 8,
                 long_distance: bool = False,
                 lda_mode: str = LONG_IMAGE,
                 acl: bool = False,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = True,
                 qk_scale: Optional[float] = None,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 act_cfg: dict = dict(type='GELU'),
                 norm_cfg: dict = dict(type='LN'),
                 with_cp: bool = False,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.group_size = group_size
        self.interval = interval
        self.long_distance = long_distance
        self.lda_mode = check_lda_mode(lda_mode)
        self.with_cp = with_cp
        self.norm1 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.attn = GroupAttention(
            embed_dims,
            num_heads,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            attn_drop_rate=attn_drop_rate,
            proj_drop_rate=drop_rate)
        self.drop_path = build_dropout(
            dict(type='DropPath', drop_prob=drop_path_rate))
        self.norm2 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.ffn = CrossFormerFFN(
            embed_dims=embed_dims,
            feedforward_channels=int(embed_dims * mlp_ratio),
            num_fcs=2,
            ffn_drop=drop_rate,
            dropout_layer=dict(type='DropPath', drop_prob=drop_path_rate),
            act_cfg=act_cfg,
            add_identity=True)
        self.cooling = ActivationCoolingLayer(
            embed_dims, norm_cfg) if acl else None

    def extra_repr(self) -> str:
        kind = (f'LDA ({self.lda_mode})'
                if self.long_distance else 'SDA')
        return (f'{kind}, group_size={self.group_size}, '
                f'interval={self.interval}')

    def lsda(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
        """Group, attend within groups, ungroup: ``(B, H, W, C)`` in and out
        (the output may be a view that crops the padding)."""
        layout = group_layout(hw_shape, self.group_size, self.interval,
                              self.long_distance, self.lda_mode)
        groups = self.attn(
            group_embeddings(x, layout), (layout.group_h, layout.group_w),
            key_padding_mask(layout, x.device))
        return ungroup_embeddings(groups, layout)

    def forward(self, x: torch.Tensor,
                hw_shape: Tuple[int, int]) -> torch.Tensor:
        """
        Args:
            x (Tensor): ``(B, H*W, C)`` tokens, row-major.
            hw_shape (tuple): ``(H, W)``.

        Returns:
            Tensor: ``(B, H*W, C)``.
        """

        batch, _, channels = x.shape

        def _forward(x):
            x = x.view(batch, *hw_shape, channels)
            # The residual sum also makes the cropped LSDA output contiguous.
            x = residual_add(x, self.lsda(self.norm1(x), hw_shape),
                             self.drop_path)
            x = x.view(batch, -1, channels)
            x = self.ffn(self.norm2(x), identity=x)
            if self.cooling is not None:
                x = self.cooling(x, hw_shape)
            return x

        if self.with_cp and x.requires_grad:
            # hw_shape is closed over, so recomputation sees it (the official
            # code passes only x and crashes).
            return cp.checkpoint(_forward, x, use_reentrant=False)
        return _forward(x)
