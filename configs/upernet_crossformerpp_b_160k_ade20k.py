# UperNet, CrossFormer++-B backbone, ADE20K 160k: a derivation (the official
# ++B dense backbone cannot be built): the recipe of
# upernet_crossformerpp_s_160k_ade20k.py with the ++B dense backbone of
# _base_/crossformer.py (drop path 0.3) and channels 96..768.
# Official: 50.7 mIoU, 51.0 multi-scale + flip, 83.7M params, 1089.8G FLOPs.
#   mim train mmseg configs/upernet_crossformerpp_b_160k_ade20k.py
_base_ = './upernet_crossformerpp_s_160k_ade20k.py'
model = dict(
    backbone=dict(_base_.crossformerpp_b_dense_backbone, _delete_=True),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
