# CrossFormer-B + UperNet on ADE20K, 160k iterations: the recipe of
# upernet_crossformer_s_160k_ade20k.py with the B backbone.
#   Paper: 49.7 mIoU single scale, 50.6 multi-scale + flip (--tta);
#   83.6M parameters (this config: 83.62M).
_base_ = './upernet_crossformer_s_160k_ade20k.py'
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/crossformer-b_mm.pth')))
