"""End to end with the real CLI: ``mim train mmseg`` (CPU, single process,
so the configs' SyncBN must be reverted) on a generated ADE20K-layout
dataset, resuming with ``--resume``, ``mim test mmseg`` in ``whole`` mode and
with ``--tta``, and sliding-window inference on an image whose size is not a
multiple of 32.

The run uses a config written to tmp_path that inherits the real
``configs/upernet_crossformer_s_160k_ade20k.py`` and shrinks only the arch
and head widths, the image sizes (every ``scale`` / ``crop_size`` of the
pipelines x 1/8), the data root, the iterations (the schedule scaled with
them, and a learning rate that lets 12 iterations learn something) and the
data loader workers (see ``helpers.configs``).
"""
import argparse
import glob
import json
import os.path as osp
import re

import numpy as np
import pytest
import torch
from helpers.ade_shapes import make_ade_shapes
from helpers.archs import TINY_ARCH
from helpers.configs import write_tiny_segmentation_config
from helpers.mim import run_mim
from helpers.paths import REPO
from mmengine.config import Config

CONFIG = osp.join(REPO, 'configs', 'upernet_crossformer_s_160k_ade20k.py')
FACTOR = 1 / 8  # 512x512 crops -> 64x64, test scale (2048, 512) -> (256, 64)
MAX_ITERS = 12  # the config's; the first run stops at 8 as if interrupted
STOP_AT = 8
# 12 iterations at the recipe's 6e-5 leave a tiny model predicting nothing
# right (mIoU 0 whatever the evaluation does); at 1e-3 it learns the scene
# classes enough for mIoU > 0, which a label mix-up would break.
LR = 1e-3
IMAGE_SIZE = (72, 96)  # -> 64x85 at the test scale: not a multiple of 32


def shrink_schedule(schedulers, old_iters, new_iters, min_iters=2):
    """Consecutive scheduler phases (from iteration 0) rescaled from
    ``old_iters`` to ``new_iters`` iterations, each at least ``min_iters``
    long: the 1500-iteration warm-up of 160k becomes 2 of 12."""
    out = []
    for s in schedulers:
        begin = out[-1]['end'] if out else 0
        end = max(round(s['end'] * new_iters / old_iters), begin + min_iters)
        out.append(dict(s, begin=begin, end=min(end, new_iters)))
    return out


def write_tiny_config(path, data_root):
    cfg = Config.fromfile(CONFIG)
    schedule = shrink_schedule(cfg.param_scheduler, cfg.train_cfg.max_iters,
                               MAX_ITERS)
    return write_tiny_segmentation_config(
        str(path), CONFIG, data_root, FACTOR,
        train_cfg=dict(max_iters=MAX_ITERS, val_interval=STOP_AT),
        param_scheduler=schedule,
        optim_wrapper=dict(optimizer=dict(lr=LR)),
        default_hooks=dict(logger=dict(interval=1),
                           checkpoint=dict(interval=2)),
        randomness=dict(seed=0))


def json_records(work_dir):
    """Every record of the json logs mmengine wrote under ``work_dir``."""
    records = []
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                          'scalars.json'))):
        with open(path) as f:
            records += [json.loads(line) for line in f if line.strip()]
    return records


def read_test_metrics(work_dir):
    """The metrics ``mim test`` wrote to ``work_dir/<timestamp>/*.json``."""
    paths = glob.glob(osp.join(work_dir, '*', '*.json'))
    assert len(paths) == 1, paths
    with open(paths[0]) as f:
        return json.load(f)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """Train to STOP_AT, then resume to MAX_ITERS; both outputs and dirs."""
    root = tmp_path_factory.mktemp('seg_e2e')
    data_root = str(root / 'ade')
    make_ade_shapes(data_root, num_train=4, num_val=2, image_size=IMAGE_SIZE)
    config = write_tiny_config(root / 'tiny_upernet.py', data_root)
    work_dir = str(root / 'work')
    first = run_mim('train', 'mmseg', config, '--work-dir', work_dir,
                    '--cfg-options', f'train_cfg.max_iters={STOP_AT}',
                    cwd=root)
    first_records = json_records(work_dir)
    resumed = run_mim('train', 'mmseg', config, '--work-dir', work_dir,
                      '--resume', cwd=root)
    return dict(root=root, config=config, work_dir=work_dir, first=first,
                first_records=first_records, resumed=resumed,
                records=json_records(work_dir))


def test_train_on_cpu_reports_miou(run):
    # The configs' SyncBN became BN in this single-process run.
    assert 'SyncBatchNorm (SyncBN) layers in the model will be ' \
        'automatically reverted' in run['first']
    train = [r for r in run['first_records'] if 'loss' in r]
    assert [r['iter'] for r in train] == list(range(1, STOP_AT + 1))
    assert all(np.isfinite(r['loss']) for r in train)
    val = [r for r in run['first_records'] if 'mIoU' in r]
    assert len(val) == 1 and 0 <= val[0]['mIoU'] <= 100
    assert osp.exists(osp.join(run['work_dir'], f'iter_{STOP_AT}.pth'))


