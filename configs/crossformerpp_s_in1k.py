# CrossFormer++-S on ImageNet-1K (mmpretrain): the official CrossFormer++
# recipe, which is the one of crossformer_s_in1k.py, with its progressive
# group sizes (4, 4, 14, 7) and intervals (4, 2, 1, 1) at 224x224.
# Official: 83.2 top-1, 23.3M params, 4.9G FLOPs.
#   mim test mmpretrain configs/crossformerpp_s_in1k.py \
#       --checkpoint checkpoints/crossformerpp-s_mm.pth
_base_ = './crossformer_s_in1k.py'
model = dict(
    backbone=dict(
        arch='pp-small',
        acl=True,  # as the pp- presets, explicit so an arch dict keeps them
        lda_mode='region',
        group_size=(4, 4, 14, 7),
        interval=(4, 2, 1, 1),
        drop_path_rate=0.2),
    head=dict(in_channels=512))
