# CrossFormer-S on ImageNet-1K (mmpretrain): the official recipe (224x224,
# AdamW lr 1e-3 at batch 1024, weight decay 0.05, 300 epochs, 20 warm-up,
# cosine, label smoothing 0.1, mixup / cutmix, RandAugment, grad clip 5) and
# evaluation (bicubic resize of the short side to 256, centre crop 224).
# Official: 82.5 top-1, 30.7M params, 4.9G FLOPs.
#   mim test mmpretrain configs/crossformer_s_in1k.py \
#       --checkpoint checkpoints/crossformer-s_mm.pth
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
    './_base_/crossformer.py',
]
custom_imports = dict(imports=['mmcrossformer'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='CrossFormer',
        arch='small',
        drop_path_rate=0.2,
        out_indices=(3, ),
        final_norm=True),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=768,
        init_cfg=None,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.)
    ],
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0)
    ]),
)

train_dataloader = dict(batch_size=128)  # x 8 GPUs = 1024
optim_wrapper = dict(
    constructor='CompilableOptimWrapperConstructor',  # compile=True
    paramwise_cfg=dict(_base_.crossformer_paramwise_cfg, _delete_=True),
    clip_grad=dict(max_norm=5.0))
