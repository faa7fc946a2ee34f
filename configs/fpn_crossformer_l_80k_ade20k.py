# CrossFormer-L + Semantic FPN on ADE20K, 80k iterations: the recipe of
# fpn_crossformer_s_80k_ade20k.py (group size [14, 14, 7, 7], interval
# [16, 8, 2, 1]) with the L backbone (embed_dims 128).
#   Paper: 49.1 mIoU single scale.
_base_ = './fpn_crossformer_s_80k_ade20k.py'
model = dict(
    backbone=dict(
        arch='large',
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint='checkpoints/crossformer-l_mm.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
