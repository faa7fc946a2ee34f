"""Cross-scale embedding layer (CEL)."""
from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule

from .caching import exporting


def split_channels(out_channels: int, num_kernels: int) -> Tuple[int, ...]:
    """Output channels of each kernel, as the official ``PatchEmbed`` splits
    them.

    The smallest kernel gets half, the next a quarter, ..., and the last two
    kernels get the same share, e.g. 96 over 4 kernels -> (48, 24, 12, 12).
    """
    dims = [out_channels // 2**(i + 1) for i in range(num_kernels - 1)]
    dims.append(out_channels // 2**(num_kernels - 1))
    if min(dims) < 1:
        raise ValueError(
            f'cannot split {out_channels} channels over {num_kernels} '
            f'kernels: the largest kernel would get {dims[-1]} channels; use '
            'more channels or fewer kernel sizes')
    return tuple(dims)


def space_to_depth_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(x)`` for a kernel ``k`` that is a multiple of its stride ``s``,
    computed as a stride-1 ``k/s x k/s`` conv over ``x`` rearranged into
    ``s x s`` blocks (``C * s^2`` channels).

    Same result, but CPU conv kernels handle a large strided kernel (the
    stem's 32x32 at stride 4) several times slower than this form. ``x``'s
    size must be a multiple of ``s`` (as :class:`CrossScaleEmbedding` pads).
    """
    stride, kernel = conv.stride[0], conv.kernel_size[0]
    pad = conv.padding[0]
    batch, channels = x.shape[:2]
    x = F.pad(x, (pad, pad, pad, pad))
    h, w = x.shape[2] // stride, x.shape[3] // stride
    # (B, C, H/s, s, W/s, s) -> (B, C, s, s, H/s, W/s): blocks to channels.
    x = x.view(batch, channels, h, stride, w, stride).permute(0, 1, 3, 5, 2, 4)
    x = x.reshape(batch, channels * stride * stride, h, w)
    # The kernel likewise:
    # (out, C, k/s, s, k/s, s) -> (out, C, s, s, k/s, k/s).
    blocks = kernel // stride
    weight = conv.weight.view(-1, channels, blocks, stride, blocks, stride)
    weight = weight.permute(0, 1, 3, 5, 2, 4).reshape(
        -1, channels * stride * stride, blocks, blocks)
    return F.conv2d(x, weight, conv.bias)


class CrossScaleEmbedding(BaseModule):
    """Samples patches with several kernel sizes at one stride and concatenates
    their projections (CEL, section 3.1 of the paper).

    Used both as the stem (kernels 4/8/16/32, stride 4, norm after the convs)
    and as the merging layer between stages (kernels 2/4, stride 2, norm before
    the convs). Each conv uses padding ``(k - stride) // 2`` so that all
    kernels are centred on the same patch and give the same output size. The
    input is zero-padded at the bottom/right to a multiple of the stride, so
    the output is ``ceil(H / stride) x ceil(W / stride)`` for any size (the
    official code requires multiples of 32).

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels, split over the kernels by
            :func:`split_channels`.
        kernel_sizes (Sequence[int]): Kernel sizes, smallest first.
        stride (int): Stride shared by all kernels.
        norm_cfg (dict): Norm layer config.
        norm_before (bool): Normalise the input tokens (``in_channels``)
            before the convs, as the merging layers do; otherwise normalise
            the output tokens (``out_channels``), as the stem does.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_sizes: Sequence[int],
                 stride: int,
                 norm_cfg: dict = dict(type='LN'),
                 norm_before: bool = False,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        kernel_sizes = tuple(kernel_sizes)
        if not kernel_sizes or any(k < stride or (k - stride) % 2
                                   for k in kernel_sizes):
            raise ValueError(
                f'kernel sizes {kernel_sizes} must each be >= the stride '
                f'{stride} and differ from it by an even number, so that '
                'every kernel is centred on the same patch')
        self.stride = stride
        self.norm_before = norm_before
        self.out_channels = out_channels
        self.projections = nn.ModuleList(
            nn.Conv2d(in_channels, dims, kernel_size=k, stride=stride,
                      padding=(k - stride) // 2)
            for k, dims in zip(
                kernel_sizes, split_channels(out_channels, len(kernel_sizes))))
        self.norm = build_norm_layer(
            norm_cfg, in_channels if norm_before else out_channels)[1]

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """
        Args:
            x (Tensor): ``(B, C_in, H, W)`` feature map.

        Returns:
            tuple: tokens ``(B, H' * W', C_out)`` and ``(H', W')`` with
            ``H' = ceil(H / stride)``, ``W' = ceil(W / stride)``.
        """
        if self.norm_before:
            x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            if x.device.type == 'cpu':
                # (B, C, H, W) in memory too: given channels-last strides,
                # CPU convs take their channels-last path, whose backward
                # took the merges' convs 1.2x-2x the time (cuDNN, which may
                # prefer channels-last, is left as it is).
                x = x.contiguous()
        pad_h = -x.shape[2] % self.stride
        pad_w = -x.shape[3] % self.stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        # Exporters need the kernel's shape, which a computed weight hides
        # (and an exported graph is best left with the plain convs).
        plain = exporting()
        x = torch.cat([
            space_to_depth_conv(x, proj) if not plain
            and proj.kernel_size[0] >= 4 * self.stride else proj(x)
            for proj in self.projections
        ],
                      dim=1)
        hw_shape = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        if not self.norm_before:
            x = self.norm(x)
        return x, hw_shape
