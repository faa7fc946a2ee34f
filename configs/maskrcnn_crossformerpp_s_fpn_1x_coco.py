# Mask R-CNN, CrossFormer++-S backbone, COCO 1x: the official CrossFormer++
# recipe, which is the one of maskrcnn_crossformer_s_fpn_1x_coco.py (group
# size 7, interval (8, 4, 2, 1), drop path 0.2) with the ++S backbone.
# Official: 46.4 box AP / 42.1 mask AP, 43.0M params, 287.4G FLOPs (no
# released checkpoint).
#   mim train mmdet configs/maskrcnn_crossformerpp_s_fpn_1x_coco.py
_base_ = './maskrcnn_crossformer_s_fpn_1x_coco.py'

model = dict(
    backbone=dict(_base_.crossformerpp_dense_backbone, _delete_=True),
    neck=dict(in_channels=[64, 128, 256, 512]))
