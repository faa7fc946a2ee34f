"""Make mmengine 0.10's checkpoints loadable under torch >= 2.6.

torch 2.6 made ``torch.load`` default to ``weights_only=True``; mmengine 0.10.7
calls it without the argument, so ``--resume`` and ``mim test --checkpoint``
refuse the checkpoints mmengine itself saved (its message hub stores
``HistoryBuffer`` objects holding numpy arrays, and the step schedulers a
``collections.Counter``). We allow-list exactly those types; everything else
stays refused.
"""
import collections

import torch


def _numpy_globals():
    import numpy as np
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = {type(np.dtype(t)) for t in (
        np.float64, np.float32, np.float16, np.int64, np.int32, np.int16,
        np.int8, np.uint8, np.bool_)}
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtypes]


def mmengine_checkpoint_globals():
    """The non-tensor types an mmengine 0.10 training checkpoint holds."""
    from mmengine.logging import HistoryBuffer

    # ``getattr``: each pickled HistoryBuffer keeps its statistics methods as
    # ``getattr(HistoryBuffer, 'min')`` etc. (seen in a real ``mim train
    # mmseg`` checkpoint). The unpickler still calls only allow-listed
    # functions, so what getattr returns cannot be called.
    return [HistoryBuffer, collections.Counter, getattr, *_numpy_globals()]


def allow_mmengine_checkpoints() -> None:
    """Allow-list :func:`mmengine_checkpoint_globals` for ``torch.load``
    (idempotent; no-op on torch without ``add_safe_globals``)."""
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:
        return
    add_safe_globals(mmengine_checkpoint_globals())
