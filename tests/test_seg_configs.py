"""ADE20K configs (UperNet 160k, Semantic FPN 80k): parameter counts of the
official models, the published ADE20K checkpoints' key layout loading
strictly after conversion, the optimizer / schedule they configure, and one
training step through each config (reduced arch, small crops, real data
pipeline on a generated ADE20K-layout dataset)."""
import contextlib
import json
import os.path as osp

import pytest
import torch
from helpers.ade_shapes import SCENE_CLASSES, make_ade_shapes
from helpers.archs import TINY_ARCH
from helpers.building import uninitialised_weights
from helpers.configs import write_tiny_segmentation_config
from helpers.paths import REPO, reference_path
from helpers.training import unchanged_parameters
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

import mmcrossformer  # noqa: F401  (registers CrossFormer)
from mmcrossformer.models.checkpoint import convert_state_dict
from mmcrossformer.zoo import models_by_config

UPERNET = {v: f'upernet_crossformer_{v}_160k_ade20k.py' for v in 'sbl'}
FPN = {v: f'fpn_crossformer_{v}_80k_ade20k.py' for v in 'sbl'}
# CrossFormer++ (no published dense checkpoints).
PP_CONFIGS = [f'{head}_crossformerpp_{v}_{iters}_ade20k.py'
              for head, iters in (('upernet', '160k'), ('fpn', '80k'))
              for v in 'sb']
# Parameter counts: the metafile entries (configs/metafile_segmentation.yml),
# which equal the reference key layouts' (UperNet) and the official README's
# (Semantic FPN).
ZOO = models_by_config(REPO)
UPERNET_KEYS = {'s': 'upernet_small', 'b': 'upernet_base',
                'l': 'upernet_large'}
# (group size, interval) per stage: UperNet, FPN-B and CrossFormer++ as
# ImageNet, FPN-S/L as the official FPN configs.
GROUPING = {name: ([7] * 4, [8, 4, 2, 1])
            for name in [*UPERNET.values(), FPN['b'], *PP_CONFIGS]}
GROUPING.update({FPN[v]: ([14, 14, 7, 7], [16, 8, 2, 1]) for v in 'sl'})
FACTOR = 1 / 8  # 512x512 crops -> 64x64
# One intra-op thread: these models are tiny, and on a busy 2-core machine a
# second thread made a step ~10x slower, not faster.
pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(autouse=True)
def _mmseg_scope():
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield


def load_config(name: str) -> Config:
    return Config.fromfile(osp.join(REPO, 'configs', name))


def build_segmentor(model_cfg, initialise: bool = True):
    """The segmentor of a config, SyncBN reverted to BN as mmengine's runner
    does for a non-distributed run; without drawing its initial weights
    unless ``initialise`` (for the parameter counts and key layouts)."""
    from mmseg.registry import MODELS
    weights = (contextlib.nullcontext() if initialise
               else uninitialised_weights())
    with weights:
        return revert_sync_batchnorm(MODELS.build(model_cfg))


def num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def zoo_params(name: str) -> int:
    return ZOO[f'configs/{name}']['Metadata']['Parameters']


@pytest.mark.parametrize('variant', 'sbl')
def test_upernet_params_and_official_checkpoint_layout(variant):
    with open(reference_path('crossformer_official_dense_keys.json')) as f:
        reference = json.load(f)[UPERNET_KEYS[variant]]
    model = build_segmentor(load_config(UPERNET[variant]).model,
                            initialise=False)
    assert num_params(model) == zoo_params(UPERNET[variant])
    assert round(zoo_params(UPERNET[variant]) / 1e6, 2) == (
        reference['params_M'])

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
    model = build_segmentor(load_config(FPN[variant]).model,
                            initialise=False)
    assert num_params(model) == zoo_params(FPN[variant])
    official = ZOO[f'configs/{FPN[variant]}']['Official']['Parameters']
    assert f'{zoo_params(FPN[variant]) / 1e6:.1f}M' == official


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


def tiny_config(name: str, data_root: str, tmp_path) -> Config:
    """The config with a reduced arch, 64x64 crops and the generated data
    (CrossFormer++: four blocks in stage 2, so that block 2 has a cooling
    layer; the configs' acl / lda_mode hold for the arch dict)."""
    arch = (dict(TINY_ARCH, depths=[1, 1, 4, 1]) if name in PP_CONFIGS
            else TINY_ARCH)
    path = write_tiny_segmentation_config(
        str(tmp_path / name), osp.join(REPO, 'configs', name), data_root,
        FACTOR, arch,
        # With one block per stage, the configured stochastic depth (up to
        # 0.5) would skip whole stages of the 2-image step at random.
        model=dict(backbone=dict(drop_path_rate=0.)))
    return Config.fromfile(path)


@pytest.mark.parametrize('name',
                         [*UPERNET.values(), *FPN.values(), *PP_CONFIGS])
def test_training_step(name, ade_root, tmp_path):
    from mmseg.registry import DATASETS
    cfg = tiny_config(name, ade_root, tmp_path)
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
    # Every parameter got a gradient and was updated (norms and biases,
    # which have no weight decay, move only through their gradient), but
    # the softmax-invariant DPB biases (see helpers.training).
    unchanged = unchanged_parameters(model, before)
    assert not unchanged, f'not updated by the step: {unchanged}'
    if name in PP_CONFIGS:
        assert model.backbone.acl and model.backbone.lda_mode == 'region'
        assert model.backbone.stages[2].blocks[2].cooling is not None
    # Which parameters decay: tests/test_model_zoo.py (every config).
