"""Detection configs: they build the paper's models (parameter counts, and the
published COCO checkpoints' key layouts load strictly), set the official
recipe, train one step each on generated data, and the FLOP counter
(attention matmuls included) reproduces the paper's figures.

Training steps use a config derived in ``tmp_path`` from the real one
(``_base_ = '<abs path>'``), shrinking only the backbone arch, the image
scale, the number of RoIs and the data (see
``helpers.configs.write_tiny_detection_config``).
"""
import contextlib
import functools
import json
import math
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers.archs import TINY_ARCH
from helpers.building import uninitialised_weights
from helpers.configs import write_tiny_detection_config
from helpers.paths import REPO, reference_path
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import mmcrossformer  # noqa: F401  registers CrossFormer
from mmcrossformer.analysis import ATTENTION_KEY, count_flops, flop_analyzer
from mmcrossformer.datasets import make_coco_shapes
from mmcrossformer.models.checkpoint import convert_state_dict
from mmcrossformer.zoo import models_by_config

CONFIG_DIR = osp.join(REPO, 'configs')
# Config -> the published model it reproduces (a layout in
# crossformer_official_dense_keys.json).
OFFICIAL = {
    'maskrcnn_crossformer_s_fpn_1x_coco': 'maskrcnn_small',
    'maskrcnn_crossformer_b_fpn_1x_coco': 'maskrcnn_base',
    'retinanet_crossformer_s_fpn_1x_coco': 'retinanet_small',
    'retinanet_crossformer_b_fpn_1x_coco': 'retinanet_base',
    'maskrcnn_crossformer_s_fpn_3x_coco': 'maskrcnn_small',
    'maskrcnn_crossformer_b_fpn_3x_coco': 'maskrcnn_base',
}
CASCADE = 'cascade_maskrcnn_crossformer_s_fpn_3x_coco'
ALL_CONFIGS = sorted([*OFFICIAL, CASCADE])
# CrossFormer++ (no published dense checkpoints).
PP_CONFIGS = [f'{head}_crossformerpp_{v}_fpn_1x_coco'
              for head in ('maskrcnn', 'retinanet') for v in 'sb']
# The metafile entries (configs/metafile_detection.yml): parameter counts.
ZOO = models_by_config(REPO)


def zoo_params(name: str) -> int:
    return ZOO[f'configs/{name}.py']['Metadata']['Parameters']


def config_path(name: str) -> str:
    return osp.join(CONFIG_DIR, name + '.py')


@functools.lru_cache(maxsize=None)
def load_config(name: str) -> Config:
    """The parsed config (cached: tests must not modify it)."""
    return Config.fromfile(config_path(name))


def build_detector(cfg: Config, initialise: bool = True) -> nn.Module:
    """The config's detector (SyncBN reverted to BN, as the runner does
    outside distributed training); without drawing its initial weights
    unless ``initialise`` (for the parameter counts and key layouts)."""
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    weights = (contextlib.nullcontext() if initialise
               else uninitialised_weights())
    with weights:
        return revert_sync_batchnorm(MODELS.build(cfg.model))


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def official_layouts():
    with open(reference_path('crossformer_official_dense_keys.json')) as f:
        return json.load(f)


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp('coco_shapes')
    return (make_coco_shapes(root, 2, split='train'),
            make_coco_shapes(root, 1, split='val'))


# ------------------------------------------------------------- the models
@pytest.mark.parametrize('name', sorted(OFFICIAL))
def test_builds_the_official_model(name, official_layouts):
    official = official_layouts[OFFICIAL[name]]
    model = build_detector(load_config(name), initialise=False)
    assert num_params(model) == zoo_params(name)
    assert round(zoo_params(name) / 1e6, 2) == official['params_M']
    # The published checkpoint's keys and shapes, converted, load strictly.
    zeros = {k: torch.zeros(shape)
             for k, shape in official['state_dict'].items()}
    converted, info = convert_state_dict(zeros)
    assert info['layout'] == 'dense'
    model.load_state_dict(converted, strict=True)


