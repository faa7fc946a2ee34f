# CrossFormer-B + Semantic FPN on ADE20K, 80k iterations: the recipe of
# fpn_crossformer_s_80k_ade20k.py with the B backbone, which keeps the
# ImageNet group size 7 and interval (8, 4, 2, 1).
#   Paper: 48.0 mIoU single scale.
_base_ = './fpn_crossformer_s_80k_ade20k.py'
model = dict(
    backbone=dict(
        arch='base',
        group_size=7,
        interval=(8, 4, 2, 1),
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/crossformer-b_mm.pth')))
