# Semantic FPN, CrossFormer++-S backbone, ADE20K 80k: the official
# CrossFormer++ recipe: fpn_crossformer_s_80k_ade20k.py with the ++S backbone,
# group size 7 and interval (8, 4, 2, 1), AdamW lr 1e-4 and 4 images per GPU
# (x 4 GPUs = the official batch 16).
# Official: 47.4 mIoU, 27.1M params, 199.5G FLOPs (no released checkpoint).
#   mim train mmseg configs/fpn_crossformerpp_s_80k_ade20k.py
_base_ = './fpn_crossformer_s_80k_ade20k.py'
model = dict(
    backbone=dict(_base_.crossformerpp_dense_backbone, _delete_=True),
    neck=dict(in_channels=[64, 128, 256, 512]))
optim_wrapper = dict(optimizer=dict(lr=1e-4))
train_dataloader = dict(batch_size=4)
