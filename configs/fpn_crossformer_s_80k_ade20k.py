# Semantic FPN, CrossFormer-S backbone, ADE20K 80k: the official recipe
# (512x512 crops, batch 16 = 8 GPUs x 2, AdamW lr 2e-4, weight decay 1e-4,
# poly decay (power 0.9), no warm-up; group size [14, 14, 7, 7] and interval
# [16, 8, 2, 1] as the official S and L FPN configs; tested in `whole` mode).
# Official: 46.4 mIoU, 34.3M params, 209.8G FLOPs.
#   mim train mmseg configs/fpn_crossformer_s_80k_ade20k.py
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
    './_base_/crossformer.py',
]
custom_imports = dict(imports=['mmcrossformer'], allow_failed_imports=False)

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,  # the base's ResNet weights; ours are in init_cfg
    backbone=dict(
        _base_.crossformer_dense_backbone,
        _delete_=True,
        group_size=[14, 14, 7, 7],
        interval=[16, 8, 2, 1]),
    neck=dict(in_channels=[96, 192, 384, 768], out_channels=256, num_outs=4),
    decode_head=dict(num_classes=150),
    test_cfg=dict(mode='whole'))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='CompilableOptimWrapperConstructor',  # compile=True
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4),
    paramwise_cfg=_base_.crossformer_paramwise_cfg)
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=0.9,
        begin=0,
        end=80000,
        by_epoch=False)
]

train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
