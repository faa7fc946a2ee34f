"""End to end through the real CLI on generated COCO data (CPU):
``mim train mmdet`` / ``mim test mmdet`` / ``mim train --resume`` of Mask
R-CNN CrossFormer-S (the session's runs of :mod:`helpers.mask_rcnn_runs`,
which test_resume.py shares), shorter RetinaNet CrossFormer-S and
CrossFormer++-S runs, and a mixed precision (``--amp``) step.

The configs are derived in ``tmp_path`` from the real ones
(``_base_ = '<abs path>'``, see ``helpers.configs``), shrinking
only the backbone arch, the image scale, the number of RoIs, the data and
the epochs.
"""
import os.path as osp
import re

import pytest
import torch
from helpers.archs import TINY_ARCH
from helpers.configs import write_tiny_detection_config
from helpers.mask_rcnn_runs import ITERS_PER_EPOCH, KILL_AFTER, MAX_EPOCHS
from helpers.mim import run_mim
from helpers.paths import REPO

import mmcrossformer  # noqa: F401  registers CrossFormer, allows checkpoints
from mmcrossformer.datasets import make_coco_shapes

pytestmark = pytest.mark.usefixtures('one_thread')
MASK_RCNN = osp.join(REPO, 'configs', 'maskrcnn_crossformer_s_fpn_1x_coco.py')
RETINANET = osp.join(REPO, 'configs', 'retinanet_crossformer_s_fpn_1x_coco.py')
# Every iteration logged; one epoch (4 images, batch 2: 2 iterations).
RUN = dict(train_cfg=dict(max_epochs=1),
           default_hooks=dict(logger=dict(interval=1)))


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp('coco_shapes')
    return (make_coco_shapes(root, 4, split='train'),
            make_coco_shapes(root, 2, split='val'))


def coco_metrics(log: str, mode: str) -> dict:
    """The ``coco/*`` metrics of the last ``Epoch(<mode>)`` summary."""
    lines = [line for line in log.splitlines()
             if f'Epoch({mode})' in line and 'coco/' in line]
    assert lines, f'no Epoch({mode}) COCO metrics in the log:\n{log[-4000:]}'
    return {k: float(v) for k, v in
            re.findall(r'coco/(\w+): (-?\d+\.\d+)', lines[-1])}


def assert_map(metrics: dict, *kinds):
    for kind in kinds:
        for key in (f'{kind}_mAP', f'{kind}_mAP_50', f'{kind}_mAP_75'):
            assert key in metrics, sorted(metrics)
            assert 0. <= metrics[key] <= 1., (key, metrics[key])


def train_lines(log: str, epoch: int):
    return [line for line in log.splitlines()
            if f'Epoch(train) [{epoch}][' in line and 'loss:' in line]


def test_coco_shapes(tmp_path):
    """The generated data: deterministic, extendable, COCO-valid, with
    polygon, compressed-RLE and uncompressed-RLE masks that match ``area``
    and ``bbox``."""
    import json

    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    info = make_coco_shapes(tmp_path / 'a', 6, image_size=64, seed=3)
    again = make_coco_shapes(tmp_path / 'b', 8, image_size=64, seed=3)
    other = make_coco_shapes(tmp_path / 'c', 6, image_size=64, seed=3,
                             split='val')
    assert info['classes'] == ('square', 'circle', 'triangle')
    with open(info['ann_file']) as f:
        data = json.load(f)
    with open(again['ann_file']) as f:
        assert json.load(f)['annotations'][:info['num_instances']] == data[
            'annotations']
    for name in ('train_000000.jpg', 'train_000005.jpg'):
        with open(info['img_dir'] + name, 'rb') as f, open(
                again['img_dir'] + name, 'rb') as g:
            assert f.read() == g.read()
    with open(other['img_dir'] + 'val_000000.jpg', 'rb') as f, open(
            info['img_dir'] + 'train_000000.jpg', 'rb') as g:
        assert f.read() != g.read()

    def kind(segmentation):
        if isinstance(segmentation, list):
            return 'polygon'
        compressed = isinstance(segmentation['counts'], str)
        return 'rle' if compressed else 'uncompressed rle'

    kinds = [kind(a['segmentation']) for a in data['annotations']]
    assert set(kinds) == {'polygon', 'rle', 'uncompressed rle'}
    assert info['num_rle'] == len(kinds) - kinds.count('polygon')
    coco = COCO(info['ann_file'])
    for ann in coco.loadAnns(coco.getAnnIds()):
        mask = coco.annToMask(ann)
        assert 0 < mask.sum() == ann['area']
        rle = mask_utils.encode(mask)
        assert list(mask_utils.toBbox(rle)) == pytest.approx(ann['bbox'])


