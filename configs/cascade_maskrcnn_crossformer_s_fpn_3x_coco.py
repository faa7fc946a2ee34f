# Cascade Mask R-CNN, CrossFormer-S backbone, COCO 3x: mmdet's ConvNeXt
# cascade 3x setting (the Swin one the paper compares with: 4-conv-1-fc box
# heads, GIoU, 480..800 multi-scale + crop, 36 epochs) with the backbone of
# maskrcnn_crossformer_s_fpn_1x_coco.py and the AdamW of its 3x config (fp32;
# add --amp for mixed precision).
# Official: 52.2 box AP / 45.2 mask AP, 88.0M params, 769.7G FLOPs.
#   mim train mmdet configs/cascade_maskrcnn_crossformer_s_fpn_3x_coco.py
_base_ = [
    'mmdet::convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc'
    '-giou_amp-ms-crop-3x_coco.py',
    './_base_/crossformer.py',
]
custom_imports = dict(imports=['mmcrossformer'], allow_failed_imports=False)

model = dict(
    backbone=dict(_base_.crossformer_dense_backbone, _delete_=True),
    neck=dict(in_channels=[96, 192, 384, 768]))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='CompilableOptimWrapperConstructor',  # compile=True
    optimizer=dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=_base_.crossformer_paramwise_cfg)
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
