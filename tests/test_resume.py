"""Resume that loses nothing, and checkpoints refused with a clear message.

The tiny Mask R-CNN runs of :mod:`helpers.mask_rcnn_runs` (3 epochs of 2
iterations, a checkpoint per epoch; CPU, one thread, deterministic): once
uninterrupted, once killed with SIGKILL right after its second checkpoint
and then resumed with ``mim train --resume``. The losses of iterations 5-6,
the validation after them and the final weights equal the uninterrupted
run's (1e-6 relative). Resumed from the same checkpoint without
``RNGStateHook``, they do not: that is what the hook is for.

A truncated checkpoint and a file that is not one are refused with a
message naming the file and the problem, without a traceback out of
``torch.load``: through the real ``mim test --checkpoint`` (truncated) and
``mim train --resume`` (not a checkpoint), and both kinds through the
Runner calls those commands make (``runner.test()`` with ``load_from``,
``runner.train()`` with ``resume``), in this process.
"""
import glob
import os.path as osp

import pytest
import torch
from helpers.commands import run_mim_expecting_failure, scalars_records
from helpers.mask_rcnn_runs import (ITERS_PER_EPOCH, KILL_AFTER, MAX_EPOCHS,
                                    RESUMED_STEPS, RNG_HOOK)
from helpers.paths import REPO
from mmengine.config import Config

from mmcrossformer.models.checkpoint import CheckpointError

pytestmark = pytest.mark.usefixtures('one_thread')
RTOL = 1e-6


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
def runs(mask_rcnn_runs):
    return mask_rcnn_runs


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
    text.write_text('epoch 3: loss 1.23\n')
    return {
        'truncated': (truncated, 'is truncated or corrupt'),
        'text': (text, 'is not a PyTorch checkpoint')
    }


def assert_refused(out, path, problem):
    assert f'{path} {problem}' in out, out[-3000:]
    # Our message, not torch.load's traceback.
    assert 'serialization.py' not in out, out[-3000:]
    assert 'UnpicklingError' not in out


def test_mim_test_refuses_a_truncated_checkpoint(runs, bad_checkpoints):
    path, problem = bad_checkpoints['truncated']
    out = run_mim_expecting_failure(
        'test',
        'mmdet',
        runs['config'],
        '--checkpoint',
        path,
        '--work-dir',
        runs['root'] / 'test_truncated',
        cwd=runs['root'])
    assert_refused(out, path, problem)


def test_resume_refuses_a_file_that_is_no_checkpoint(runs, bad_checkpoints):
    path, problem = bad_checkpoints['text']
    out = run_mim_expecting_failure(
        'train',
        'mmdet',
        runs['config'],
        '--work-dir',
        runs['root'] / 'resume_text',
        '--resume',
        path,
        cwd=runs['root'])
    assert_refused(out, path, problem)


@pytest.mark.parametrize('mode, kind', [('test', 'text'),
                                        ('resume', 'truncated')])
def test_runner_refuses_a_bad_checkpoint(runs, bad_checkpoints, tmp_path,
                                         mode, kind):
    """The two cases the commands above do not run, through the Runner
    calls the commands make, in this process: what mmdet's
    ``tools/test.py`` does with ``--checkpoint`` (``load_from``,
    ``runner.test()``) and ``tools/train.py`` with ``--resume PATH``
    (``resume``, ``runner.train()``)."""
    from mmengine.runner import Runner
    path, problem = bad_checkpoints[kind]
    cfg = Config.fromfile(runs['config'])
    cfg.work_dir = str(tmp_path / 'work')
    cfg.load_from = str(path)
    cfg.resume = mode == 'resume'
    runner = Runner.from_cfg(cfg)
    with pytest.raises(CheckpointError) as error:
        runner.test() if mode == 'test' else runner.train()
    assert f'{path} {problem}' in str(error.value)
    if kind == 'truncated':
        assert 'resume from an earlier checkpoint' in str(error.value)


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
