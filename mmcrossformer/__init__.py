"""mmcrossformer: the CrossFormer vision transformer for OpenMMLab 3.x.

``import mmcrossformer`` registers :class:`~mmcrossformer.models.CrossFormer`
in MMEngine's root ``MODELS`` registry (so mmdet, mmseg and mmpretrain build
``dict(type='CrossFormer')``) and lets ``torch.load`` read the checkpoints
mmengine saves (see :mod:`mmcrossformer.compat`). It also registers
:class:`~mmcrossformer.engine.RNGStateHook` in the root ``HOOKS`` registry
and a local checkpoint loader that refuses truncated or foreign files with a
clear message (see :mod:`mmcrossformer.engine`).
"""
from .compat import allow_mmengine_checkpoints
from .engine import RNGStateHook, register_local_checkpoint_loader
from .models import CrossFormer
from .version import __version__
from .zoo import install as install_model_zoo

allow_mmengine_checkpoints()
register_local_checkpoint_loader()
install_model_zoo()  # mmpretrain.get_model / list_models (mmcrossformer.zoo)

__all__ = ['CrossFormer', 'RNGStateHook', '__version__']
