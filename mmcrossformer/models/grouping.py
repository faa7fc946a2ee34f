"""Embedding grouping for LSDA: short- and long-distance partitions.

SDA: ``(B, Hp/G, G, Wp/G, G, C) -> (B, Hp/G, Wp/G, G, G, C)``: each group is a
GxG window of adjacent embeddings.
LDA: ``(B, Hp/I, I, Wp/I, I, C) -> (B, I, I, Hp/I, Wp/I, C)``: group (i, j)
takes the embeddings at rows i, i+I, ... and columns j, j+I, ...

The map is zero-padded at the bottom/right to a multiple of G (SDA) or I
(LDA); the padded embeddings are masked out as attention keys.
"""
from functools import lru_cache
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F


class GroupLayout(NamedTuple):
    """How one block partitions an ``H x W`` map (see :func:`group_layout`)."""
    long_distance: bool
    size: int  # G for SDA, I for LDA
    height: int
    width: int
    pad_h: int
    pad_w: int
    group_h: int  # embeddings per group along H
    group_w: int

    @property
    def num_groups(self) -> int:
        return ((self.height + self.pad_h) * (self.width + self.pad_w) //
                (self.group_h * self.group_w))


def group_layout(hw_shape: Tuple[int, int], group_size: int, interval: int,
                 long_distance: bool) -> GroupLayout:
    """Choose the partition of one block for one input size.

    A map whose short side is at most ``group_size`` is attended with SDA and
    ``G = min(H, W)`` (the official rule), whatever the block's kind. This is
    decided per call; nothing is stored on the module.
    """
    height, width = hw_shape
    if min(height, width) <= group_size:
        long_distance, size = False, min(height, width)
    else:
        size = interval if long_distance else group_size
    pad_h, pad_w = -height % size, -width % size
    if long_distance:
        group_h, group_w = (height + pad_h) // size, (width + pad_w) // size
    else:
        group_h = group_w = size
    return GroupLayout(long_distance, size, height, width, pad_h, pad_w,
                       group_h, group_w)


def group_embeddings(x: torch.Tensor,
                     layout: GroupLayout,
                     pad_value: float = 0.) -> torch.Tensor:
    """Pad (with ``pad_value``) and partition ``(B, H, W, C)`` into
    ``(B * num_groups, N, C)`` groups of ``N = group_h * group_w``
    embeddings."""
    batch, _, _, channels = x.shape
    if layout.pad_h or layout.pad_w:
        x = F.pad(x, (0, 0, 0, layout.pad_w, 0, layout.pad_h),
                  value=pad_value)
    hp, wp, size = x.shape[1], x.shape[2], layout.size
    x = x.view(batch, hp // size, size, wp // size, size, channels)
    if layout.long_distance:
        x = x.permute(0, 2, 4, 1, 3, 5)  # (B, I, I, Hp/I, Wp/I, C)
    else:
        x = x.permute(0, 1, 3, 2, 4, 5)  # (B, Hp/G, Wp/G, G, G, C)
    return x.reshape(-1, layout.group_h * layout.group_w, channels)


def ungroup_embeddings(x: torch.Tensor, layout: GroupLayout) -> torch.Tensor:
    """Inverse of :func:`group_embeddings`: ``(B * num_groups, N, C)`` back to
    ``(B, H, W, C)``, padding removed."""
    channels = x.shape[-1]
    size = layout.size
    hp, wp = layout.height + layout.pad_h, layout.width + layout.pad_w
    if layout.long_distance:
        x = x.view(-1, size, size, hp // size, wp // size, channels)
        x = x.permute(0, 3, 1, 4, 2, 5)
    else:
        x = x.view(-1, hp // size, wp // size, size, size, channels)
        x = x.permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(-1, hp, wp, channels)
    if layout.pad_h or layout.pad_w:
        x = x[:, :layout.height, :layout.width]
    return x


@lru_cache(maxsize=128)
def _key_padding_mask(layout: GroupLayout, device: str) -> torch.Tensor:
    valid = torch.zeros(1, layout.height, layout.width, 1, device=device)
    return group_embeddings(valid, layout, pad_value=1.).squeeze(-1).bool()


def key_padding_mask(layout: GroupLayout,
                     device: torch.device) -> Optional[torch.Tensor]:
    """``(num_groups, N)`` bool, True where a group member is padding; None
    when the layout needs no padding. Cached per layout and device."""
    if not (layout.pad_h or layout.pad_w):
        return None
    return _key_padding_mask(layout, str(device))
