"""Reading and writing checkpoint files with errors a person can act on.

:func:`load_checkpoint_file` tells a missing, empty, truncated, foreign or
pickle-holding file apart instead of showing ``torch.load``'s traceback (the
converter reads its input with it, and :mod:`mmcrossformer.engine.
checkpoint_loader` every local checkpoint mmengine loads), and
:func:`atomic_path` gives writers a temporary file beside the destination,
renamed over it only once complete, so the destination is either complete or
untouched (:func:`save_atomic` for ``torch.save``, the ONNX exporter for its
graphs); :func:`refuse_overwrite` is the check (and message) for an existing
destination that every writer uses.
"""
import contextlib
import os
import os.path as osp
import tempfile
from typing import Callable, Dict, Iterator, Optional, Type, Union

import torch

from .models.checkpoint import CheckpointError

ZIP_MAGIC = b'PK\x03\x04'
# torch.save(..., _use_new_zipfile_serialization=False): pickle protocol 2,
# then the legacy format's magic number.
LEGACY_MAGIC = b'\x80\x02\x8a\n'
# What to do about each problem, for a person running the converter;
# other callers pass their own (``advice=``).
CONVERTER_ADVICE = dict(
    truncated='download it again',
    pickled='If you trust the file, re-run with --allow-pickle.')


def load_checkpoint_file(path: str,
                         allow_pickle: bool = False,
                         map_location: Union[str, torch.device,
                                             Callable] = 'cpu',
                         advice: Optional[Dict[str, str]] = None):
    """``torch.load(path, map_location)``, or a :class:`CheckpointError`
    that names the file, the problem and what to do.

    Args:
        path (str): The file.
        allow_pickle (bool): Unpickle arbitrary Python objects (only for
            trusted files); by default only tensors and plain containers
            (and what :mod:`mmcrossformer.compat` allow-lists) load.
        map_location: As ``torch.load``'s. Default: ``'cpu'``.
        advice (dict, optional): What to do about a ``'truncated'`` file and
            one holding ``'pickled'`` objects; defaults to
            :data:`CONVERTER_ADVICE`.
    """
    advice = dict(CONVERTER_ADVICE, **(advice or {}))
    if not osp.exists(path):
        raise CheckpointError(f'{path}: no such file')
    if osp.isdir(path):
        raise CheckpointError(f'{path} is a folder, not a checkpoint file')
    if osp.getsize(path) == 0:
        raise CheckpointError(f'{path} is empty (0 bytes), not a PyTorch '
                              'checkpoint')
    with open(path, 'rb') as f:
        magic = f.read(4)
    try:
        return torch.load(
            path, map_location=map_location, weights_only=not allow_pickle)
    except Exception as e:  # torch raises many types on bad files
        # The first sentence of torch's message (its advice follows).
        reason = (
            str(e).splitlines()[0].split('. ')[0]
            if str(e) else type(e).__name__)
        if 'Unsupported global' in str(e):
            raise CheckpointError(
                f'{path} holds Python objects besides tensors, which are not '
                'loaded by default because unpickling can run code. '
                f"{advice['pickled']}") from None
        if magic in (ZIP_MAGIC, LEGACY_MAGIC):
            raise CheckpointError(
                f'{path} is truncated or corrupt (a PyTorch checkpoint that '
                f"cannot be read: {reason}); {advice['truncated']}") from None
        raise CheckpointError(
            f'{path} is not a PyTorch checkpoint (it starts with {magic!r}, '
            'not the zip archive torch.save writes)') from None


def refuse_overwrite(path: str,
                     overwrite: bool = False,
                     flag: str = '--overwrite',
                     error: Type[Exception] = CheckpointError) -> None:
    """Raise ``error`` (a :class:`CheckpointError` by default) if ``path``
    exists and not ``overwrite``: the message names the file and the
    command-line ``flag`` that replaces it. Call it before any slow work,
    so that a run that would be refused at the end is refused at the
    start."""
    if osp.exists(path) and not overwrite:
        raise error(f'{path} exists; pass {flag} to replace it')


@contextlib.contextmanager
def atomic_path(path: str,
                overwrite: bool = False,
                error: Type[Exception] = CheckpointError) -> Iterator[str]:
    """A temporary path in ``path``'s folder to write to, renamed over
    ``path`` when the block ends without an error and removed otherwise
    (also on interruption), so ``path`` is either complete or untouched.
    An existing ``path`` is refused before the block runs unless
    ``overwrite`` (:func:`refuse_overwrite`, raising ``error``)."""
    refuse_overwrite(path, overwrite, error=error)
    out_dir = osp.dirname(osp.abspath(path))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=out_dir, prefix=f'.{osp.basename(path)}.', suffix='.tmp')
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def save_atomic(obj, path: str, overwrite: bool = False) -> None:
    """``torch.save(obj)`` to ``path`` through :func:`atomic_path`: the
    destination is complete or untouched, and an existing one is refused
    unless ``overwrite``."""
    with atomic_path(path, overwrite) as tmp, open(tmp, 'wb') as f:
        torch.save(obj, f)
