"""Images far from the training sizes: 1x1, 7x7, 8x2048, 2048x8 and sizes
just below and above multiples of 32 go through the backbone (CrossFormer
and the CrossFormer++ switches) in training (forward + backward) and
inference with the documented shapes and finite values; a tiny Mask R-CNN
and a tiny UperNet, derived from the shipped configs, train on a batch of
images of different sizes padded by their data preprocessors (with an image
without annotations in the detection batch) and predict on the same odd
sizes.
"""
import os.path as osp

import numpy as np
import pytest
import torch
from helpers.archs import TINY_ARCH
from helpers.configs import tiny_detector_overrides, tiny_segmentor_overrides
from helpers.paths import REPO
from mmengine.config import Config
from mmengine.model.utils import revert_sync_batchnorm
from mmengine.registry import MODELS, DefaultScope
from mmengine.structures import InstanceData, PixelData

from mmcrossformer import CrossFormer

pytestmark = pytest.mark.usefixtures('one_thread')
MASK_RCNN = osp.join(REPO, 'configs', 'maskrcnn_crossformer_s_fpn_1x_coco.py')
UPERNET = osp.join(REPO, 'configs', 'upernet_crossformer_s_160k_ade20k.py')
SIZES = [(1, 1), (7, 7), (8, 2048), (2048, 8), (223, 225), (255, 257),
         (31, 33)]
BACKBONES = dict(
    crossformer=dict(), crossformerpp=dict(acl=True, lda_mode='region'))
BACKBONE_CASES = [
    pytest.param(kind, size, id=f'{kind}-{size[0]}x{size[1]}')
    for kind in sorted(BACKBONES) for size in SIZES
]


def size_id(size):
    return f'{size[0]}x{size[1]}'


def expected_shapes(batch, height, width):
    """The documented output shapes of the tiny arch's four stages."""
    return [(batch, TINY_ARCH['embed_dims'] * 2**i, -(-height // 2**(i + 2)),
             -(-width // 2**(i + 2))) for i in range(4)]


@pytest.fixture(scope='module')
def backbones():
    torch.manual_seed(0)
    return {
        kind: CrossFormer(arch=TINY_ARCH, drop_path_rate=0.1, **kwargs)
        for kind, kwargs in BACKBONES.items()
    }


@pytest.mark.parametrize('kind,size', BACKBONE_CASES)
def test_backbone_train_and_inference(backbones, kind, size):
    backbone = backbones[kind]
    x = torch.randn(2, 3, *size)
    backbone.train()
    outs = backbone(x)
    assert [tuple(o.shape) for o in outs] == expected_shapes(2, *size)
    assert all(torch.isfinite(o).all() for o in outs)
    backbone.zero_grad()
    sum(o.square().mean() for o in outs).backward()
    grads = [p.grad for p in backbone.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    backbone.eval()
    with torch.no_grad():
        outs = backbone(x[:1])
    assert [tuple(o.shape) for o in outs] == expected_shapes(1, *size)
    assert all(torch.isfinite(o).all() for o in outs)


def build_model(config, overrides_fn, scope):
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(dict(model=overrides_fn(cfg.model)))
    with DefaultScope.overwrite_default_scope(scope):
        torch.manual_seed(0)
        model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    return model


def image(height, width, seed=0):
    rng = np.random.RandomState(seed)
    return torch.from_numpy(
        rng.randint(0, 256, (3, height, width)).astype(np.uint8))


def assert_finite_losses(losses):
    total = 0
    for name, value in losses.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            assert torch.isfinite(v).all(), (name, v)
            if 'loss' in name:
                total = total + v.sum()
    total.backward()
    return total


# ------------------------------------------------------------------ mmdet
@pytest.fixture(scope='module')
def detector():
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield build_model(MASK_RCNN,
                          lambda m: tiny_detector_overrides(m, num_classes=3),
                          'mmdet')


def det_sample(height, width, boxes):
    """A ``DetDataSample`` with ``boxes`` (x1, y1, x2, y2), each filled by
    its mask."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    masks = np.zeros((len(boxes), height, width), np.uint8)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes.astype(int)):
        mask[y1:y2, x1:x2] = 1
    sample = DetDataSample(
        metainfo=dict(
            img_shape=(height, width),
            ori_shape=(height, width),
            scale_factor=(1., 1.)))
    sample.gt_instances = InstanceData(
        bboxes=torch.from_numpy(boxes),
        labels=torch.zeros(len(boxes), dtype=torch.long),
        masks=BitmapMasks(masks, height, width))
    return sample


def test_detector_trains_on_mixed_sizes_with_an_empty_image(detector):
    data = dict(
        inputs=[image(50, 70), image(33, 97, 1),
                image(7, 7, 2)],
        data_samples=[
            det_sample(50, 70, [(5, 8, 40, 45)]),
            det_sample(33, 97, []),
            det_sample(7, 7, [(1, 1, 6, 5)])
        ])
    detector.train()
    batch = detector.data_preprocessor(data, training=True)
    # Padded to the largest image, rounded up to 32.
    assert tuple(batch['inputs'].shape) == (3, 3, 64, 128)
    losses = detector(**batch, mode='loss')
    assert {'loss_rpn_cls', 'loss_cls', 'loss_bbox',
            'loss_mask'} <= set(losses)
    assert_finite_losses(losses)


@pytest.mark.parametrize('size', SIZES, ids=size_id)
def test_detector_predicts_on_odd_sizes(detector, size):
    detector.eval()
    with torch.no_grad():
        result, = detector.test_step(
            dict(inputs=[image(*size)], data_samples=[det_sample(*size, [])]))
    pred = result.pred_instances
    assert pred.bboxes.shape[1:] == (4, )
    assert torch.isfinite(pred.bboxes).all()
    assert torch.isfinite(pred.scores).all()
    assert tuple(pred.masks.shape[1:]) == size


# ------------------------------------------------------------------ mmseg
@pytest.fixture(scope='module')
def segmentor():
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield build_model(UPERNET, tiny_segmentor_overrides, 'mmseg')


def seg_sample(height, width, seed=0):
    from mmseg.structures import SegDataSample
    sample = SegDataSample(
        metainfo=dict(img_shape=(height, width), ori_shape=(height, width)))
    rng = np.random.RandomState(seed)
    sample.gt_sem_seg = PixelData(
        data=torch.from_numpy(rng.randint(0, 150, (1, height, width))))
    return sample


def test_segmentor_trains_on_mixed_sizes(segmentor):
    # Training pads to the config's crop (64x64 for the tiny config).
    sizes = [(1, 1), (37, 61), (64, 50)]
    data = dict(
        inputs=[image(*s, i) for i, s in enumerate(sizes)],
        data_samples=[seg_sample(*s, i) for i, s in enumerate(sizes)])
    segmentor.train()
    batch = segmentor.data_preprocessor(data, training=True)
    assert tuple(batch['inputs'].shape) == (3, 3, 64, 64)
    losses = segmentor(**batch, mode='loss')
    assert {'decode.loss_ce', 'aux.loss_ce'} <= set(losses)
    assert_finite_losses(losses)


@pytest.mark.parametrize('size', SIZES, ids=size_id)
def test_segmentor_predicts_on_odd_sizes(segmentor, size):
    segmentor.eval()
    with torch.no_grad():
        result, = segmentor.test_step(
            dict(inputs=[image(*size)], data_samples=[seg_sample(*size)]))
    assert tuple(result.seg_logits.data.shape) == (150, *size)
    assert torch.isfinite(result.seg_logits.data).all()
    assert tuple(result.pred_sem_seg.data.shape) == (1, *size)
