"""Every ``projects/*/configs/*.py`` builds and trains one step.

Each project config is loaded through a derived config in ``tmp_path`` that
inherits it (``_base_ = '<abs path>'``) and shrinks only what must shrink:
the backbone depth (one block per stage; the configured arch's widths and
heads are kept, so the project's ``in_channels`` wiring is exercised as
written), the checkpoint (a generated one, loaded through the project's own
``init_cfg``) and the image size (with it the segmentors' fixed padding size
and number of mask points, and two-stage DETRs' number of queries, which
cannot exceed the encoder's tokens). The model is built with the registry
of the config's ``default_scope`` package, its optimizer from the config's
``optim_wrapper``, and ``model.train_step`` runs on generated images and
labels.
"""
import glob
import importlib
import math
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers.configs import write_derived_config
from helpers.paths import REPO
from helpers.training import unchanged_parameters
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope
from mmengine.structures import PixelData
from mmengine.utils import import_modules_from_strings
from torch.nn.modules.batchnorm import _BatchNorm

import mmcrossformer  # noqa: F401  (registers CrossFormer)
from mmcrossformer import CrossFormer

PROJECT_CONFIGS = sorted(
    glob.glob(osp.join(REPO, 'projects', '*', 'configs', '*.py')))
# (C, H, W) of the generated images: different sizes, none a multiple of 32,
# so batching pads and CrossFormer pads internally.
IMAGE_SHAPES = [(3, 72, 88), (3, 64, 56)]
SEG_PAD_SIZE = (96, 96)  # replaces the segmentors' fixed 512x512 padding
# Mask2Former samples its mask losses at 12544 points of 128x128 (stride-4)
# masks; the 24x24 masks of SEG_PAD_SIZE get as many points as pixels.
MASK_POINTS = (SEG_PAD_SIZE[0] // 4) * (SEG_PAD_SIZE[1] // 4)
# Two-stage DETRs (DINO) pick their queries among the encoder's tokens, of
# which a 72x88 batch has 142 at strides 8-64 (900 need images of ~230x250).
DETR_NUM_QUERIES = 100


def reduced_arch(backbone_cfg) -> dict:
    """The configured arch with one block per stage (same widths, heads)."""
    arch = backbone_cfg.get('arch', 'tiny')
    if isinstance(arch, str):
        arch = CrossFormer.arch_zoo[arch.lower()]
    return dict(
        embed_dims=arch['embed_dims'],
        depths=[1] * len(arch['depths']),
        num_heads=list(arch['num_heads']))


def write_backbone_checkpoint(arch: dict, path: str) -> dict:
    """Save a randomly initialised CrossFormer as a converted checkpoint
    (``{'state_dict': {'backbone.<name>': tensor}}``, the layout
    ``tools/model_converters/crossformer2mm.py`` writes) and return its
    un-prefixed state dict."""
    backbone = CrossFormer(arch=arch)
    backbone.init_weights()
    for param in backbone.parameters():  # make norms / biases non-trivial
        param.data.add_(torch.randn_like(param) * 0.01)
    state = {k: v.clone() for k, v in backbone.state_dict().items()}
    torch.save({'state_dict': {f'backbone.{k}': v
                               for k, v in state.items()},
                'meta': {}}, path)
    return state


def derived_config(config: str, tmp_path) -> tuple:
    """Write and load the shrunk config; return it and the checkpoint's
    backbone state dict."""
    cfg = Config.fromfile(config)
    backbone = cfg.model.backbone
    assert backbone.type == 'CrossFormer', (
        f'{config}: the project backbone is {backbone.type}, not CrossFormer')
    assert 'mmcrossformer' in cfg.custom_imports['imports'], (
        f'{config}: custom_imports must import mmcrossformer')
    assert backbone.init_cfg.type == 'Pretrained', (
        f'{config}: the backbone should start from converted weights')
    arch = reduced_arch(backbone)
    ckpt = str(tmp_path / 'crossformer_mm.pth')
    state = write_backbone_checkpoint(arch, ckpt)
    model = dict(backbone=dict(arch=dict(_delete_=True, **arch),
                               init_cfg=dict(checkpoint=ckpt)))
    if cfg.model.get('num_queries', 0) > DETR_NUM_QUERIES:
        model['num_queries'] = DETR_NUM_QUERIES
    if cfg.model.data_preprocessor.get('size') is not None:
        model['data_preprocessor'] = dict(size=SEG_PAD_SIZE)
    head = cfg.model.get('decode_head', {})
    if head.get('train_cfg', {}).get('num_points', 0) > MASK_POINTS:
        model['decode_head'] = dict(train_cfg=dict(num_points=MASK_POINTS))
    path = write_derived_config(str(tmp_path / osp.basename(config)),
                                config, dict(model=model))
    return Config.fromfile(path), state


def decayed_backbone_norms(model, optim_wrapper) -> list:
    """Names of backbone norm-layer parameters with weight decay."""
    decay = {id(p): group['weight_decay']
             for group in optim_wrapper.optimizer.param_groups
             for p in group['params']}
    return [f'{name}.{param_name}'
            for name, module in model.backbone.named_modules()
            if isinstance(module, (_BatchNorm, nn.GroupNorm, nn.LayerNorm))
            for param_name, p in module.named_parameters(recurse=False)
            if decay[id(p)] != 0]


def num_classes(model_cfg) -> int:
    head = model_cfg.get('bbox_head') or model_cfg.get('decode_head')
    return head.num_classes


def generated_batch(scope: str, classes: int) -> dict:
    """Two uint8 images with random boxes (mmdet) or semantic maps (mmseg),
    as a dataloader yields them (``inputs`` / ``data_samples`` lists)."""
    if scope == 'mmdet':
        from mmdet.testing import demo_mm_inputs
        return demo_mm_inputs(
            batch_size=len(IMAGE_SHAPES), image_shapes=IMAGE_SHAPES,
            num_items=[3, 2], num_classes=classes)
    if scope == 'mmseg':
        from mmseg.structures import SegDataSample
        inputs, samples = [], []
        for _, h, w in IMAGE_SHAPES:
            inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8))
            # a few large class regions, as real maps have, and an ignored
            # (255) strip
            seg = torch.randint(0, classes, (4, )).repeat_interleave(
                math.ceil(h / 4))[:h, None].expand(h, w).clone()
            seg[:, :4] = 255
            sample = SegDataSample(metainfo=dict(
                img_shape=(h, w), ori_shape=(h, w), img_path='<generated>'))
            sample.gt_sem_seg = PixelData(data=seg[None].long())
            samples.append(sample)
        return dict(inputs=inputs, data_samples=samples)
    raise NotImplementedError(
        f'no generated data for default_scope {scope!r}; add it here')


