# RetinaNet with a CrossFormer-B backbone on COCO, 1x schedule: the recipe of
# retinanet_crossformer_s_fpn_1x_coco.py with the B backbone and drop path
# 0.3 (official). Paper: 46.2 box AP, 62.1M parameters (62.14M exactly),
# 389.0G FLOPs at 1280x800.
#   python tools/model_converters/crossformer2mm.py crossformer-b.pth \
#       checkpoints/crossformer-b_mm.pth
#   mim train mmdet configs/retinanet_crossformer_b_fpn_1x_coco.py
_base_ = './retinanet_crossformer_s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/crossformer-b_mm.pth')))
