"""ADE20K configs (UperNet 160k, Semantic FPN 80k): parameter counts of the
official models, the published ADE20K checkpoints' key layout loading
strictly after conversion, the optimizer / schedule they configure, and one
training step through each config (reduced arch, small crops, real data
pipeline on a generated ADE20K-layout dataset)."""
import json
import os.path as osp

import pytest
import torch
from conftest import REPO, reference_path, unchanged_parameters
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

import mmcrossformer  # noqa: F401  (registers CrossFormer)
from mmcrossformer.converters import convert_state_dict
from mmcrossformer.testing.ade_shapes import (SCENE_CLASSES, make_ade_shapes,
                                              shrink_pipeline,
                                              tiny_segmentor_overrides)

UPERNET = {v: f'upernet_crossformer_{v}_160k_ade20k.py' for v in 'sbl'}
FPN = {v: f'fpn_crossformer_{v}_80k_ade20k.py' for v in 'sbl'}
# Official counts of the whole segmentor (150 classes): UperNet from the
# reference key layouts (== the paper's 62.3 / 83.6 / 125.5), Semantic FPN
# from the official README (34.3 / 55.6 / 95.4).
UPERNET_PARAMS_M = {'s': 62.31, 'b': 83.62, 'l': 125.48}
UPERNET_KEYS = {'s': 'upernet_small', 'b': 'upernet_base',
                'l': 'upernet_large'}
FPN_PARAMS_M = {'s': 34.3, 'b': 55.6, 'l': 95.4}
# (group size, interval) per stage: UperNet and FPN-B as ImageNet, FPN-S/L
# as the official FPN configs.
GROUPING = {name: ([7] * 4, [8, 4, 2, 1])
            for name in [*UPERNET.values(), FPN['b']]}
GROUPING.update({FPN[v]: ([14, 14, 7, 7], [16, 8, 2, 1]) for v in 'sl'})
CROP = (64, 64)


@pytest.fixture(autouse=True)
def _mmseg_scope_one_thread():
    # One intra-op thread: these models are tiny, and on a busy 2-core
    # machine a second thread made a step ~10x slower, not faster.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield
    torch.set_num_threads(threads)


def load_config(name: str) -> Config:
    return Config.fromfile(osp.join(REPO, 'configs', name))


def build_segmentor(model_cfg):
    """The segmentor of a config, SyncBN reverted to BN as mmengine's runner
    does for a non-distributed run."""
    from mmseg.registry import MODELS
    return revert_sync_batchnorm(MODELS.build(model_cfg))


def num_params_m(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


@pytest.mark.parametrize('variant', 'sbl')
def test_upernet_params_and_official_checkpoint_layout(variant):
    with open(reference_path('crossformer_official_dense_keys.json')) as f:
        reference = json.load(f)[UPERNET_KEYS[variant]]
    assert reference['params_M'] == UPERNET_PARAMS_M[variant]
    model = build_segmentor(load_config(UPERNET[variant]).model)
    assert round(num_params_m(model), 2) == UPERNET_PARAMS_M[variant]

    official = {
        k: torch.zeros(s, dtype=torch.long if k.endswith('num_batches_tracked')
                       else torch.float32)
        for k, s in reference['state_dict'].items()}
    converted, info = convert_state_dict(official)
    assert info['layout'] == 'dense'
    assert info['variant'] == dict(s='small', b='base', l='large')[variant]
    # strict=True: every key and shape of the published model matches.
    model.load_state_dict(converted, strict=True)
    assert not any(p.abs().sum() for p in model.parameters())


@pytest.mark.parametrize('variant', 'sbl')
def test_fpn_params(variant):
    model = build_segmentor(load_config(FPN[variant]).model)
    assert round(num_params_m(model), 1) == FPN_PARAMS_M[variant]


def lr_curve(cfg, iters):
    """The learning rate the config's schedulers give at each iteration of
    ``iters`` (stepped once per iteration, as ParamSchedulerHook does)."""
    from mmengine.registry import PARAM_SCHEDULERS
    optim_wrapper = build_optim_wrapper(torch.nn.Linear(1, 1),
                                        cfg.optim_wrapper)
    schedulers = [PARAM_SCHEDULERS.build(dict(s, optimizer=optim_wrapper))
                  for s in cfg.param_scheduler]
    lrs = {}
    for it in range(max(iters) + 1):
        if it in iters:
            lrs[it] = optim_wrapper.optimizer.param_groups[0]['lr']
        for scheduler in schedulers:
            scheduler.step()
    return lrs


def test_upernet_schedule():
    cfg = load_config(UPERNET['s'])
    assert cfg.train_cfg.max_iters == 160000
    assert cfg.train_dataloader.batch_size == 2  # x 8 GPUs = 16
    lrs = lr_curve(cfg, [0, 750, 1500, 80750, 159999])
    assert lrs[0] == pytest.approx(6e-5 * 1e-6)
    # Linear warm-up from 1e-6 x lr; mmengine's reaches lr at ``end - 1``.
    assert lrs[750] == pytest.approx(6e-5 * (1e-6 + (1 - 1e-6) * 750 / 1499))
    assert lrs[1500] == pytest.approx(6e-5)
    # Poly, power 1, to 0 at ``end - 1``.
    assert lrs[80750] == pytest.approx(6e-5 * (1 - 79250 / 158499))
    assert lrs[159999] == pytest.approx(0., abs=1e-12)


def test_fpn_schedule():
    cfg = load_config(FPN['s'])
    assert cfg.train_cfg.max_iters == 80000
    lrs = lr_curve(cfg, [0, 40000, 79999])
    assert lrs[0] == pytest.approx(2e-4)
    assert lrs[40000] == pytest.approx(2e-4 * (1 - 40000 / 79999)**0.9)
    assert lrs[79999] == pytest.approx(0., abs=1e-12)


@pytest.fixture(scope='module')
def ade_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('ade_shapes'))
    make_ade_shapes(root, num_train=2, num_val=1, image_size=(72, 96))
    return root


