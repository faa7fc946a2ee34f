# Semantic FPN, CrossFormer-B backbone, ADE20K 80k: the recipe of
# fpn_crossformer_s_80k_ade20k.py with the ImageNet group size 7 and interval
# (8, 4, 2, 1), as the official B config; drop path 0.3.
# Official: 48.0 mIoU, 55.6M params, 320.1G FLOPs.
#   mim train mmseg configs/fpn_crossformer_b_80k_ade20k.py
_base_ = './fpn_crossformer_s_80k_ade20k.py'
model = dict(
    backbone=dict(
        arch='base',
        group_size=7,
        interval=(8, 4, 2, 1),
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/crossformer-b_mm.pth')))
