# UperNet, CrossFormer++-S backbone, ADE20K 160k: the official CrossFormer++
# recipe, which is the one of upernet_crossformer_s_160k_ade20k.py (group
# size 7, interval (8, 4, 2, 1), drop path 0.2) with the ++S backbone.
# Official: 49.4 mIoU, 50.8 multi-scale + flip (--tta), 53.1M params,
# 963.5G FLOPs (no released checkpoint).
#   mim train mmseg configs/upernet_crossformerpp_s_160k_ade20k.py
_base_ = './upernet_crossformer_s_160k_ade20k.py'
model = dict(
    backbone=dict(_base_.crossformerpp_dense_backbone, _delete_=True),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
