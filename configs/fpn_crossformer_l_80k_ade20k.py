# Semantic FPN, CrossFormer-L backbone, ADE20K 80k: the recipe of
# fpn_crossformer_s_80k_ade20k.py, drop path 0.5.
# Official: 49.1 mIoU, 95.4M params, 482.7G FLOPs.
#   mim train mmseg configs/fpn_crossformer_l_80k_ade20k.py
_base_ = './fpn_crossformer_s_80k_ade20k.py'
model = dict(
    backbone=dict(
        arch='large',
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint='checkpoints/crossformer-l_mm.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
