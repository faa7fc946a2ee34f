# Mask R-CNN, CrossFormer-B backbone, COCO 3x with multi-scale training: the
# recipe of maskrcnn_crossformer_s_fpn_3x_coco.py, drop path 0.3.
# Official: 49.8 box AP / 44.5 mask AP, 71.5M params, 398.1G FLOPs.
#   mim train mmdet configs/maskrcnn_crossformer_b_fpn_3x_coco.py
_base_ = './maskrcnn_crossformer_s_fpn_3x_coco.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/crossformer-b_mm.pth')))