def test_resume_continues_from_checkpoint(run):
    assert re.search(rf'resumed epoch: 0, iter: {STOP_AT}', run['resumed'])
    new = run['records'][len(run['first_records']):]
    train = [r for r in new if 'loss' in r]
    # It continues at STOP_AT + 1 with the schedule where it stopped.
    assert [r['iter'] for r in train] == list(range(STOP_AT + 1,
                                                    MAX_ITERS + 1))
    last_lr = [r for r in run['first_records'] if 'lr' in r][-1]['lr']
    assert 0 < train[0]['lr'] < last_lr
    final = [r for r in new if 'mIoU' in r]
    assert [r['step'] for r in final] == [MAX_ITERS]
    assert final[0]['mIoU'] > 0
    ckpt = torch.load(osp.join(run['work_dir'], f'iter_{MAX_ITERS}.pth'),
                      map_location='cpu', weights_only=True)
    assert ckpt['meta']['iter'] == MAX_ITERS


@pytest.mark.parametrize('tta', [False, True], ids=['whole', 'tta'])
def test_mim_test_reports_miou(run, tta):
    work_dir = osp.join(run['root'], 'test_tta' if tta else 'test_whole')
    out = run_mim('test', 'mmseg', run['config'], '--checkpoint',
                  osp.join(run['work_dir'], f'iter_{MAX_ITERS}.pth'),
                  '--work-dir', work_dir, *(['--tta'] if tta else []),
                  cwd=run['root'])
    metrics = read_test_metrics(work_dir)
    assert isinstance(metrics['mIoU'], float)
    assert 0 < metrics['mIoU'] <= 100
    assert re.search(r'mIoU: \d+\.\d+', out)
    if not tta:  # the same checkpoint and pipeline as the last validation
        last_val = [r for r in run['records'] if 'mIoU' in r][-1]
        assert metrics['mIoU'] == last_val['mIoU']
    # The config mmseg's test.py ran (dumped by the runner): with --tta,
    # SegTTAModel over the 6 scales x 2 flips of the config's tta_pipeline.
    ran = Config.fromfile(osp.join(work_dir, osp.basename(run['config'])))
    assert ran.model.type == ('SegTTAModel' if tta else 'EncoderDecoder')
    pipeline = ran.test_dataloader.dataset.pipeline
    if tta:
        scales, flips = pipeline[1].transforms[:2]
        assert [t.scale for t in scales] == [
            (int(256 * r), int(64 * r)) for r in ran.img_ratios]
        assert [t.prob for t in flips] == [0., 1.]
    else:
        assert [t.type for t in pipeline][:2] == ['LoadImageFromFile',
                                                  'Resize']


def test_slide_inference_on_odd_size(run):
    from mmengine.config import DictAction
    from mmengine.registry import DefaultScope
    from mmseg.apis import inference_model, init_model

    # The --cfg-options of the README's slide command, parsed as the CLI does.
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    cfg_options = parser.parse_args([
        '--cfg-options', 'model.test_cfg.mode=slide',
        'model.test_cfg.crop_size=(48,48)', 'model.test_cfg.stride=(32,32)'
    ]).cfg_options
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = init_model(
            run['config'],
            osp.join(run['work_dir'], f'iter_{MAX_ITERS}.pth'),
            device='cpu',
            cfg_options=cfg_options)
        assert model.test_cfg.mode == 'slide'
        calls = []
        model.backbone.register_forward_hook(
            lambda m, args, out: calls.append(tuple(args[0].shape)))
        image = np.random.RandomState(0).randint(
            0, 255, (70, 90, 3), dtype=np.uint8)
        result = inference_model(model, image)
        # The test pipeline resizes 70x90 to 64x82; 48x48 windows, stride
        # 32: 2 rows x 3 columns, each window inside the image.
        assert calls == [(1, 3, 48, 48)] * 6
        assert result.seg_logits.data.shape == (150, 70, 90)
        assert result.pred_sem_seg.data.shape == (1, 70, 90)

        calls.clear()
        model.test_cfg.mode = 'whole'  # the official mode: one 64x82 pass
        whole = inference_model(model, image)
        assert calls == [(1, 3, 64, 82)]
        assert whole.pred_sem_seg.data.shape == (1, 70, 90)


def test_crossformerpp_upernet_train_and_test(tmp_path):
    """CrossFormer++ UperNet through the real ``mim train`` (2 iterations,
    then validation) and ``mim test`` of its checkpoint; four blocks in
    stage 2, so that one has a cooling layer."""
    config_path = osp.join(REPO, 'configs',
                           'upernet_crossformerpp_s_160k_ade20k.py')
    data_root = str(tmp_path / 'ade')
    make_ade_shapes(data_root, num_train=2, num_val=1, image_size=IMAGE_SIZE)
    config = write_tiny_segmentation_config(
        str(tmp_path / 'tiny_upernet_pp.py'), config_path, data_root, FACTOR,
        arch=dict(TINY_ARCH, depths=[1, 1, 4, 1]),
        train_cfg=dict(max_iters=2, val_interval=2),
        default_hooks=dict(logger=dict(interval=1),
                           checkpoint=dict(interval=2)))
    work_dir = str(tmp_path / 'work')
    run_mim('train', 'mmseg', config, '--work-dir', work_dir, cwd=tmp_path)
    train = [r for r in json_records(work_dir) if 'loss' in r]
    assert [r['iter'] for r in train] == [1, 2]
    assert all(np.isfinite(r['loss']) for r in train)
    ckpt = osp.join(work_dir, 'iter_2.pth')
    state_dict = torch.load(ckpt, map_location='cpu')['state_dict']
    assert 'backbone.stages.2.blocks.2.cooling.conv.weight' in state_dict
    test_dir = str(tmp_path / 'test')
    run_mim('test', 'mmseg', config, '--checkpoint', ckpt, '--work-dir',
            test_dir, cwd=tmp_path)
    assert 0 <= read_test_metrics(test_dir)['mIoU'] <= 100
