# Mask R-CNN, CrossFormer-B backbone, COCO 1x: the recipe of
# maskrcnn_crossformer_s_fpn_1x_coco.py, drop path 0.3 (official).
# Official: 47.2 box AP / 42.7 mask AP, 71.5M params, 407.9G FLOPs.
#   mim train mmdet configs/maskrcnn_crossformer_b_fpn_1x_coco.py
_base_ = './maskrcnn_crossformer_s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/crossformer-b_mm.pth')))
