# Mask R-CNN with a CrossFormer-B backbone on COCO, 3x schedule with
# multi-scale training: the recipe of maskrcnn_crossformer_s_fpn_3x_coco.py
# with the B backbone and drop path 0.3. Paper: 49.8 box AP / 44.5 mask AP
# (71.47M parameters).
#   mim train mmdet configs/maskrcnn_crossformer_b_fpn_3x_coco.py
_base_ = './maskrcnn_crossformer_s_fpn_3x_coco.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/crossformer-b_mm.pth')))
