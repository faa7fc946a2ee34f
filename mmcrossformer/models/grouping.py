"""Embedding grouping for LSDA: short- and long-distance partitions.

Three partitions of the zero-padded ``(B, Hp, Wp, C)`` map, each one reshape
and one permutation:

- SDA, GxG windows of adjacent embeddings (padded to multiples of G):
  ``(B, Hp/G, G, Wp/G, G, C) -> (B, Hp/G, Wp/G, G, G, C)`` (a small map in
  region mode is one ``H x W`` group, the same permutation with Gh = H,
  Gw = W).
- LDA over the whole image (CrossFormer, ICLR 2022; padded to multiples of I):
  ``(B, Hp/I, I, Wp/I, I, C) -> (B, I, I, Hp/I, Wp/I, C)``: group (a, b)
  takes rows a, a+I, ... and columns b, b+I, ..., so a group has
  ``(Hp/I) x (Wp/I)`` embeddings and its shape follows the image size.
- LDA inside regions (CrossFormer++, the official main branch; padded to
  multiples of S = G*I): ``(B, Hp/S, G, I, Wp/S, G, I, C) ->
  (B, Hp/S, Wp/S, I, I, G, G, C)``: region (rh, rw) holds I*I groups of GxG
  embeddings, group (a, b) taking rows ``rh*S + a + I*u`` and columns
  ``rw*S + b + I*v`` (u, v < G), so every group is GxG whatever the image.

The padded embeddings are masked out as attention keys.
"""
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

from .caching import eager_lru_cache

SHORT, LONG_IMAGE, LONG_REGION = 'short', 'image', 'region'
LDA_MODES = (LONG_IMAGE, LONG_REGION)


class GroupLayout(NamedTuple):
    """How one block partitions an ``H x W`` map (see :func:`group_layout`)."""
    kind: str  # SHORT, LONG_IMAGE or LONG_REGION
    height: int
    width: int
    pad_h: int
    pad_w: int
    group_h: int  # embeddings per group along H
    group_w: int
    interval: int  # sampling step of long-distance groups (1 for SHORT)

    @property
    def long_distance(self) -> bool:
        return self.kind != SHORT

    @property
    def num_groups(self) -> int:
        return ((self.height + self.pad_h) * (self.width + self.pad_w) //
                (self.group_h * self.group_w))


def check_lda_mode(lda_mode: str) -> str:
    """``lda_mode`` itself, or a ValueError naming the valid modes."""
    if lda_mode not in LDA_MODES:
        raise ValueError(f"lda_mode must be 'image' (CrossFormer) or "
                         f"'region' (CrossFormer++), got {lda_mode!r}")
    return lda_mode


