# CrossFormer-S + Semantic FPN on ADE20K, 80k iterations: the official recipe
# (the ICLR code's PVT-style Semantic FPN configs).
#   Paper (ICLR 2022): 46.4 mIoU single scale, tested in `whole` mode.
# Official recipe: 512x512 crops, batch 16 (8 GPUs x 2), AdamW lr 2e-4,
# weight decay 1e-4 (no paramwise exceptions), poly decay (power 0.9) to 0
# over 80k iterations, no warm-up; FPN neck 256 channels, FPNHead 128.
# S and L use group size [14, 14, 7, 7] and interval [16, 8, 2, 1] here, as
# the official FPN configs; B uses 7 / [8, 4, 2, 1].
#   mim train mmseg configs/fpn_crossformer_s_80k_ade20k.py
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
custom_imports = dict(imports=['mmcrossformer'], allow_failed_imports=False)

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,  # the base's ResNet weights; ours are in init_cfg
    backbone=dict(
        _delete_=True,
        type='CrossFormer',
        arch='small',
        group_size=[14, 14, 7, 7],
        interval=[16, 8, 2, 1],
        drop_path_rate=0.2,  # the ImageNet value (S 0.2, B 0.3, L 0.5)
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/crossformer-s_mm.pth',
            prefix='backbone.')),
    # SyncBN of the base: reverted to BN by mmengine in non-distributed runs.
    neck=dict(in_channels=[96, 192, 384, 768], out_channels=256, num_outs=4),
    decode_head=dict(num_classes=150),
    test_cfg=dict(mode='whole'))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4))
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=0.9,
        begin=0,
        end=80000,
        by_epoch=False)
]

# 8 GPUs x 2 images = 16, as the official training.
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
