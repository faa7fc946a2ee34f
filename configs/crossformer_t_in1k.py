# CrossFormer-T on ImageNet-1K (mmpretrain): the recipe of
# crossformer_s_in1k.py.
# Official: 81.5 top-1, 27.8M params, 2.9G FLOPs.
#   mim test mmpretrain configs/crossformer_t_in1k.py \
#       --checkpoint checkpoints/crossformer-t_mm.pth
_base_ = './crossformer_s_in1k.py'
model = dict(
    backbone=dict(arch='tiny', drop_path_rate=0.1),
    head=dict(in_channels=512))
