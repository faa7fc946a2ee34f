# Cascade Mask R-CNN with a CrossFormer-S backbone on COCO, 3x schedule with
# multi-scale training. Paper: 52.2 box AP / 45.2 mask AP on val2017.
# The setting is Swin's cascade 3x one (the paper compares with Swin-T's
# 50.4 / 43.7), which mmdet ships as
# convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x:
# three cascade stages of 4-conv-1-fc box heads (SyncBN, GIoU loss), the
# 480..800 multi-scale + crop training pipeline, lr x 0.1 after epochs 27
# and 33, 36 epochs, batch 16. We inherit it and replace the backbone and
# the optimizer: the CrossFormer-S backbone of
# maskrcnn_crossformer_s_fpn_1x_coco.py and the AdamW of
# maskrcnn_crossformer_s_fpn_3x_coco.py (lr 1e-4, weight decay 0.05, no
# decay on LayerNorms and position-bias MLPs; a plain fp32 OptimWrapper:
# add --amp for mixed precision) with its 500-iteration warm-up.
#   mim train mmdet configs/cascade_maskrcnn_crossformer_s_fpn_3x_coco.py
_base_ = ('mmdet::convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc'
          '-giou_amp-ms-crop-3x_coco.py')
custom_imports = dict(imports=['mmcrossformer'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='CrossFormer',
        arch='small',
        group_size=7,
        interval=(8, 4, 2, 1),
        patch_sizes=(4, 8, 16, 32),
        merge_sizes=((2, 4), (2, 4), (2, 4)),
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        with_cp=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/crossformer-s_mm.pth',
            prefix='backbone.')),
    neck=dict(in_channels=[96, 192, 384, 768]))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'norm': dict(decay_mult=0.),
            'position_bias': dict(decay_mult=0.),
        }))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=36,
        by_epoch=True,
        milestones=[27, 33],
        gamma=0.1)
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
