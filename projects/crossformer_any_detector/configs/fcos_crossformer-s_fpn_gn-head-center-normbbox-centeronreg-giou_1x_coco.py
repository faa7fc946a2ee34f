# FCOS (with mmdet's centre-sampling / normalised-bbox / centerness-on-reg /
# GIoU improvements) on a CrossFormer-S backbone, COCO 1x.
#
# Reproduces no paper number: the CrossFormer paper (ICLR 2022) reports
# RetinaNet and Mask R-CNN on COCO, not FCOS. It shows a detector mmdet ships
# taking CrossFormer by a backbone swap. Stock reference (mmdet metafile):
# the R-50-caffe version of this recipe, 38.7 box AP.
#
# What changes against the inherited mmdet config:
# - backbone: CrossFormer-S (group size 7, interval 8/4/2/1, drop path 0.2 as
#   the official COCO models), stages 1-3 out (192, 384, 768 channels,
#   strides 8, 16, 32); the FPN takes all three (start_level=0) and adds P6,
#   P7 on its output, so the head sees strides 8..128 as with ResNet C3-C5;
# - input normalisation: the RGB ImageNet mean / std CrossFormer was
#   pre-trained with (the base uses Caffe BGR without std);
# - optimizer: AdamW lr 1e-4, weight decay 0.05, no decay on norms and biases
#   (the setting of mmdet's own Swin detectors; an untested choice for FCOS,
#   16 images per batch); the schedule (12 epochs, 500-iteration warm-up,
#   steps at 8 and 11) is FCOS's.
#
#   python tools/model_converters/crossformer2mm.py \
#       crossformer-s.pth checkpoints/crossformer-s_mm.pth
#   mim train mmdet projects/crossformer_any_detector/configs/<this file>
_base_ = 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco.py'  # noqa
custom_imports = dict(imports=['mmcrossformer'], allow_failed_imports=False)
# Resume continues the random streams (docs/training.md).
custom_hooks = [dict(type='RNGStateHook')]

pretrained = 'checkpoints/crossformer-s_mm.pth'  # converted ImageNet weights
model = dict(
    data_preprocessor=dict(
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True),
    backbone=dict(
        _delete_=True,
        type='CrossFormer',
        arch='small',
        drop_path_rate=0.2,
        out_indices=(1, 2, 3),
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(
        in_channels=[192, 384, 768],
        start_level=0,
        add_extra_convs='on_output',
        num_outs=5))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='CompilableOptimWrapperConstructor',  # compile=True
    optimizer=dict(
        type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.))
