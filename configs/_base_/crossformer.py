# Variables shared by the configs in configs/ (`./_base_/crossformer.py` in
# their `_base_` list, or in that of the config they inherit): the dense
# backbones of the official detection and segmentation recipes and the one
# weight-decay policy. (No `custom_imports` here: mmdet's ConvNeXt bases set
# their own, and mmengine refuses a key that two bases define.)

# CrossFormer-S as the official dense configs build it (group size 7, LDA
# interval (8, 4, 2, 1), the ImageNet drop path, all four stages out), with
# the ImageNet weights converted by tools/model_converters/crossformer2mm.py.
# Configs take it as `backbone=dict(_base_.crossformer_dense_backbone,
# _delete_=True)`; other variants override arch, drop_path_rate, checkpoint.
crossformer_dense_backbone = dict(
    type='CrossFormer',
    arch='small',
    group_size=7,
    interval=(8, 4, 2, 1),
    drop_path_rate=0.2,
    out_indices=(0, 1, 2, 3),
    init_cfg=dict(
        type='Pretrained',
        checkpoint='checkpoints/crossformer-s_mm.pth',
        prefix='backbone.'))

# CrossFormer++-S as the official ++ dense configs build it: the same, with
# the cooling layers and region grouping (as the pp- presets set them;
# explicit so that an arch dict keeps them) and the ++S ImageNet weights.
crossformerpp_dense_backbone = dict(
    crossformer_dense_backbone,
    arch='pp-small',
    acl=True,
    lda_mode='region',
    init_cfg=dict(
        crossformer_dense_backbone['init_cfg'],
        checkpoint='checkpoints/crossformerpp-s_mm.pth'))

# CrossFormer++-B for the ++B dense configs, which are derivations (the
# official ++B dense backbone cannot be built): the ++S dense backbone with
# the ++B ImageNet backbone and its weights, and drop path 0.3 (its ImageNet
# value, as the ICLR B configs take theirs).
crossformerpp_b_dense_backbone = dict(
    crossformerpp_dense_backbone,
    arch='pp-base',
    drop_path_rate=0.3,
    init_cfg=dict(
        crossformerpp_dense_backbone['init_cfg'],
        checkpoint='checkpoints/crossformerpp-b_mm.pth'))

# Weight decay, the same rule in every config: none on 1-D parameters (the
# weights and biases of every norm layer, every bias), full decay on every
# weight matrix and conv kernel. It is the official ImageNet rule
# (`len(shape) == 1 or name.endswith('.bias')`), which trained the weights
# all other configs start from, stated by parameter kind, not by name:
# - the dynamic position bias MLP's Linear weights decay, its LayerNorms do
#   not (as the official ImageNet run);
# - CrossFormer++'s cooling layers: the depthwise conv kernel decays, its
#   bias and its LayerNorm do not;
# - the heads' and necks' norms and biases do not decay either.
# The official dense runs differ only on these small parameters: Mask R-CNN,
# RetinaNet and Semantic FPN decay everything (weight decay 1e-4, which AdamW
# applies as lr * 1e-4 = 1e-8 of a weight per step); UperNet (`custom_keys=
# {'norm': decay_mult 0}`) spares the backbone's norm1 / norm2 /
# patch_embed.norm / downsample.norm but decays biases, the DPB and cooling
# LayerNorms (`ex_ln`) and the heads' norms.
# tests/test_model_zoo.py checks the resulting groups of every config.
crossformer_paramwise_cfg = dict(
    norm_decay_mult=0., bias_decay_mult=0., flat_decay_mult=0.)

# Resume continues the random streams (flips, crops, drop path, RoI
# sampling): each rank's generator states are saved in every checkpoint and
# restored on --resume (mmcrossformer.engine.hooks, docs/training.md).
custom_hooks = [dict(type='RNGStateHook')]