def test_mask_rcnn_train(mask_rcnn_runs):
    """``mim train mmdet``: every iteration logs the five losses, finite;
    the validations (after epochs 2 and 3) report box and mask mAP."""
    log = mask_rcnn_runs['logs']['uninterrupted']
    for epoch in range(1, MAX_EPOCHS + 1):
        lines = train_lines(log, epoch)
        assert [re.search(r'\]\[(\d)/2\]', x)[1] for x in lines] == ['1', '2']
        for line in lines:
            losses = dict(re.findall(r'(loss\w*): (\S+)', line))
            assert {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox',
                    'loss_mask'} <= set(losses)
            assert all(torch.isfinite(torch.tensor(float(v)))
                       for v in losses.values())
    assert_map(coco_metrics(log, 'val'), 'bbox', 'segm')
    work_dir = mask_rcnn_runs['dirs']['uninterrupted']
    # torch.load's default (weights_only) reads mmengine's checkpoint.
    ckpt = torch.load(work_dir / f'epoch_{MAX_EPOCHS}.pth', map_location='cpu')
    assert (ckpt['meta']['epoch'], ckpt['meta']['iter']) == (
        MAX_EPOCHS, MAX_EPOCHS * ITERS_PER_EPOCH)


def test_mask_rcnn_test(mask_rcnn_runs):
    """``mim test mmdet`` of the saved checkpoint: COCO box and mask mAP."""
    assert_map(coco_metrics(mask_rcnn_runs['logs']['test'], 'test'), 'bbox',
               'segm')


def test_mask_rcnn_resume_continues_the_warm_up(mask_rcnn_runs):
    """``mim train --resume`` continues where the checkpoint stopped: no
    epoch trained again, and the first iteration after it continues the
    500-iteration warm-up (lr 1e-4 * (0.001 + 0.999 * 4 / 499), mmengine's
    LinearLR over 499 steps) instead of
    restarting it. (test_resume.py checks that it is the uninterrupted
    run.)"""
    log = mask_rcnn_runs['logs']['resumed']
    assert f'resumed epoch: {KILL_AFTER}, iter: ' \
        f'{KILL_AFTER * ITERS_PER_EPOCH}' in log
    assert not train_lines(log, KILL_AFTER)
    lines = train_lines(log, KILL_AFTER + 1)
    assert len(lines) == ITERS_PER_EPOCH
    assert 'lr: 9.0080e-07' in lines[0]
    assert_map(coco_metrics(log, 'val'), 'bbox', 'segm')


def test_retinanet_train(shapes, tmp_path):
    train, val = shapes
    # An untrained RetinaNet scores every anchor about 0.01 (its prior),
    # under the 0.05 threshold: keep all so the evaluation has boxes.
    config = write_tiny_detection_config(
        str(tmp_path / 'retinanet_tiny.py'), RETINANET, train, val,
        model=dict(test_cfg=dict(score_thr=0.)), **RUN)
    work_dir = str(tmp_path / 'work')
    log = run_mim('train', 'mmdet', config, '--work-dir', work_dir,
                  cwd=tmp_path)
    lines = train_lines(log, 1)
    assert len(lines) == 2
    assert all('loss_cls' in x and 'loss_bbox' in x for x in lines)
    assert_map(coco_metrics(log, 'val'), 'bbox')
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))