def test_cascade_model():
    model = build_detector(load_config(CASCADE), initialise=False)
    # Three 4-conv-1-fc box heads; 87.996M, the 88.0M of the official
    # results table (from memory: no reference file has this model).
    assert len(model.roi_head.bbox_head) == 3
    assert all(len(head.shared_convs) == 4 and len(head.shared_fcs) == 1
               for head in model.roi_head.bbox_head)
    assert num_params(model) == zoo_params(CASCADE)
    assert round(zoo_params(CASCADE) / 1e6, 1) == 88.0
    small = build_detector(
        load_config('maskrcnn_crossformer_s_fpn_1x_coco'), initialise=False)
    assert num_params(model.backbone) == num_params(small.backbone)


# ------------------------------------------------------------- the recipes
@pytest.mark.parametrize('name', ALL_CONFIGS)
def test_recipe(name):
    cfg = load_config(name)
    assert cfg.custom_imports == dict(
        imports=['mmcrossformer'], allow_failed_imports=False)
    backbone = cfg.model.backbone
    small = '_s_' in name
    assert backbone.type == 'CrossFormer'
    assert backbone.arch == ('small' if small else 'base')
    assert backbone.drop_path_rate == (0.2 if small else 0.3)
    assert backbone.group_size == 7
    assert tuple(backbone.interval) == (8, 4, 2, 1)
    assert backbone.init_cfg == dict(
        type='Pretrained', prefix='backbone.',
        checkpoint=f"checkpoints/crossformer-{'s' if small else 'b'}_mm.pth")
    assert cfg.model.neck.in_channels == [96, 192, 384, 768]
    if name.startswith('retinanet'):
        assert cfg.model.neck.start_level == 1
        assert cfg.model.neck.add_extra_convs == 'on_input'
    # AdamW lr 1e-4, 500-iteration warm-up, batch 16 as 8 GPUs x 2.
    optimizer = cfg.optim_wrapper.optimizer
    assert cfg.optim_wrapper.type == 'OptimWrapper'
    assert (optimizer.type, optimizer.lr) == ('AdamW', 1e-4)
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.end, warmup.by_epoch) == ('LinearLR', 500,
                                                          False)
    assert cfg.train_dataloader.batch_size * 8 == 16
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=16)
    if '_1x_' in name:
        assert optimizer.weight_decay == 1e-4
        assert steps.milestones == [8, 11]
        assert cfg.train_cfg.max_epochs == 12
        resize = cfg.train_dataloader.dataset.pipeline[2]
        assert (resize.type, tuple(resize.scale)) == ('Resize', (1333, 800))
    else:
        assert optimizer.weight_decay == 0.05
        assert steps.milestones == [27, 33]
        assert cfg.train_cfg.max_epochs == 36
        choice = cfg.train_dataloader.dataset.pipeline[3]
        assert choice.type == 'RandomChoice'
        assert [tuple(s) for s in choice.transforms[0][0].scales] == [
            (s, 1333) for s in range(480, 801, 32)]


