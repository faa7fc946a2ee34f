"""Distributed training through mmengine's launcher, on the CPU:
``tools/dist_train.sh CONFIG 2`` (torchrun and ``--launcher pytorch``, the
Runner path of a GPU run; gloo here, since the machine has no CUDA GPU) for
a tiny Mask R-CNN and a tiny UperNet derived from the shipped configs, each
with ``find_unused_parameters=False``, once with ``with_cp=True`` and once
with ``frozen_stages=0``. After 10 iterations both ranks hold the same
parameters, the losses are finite and fall, and rank 0's checkpoint
evaluates with ``mim test``. Plus a unit check that a backbone returning
fewer stages trains under DDP.
"""
import json
import math
import os.path as osp

import pytest
import torch
import torch.distributed as dist
from helpers.ade_shapes import make_ade_shapes
from helpers.archs import TINY_ARCH
from helpers.commands import free_port, run_command, scalars_records
from helpers.configs import (MASK_RCNN_NARROW_HEADS,
                             write_tiny_detection_config,
                             write_tiny_segmentation_config)
from helpers.mim import MIM
from helpers.paths import REPO
from helpers.train_hooks import digests_path, rng_digests, tensor_digests
from torch.nn.parallel import DistributedDataParallel

from mmcrossformer import CrossFormer
from mmcrossformer.datasets import make_coco_shapes

pytestmark = pytest.mark.usefixtures('one_thread')
DIST_TRAIN = osp.join(REPO, 'tools', 'dist_train.sh')
MASK_RCNN = osp.join(REPO, 'configs', 'maskrcnn_crossformer_s_fpn_1x_coco.py')
UPERNET = osp.join(REPO, 'configs', 'upernet_crossformer_s_160k_ade20k.py')
NUM_PROCESSES = 2
NUM_ITERS = 10
VARIANTS = dict(
    with_cp=dict(with_cp=True), frozen_stages_0=dict(frozen_stages=0))
# What every run sets: DDP as strict as it gets, a constant learning rate
# high enough to learn in 10 iterations (the recipes' warm-ups keep it near
# 0 that long), raw per-iteration losses in the json log, one checkpoint at
# the end, no validation, and the parameter digests of every rank.
RUN = dict(
    find_unused_parameters=False,
    optim_wrapper=dict(optimizer=dict(lr=1e-3)),
    param_scheduler=[],
    log_processor=dict(window_size=1),
    randomness=dict(seed=0),
    custom_imports=dict(
        imports=['mmcrossformer', 'helpers.train_hooks'],
        allow_failed_imports=False),
    custom_hooks=[dict(type='RNGStateHook'),
                  dict(type='RankDigestsHook')])


def write_mask_rcnn(root, variant):
    # 4 images, 2 ranks x 2 images: one iteration per epoch, each rank
    # seeing the same images every epoch (so the losses can fall).
    train = make_coco_shapes(root / 'coco', 4, split='train')
    val = make_coco_shapes(root / 'coco', 2, split='val')
    config = write_tiny_detection_config(
        str(root / f'maskrcnn_{variant}.py'),
        MASK_RCNN,
        train,
        val,
        model=dict(backbone=VARIANTS[variant], **MASK_RCNN_NARROW_HEADS),
        train_cfg=dict(max_epochs=NUM_ITERS, val_begin=1000),
        default_hooks=dict(
            logger=dict(interval=1), checkpoint=dict(interval=NUM_ITERS)),
        **RUN)
    return config, f'epoch_{NUM_ITERS}.pth'


def write_upernet(root, variant):
    # 2 images, unshuffled: each rank trains on its own image (batch 2,
    # random flips) resized to the crop, so the losses can fall in 10
    # iterations (the recipe's random scale and crop make them jump).
    data_root = str(root / 'ade')
    make_ade_shapes(data_root, num_train=2, num_val=2)
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='Resize', scale=(64, 64), keep_ratio=False),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackSegInputs')
    ]
    config = write_tiny_segmentation_config(
        str(root / f'upernet_{variant}.py'),
        UPERNET,
        data_root,
        model=dict(backbone=VARIANTS[variant]),
        train_dataloader=dict(
            sampler=dict(shuffle=False), dataset=dict(pipeline=pipeline)),
        train_cfg=dict(max_iters=NUM_ITERS, val_begin=1000),
        default_hooks=dict(
            logger=dict(interval=1), checkpoint=dict(interval=NUM_ITERS)),
        **RUN)
    return config, f'iter_{NUM_ITERS}.pth'


def read_digests(work_dir, rank, when):
    with open(digests_path(work_dir, rank, when)) as f:
        return json.load(f)