def group_layout(hw_shape: Tuple[int, int],
                 group_size: int,
                 interval: int,
                 long_distance: bool,
                 lda_mode: str = LONG_IMAGE) -> GroupLayout:
    """Choose the partition of one block for one input size.

    A map whose short side is at most ``group_size`` is attended with SDA,
    whatever the block's kind (the official rules), decided per call and
    never stored on the module:

    - ``'image'`` mode (ICLR code): GxG windows with ``G = min(H, W)``;
    - ``'region'`` mode (main-branch code): one group of the whole map. The
      official code pads the map to one ``max(H, W)``-sided square group and
      masks the padding, which gives exactly this attention; the ``H x W``
      group computes it without the padding (a 2x512 map would otherwise
      make a 512x512 group and a 256 GiB position bias).
    """
    check_lda_mode(lda_mode)
    height, width = hw_shape
    if min(height, width) <= group_size:
        if lda_mode == LONG_REGION:
            return GroupLayout(SHORT, height, width, 0, 0, height, width, 1)
        long_distance, group_size = False, min(height, width)
    if not long_distance:
        kind, interval, multiple = SHORT, 1, group_size
    elif lda_mode == LONG_REGION:
        kind, multiple = LONG_REGION, group_size * interval
    else:
        kind, multiple = LONG_IMAGE, interval
    # Sizes rounded up to the multiple as ceil-divisions: the same integers
    # as ``height + (-height % multiple)``, in a form that torch.compile's
    # symbolic shapes (dynamic=True) simplify.
    padded_h = -(-height // multiple) * multiple
    padded_w = -(-width // multiple) * multiple
    pad_h, pad_w = padded_h - height, padded_w - width
    if kind == LONG_IMAGE:
        group_h, group_w = padded_h // interval, padded_w // interval
    else:
        group_h = group_w = group_size
    return GroupLayout(kind, height, width, pad_h, pad_w, group_h, group_w,
                       interval)


def group_embeddings(x: torch.Tensor,
                     layout: GroupLayout,
                     pad_value: float = 0.) -> torch.Tensor:
    """Pad (with ``pad_value``) and partition ``(B, H, W, C)`` into
    ``(B * num_groups, N, C)`` groups of ``N = group_h * group_w``
    embeddings, image-major."""
    batch, _, _, channels = x.shape
    if layout.pad_h or layout.pad_w:
        x = F.pad(x, (0, 0, 0, layout.pad_w, 0, layout.pad_h),
                  value=pad_value)
    hp, wp = x.shape[1], x.shape[2]
    gh, gw, step = layout.group_h, layout.group_w, layout.interval
    if layout.kind == SHORT:
        # (B, Hp/G, G, Wp/G, G, C) -> (B, Hp/G, Wp/G, G, G, C)
        x = x.view(batch, hp // gh, gh, wp // gw, gw, channels)
        x = x.permute(0, 1, 3, 2, 4, 5)
    elif layout.kind == LONG_IMAGE:
        # (B, Hp/I, I, Wp/I, I, C) -> (B, I, I, Hp/I, Wp/I, C)
        x = x.view(batch, gh, step, gw, step, channels)
        x = x.permute(0, 2, 4, 1, 3, 5)
    else:
        # (B, Rh, G, I, Rw, G, I, C) -> (B, Rh, Rw, I, I, G, G, C)
        x = x.view(batch, hp // (gh * step), gh, step, wp // (gw * step), gw,
                   step, channels)
        x = x.permute(0, 1, 4, 3, 6, 2, 5, 7)
    return x.reshape(-1, gh * gw, channels)


def ungroup_embeddings(x: torch.Tensor, layout: GroupLayout) -> torch.Tensor:
    """Inverse of :func:`group_embeddings`: ``(B * num_groups, N, C)`` back to
    ``(B, H, W, C)``, padding removed (a view that crops, when padded)."""
    channels = x.shape[-1]
    hp, wp = layout.height + layout.pad_h, layout.width + layout.pad_w
    gh, gw, step = layout.group_h, layout.group_w, layout.interval
    if layout.kind == SHORT:
        # (B, Hp/G, Wp/G, G, G, C) -> (B, Hp/G, G, Wp/G, G, C)
        x = x.view(-1, hp // gh, wp // gw, gh, gw, channels)
        x = x.permute(0, 1, 3, 2, 4, 5)
    elif layout.kind == LONG_IMAGE:
        # (B, I, I, Hp/I, Wp/I, C) -> (B, Hp/I, I, Wp/I, I, C)
        x = x.view(-1, step, step, gh, gw, channels)
        x = x.permute(0, 3, 1, 4, 2, 5)
    else:
        # (B, Rh, Rw, I, I, G, G, C) -> (B, Rh, G, I, Rw, G, I, C)
        x = x.view(-1, hp // (gh * step), wp // (gw * step), step, step, gh,
                   gw, channels)
        x = x.permute(0, 1, 5, 3, 2, 6, 4, 7)
    x = x.reshape(-1, hp, wp, channels)
    if layout.pad_h or layout.pad_w:
        x = x[:, :layout.height, :layout.width]
    return x


# Shared by every block; an entry is at most Hp * Wp bytes.
@eager_lru_cache(maxsize=128)
def key_padding_mask(layout: GroupLayout,
                     device: torch.device) -> Optional[torch.Tensor]:
    """``(num_groups, N)`` bool, True where a group member is padding; None
    when the layout needs no padding. Cached per layout and device in eager
    mode, computed inline while a graph is captured
    (:func:`~.caching.eager_lru_cache`)."""
    if not (layout.pad_h or layout.pad_w):
        return None
    valid = torch.zeros(1, layout.height, layout.width, 1, device=device)
    return group_embeddings(valid, layout, pad_value=1.).squeeze(-1).bool()
