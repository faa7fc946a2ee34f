# RetinaNet, CrossFormer++-B backbone, COCO 1x: a derivation (the official
# ++B dense backbone cannot be built): the recipe of
# retinanet_crossformerpp_s_fpn_1x_coco.py with the ++B dense backbone of
# _base_/crossformer.py (drop path 0.3) and channels 96..768.
# Official: 46.6 box AP, 62.2M params, 389.0G FLOPs.
#   mim train mmdet configs/retinanet_crossformerpp_b_fpn_1x_coco.py
_base_ = './retinanet_crossformerpp_s_fpn_1x_coco.py'

model = dict(
    backbone=dict(_base_.crossformerpp_b_dense_backbone, _delete_=True),
    neck=dict(in_channels=[96, 192, 384, 768]))
