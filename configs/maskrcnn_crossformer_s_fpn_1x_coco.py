# Mask R-CNN, CrossFormer-S backbone, COCO 1x: the official recipe (ICLR 2022
# code): 1333x800, flip, AdamW lr 1e-4, weight decay 1e-4, 500-iteration
# warm-up, lr x 0.1 after epochs 8 and 11, batch 16 (8 GPUs x 2).
# Official: 45.4 box AP / 41.4 mask AP, 50.2M params, 301.0G FLOPs.
#   mim train mmdet configs/maskrcnn_crossformer_s_fpn_1x_coco.py
# (needs checkpoints/crossformer-s_mm.pth from crossformer2mm.py).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
    './_base_/crossformer.py',
]
custom_imports = dict(imports=['mmcrossformer'], allow_failed_imports=False)

model = dict(
    backbone=dict(_base_.crossformer_dense_backbone, _delete_=True),
    neck=dict(in_channels=[96, 192, 384, 768]))

optim_wrapper = dict(
    type='OptimWrapper',
    constructor='CompilableOptimWrapperConstructor',  # compile=True
    optimizer=dict(
        _delete_=True,
        type='AdamW',
        lr=1e-4,
        betas=(0.9, 0.999),
        weight_decay=1e-4),
    paramwise_cfg=_base_.crossformer_paramwise_cfg)

auto_scale_lr = dict(enable=False, base_batch_size=16)
