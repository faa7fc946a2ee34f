# RetinaNet, CrossFormer++-S backbone, COCO 1x: the official CrossFormer++
# recipe, which is the one of retinanet_crossformer_s_fpn_1x_coco.py with the
# ++S backbone.
# Official: 45.1 box AP (no released checkpoint); its 40.8M params / 282.0G
# FLOPs repeat CrossFormer-S's (this model: 33.04M).
#   mim train mmdet configs/retinanet_crossformerpp_s_fpn_1x_coco.py
_base_ = './retinanet_crossformer_s_fpn_1x_coco.py'

model = dict(
    backbone=dict(_base_.crossformerpp_dense_backbone, _delete_=True),
    neck=dict(in_channels=[64, 128, 256, 512]))
