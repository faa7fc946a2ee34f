"""The residual sum of a branch under stochastic depth, in one pass."""
import torch
import torch.nn as nn
from mmcv.cnn.bricks.drop import DropPath


def residual_add(identity: torch.Tensor, branch: torch.Tensor,
                 drop_path: nn.Module) -> torch.Tensor:
    """``identity + drop_path(branch)``, as one ``addcmul`` when
    ``drop_path`` is mmcv's :class:`~mmcv.cnn.bricks.drop.DropPath` in
    training.

    mmcv's ``drop_path`` divides the branch by the keep probability, then
    multiplies it by the per-sample mask, then the caller adds it: three
    passes over a ``(B, ..., C)`` tensor and two fresh ones forward, two
    more backward. Here the mask and the division are folded into one
    per-sample factor ``(B, 1, ..., 1)`` of ``addcmul``, drawn exactly as
    mmcv draws it (the same random numbers, so a seeded run drops the same
    paths; with a half-precision branch the division is done in the sum's
    precision rather than the branch's). Other modules (``nn.Identity``,
    any dropout layer) and mmcv's in eval mode are applied as they are.

    Args:
        identity (Tensor): ``(B, ...)``, the residual.
        branch (Tensor): the branch's output, the same shape.
        drop_path (nn.Module): the dropout layer of the branch.

    Returns:
        Tensor: ``identity + drop_path(branch)``, contiguous like
        ``identity``.
    """
    if (type(drop_path) is not DropPath or not drop_path.training
            or drop_path.drop_prob == 0.):
        return identity + drop_path(branch)
    keep = 1 - drop_path.drop_prob
    shape = (branch.shape[0], ) + (1, ) * (branch.ndim - 1)
    # floor(keep + U[0, 1)) is 1 with probability keep, else 0; drawn in
    # the branch's dtype as mmcv does, divided in the sum's.
    mask = (keep + torch.rand(
        shape, dtype=branch.dtype, device=branch.device)).floor_()
    scale = mask.to(torch.result_type(identity, branch)).div_(keep)
    return torch.addcmul(identity, branch, scale)