@pytest.mark.parametrize('variant', sorted(VARIANTS))
@pytest.mark.parametrize('model', ['mask_rcnn', 'upernet'])
def test_dist_train_on_cpu(tmp_path, model, variant):
    write = write_mask_rcnn if model == 'mask_rcnn' else write_upernet
    config, ckpt_name = write(tmp_path, variant)
    work_dir = tmp_path / 'work'
    log = run_command(
        [DIST_TRAIN, config, NUM_PROCESSES, '--work-dir', work_dir],
        cwd=tmp_path,
        env=dict(PORT=str(free_port())))
    assert f'joined the gloo process group as rank 0 of {NUM_PROCESSES}' \
        in log
    if model == 'upernet':  # SyncBN has no CPU kernel
        assert 'SyncBN norm_cfg -> BN' in log

    # Both ranks start and end with the same parameters; training changed
    # every trainable one and no frozen one.
    start, end = ([read_digests(work_dir, rank, when) for rank in (0, 1)]
                  for when in ('start', 'end'))
    assert start[0]['digests'] == start[1]['digests']
    assert end[0]['digests'] == end[1]['digests']
    trainable = set(end[0]['trainable'])
    frozen = set(end[0]['digests']) - trainable
    changed = {
        n
        for n, d in end[0]['digests'].items() if d != start[0]['digests'][n]
    }
    assert changed == trainable
    if variant == 'frozen_stages_0':
        assert frozen == {
            n
            for n in end[0]['digests']
            if n.startswith(('backbone.patch_embed.', 'backbone.stages.0.'))
        }
        assert frozen
    else:
        assert not frozen

    # Rank 0's checkpoint holds those parameters and each rank's generator
    # states (RNGStateHook), as the ranks had them at the end.
    ckpt_path = work_dir / ckpt_name
    ckpt = torch.load(ckpt_path, map_location='cpu', weights_only=True)
    saved = tensor_digests(
        (n, ckpt['state_dict'][n]) for n in end[0]['digests'])
    assert saved == end[0]['digests']
    assert [rng_digests(s)
            for s in ckpt['rng_states']] == [e['rng'] for e in end]

    # 10 iterations, finite losses, falling.
    losses = [r['loss'] for r in scalars_records(work_dir) if 'loss' in r]
    assert len(losses) == NUM_ITERS
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) < sum(losses[:3]), losses

    # Rank 0's checkpoint evaluates (once per model: it is the same file
    # format either way).
    if variant != 'with_cp':
        return
    # (run_command, not run_mim: the config imports helpers.train_hooks.)
    out = run_command([
        MIM, 'test', 'mmdet' if model == 'mask_rcnn' else 'mmseg', config,
        '--checkpoint', ckpt_path, '--work-dir', tmp_path / 'test'
    ],
                      cwd=tmp_path)
    assert ('coco/bbox_mAP:' if model == 'mask_rcnn' else 'mIoU:') in out


@pytest.fixture
def gloo_group(tmp_path):
    """A one-process gloo group in this process."""
    store = dist.FileStore(str(tmp_path / 'store'), 1)
    dist.init_process_group('gloo', store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def ddp_steps(module, backbone, num_steps=2):
    """``num_steps`` SGD steps of ``module`` under DDP with
    ``find_unused_parameters=False`` on the sum of the backbone's maps."""
    ddp = DistributedDataParallel(module, find_unused_parameters=False)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    for _ in range(num_steps):
        outs = ddp(torch.rand(2, 3, 64, 64))
        sum(o.mean() for o in outs).backward()
        assert all(p.grad is not None for p in backbone.parameters())
        optimizer.step()
        optimizer.zero_grad()


def test_partial_out_indices_train_under_strict_ddp(gloo_group):
    """``out_indices=(0, 1, 2)`` builds stages 0-2 only, so DDP with
    ``find_unused_parameters=False`` trains it; a parameter outside the
    graph (as an unused last stage would be) stops DDP at the second
    step."""
    backbone = CrossFormer(arch=TINY_ARCH, out_indices=(0, 1, 2))
    assert len(backbone.stages) == 3
    ddp_steps(backbone, backbone)

    class WithUnused(torch.nn.Module):

        def __init__(self):
            super().__init__()
            self.backbone = CrossFormer(arch=TINY_ARCH, out_indices=(0, 1, 2))
            self.unused = torch.nn.Linear(2, 2)

        def forward(self, x):
            return self.backbone(x)

    module = WithUnused()
    with pytest.raises(RuntimeError, match='finished reduction'):
        ddp_steps(module, module.backbone)


def test_final_norm_needs_the_last_stage():
    with pytest.raises(
            ValueError, match='add 3 to out_indices or set final_norm=False'):
        CrossFormer(arch=TINY_ARCH, out_indices=(0, 1, 2), final_norm=True)
