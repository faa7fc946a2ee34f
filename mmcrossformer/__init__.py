"""mmcrossformer: the CrossFormer vision transformer for OpenMMLab 3.x.

``import mmcrossformer`` registers :class:`~mmcrossformer.models.CrossFormer`
in MMEngine's root ``MODELS`` registry (so mmdet, mmseg and mmpretrain build
``dict(type='CrossFormer')``) and lets ``torch.load`` read the checkpoints
mmengine saves (see :mod:`mmcrossformer.compat`).
"""
from .compat import allow_mmengine_checkpoints
from .models import CrossFormer
from .version import __version__

allow_mmengine_checkpoints()

__all__ = ['CrossFormer', '__version__']