@pytest.mark.parametrize(
    'config', PROJECT_CONFIGS,
    ids=[osp.relpath(c, osp.join(REPO, 'projects')) for c in PROJECT_CONFIGS])
def test_project_config_trains_one_step(config, tmp_path):
    cfg, ckpt_state = derived_config(config, tmp_path)
    scope = cfg.default_scope
    with DefaultScope.overwrite_default_scope(scope):
        import_modules_from_strings(**cfg.custom_imports)
        registry = importlib.import_module(f'{scope}.registry').MODELS
        assert registry.get('CrossFormer') is ROOT_MODELS.get('CrossFormer')
        model = registry.build(cfg.model)
        model.init_weights()
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)

        # The project's init_cfg (prefix='backbone.') loads the checkpoint.
        loaded = model.backbone.state_dict()
        assert loaded.keys() == ckpt_state.keys()
        for key, value in ckpt_state.items():
            torch.testing.assert_close(loaded[key], value, msg=key)

        # Every backbone parameter is trained by this config's optimizer.
        optimized = {id(p) for group in optim_wrapper.optimizer.param_groups
                     for p in group['params']}
        before = {name: p.detach().clone()
                  for name, p in model.backbone.named_parameters()}
        assert all(id(p) in optimized for p in model.backbone.parameters())
        # norm_decay_mult=0 (overridden by any matching custom key) really
        # spares every backbone norm.
        if cfg.optim_wrapper.get('paramwise_cfg', {}).get(
                'norm_decay_mult') == 0:
            assert not decayed_backbone_norms(model, optim_wrapper)

        model.train()
        log_vars = model.train_step(
            generated_batch(scope, num_classes(cfg.model)), optim_wrapper)

    losses = {k: float(v) for k, v in log_vars.items() if 'loss' in k}
    assert len(losses) > 1 and 'loss' in losses, log_vars
    assert all(np.isfinite(v) for v in losses.values()), losses
    assert losses['loss'] > 0, losses
    # The loss reaches every backbone parameter (all output stages are
    # consumed by the neck / head, so distributed training needs no
    # find_unused_parameters), and the step moved them.
    unchanged = unchanged_parameters(model.backbone, before)
    assert not unchanged, f'not updated by the step: {unchanged}'


def test_every_project_has_a_config():
    projects = sorted(glob.glob(osp.join(REPO, 'projects', '*', '')))
    assert projects, 'no projects/ folders found'
    for project in projects:
        assert glob.glob(osp.join(project, 'configs', '*.py')), (
            f'{project} has no configs/*.py')
        assert osp.isfile(osp.join(project, 'README.md')), (
            f'{project} has no README.md')
