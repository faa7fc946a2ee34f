# Mask R-CNN with a CrossFormer-S backbone on COCO, 1x schedule: the official
# CrossFormer detection recipe (ICLR 2022 code, mmdet 2.x), which the paper
# reports as 45.4 box AP / 41.4 mask AP on val2017 with 50.2M parameters
# (50.16M exactly) and 301.0G FLOPs at 1280x800.
#   backbone: group size 7 in every stage, LDA interval (8, 4, 2, 1), patch
#     sizes (4, 8, 16, 32), merge sizes (2, 4), drop path 0.2, all four
#     stages into the FPN (96, 192, 384, 768 channels);
#   data: mmdet's COCO instance pipeline, 1333x800, random flip; batch 16
#     (8 GPUs x 2 images; auto_scale_lr rescales lr for another batch size
#     when enabled with --auto-scale-lr);
#   schedule: AdamW lr 1e-4, weight decay 1e-4, 500-iteration linear
#     warm-up from 0.001 x lr, lr x 0.1 after epochs 8 and 11, 12 epochs.
#
#   mim train mmdet configs/maskrcnn_crossformer_s_fpn_1x_coco.py
# needs checkpoints/crossformer-s_mm.pth, the ImageNet weights converted with
#   python tools/model_converters/crossformer2mm.py crossformer-s.pth \
#       checkpoints/crossformer-s_mm.pth
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmcrossformer'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='CrossFormer',
        arch='small',
        group_size=7,
        interval=(8, 4, 2, 1),
        patch_sizes=(4, 8, 16, 32),
        merge_sizes=((2, 4), (2, 4), (2, 4)),
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        with_cp=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/crossformer-s_mm.pth',
            prefix='backbone.')),
    neck=dict(in_channels=[96, 192, 384, 768]))

# The official run decays every parameter. We exempt the LayerNorms (their
# affine weights are scales that decay would pull towards 0, not towards
# identity) and the dynamic position bias MLPs (they play the role of Swin's
# relative position bias tables, which Swin's detection configs exempt, and
# of the ImageNet recipe, which exempts every 1-D parameter). With AdamW's
# decoupled decay at lr 1e-4 x weight decay 1e-4 this changes each weight by
# at most 1e-8 of itself per step, so it cannot move the paper's numbers.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        _delete_=True,
        type='AdamW',
        lr=1e-4,
        betas=(0.9, 0.999),
        weight_decay=1e-4),
    paramwise_cfg=dict(
        custom_keys={
            'norm': dict(decay_mult=0.),
            'position_bias': dict(decay_mult=0.),
        }))

auto_scale_lr = dict(enable=False, base_batch_size=16)
