# CrossFormer-S + UperNet on ADE20K, 160k iterations: the official recipe.
#   Paper (ICLR 2022): 47.6 mIoU single scale, 48.4 multi-scale + flip;
#   62.3M parameters (this config: 62.31M, tests/test_seg_configs.py).
# Official recipe: 512x512 crops, batch 16 (8 GPUs x 2), AdamW lr 6e-5,
# betas (0.9, 0.999), weight decay 0.01 with none on the norm layers, linear
# warm-up over 1500 iterations from 1e-6 x lr, then poly decay (power 1.0) to
# 0 at 160k; UPerHead 512 channels, FCN auxiliary head on stage 3 (loss weight
# 0.4); group size 7, interval (8, 4, 2, 1). The official numbers were tested
# in `whole` mode (model.test_cfg below), single scale at (2048, 512).
#   mim train mmseg configs/upernet_crossformer_s_160k_ade20k.py
#   mim test mmseg configs/upernet_crossformer_s_160k_ade20k.py \
#       --checkpoint CKPT [--tta]      # --tta: the multi-scale + flip column
# Backbone weights: the ImageNet checkpoint converted with
# tools/model_converters/crossformer2mm.py (the official file as released
# also loads: the backbone maps official names itself).
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['mmcrossformer'], allow_failed_imports=False)

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='CrossFormer',
        arch='small',
        group_size=7,
        interval=(8, 4, 2, 1),
        # The ImageNet value of each variant (S 0.2, B 0.3, L 0.5), as the
        # official dense configs take it; it does not change the parameters.
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/crossformer-s_mm.pth',
            prefix='backbone.')),
    # The heads keep the base's SyncBN: mmengine's runner turns it into BN
    # when the run is not distributed (single-process CPU / GPU runs).
    decode_head=dict(
        in_channels=[96, 192, 384, 768], channels=512, num_classes=150),
    auxiliary_head=dict(
        in_channels=384,
        in_index=2,
        num_classes=150,
        loss_decode=dict(loss_weight=0.4)),
    # `whole`, as the official numbers. Sliding window instead:
    #   --cfg-options model.test_cfg.mode=slide \
    #       model.test_cfg.crop_size="(512,512)" \
    #       model.test_cfg.stride="(341,341)"
    test_cfg=dict(mode='whole'))

# No weight decay on the norm layers, as the official (Swin-derived) recipe:
# the custom key 'norm' matches every LayerNorm of the backbone (stem,
# norm1 / norm2 of each block, merging layers) and nothing else. The dynamic
# position bias (DPB) MLP keeps weight decay: it is an ordinary MLP mapping
# relative coordinates to biases, not a table of per-position biases like
# Swin's `relative_position_bias_table` (which is why Swin exempts that), and
# its official names (`attn.pos.pos1.0`, ...) contain no 'norm', so the
# official run decayed it too; ours (`attn.position_bias.layers.N.M`) give the
# same parameter groups. The heads' BN layers (`bn`) decay, as officially.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))

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

# 8 GPUs x 2 images = 16, as the official training.
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader

# Multi-scale + flip test (`mim test ... --tta`), as the official MS column:
# mmseg 0.x's MultiScaleFlipAug(img_scale=(2048, 512), img_ratios=...) resized
# to (2048 * r, 512 * r); mmseg 1.x's base pipeline scales the original image
# by r instead, so the ratios are applied to the test scale here.
# SegTTAModel averages the softmax of the 12 views, as mmseg 0.x did.
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
