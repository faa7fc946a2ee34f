"""The compiled CPU attention kernel (``mmcrossformer/csrc``), built on
first use.

``csrc/biased_attention.cpp`` computes on CPU what
:func:`~.attention_kernel.biased_attention` computes, forward and backward,
fused per block of query rows (see that file's header). It is compiled with
``torch.utils.cpp_extension.load`` the first time a process needs it (about
a minute on 2 cores; then cached under ``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``, and rebuilt only when the source or the
compiler flags change). Where it cannot be built (no C++ compiler, no
``ninja``, a BLAS without ``sgemm_``), a warning says so once and the
attention runs its pure-PyTorch path, which gives the same results.

``MMCROSSFORMER_CPU_KERNEL=0`` turns the compiled kernel off (the
pure-PyTorch path always).
"""
import logging
import os
import os.path as osp
import threading
import warnings
from types import ModuleType
from typing import Optional

import torch
from mmengine.logging import print_log

SOURCE = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'csrc',
                  'biased_attention.cpp')
ENV_SWITCH = 'MMCROSSFORMER_CPU_KERNEL'

_lock = threading.Lock()
_loaded: dict = {}


def enabled() -> bool:
    """False when ``MMCROSSFORMER_CPU_KERNEL=0`` (read at each call)."""
    return os.environ.get(ENV_SWITCH, '1').strip() not in ('0', 'false',
                                                           'False', 'off')


def _compile_flags() -> list:
    """``-O3`` and OpenMP (``at::parallel_for`` is inlined), plus AVX2/FMA
    where PyTorch itself dispatches to them on this CPU."""
    flags = ['-O3', '-fopenmp']
    if torch.backends.cpu.get_cpu_capability() in ('AVX2', 'AVX512'):
        flags += ['-mavx2', '-mfma']
    return flags


def build() -> ModuleType:
    """Compile (or load from the cache) and import the kernel; raises what
    the build raises."""
    # Importing cpp_extension warns that no CUDA runtime is found on a CPU
    # machine with a CUDA build of torch: irrelevant to a CPU kernel.
    logger = logging.getLogger('torch.utils.cpp_extension')
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils.cpp_extension import _get_build_directory, load
    finally:
        logger.setLevel(level)

    # One build per instruction set: a cache folder shared by machines with
    # different CPUs must not hand one an AVX2 build it cannot run.
    capability = torch.backends.cpu.get_cpu_capability().lower()
    name = f'mmcrossformer_attention_{capability}'
    built = osp.join(_get_build_directory(name, verbose=False), f'{name}.so')
    if not osp.exists(built):
        print_log(
            'mmcrossformer: compiling the CPU attention kernel (once; about '
            'a minute)', logger='current')
    return load(
        name=name,
        sources=[SOURCE],
        extra_cflags=_compile_flags(),
        extra_ldflags=['-fopenmp'],
        verbose=False)


def cpu_kernel() -> Optional[ModuleType]:
    """The compiled kernel, built on the first call of a process; None if
    it is turned off or cannot be built (warned once)."""
    if not enabled():
        return None
    if 'module' not in _loaded:
        with _lock:
            if 'module' not in _loaded:
                try:
                    _loaded['module'] = build()
                except Exception as error:  # compiler, ninja, linker, ...
                    warnings.warn(
                        'mmcrossformer: the compiled CPU attention kernel '
                        f'could not be built ({type(error).__name__}: '
                        f'{str(error).strip()[:500]}); the attention runs '
                        'its pure-PyTorch path instead (same results, '
                        'slower training). Install a C++ compiler (g++) '
                        f'and ninja to build it, or set {ENV_SWITCH}=0 to '
                        'skip the attempt.')
                    _loaded['module'] = None
    return _loaded['module']
