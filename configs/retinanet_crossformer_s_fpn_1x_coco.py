# RetinaNet, CrossFormer-S backbone, COCO 1x: the official recipe, as
# maskrcnn_crossformer_s_fpn_1x_coco.py. The official FPN takes all four
# stages but starts at stage 1 and builds P6 from the last backbone map.
# Official: 44.4 box AP, 40.8M params, 282.0G FLOPs.
#   mim train mmdet configs/retinanet_crossformer_s_fpn_1x_coco.py
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
    './_base_/crossformer.py',
]
custom_imports = dict(imports=['mmcrossformer'], allow_failed_imports=False)

model = dict(
    backbone=dict(_base_.crossformer_dense_backbone, _delete_=True),
    neck=dict(
        in_channels=[96, 192, 384, 768],
        start_level=1,
        add_extra_convs='on_input',
        num_outs=5))

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
