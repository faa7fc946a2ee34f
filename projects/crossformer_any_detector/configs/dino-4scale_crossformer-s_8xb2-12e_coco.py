# DINO (4 scales, 12 epochs) on a CrossFormer-S backbone, COCO.
#
# Reproduces no paper number: the CrossFormer paper (ICLR 2022) reports
# RetinaNet and Mask R-CNN on COCO, not query-based detectors. It shows a
# DETR-style detector mmdet ships taking CrossFormer by a backbone swap.
# Stock reference (mmdet metafile): the R-50 version, 49.0 box AP.
#
# What changes against the inherited mmdet config: only the backbone.
# CrossFormer-S (group size 7, interval 8/4/2/1, drop path 0.2 as the
# official COCO models) gives stages 1-3 (192, 384, 768 channels, strides 8,
# 16, 32) to the ChannelMapper, which adds the fourth level (stride 64) with a
# stride-2 conv: num_outs=4 matches the encoder's / decoder's num_levels=4.
# Everything else is DINO's own recipe: RGB ImageNet normalisation (as
# CrossFormer's pre-training), AdamW lr 1e-4, weight decay 1e-4, backbone
# lr x0.1, grad clip 0.1, 12 epochs with a step at 11, 8 GPUs x 2 images.
#
#   python tools/model_converters/crossformer2mm.py \
#       crossformer-s.pth checkpoints/crossformer-s_mm.pth
#   mim train mmdet projects/crossformer_any_detector/configs/<this file>
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
custom_imports = dict(imports=['mmcrossformer'], allow_failed_imports=False)
# Resume continues the random streams (docs/training.md).
custom_hooks = [dict(type='RNGStateHook')]

pretrained = 'checkpoints/crossformer-s_mm.pth'  # converted ImageNet weights
model = dict(
    backbone=dict(
        _delete_=True,
        type='CrossFormer',
        arch='small',
        drop_path_rate=0.2,
        out_indices=(1, 2, 3),
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[192, 384, 768], num_outs=4))
# DINO's optimizer, built so that mmengine's compile=True can trace its step.
optim_wrapper = dict(constructor='CompilableOptimWrapperConstructor')
