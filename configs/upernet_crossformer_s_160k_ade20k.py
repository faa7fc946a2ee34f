# UperNet, CrossFormer-S backbone, ADE20K 160k: the official recipe (512x512
# crops, batch 16 = 8 GPUs x 2, AdamW lr 6e-5, weight decay 0.01, 1500-iteration
# warm-up, poly decay; tested in `whole` mode at (2048, 512)).
# Official: 47.6 mIoU, 48.4 multi-scale + flip (--tta), 62.3M params, 979.5G
# FLOPs.
#   mim train mmseg configs/upernet_crossformer_s_160k_ade20k.py
#   mim test mmseg configs/upernet_crossformer_s_160k_ade20k.py \
#       --checkpoint CKPT [--tta]
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
    './_base_/crossformer.py',
]
custom_imports = dict(imports=['mmcrossformer'], allow_failed_imports=False)

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(_base_.crossformer_dense_backbone, _delete_=True),
    # The heads' SyncBN becomes BN in non-distributed runs (mmengine).
    decode_head=dict(
        in_channels=[96, 192, 384, 768], channels=512, num_classes=150),
    auxiliary_head=dict(
        in_channels=384,
        in_index=2,
        num_classes=150,
        loss_decode=dict(loss_weight=0.4)),
    # Sliding window instead: --cfg-options model.test_cfg.mode=slide
    #   model.test_cfg.crop_size="(512,512)" model.test_cfg.stride="(341,341)"
    test_cfg=dict(mode='whole'))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='CompilableOptimWrapperConstructor',  # compile=True
    optimizer=dict(
        type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=_base_.crossformer_paramwise_cfg)

param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
        end=1500),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=1500,
        end=160000,
        by_epoch=False),
]

train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader

# Multi-scale + flip test (`--tta`), as the official MS column: mmseg 0.x
# resized to (2048 * r, 512 * r), so the ratios scale the test scale here
# (mmseg 1.x's base pipeline scales the original image instead).
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(
                    type='Resize',
                    scale=(int(2048 * r), int(512 * r)),
                    keep_ratio=True) for r in img_ratios
            ],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal')
            ],
            [dict(type='LoadAnnotations')],
            [dict(type='PackSegInputs')],
        ])
]
