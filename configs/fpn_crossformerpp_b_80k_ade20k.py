# Semantic FPN, CrossFormer++-B backbone, ADE20K 80k: a derivation (the
# official ++B dense backbone cannot be built): the recipe of
# fpn_crossformerpp_s_80k_ade20k.py with the ++B dense backbone of
# _base_/crossformer.py (drop path 0.3) and channels 96..768.
# Official: 48.6 mIoU, 55.6M params, 331.1G FLOPs.
#   mim train mmseg configs/fpn_crossformerpp_b_80k_ade20k.py
_base_ = './fpn_crossformerpp_s_80k_ade20k.py'
model = dict(
    backbone=dict(_base_.crossformerpp_b_dense_backbone, _delete_=True),
    neck=dict(in_channels=[96, 192, 384, 768]))
