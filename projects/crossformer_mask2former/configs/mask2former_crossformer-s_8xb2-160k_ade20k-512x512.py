# Mask2Former on a CrossFormer-S backbone, ADE20K semantic segmentation,
# 512x512 crops, 160k iterations.
#
# Reproduces no paper number: the CrossFormer paper (ICLR 2022) reports
# Semantic FPN and UperNet on ADE20K, not Mask2Former. It shows an mmseg
# decoder the paper did not use taking CrossFormer by a backbone swap. Stock
# reference (mmseg metafile): the Swin-T version of this config, 48.66 mIoU;
# CrossFormer-S is the paper's counterpart of Swin-T (same stage widths 96,
# 192, 384, 768 and strides 4-32, same depths 2, 2, 6, 2).
#
# What changes against the inherited mmseg (Swin-T) config: only the backbone,
# CrossFormer-S (group size 7, interval 8/4/2/1), all four stages out into the
# pixel decoder (decode_head.in_channels stays [96, 192, 384, 768]). Drop path
# 0.3 as the inherited Swin-T recipe. Everything else is Mask2Former's own
# recipe: AdamW lr 1e-4, weight decay 0.05, backbone lr x0.1, grad clip 0.01,
# poly schedule over 160k iterations, 8 GPUs x 2 images. The Swin-T config's
# no-decay keys for backbone norms apply unchanged, since CrossFormer names
# its norms as Swin does (backbone.patch_embed.norm,
# backbone.stages.S.blocks.B.norm1 / norm2, backbone.stages.S.downsample.norm);
# added here: the LayerNorms inside CrossFormer's dynamic position bias MLPs.
#
#   python tools/model_converters/crossformer2mm.py \
#       crossformer-s.pth checkpoints/crossformer-s_mm.pth
#   mim train mmseg projects/crossformer_mask2former/configs/<this file>
_base_ = 'mmseg::mask2former/mask2former_swin-t_8xb2-160k_ade20k-512x512.py'
# mmdet.models provides the Mask2Former pixel decoder, losses and assigner
# (the base config imports it too; `imports` is replaced, not appended).
custom_imports = dict(
    imports=['mmdet.models', 'mmcrossformer'], allow_failed_imports=False)
# Resume continues the random streams (docs/training.md).
custom_hooks = [dict(type='RNGStateHook')]

pretrained = 'checkpoints/crossformer-s_mm.pth'  # converted ImageNet weights
model = dict(
    backbone=dict(
        _delete_=True,
        type='CrossFormer',
        arch='small',
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    decode_head=dict(in_channels=[96, 192, 384, 768]))

# A custom key overrides norm_decay_mult, and 'backbone' matches every
# backbone parameter, so each backbone norm needs its own (longer) key.
optim_wrapper = dict(
    constructor='CompilableOptimWrapperConstructor',  # compile=True
    paramwise_cfg=dict(
        custom_keys={
            f'position_bias.layers.{i}.0': dict(lr_mult=0.1, decay_mult=0.0)
            for i in range(3)
        }))