# ---------------------------------------------------- one training step
@pytest.mark.parametrize('name', [*ALL_CONFIGS, *PP_CONFIGS])
def test_training_step(name, shapes, tmp_path):
    train, val = shapes
    # CrossFormer++: four blocks in stage 2, so that block 2 has a cooling
    # layer (the configs' acl / lda_mode hold for the arch dict).
    arch = (dict(TINY_ARCH, depths=[1, 1, 4, 1]) if name in PP_CONFIGS
            else TINY_ARCH)
    path = write_tiny_detection_config(
        str(tmp_path / f'{name}_tiny.py'), config_path(name), train, val,
        arch=arch)
    cfg = Config.fromfile(path)
    model = build_detector(cfg)
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    batch = next(iter(Runner.build_dataloader(cfg.train_dataloader)))
    # 96x128 images, resized by the config's pipeline at a tenth of scale.
    assert all(max(img.shape[-2:]) <= 133 for img in batch['inputs'])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    losses = model.train_step(batch, optim_wrapper)

    expected = {'loss_cls', 'loss_bbox'}
    if 'maskrcnn' in name:
        expected = {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_mask', *expected}
    if name.startswith('cascade'):
        expected = {'loss_rpn_cls', 'loss_rpn_bbox', *(
            f's{i}.{k}' for i in range(3)
            for k in ('loss_cls', 'loss_bbox', 'loss_mask'))}
    assert expected <= set(losses)
    assert all(torch.isfinite(v).all() for v in losses.values())
    changed = {n for n, p in model.named_parameters()
               if not torch.equal(p.detach(), before[n])}
    assert 'backbone.stages.0.blocks.0.attn.qkv.weight' in changed
    assert 'neck.fpn_convs.0.conv.weight' in changed
    if name in PP_CONFIGS:
        assert model.backbone.acl and model.backbone.lda_mode == 'region'
        assert 'backbone.stages.2.blocks.2.cooling.conv.weight' in changed
    # Which parameters decay: tests/test_model_zoo.py (every config).


# ------------------------------------------------------------- FLOPs
class _Attention(nn.Module):

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


def test_attention_flops_are_counted():
    # (groups, heads, N, head_dims) queries against S keys: q @ k^T and
    # attn @ v cost B * L * S * (E + Ev) multiply-accumulates.
    q, k, v = torch.rand(4, 3, 5, 8), torch.rand(4, 3, 7, 8), torch.rand(
        4, 3, 7, 6)
    result = count_flops(_Attention(), (q, k, v))
    assert result.attention_flops == result.flops == 4 * 3 * 5 * 7 * (8 + 6)
    # With gradients on, CrossFormer's attention runs through its own
    # autograd Function (traced differently); both are counted alike.
    model = mmcrossformer.CrossFormer(arch=TINY_ARCH).eval()
    x = torch.rand(2, 3, 64, 96)
    with_grad = flop_analyzer(model, x).by_operator()
    with torch.no_grad():
        assert flop_analyzer(model, x).by_operator() == with_grad
    assert with_grad[ATTENTION_KEY] > 0


def test_crossformer_s_flops_match_the_paper():
    """The paper's 4.9G for CrossFormer-S at 224x224 counts the attention
    matmuls; without them the counter gives 4.8G."""
    model = mmcrossformer.CrossFormer(arch='small')
    result = count_flops(model, torch.rand(1, 3, 224, 224))
    # Every group has 7x7 embeddings at 224x224: per block 2 * H*W * 49 * C.
    expected = sum(2 * (56 // 2**i)**2 * 49 * 96 * 2**i * depth
                   for i, depth in enumerate(model.depths))
    assert result.attention_flops == expected
    assert round(result.flops / 1e9, 1) == 4.9
    assert round((result.flops - result.attention_flops) / 1e9, 1) == 4.8
    assert result.params == num_params(model)
    assert 'stages.2' in result.table


def test_get_flops_tool():
    # Few proposals keep the RoI heads (fixed cost per RoI) cheap here.
    proc = subprocess.run([
        sys.executable, osp.join(REPO, 'tools', 'analysis', 'get_flops.py'),
        config_path('maskrcnn_crossformer_s_fpn_1x_coco'), '--shape', '224',
        '320', '--cfg-options', 'model.test_cfg.rpn.max_per_img=10'
    ], env=dict(os.environ, OMP_NUM_THREADS='1'), text=True,
        capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    out = proc.stdout
    assert 'input: 1x3x224x320' in out
    pattern = re.compile(
        r'^(backbone|model): +params ([\d.]+)M, FLOPs ([\d.]+)G with '
        r'attention matmuls \(([\d.]+)G\), ([\d.]+)G without', re.M)
    rows = {m[0]: [float(x) for x in m[1:]] for m in pattern.findall(out)}
    assert set(rows) == {'backbone', 'model'}, out
    assert rows['model'][0] == round(
        zoo_params('maskrcnn_crossformer_s_fpn_1x_coco') / 1e6, 2)
    assert rows['backbone'][0] == 29.89
    for params, flops, attention, without in rows.values():
        assert attention > 0
        assert math.isclose(flops, attention + without, abs_tol=0.011)
    assert rows['model'][1] > rows['backbone'][1]
    assert rows['model'][2] == rows['backbone'][2]  # attention: backbone
    assert 'RoIAlign' in out  # reported as not counted
