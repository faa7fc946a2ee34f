# CrossFormer++-B on ImageNet-1K (mmpretrain): the recipe of
# crossformerpp_s_in1k.py.
# Official: 84.2 top-1, 52.0M params, 9.5G FLOPs.
#   mim test mmpretrain configs/crossformerpp_b_in1k.py \
#       --checkpoint checkpoints/crossformerpp-b_mm.pth
_base_ = './crossformerpp_s_in1k.py'
model = dict(
    backbone=dict(arch='pp-base', drop_path_rate=0.3),
    head=dict(in_channels=768))
