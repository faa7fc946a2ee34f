"""Local checkpoint files that mmengine loads, refused with a message that
names the file and the problem instead of a pickle traceback.

mmengine reads every local checkpoint through ``CheckpointLoader``'s ``''``
scheme (``--resume``, ``load_from``, ``mim test --checkpoint``,
``init_cfg=dict(type='Pretrained')``): ``torch.load`` on the path, which on a
truncated download, an interrupted save or a file that is not a checkpoint
ends in a ``PytorchStreamReader`` / ``UnpicklingError`` traceback.
:func:`load_local_checkpoint` takes that scheme's place on
``import mmcrossformer`` and loads through
:func:`mmcrossformer.fileio.load_checkpoint_file`: the same ``torch.load``
(``weights_only``, so mmengine's own checkpoints load through the allow-list
of :mod:`mmcrossformer.compat`, as before), with a
:class:`~mmcrossformer.models.checkpoint.CheckpointError` on a bad file. The
other schemes (``http://``, ``open-mmlab://``, ``s3://``, ...) are left as
mmengine registers them.

Registering at import costs nothing measurable: ``mmcv.cnn``, which the
backbone needs, imports ``mmengine.runner`` itself, and what takes the time
of ``import mmcrossformer`` is torch and ``mmengine.model`` (through
``mmengine.optim``, ``torch.distributed``'s FSDP and DTensor modules), which
``python -X importtime`` attributes to whichever module imports them first.
"""
import os.path as osp

from mmengine.runner.checkpoint import CheckpointLoader

from ..fileio import load_checkpoint_file

# What to do, for a person running mim train / mim test / tools/*.py.
RUNNER_ADVICE = dict(
    truncated='a save that was interrupted leaves such a file: resume from '
    'an earlier checkpoint (--resume without a path takes the one named in '
    "the work_dir's last_checkpoint file), or download it again",
    pickled='mmengine loads only tensors, plain containers and the types of '
    'its own checkpoints (mmcrossformer.compat). If you trust the file, '
    "re-save what you need, e.g. torch.save({'state_dict': torch.load(path, "
    "weights_only=False)['state_dict']}, new_path).")


def load_local_checkpoint(filename: str, map_location=None):
    """mmengine's loader for local paths (and ``file://``-less URIs), with
    errors from :func:`~mmcrossformer.fileio.load_checkpoint_file`."""
    return load_checkpoint_file(
        osp.expanduser(filename),
        map_location=map_location,
        advice=RUNNER_ADVICE)


def register_local_checkpoint_loader() -> None:
    """Make :func:`load_local_checkpoint` mmengine's ``''`` scheme
    (idempotent)."""
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_local_checkpoint, force=True)
