# UperNet, CrossFormer-L backbone, ADE20K 160k: the recipe of
# upernet_crossformer_s_160k_ade20k.py, drop path 0.5.
# Official: 50.4 mIoU, 51.4 multi-scale + flip, 125.5M params, 1257.8G FLOPs.
#   mim train mmseg configs/upernet_crossformer_l_160k_ade20k.py
_base_ = './upernet_crossformer_s_160k_ade20k.py'
model = dict(
    backbone=dict(
        arch='large',
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint='checkpoints/crossformer-l_mm.pth')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