def test_amp_step(shapes, tmp_path, monkeypatch):
    """``--amp`` sets ``optim_wrapper.type='AmpOptimWrapper'`` and
    ``loss_scale='dynamic'``. mmengine 0.10.7's AmpOptimWrapper asserts a
    GPU (or NPU / MLU / MUSA), so on a CPU ``mim train --amp`` stops where
    the wrapper is built (checked first). What runs here is that same
    wrapper with the device check patched: on CPU mmengine's autocast uses
    bfloat16 (its only CPU dtype) and torch's CUDA GradScaler disables
    itself, so the step is bf16 autocast (linear layers and convolutions in
    bf16, fp32 weights) without loss scaling. It trains RetinaNet: Mask
    R-CNN's training step calls mmcv's CPU NMS, which has no bf16 kernel
    (on a GPU, ``--amp`` runs fp16 with mmcv's CUDA kernels).
    """
    import mmengine.optim.optimizer.amp_optimizer_wrapper as amp_wrapper
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.runner import Runner
    train, val = shapes
    config = write_tiny_detection_config(
        str(tmp_path / 'retinanet_tiny.py'), RETINANET, train, val,
        train_cfg=dict(max_epochs=1))
    cfg = Config.fromfile(config)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None  # train only
    cfg.optim_wrapper.type = 'AmpOptimWrapper'  # what --amp sets
    cfg.optim_wrapper.loss_scale = 'dynamic'
    cfg.work_dir = str(tmp_path / 'work')
    if not torch.cuda.is_available():
        with pytest.raises(AssertionError, match='only available training'):
            build_optim_wrapper(torch.nn.Linear(1, 1), cfg.optim_wrapper)
    monkeypatch.setattr(amp_wrapper, 'is_cuda_available', lambda: True)
    runner = Runner.from_cfg(cfg)
    model = runner.model
    dtypes = []
    for layer in (model.backbone.stages[0].blocks[0].attn.qkv,
                  model.neck.fpn_convs[0].conv,
                  model.bbox_head.retina_cls):
        layer.register_forward_hook(
            lambda module, args, out: dtypes.append(out.dtype))
    weight = model.backbone.stages[0].blocks[0].attn.qkv.weight
    before = weight.detach().clone()
    runner.train()

    assert type(runner.optim_wrapper).__name__ == 'AmpOptimWrapper'
    assert not runner.optim_wrapper.loss_scaler.is_enabled()
    # 2 iterations x (qkv, FPN conv, classifier at 5 levels)
    assert dtypes == [torch.bfloat16] * 14
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert torch.isfinite(torch.tensor(loss))
    assert weight.dtype == torch.float32  # fp32 master weights, updated
    assert not torch.equal(before, weight.detach())


def test_crossformerpp_retinanet_train_and_test(shapes, tmp_path):
    """CrossFormer++ (cooling layers, region grouping) through the real
    ``mim train`` and ``mim test``: four blocks in stage 2, so that one has
    a cooling layer."""
    train, val = shapes
    config = write_tiny_detection_config(
        str(tmp_path / 'retinanet_pp_tiny.py'),
        osp.join(REPO, 'configs', 'retinanet_crossformerpp_s_fpn_1x_coco.py'),
        train, val, arch=dict(TINY_ARCH, depths=[1, 1, 4, 1]),
        model=dict(test_cfg=dict(score_thr=0.)), **RUN)
    work_dir = str(tmp_path / 'work')
    log = run_mim('train', 'mmdet', config, '--work-dir', work_dir,
                  cwd=tmp_path)
    assert len(train_lines(log, 1)) == 2
    ckpt = osp.join(work_dir, 'epoch_1.pth')
    state_dict = torch.load(ckpt, map_location='cpu')['state_dict']
    assert 'backbone.stages.2.blocks.2.cooling.conv.weight' in state_dict
    log = run_mim('test', 'mmdet', config, '--checkpoint', ckpt,
                  '--work-dir', tmp_path / 'test', cwd=tmp_path)
    assert_map(coco_metrics(log, 'test'), 'bbox')