def tiny_config(name: str, data_root: str) -> Config:
    """The config with a reduced arch, 64x64 crops and the generated data."""
    cfg = load_config(name)
    factor = CROP[0] / cfg.crop_size[0]
    cfg.merge_from_dict(
        dict(model=tiny_segmentor_overrides(cfg.model, crop_size=CROP)))
    # With one block per stage, the configured stochastic depth (up to 0.5)
    # would skip whole stages of the 2-image step at random.
    cfg.model.backbone.drop_path_rate = 0.
    cfg.train_dataloader.dataset.data_root = data_root
    cfg.train_dataloader.dataset.pipeline = shrink_pipeline(
        cfg.train_dataloader.dataset.pipeline, factor)
    return cfg


@pytest.mark.parametrize('name', [*UPERNET.values(), *FPN.values()])
def test_training_step(name, ade_root):
    from mmseg.registry import DATASETS
    cfg = tiny_config(name, ade_root)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    assert len(dataset) == 2
    batch = pseudo_collate([dataset[0], dataset[1]])
    labels = torch.cat([s.gt_sem_seg.data.flatten()
                        for s in batch['data_samples']]).unique().tolist()
    # reduce_zero_label: "other" (0) -> 255, ADE ids 1..150 -> 0..149.
    reduced = {c - 1 for c in SCENE_CLASSES}
    assert set(labels) <= reduced | {255} and set(labels) & reduced

    model = build_segmentor(cfg.model)
    assert (model.backbone.group_size,
            model.backbone.interval) == GROUPING[name]
    model.init_weights()
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    log_vars = model.train_step(batch, optim_wrapper)

    expected = {'decode.loss_ce', 'decode.acc_seg'}
    if 'auxiliary_head' in cfg.model:
        expected |= {'aux.loss_ce', 'aux.acc_seg'}
    assert expected <= set(log_vars)
    assert torch.isfinite(log_vars['loss']) and log_vars['loss'] > 0
    # Every parameter got a gradient and was updated (the LayerNorms, which
    # have no weight decay in UperNet, move only through their gradient),
    # but the softmax-invariant DPB biases (see conftest).
    unchanged = unchanged_parameters(model, before)
    assert not unchanged, f'not updated by the step: {unchanged}'

    # Weight decay: UperNet exempts exactly the backbone LayerNorms
    # ('norm' keys), FPN nothing.
    decay = {}
    for group in optim_wrapper.optimizer.param_groups:
        for p in group['params']:
            decay[id(p)] = group['weight_decay']
    base_decay = cfg.optim_wrapper.optimizer.weight_decay
    for n, p in model.named_parameters():
        exempt = name.startswith('upernet') and 'norm' in n
        assert decay[id(p)] == (0. if exempt else base_decay), n
    if name.startswith('upernet'):
        assert decay[id(model.backbone.stages[0].blocks[0].norm1.weight)] == 0
        dpb = model.backbone.stages[0].blocks[0].attn.position_bias
        assert decay[id(dpb.proj.weight)] == base_decay == 0.01
