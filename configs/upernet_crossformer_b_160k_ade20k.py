# UperNet, CrossFormer-B backbone, ADE20K 160k: the recipe of
# upernet_crossformer_s_160k_ade20k.py, drop path 0.3.
# Official: 49.7 mIoU, 50.6 multi-scale + flip, 83.6M params, 1089.7G FLOPs.
#   mim train mmseg configs/upernet_crossformer_b_160k_ade20k.py
_base_ = './upernet_crossformer_s_160k_ade20k.py'
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/crossformer-b_mm.pth')))
