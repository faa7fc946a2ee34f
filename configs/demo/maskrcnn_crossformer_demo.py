# The `make demo` model: Mask R-CNN with a tiny CrossFormer, trained from
# scratch on a CPU in a few minutes on the generated shapes data of
# `tools/demo/make_demo_data.py` (192x192 images of squares, circles and
# triangles on textured backgrounds, COCO format, polygon masks). It is the
# COCO recipe of `../maskrcnn_crossformer_s_fpn_1x_coco.py` (CrossFormer-S:
# 45.4 box AP / 41.4 mask AP in the paper), shrunk:
#   backbone: embed 32, depths (1, 1, 2, 1), heads (1, 2, 4, 8); group size
#     7, LDA interval (8, 4, 2, 1) and the cross-scale embeddings as in S;
#     no pretrained weights, no drop path; a LayerNorm on each output
#     (`out_norms`, as mmdet's Swin; the official detector has none);
#   heads: FPN (with GroupNorm) / RPN / RoI features 128 channels (not
#     256), box head FCs 256 (not 1024), mask head convs 64 (not 256),
#     3 classes, at most 300 proposals and 64 sampled RoIs per training
#     image (not 1000 / 512: on a CPU the RoIAlign backward dominates a
#     step, ~0.5 s per 1000 RoIs),
#     20 detections per test image (not 100), RoI levels from 28 px (not
#     56);
#   data: 192x192 (not 1333x800), random flip, batch 4;
#   schedule: iteration based, AdamW lr 1e-3 (not 1e-4; backbone 3e-4),
#     50 iterations of linear warm-up, then cosine to lr / 100 at the last
#     iteration. No validation during training: `mim test` evaluates the
#     held-out split.
# `tools/demo/run_demo.py` (`make demo`) runs
#   mim train mmdet configs/demo/maskrcnn_crossformer_demo.py \
#       --cfg-options train_cfg.max_iters=N param_scheduler.1.end=N ...
#   mim test mmdet configs/demo/maskrcnn_crossformer_demo.py \
#       --checkpoint work_dirs/demo/iter_N.pth
# (and points the data paths at --data-dir); run from the repository root,
# the paths below are those of `make demo`.
_base_ = '../maskrcnn_crossformer_s_fpn_1x_coco.py'

classes = ('square', 'circle', 'triangle')
data_root = 'data/demo/'
image_size = (192, 192)
max_iters = 350
warmup_iters = 50
fpn_channels = 128

model = dict(
    backbone=dict(
        arch=dict(
            _delete_=True,
            embed_dims=32,
            depths=[1, 1, 2, 1],
            num_heads=[1, 2, 4, 8]),
        drop_path_rate=0.,
        # LayerNorm on each output map (as mmdet's Swin): the raw stage
        # outputs reach magnitudes of tens, and without these norms this
        # Mask R-CNN stalls at mask loss ~0.53 and bbox mAP ~0.00.
        out_norms=True,
        init_cfg=None),
    # GroupNorm in the FPN, as mmdet's own from-scratch recipe
    # (configs/scratch): without it the un-normalised transformer features
    # drive the gradient norm from ~10 to 150-300 once the lr reaches 1e-3
    # and the losses spike; with it the gradient norm stays at ~3.
    neck=dict(
        in_channels=[32, 64, 128, 256],
        out_channels=fpn_channels,
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)),
    rpn_head=dict(in_channels=fpn_channels, feat_channels=fpn_channels),
    # RoIs map to FPN levels by size from 28 px (COCO: 56 px), so the
    # shapes (about 20-95 px) do not all land on the shallow stride-4 level.
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=fpn_channels, finest_scale=28),
        bbox_head=dict(
            in_channels=fpn_channels,
            fc_out_channels=256,
            num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=fpn_channels, finest_scale=28),
        mask_head=dict(
            in_channels=fpn_channels,
            conv_out_channels=64,
            num_classes=len(classes))),
    train_cfg=dict(
        rpn_proposal=dict(max_per_img=300),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(max_per_img=300),
        rcnn=dict(max_per_img=20)))

metainfo = dict(
    classes=classes, palette=[(220, 20, 60), (0, 120, 255), (0, 170, 0)])
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor')),
]
# The images are small and few: load them in the main process.
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
test_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_test.json',
        data_prefix=dict(img='test/'),
        pipeline=test_pipeline))
test_evaluator = dict(ann_file=data_root + 'annotations/instances_test.json')
val_dataloader = val_evaluator = val_cfg = None

train_cfg = dict(
    _delete_=True, type='IterBasedTrainLoop', max_iters=max_iters)
# The backbone learns at 0.3x: with batch 4, AdamW's steps of ~lr per
# weight move the transformer's small (std 0.02) weights by several percent
# per iteration, which slows its learning of shape.
# The demo's measured figures come from these groups: the backbone at 0.3x
# lr, no decay on norm layers nor on the position-bias MLPs (which keep the
# heads' lr), decay elsewhere.
optim_wrapper = dict(
    optimizer=dict(lr=1e-3),
    paramwise_cfg=dict(
        _delete_=True,
        custom_keys={
            'backbone': dict(lr_mult=0.3),
            'norm': dict(decay_mult=0.),
            'position_bias': dict(lr_mult=1., decay_mult=0.),
        }))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.001,
        by_epoch=False,
        begin=0,
        end=warmup_iters),
    dict(
        type='CosineAnnealingLR',
        eta_min_ratio=0.01,
        by_epoch=False,
        begin=warmup_iters,
        end=max_iters),
]

default_hooks = dict(
    logger=dict(interval=10),
    # Only the last checkpoint (interval -1 with save_last).
    checkpoint=dict(by_epoch=False, interval=-1, save_last=True))
log_processor = dict(by_epoch=False, window_size=10)
randomness = dict(seed=0)
