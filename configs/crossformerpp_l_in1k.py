# CrossFormer++-L on ImageNet-1K (mmpretrain): the recipe of
# crossformerpp_s_in1k.py.
# Official: 84.7 top-1, 92.0M params, 16.6G FLOPs.
#   mim test mmpretrain configs/crossformerpp_l_in1k.py \
#       --checkpoint checkpoints/crossformerpp-l_mm.pth
_base_ = './crossformerpp_s_in1k.py'
model = dict(
    backbone=dict(arch='pp-large', drop_path_rate=0.5),
    head=dict(in_channels=1024))
