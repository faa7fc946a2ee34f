"""Resume that loses nothing, and checkpoints refused with a clear message.

A tiny Mask R-CNN derived from the shipped config (random flip, drop path
and RoI sampling, so every generator matters) trains 4 epochs of 2
iterations with a checkpoint per epoch and a validation after epochs 2 and
4 (CPU, one thread, deterministic): once uninterrupted, once killed with
SIGKILL right after its second checkpoint and then resumed with
``mim train --resume``. The losses of iterations 5-8, the validation after
them and the final weights equal the uninterrupted run's (1e-6 relative).
Resumed from the same checkpoint without ``RNGStateHook``, they do not:
that is what the hook is for.

``mim test --checkpoint`` and ``mim train --resume`` refuse a truncated
checkpoint and a file that is not one with a message naming the file and
the problem, without a traceback out of ``torch.load``.
"""
import glob
import os.path as osp
import shutil

import pytest
import torch
from helpers.commands import (run_command, run_mim_expecting_failure,
                              scalars_records)
from helpers.configs import write_derived_config, write_tiny_detection_config
from helpers.mim import MIM, run_mim
from helpers.paths import REPO
from mmengine.config import Config

from mmcrossformer.datasets import make_coco_shapes

pytestmark = pytest.mark.usefixtures('one_thread')
MASK_RCNN = osp.join(REPO, 'configs', 'maskrcnn_crossformer_s_fpn_1x_coco.py')
MAX_EPOCHS = 4
ITERS_PER_EPOCH = 2  # 4 images, batch 2
KILL_AFTER = 2  # checkpoints
RESUMED_STEPS = list(
    range(KILL_AFTER * ITERS_PER_EPOCH + 1, MAX_EPOCHS * ITERS_PER_EPOCH + 1))
RTOL = 1e-6
RNG_HOOK = dict(type='RNGStateHook')


def train_losses(records, steps):
    """``{step: {loss name: value}}`` of the training records at ``steps``."""
    out = {
        r['step']: {
            k: v
            for k, v in r.items() if k.startswith('loss')
        }
        for r in records if 'loss' in r and r['step'] in steps
    }
    assert sorted(out) == list(steps), sorted(out)
    return out


def val_metrics(records):
    return [{
        k: v
        for k, v in r.items() if k.startswith('coco/')
    } for r in records if 'coco/bbox_mAP' in r]


def relative_errors(a: dict, b: dict):
    """``{step: max relative difference of its losses}``."""
    return {
        step:
        max(
            abs(a[step][k] - b[step][k]) / max(abs(a[step][k]), 1e-12)
            for k in a[step])
        for step in a
    }


def max_weight_error(path_a, path_b) -> float:
    """The largest ``|a - b| / max|a|`` over the tensors of two
    checkpoints' state dicts."""
    a = torch.load(path_a, map_location='cpu', weights_only=True)
    b = torch.load(path_b, map_location='cpu', weights_only=True)
    a, b = a['state_dict'], b['state_dict']
    assert a.keys() == b.keys()
    worst = 0.
    for key, x in a.items():
        if not x.is_floating_point():
            assert torch.equal(x, b[key]), key
            continue
        scale = x.abs().max().clamp_min(1e-12)
        worst = max(worst, ((x - b[key]).abs().max() / scale).item())
    return worst


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """The uninterrupted run, the killed and resumed one, and a resume of
    the same checkpoint without RNGStateHook; their work dirs and logs."""
    root = tmp_path_factory.mktemp('resume')
    train = make_coco_shapes(root / 'coco', 4, split='train')
    val = make_coco_shapes(root / 'coco', 2, split='val')
    config = write_tiny_detection_config(
        str(root / 'maskrcnn_tiny.py'),
        MASK_RCNN,
        train,
        val,
        train_cfg=dict(max_epochs=MAX_EPOCHS, val_interval=2),
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
        dict(custom_hooks=[]))
    dirs = {
        name: root / name
        for name in ('uninterrupted', 'resumed', 'resumed_without_hook')
    }

    logs = dict(
        uninterrupted=run_mim(
            'train',
            'mmdet',
            config,
            '--work-dir',
            dirs['uninterrupted'],
            cwd=root))
    logs['killed'] = run_command(
        [MIM, 'train', 'mmdet', killed_config, '--work-dir', dirs['resumed']],
        cwd=root,
        expect_failure=True)
    killed_records = scalars_records(dirs['resumed'])
    checkpoint = dirs['resumed'] / f'epoch_{KILL_AFTER}.pth'
    dirs['resumed_without_hook'].mkdir()
    copy = shutil.copy(checkpoint, dirs['resumed_without_hook'])
    # --resume without a path: the checkpoint named in last_checkpoint.
    logs['resumed'] = run_mim(
        'train',
        'mmdet',
        config,
        '--work-dir',
        dirs['resumed'],
        '--resume',
        cwd=root)
    logs['resumed_without_hook'] = run_mim(
        'train',
        'mmdet',
        no_hook_config,
        '--work-dir',
        dirs['resumed_without_hook'],
        '--resume',
        copy,
        cwd=root)
    return dict(
        root=root,
        config=config,
        dirs=dirs,
        logs=logs,
        killed_records=killed_records)


