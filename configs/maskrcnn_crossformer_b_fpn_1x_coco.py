# Mask R-CNN with a CrossFormer-B backbone on COCO, 1x schedule: the recipe of
# maskrcnn_crossformer_s_fpn_1x_coco.py with the B backbone and drop path 0.3
# (official). Paper: 47.2 box AP / 42.7 mask AP, 71.5M parameters (71.47M
# exactly), 407.9G FLOPs at 1280x800.
#   python tools/model_converters/crossformer2mm.py crossformer-b.pth \
#       checkpoints/crossformer-b_mm.pth
#   mim train mmdet configs/maskrcnn_crossformer_b_fpn_1x_coco.py
_base_ = './maskrcnn_crossformer_s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/crossformer-b_mm.pth')))
