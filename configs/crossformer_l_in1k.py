# CrossFormer-L on ImageNet-1K (mmpretrain): the recipe of
# crossformer_s_in1k.py.
# Official: 84.0 top-1, 92.0M params, 16.1G FLOPs.
#   mim test mmpretrain configs/crossformer_l_in1k.py \
#       --checkpoint checkpoints/crossformer-l_mm.pth
_base_ = './crossformer_s_in1k.py'
model = dict(
    backbone=dict(arch='large', drop_path_rate=0.5),
    head=dict(in_channels=1024))
