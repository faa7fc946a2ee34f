"""The tiny Mask R-CNN runs of ``test_det_e2e.py`` and ``test_resume.py``,
made once per session (the ``mask_rcnn_runs`` fixture of ``conftest.py``)
through the real ``mim train mmdet`` / ``mim test mmdet``.

A Mask R-CNN derived from ``configs/maskrcnn_crossformer_s_fpn_1x_coco.py``
(:func:`helpers.configs.write_tiny_detection_config`: random flip, drop
path and RoI sampling, so every generator matters) trains
``MAX_EPOCHS`` epochs of ``ITERS_PER_EPOCH`` iterations with a checkpoint
per epoch and a validation after epoch 2 and the last (CPU, one thread,
deterministic, every iteration's raw losses in the json log; neck and heads
narrowed, ``helpers.configs.MASK_RCNN_NARROW_HEADS``):

- ``uninterrupted``: the whole run, then ``mim test`` of its last
  checkpoint (``logs['test']``);
- ``resumed``: the same config with ``KillAfterCheckpointsHook``, killed
  with SIGKILL right after its ``KILL_AFTER``-th checkpoint
  (``logs['killed']``), then ``mim train --resume`` (no path: the work
  dir's ``last_checkpoint``) to the end (``logs['resumed']``);
- ``resumed_without_hook``: ``mim train --resume <copy of that
  checkpoint>`` of the config without ``RNGStateHook`` (and no
  validation: only its training is compared).
"""
import os.path as osp
import shutil
from typing import Dict

from helpers.commands import run_command, scalars_records
from helpers.configs import (MASK_RCNN_NARROW_HEADS, write_derived_config,
                             write_tiny_detection_config)
from helpers.mim import MIM, run_mim
from helpers.paths import REPO

from mmcrossformer.datasets import make_coco_shapes

MASK_RCNN = osp.join(REPO, 'configs', 'maskrcnn_crossformer_s_fpn_1x_coco.py')
MAX_EPOCHS = 3
ITERS_PER_EPOCH = 2  # 4 images, batch 2
VAL_INTERVAL = 2  # validations after epochs 2 and 3 (the last)
KILL_AFTER = 2  # checkpoints
RESUMED_STEPS = list(
    range(KILL_AFTER * ITERS_PER_EPOCH + 1, MAX_EPOCHS * ITERS_PER_EPOCH + 1))
RNG_HOOK = dict(type='RNGStateHook')


def make_runs(root) -> Dict:
    """Run everything above in the folder ``root`` (a ``pathlib.Path``).

    Returns:
        dict: ``root``, ``config`` (the derived config's path), ``dirs``
        (``{run: work dir}``), ``logs`` (``{run or 'killed' or 'test':
        combined output}``) and ``killed_records`` (what the killed run
        logged, :func:`helpers.commands.scalars_records`).
    """
    train = make_coco_shapes(root / 'coco', 4, split='train')
    val = make_coco_shapes(root / 'coco', 2, split='val')
    config = write_tiny_detection_config(
        str(root / 'maskrcnn_tiny.py'),
        MASK_RCNN,
        train,
        val,
        model=MASK_RCNN_NARROW_HEADS,
        train_cfg=dict(max_epochs=MAX_EPOCHS, val_interval=VAL_INTERVAL),
        default_hooks=dict(
            logger=dict(interval=1), checkpoint=dict(interval=1)),
        log_processor=dict(window_size=1),  # raw losses in the json log
        randomness=dict(seed=0),
        custom_hooks=[RNG_HOOK])
    killed_config = write_derived_config(
        str(root / 'maskrcnn_tiny_killed.py'), config,
        dict(
            custom_imports=dict(
                imports=['mmcrossformer', 'helpers.train_hooks'],
                allow_failed_imports=False),
            custom_hooks=[
                RNG_HOOK,
                dict(
                    type='KillAfterCheckpointsHook',
                    num_checkpoints=KILL_AFTER)
            ]))
    no_hook_config = write_derived_config(
        str(root / 'maskrcnn_tiny_no_rng_hook.py'), config,
        dict(custom_hooks=[], train_cfg=dict(val_begin=MAX_EPOCHS + 1)))
    dirs = {
        name: root / name
        for name in ('uninterrupted', 'resumed', 'resumed_without_hook')
    }

    def mim_train(config, name, *args):
        return run_mim('train', 'mmdet', config, '--work-dir', dirs[name],
                       *args, cwd=root)

    logs = dict(uninterrupted=mim_train(config, 'uninterrupted'))
    logs['test'] = run_mim(
        'test', 'mmdet', config, '--checkpoint',
        dirs['uninterrupted'] / f'epoch_{MAX_EPOCHS}.pth', '--work-dir',
        root / 'test', cwd=root)
    # (run_command, not run_mim: the config imports helpers.train_hooks.)
    logs['killed'] = run_command(
        [MIM, 'train', 'mmdet', killed_config, '--work-dir', dirs['resumed']],
        cwd=root,
        expect_failure=True)
    killed_records = scalars_records(dirs['resumed'])
    checkpoint = dirs['resumed'] / f'epoch_{KILL_AFTER}.pth'
    dirs['resumed_without_hook'].mkdir()
    copy = shutil.copy(checkpoint, dirs['resumed_without_hook'])
    # --resume without a path: the checkpoint named in last_checkpoint.
    logs['resumed'] = mim_train(config, 'resumed', '--resume')
    logs['resumed_without_hook'] = mim_train(
        no_hook_config, 'resumed_without_hook', '--resume', copy)
    return dict(
        root=root,
        config=config,
        dirs=dirs,
        logs=logs,
        killed_records=killed_records)
