# CrossFormer-B on ImageNet-1K (mmpretrain): the recipe of
# crossformer_s_in1k.py.
# Official: 83.4 top-1, 52.0M params, 9.2G FLOPs.
#   mim test mmpretrain configs/crossformer_b_in1k.py \
#       --checkpoint checkpoints/crossformer-b_mm.pth
_base_ = './crossformer_s_in1k.py'
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.3),
    head=dict(in_channels=768))
