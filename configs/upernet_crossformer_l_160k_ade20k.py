# CrossFormer-L + UperNet on ADE20K, 160k iterations: the recipe of
# upernet_crossformer_s_160k_ade20k.py with the L backbone (embed_dims 128).
#   Paper: 50.4 mIoU single scale, 51.4 multi-scale + flip (--tta);
#   125.5M parameters (this config: 125.48M).
_base_ = './upernet_crossformer_s_160k_ade20k.py'
model = dict(
    backbone=dict(
        arch='large',
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint='checkpoints/crossformer-l_mm.pth')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
