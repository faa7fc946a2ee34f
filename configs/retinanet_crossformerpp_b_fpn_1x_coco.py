# RetinaNet, CrossFormer++-B backbone, COCO 1x: a derivation (the official
# ++B dense backbone cannot be built): the recipe of
# retinanet_crossformerpp_s_fpn_1x_coco.py with the ++B ImageNet backbone,
# drop path 0.3 (its ImageNet value, as the ICLR B configs take theirs) and
# channels 96..768.
# Official: 46.6 box AP, 62.2M params, 389.0G FLOPs.
#   mim train mmdet configs/retinanet_crossformerpp_b_fpn_1x_coco.py
_base_ = './retinanet_crossformerpp_s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='pp-base',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/crossformerpp-b_mm.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
