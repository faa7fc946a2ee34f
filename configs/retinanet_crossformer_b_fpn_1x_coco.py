# RetinaNet, CrossFormer-B backbone, COCO 1x: the recipe of
# retinanet_crossformer_s_fpn_1x_coco.py, drop path 0.3 (official).
# Official: 46.2 box AP, 62.1M params, 389.0G FLOPs.
#   mim train mmdet configs/retinanet_crossformer_b_fpn_1x_coco.py
_base_ = './retinanet_crossformer_s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/crossformer-b_mm.pth')))
