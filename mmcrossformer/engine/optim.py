"""An optimizer whose step ``torch.compile`` can trace:
:class:`CompilableOptimWrapperConstructor`.

mmengine's ``Runner(compile=True)`` compiles ``model.train_step``, which
ends with ``optim_wrapper.update_params(loss)``, so dynamo also traces the
optimizer's ``step``. With a ``paramwise_cfg`` (every config of this
package has one, ``crossformer_paramwise_cfg``), mmengine's
``DefaultOptimWrapperConstructor`` passes the parameter groups through
``OPTIMIZERS.build``, whose config turns each group dict into an mmengine
``ConfigDict``, and ``torch.optim.Optimizer`` keeps the objects it is given
in ``optimizer.param_groups``. Dynamo (torch 2.13) cannot trace a
``ConfigDict`` (a ``dict`` subclass with its own attribute access) and stops
with ``InternalTorchDynamoError: 'UserDefinedDictVariable' object has no
attribute 'items'`` in ``AdamW.step``.

:class:`CompilableOptimWrapperConstructor` builds exactly what the default
constructor builds (the same groups, values and optimizer wrapper) and then
replaces each group by a plain ``dict`` of the same entries, which is what a
``torch.optim`` optimizer holds when built directly, and what it holds after
``load_state_dict`` (a resumed run) anyway. ``import mmcrossformer``
registers it in mmengine's root ``OPTIM_WRAPPER_CONSTRUCTORS``, so mmdet,
mmseg and mmpretrain configs select it with::

    optim_wrapper = dict(
        type='OptimWrapper',
        constructor='CompilableOptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
        paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.))
"""
from typing import Dict, List

import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS


def plain_param_groups(groups: List[Dict]) -> List[dict]:
    """Each parameter group of ``groups`` (``optimizer.param_groups``) as a
    plain ``dict`` of the same entries, in place (the list object is kept,
    since the optimizer and the wrapper share it); returns ``groups``.

    Nested values stay as they are: the entries of a group are its
    ``params`` list and the optimizer's hyper-parameters (numbers, tuples of
    numbers, booleans).
    """
    for i, group in enumerate(groups):
        if type(group) is not dict:
            groups[i] = dict(group.items())
    return groups


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class CompilableOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's ``DefaultOptimWrapperConstructor`` (same arguments, same
    parameter groups), with the optimizer's parameter groups stored as
    plain ``dict`` objects so that ``torch.compile`` traces its ``step``
    (see the module docstring)."""

    def __call__(self, model: nn.Module) -> OptimWrapper:
        optim_wrapper = super().__call__(model)
        plain_param_groups(optim_wrapper.optimizer.param_groups)
        return optim_wrapper
