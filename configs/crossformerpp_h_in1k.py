# CrossFormer++-H on ImageNet-1K (mmpretrain): the recipe of
# crossformerpp_s_in1k.py.
# Official: 84.9 top-1, 96.0M params, 21.8G FLOPs.
#   mim test mmpretrain configs/crossformerpp_h_in1k.py \
#       --checkpoint checkpoints/crossformerpp-h_mm.pth
_base_ = './crossformerpp_s_in1k.py'
model = dict(
    backbone=dict(arch='pp-huge', drop_path_rate=0.5),
    head=dict(in_channels=1024))
