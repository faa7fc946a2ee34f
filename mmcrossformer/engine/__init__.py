"""Training and evaluation support for mmengine's Runner.

- :class:`~.hooks.RNGStateHook` (registered in mmengine's root ``HOOKS``):
  random generator states saved in checkpoints and restored on resume;
- :mod:`.checkpoint_loader`: local checkpoints refused with a clear message
  when truncated or foreign (registered by ``import mmcrossformer``);
- :class:`~.optim.CompilableOptimWrapperConstructor` (registered in
  mmengine's root ``OPTIM_WRAPPER_CONSTRUCTORS``): the default constructor
  with plain-dict parameter groups, so that ``compile=True`` traces the
  optimizer step;
- :mod:`.launch`: what ``tools/train.py`` / ``tools/test.py`` set for the
  launcher (gloo on a machine without a CUDA GPU).
"""
from .checkpoint_loader import (load_local_checkpoint,
                                register_local_checkpoint_loader)
from .hooks import RNGStateHook, get_rng_states, set_rng_states
from .optim import CompilableOptimWrapperConstructor, plain_param_groups

__all__ = [
    'RNGStateHook', 'get_rng_states', 'set_rng_states',
    'load_local_checkpoint', 'register_local_checkpoint_loader',
    'CompilableOptimWrapperConstructor', 'plain_param_groups'
]