def test_killed_run_stopped_after_its_second_checkpoint(runs):
    resumed = runs['dirs']['resumed']
    # The killed run wrote epochs 1 and 2 only, identical to the
    # uninterrupted run's (the runs are deterministic).
    assert sorted(
        osp.basename(p) for p in glob.glob(
            osp.join(runs['dirs']['uninterrupted'], 'epoch_*.pth'))) == [
                f'epoch_{e}.pth' for e in range(1, MAX_EPOCHS + 1)
            ]
    steps = range(1, KILL_AFTER * ITERS_PER_EPOCH + 1)
    assert train_losses(runs['killed_records'], steps) == train_losses(
        scalars_records(runs['dirs']['uninterrupted']), steps)
    assert max_weight_error(
        runs['dirs']['uninterrupted'] / f'epoch_{KILL_AFTER}.pth',
        resumed / f'epoch_{KILL_AFTER}.pth') == 0
    assert 'Saving checkpoint at 3 epochs' not in runs['logs']['killed']


def test_resume_equals_the_uninterrupted_run(runs):
    dirs, logs = runs['dirs'], runs['logs']
    assert f'resumed epoch: {KILL_AFTER}, iter: ' \
        f'{KILL_AFTER * ITERS_PER_EPOCH}' in logs['resumed']
    assert 'RNGStateHook: random generator states restored' in logs['resumed']
    expected = scalars_records(dirs['uninterrupted'])
    resumed = scalars_records(dirs['resumed'])[len(runs['killed_records']):]
    errors = relative_errors(
        train_losses(expected, RESUMED_STEPS),
        train_losses(resumed, RESUMED_STEPS))
    assert max(errors.values()) <= RTOL, errors
    assert val_metrics(resumed) == val_metrics(expected)[-1:]
    final = f'epoch_{MAX_EPOCHS}.pth'
    assert max_weight_error(dirs['uninterrupted'] / final,
                            dirs['resumed'] / final) <= RTOL


def test_resume_without_the_hook_differs(runs):
    dirs = runs['dirs']
    expected = train_losses(
        scalars_records(dirs['uninterrupted']), RESUMED_STEPS)
    without = train_losses(
        scalars_records(dirs['resumed_without_hook']), RESUMED_STEPS)
    errors = relative_errors(expected, without)
    assert max(errors.values()) > 1e-3, errors
    final = f'epoch_{MAX_EPOCHS}.pth'
    assert max_weight_error(dirs['uninterrupted'] / final,
                            dirs['resumed_without_hook'] / final) > 1e-4


@pytest.fixture(scope='module')
def bad_checkpoints(runs):
    """A checkpoint cut in half (an interrupted copy) and a text file."""
    good = runs['dirs']['uninterrupted'] / f'epoch_{MAX_EPOCHS}.pth'
    truncated = runs['root'] / 'truncated.pth'
    data = good.read_bytes()
    truncated.write_bytes(data[:len(data) // 2])
    text = runs['root'] / 'notes.pth'
    text.write_text('epoch 4: loss 1.23\n')
    return {
        'truncated': (truncated, 'is truncated or corrupt'),
        'text': (text, 'is not a PyTorch checkpoint')
    }


def assert_refused(out, path, problem):
    assert f'{path} {problem}' in out, out[-3000:]
    # Our message, not torch.load's traceback.
    assert 'serialization.py' not in out, out[-3000:]
    assert 'UnpicklingError' not in out


@pytest.mark.parametrize('kind', ['truncated', 'text'])
def test_mim_test_refuses_a_bad_checkpoint(runs, bad_checkpoints, kind):
    path, problem = bad_checkpoints[kind]
    out = run_mim_expecting_failure(
        'test',
        'mmdet',
        runs['config'],
        '--checkpoint',
        path,
        '--work-dir',
        runs['root'] / f'test_{kind}',
        cwd=runs['root'])
    assert_refused(out, path, problem)


def test_resume_refuses_a_truncated_checkpoint(runs, bad_checkpoints):
    path, problem = bad_checkpoints['truncated']
    out = run_mim_expecting_failure(
        'train',
        'mmdet',
        runs['config'],
        '--work-dir',
        runs['root'] / 'resume_truncated',
        '--resume',
        path,
        cwd=runs['root'])
    assert_refused(out, path, problem)
    assert 'resume from an earlier checkpoint' in out


# The runnable configs of projects/ and the demo; those of configs/ are
# checked by tests/test_model_zoo.py, which loads each of them anyway.
SHIPPED_CONFIGS = sorted(
    p for pattern in ('configs/demo/*.py', 'projects/*/configs/**/*.py')
    for p in glob.glob(osp.join(REPO, pattern), recursive=True))


@pytest.mark.parametrize(
    'config', SHIPPED_CONFIGS, ids=lambda p: osp.relpath(p, REPO))
def test_shipped_configs_enable_the_rng_hook(config):
    cfg = Config.fromfile(config)
    assert RNG_HOOK in cfg.get('custom_hooks', []), (
        f"{config}: custom_hooks {cfg.get('custom_hooks')} lacks {RNG_HOOK}")
