# RetinaNet with a CrossFormer-S backbone on COCO, 1x schedule: the official
# CrossFormer detection recipe (ICLR 2022 code, mmdet 2.x), which the paper
# reports as 44.4 box AP on val2017 with 40.8M parameters (40.82M exactly)
# and 282.0G FLOPs at 1280x800.
#   backbone: as maskrcnn_crossformer_s_fpn_1x_coco.py (group size 7,
#     interval (8, 4, 2, 1), drop path 0.2);
#   neck: the official FPN takes all four stages (96, 192, 384, 768) but
#     starts at stage 1 (start_level=1) and builds P6 from the last backbone
#     map (add_extra_convs='on_input'; P7 from P6), five levels. Stage 0's
#     lateral conv is never built, and the P6 conv reads 768 channels: this is
#     what gives the official 40.82M;
#   data: mmdet's COCO detection pipeline, 1333x800, random flip, batch 16
#     (8 GPUs x 2 images);
#   schedule: AdamW lr 1e-4, weight decay 1e-4, 500-iteration linear
#     warm-up, lr x 0.1 after epochs 8 and 11, 12 epochs.
#
#   python tools/model_converters/crossformer2mm.py crossformer-s.pth \
#       checkpoints/crossformer-s_mm.pth
#   mim train mmdet configs/retinanet_crossformer_s_fpn_1x_coco.py
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
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
    neck=dict(
        in_channels=[96, 192, 384, 768],
        start_level=1,
        add_extra_convs='on_input',
        num_outs=5))

# Weight decay as in maskrcnn_crossformer_s_fpn_1x_coco.py, where the
# exemption of LayerNorms and position-bias MLPs is argued.
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
