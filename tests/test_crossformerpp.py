"""CrossFormer++ (official main branch): activation cooling layers, region
long-distance grouping, the small-map rule, presets, checkpoints; numbers
against ``crossformerpp_parity.pt`` (official outputs on random weights)."""
import json
import os.path as osp

import pytest
import torch
import torch.nn as nn
from helpers.building import uninitialised_weights
from helpers.paths import REPO, reference_path
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmcrossformer  # noqa: F401  registers CrossFormer
from mmcrossformer.cli.crossformer2mm import convert_file, main
from mmcrossformer.models import CrossFormer
from mmcrossformer.models.checkpoint import (CheckpointError,
                                             backbone_state_dict,
                                             convert_state_dict)
from mmcrossformer.models.cooling import has_cooling_layer
from mmcrossformer.models.grouping import (group_embeddings, group_layout,
                                           ungroup_embeddings)

PRESETS = ['pp-small', 'pp-base', 'pp-large', 'pp-huge']
# The official classifiers, 1000 classes (CROSSFORMERPP.md, section 5).
PARAMS = {'pp-small': 23_325_340, 'pp-base': 51_994_594,
          'pp-large': 92_001_904, 'pp-huge': 95_962_944}


def pp_arch(parity_pp):
    arch = parity_pp['arch']
    return dict(embed_dims=arch['embed_dim'], depths=arch['depths'],
                num_heads=arch['num_heads'])


def dense_backbone(parity_pp, **kwargs):
    arch = parity_pp['arch']
    return CrossFormer(arch=pp_arch(parity_pp), acl=True, lda_mode='region',
                       group_size=arch['dense_group_size'],
                       interval=arch['dense_interval'], **kwargs)


def classifier_backbone(parity_pp):
    arch = parity_pp['arch']
    return CrossFormer(arch=pp_arch(parity_pp), acl=True, lda_mode='region',
                       group_size=arch['cls_group_size'],
                       interval=arch['cls_interval'], final_norm=True,
                       out_indices=(3, ))


def layout_of(variant):
    with open(reference_path('crossformerpp_imagenet_keys.json')) as f:
        entry = json.load(f)[variant]
    return entry, {k: torch.zeros(s) for k, s in entry['keys'].items()}


# ------------------------------------------------------------- numerics
@pytest.mark.parametrize('converted', [True, False])
@pytest.mark.parametrize('case', ['224x224', '256x416'])
def test_dense_features_through_pretrained_init(tmp_path, parity_pp, case,
                                                converted):
    """mmdet's registry, ``init_cfg`` with the converter's output and with
    the official file as released: the official dense backbone's stage
    outputs, G 7, I (8, 4, 2, 1), region grouping and cooling layers."""
    from mmdet.registry import MODELS
    src = tmp_path / 'official.pth'
    torch.save(parity_pp['checkpoint'], src)
    checkpoint = src
    if converted:
        checkpoint = tmp_path / 'mm.pth'
        convert_file(str(src), str(checkpoint))
    arch = parity_pp['arch']
    model = MODELS.build(dict(
        type='CrossFormer', arch=pp_arch(parity_pp), acl=True,
        lda_mode='region', group_size=arch['dense_group_size'],
        interval=arch['dense_interval'],
        init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint),
                      prefix='backbone.')))
    model.init_weights()
    model.eval()
    with torch.no_grad():
        outs = model(parity_pp['inputs'][case])
    expected = parity_pp['features'][case]
    assert len(outs) == len(expected) == 4
    for out, ref in zip(outs, expected):
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, atol=1e-3, rtol=1e-5)


def test_dense_features_float64(parity_pp):
    """In float64 the error left is the reference's own fp32 rounding."""
    model = dense_backbone(parity_pp)
    state_dict, _ = backbone_state_dict(parity_pp['checkpoint'])
    del state_dict['norm.weight'], state_dict['norm.bias']
    model.load_state_dict(state_dict, strict=True)
    model = model.double().eval()
    with torch.no_grad():
        outs = model(parity_pp['inputs']['256x416'].double())
    for out, ref in zip(outs, parity_pp['features']['256x416']):
        torch.testing.assert_close(out.float(), ref, atol=5e-4, rtol=0)


def test_classifier_logits_in_mmpretrain(tmp_path, parity_pp):
    """The converted file loads with ``strict=True`` into mmpretrain's
    ``ImageClassifier`` of ``configs/crossformerpp_s_in1k.py`` (backbone
    swapped for the reference's small arch) and gives the official logits
    with the classification G (4, 4, 14, 7) and I (4, 2, 1, 1)."""
    from mmpretrain.registry import MODELS
    src, dst = tmp_path / 'official.pth', tmp_path / 'mm.pth'
    torch.save(parity_pp['checkpoint'], src)
    convert_file(str(src), str(dst))
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'crossformerpp_s_in1k.py'))
    assert cfg.model.backbone.arch == 'pp-small'
    assert tuple(cfg.model.backbone.group_size) == tuple(
        parity_pp['arch']['cls_group_size'])
    assert tuple(cfg.model.backbone.interval) == tuple(
        parity_pp['arch']['cls_interval'])
    cfg.model.backbone = dict(cfg.model.backbone, arch=pp_arch(parity_pp))
    cfg.model.head.update(num_classes=10, in_channels=128)
    cfg.model.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        classifier = MODELS.build(cfg.model)
    classifier.load_state_dict(
        torch.load(dst, weights_only=True)['state_dict'], strict=True)
    classifier.eval()
    with torch.no_grad():
        logits = classifier(parity_pp['logits_input'], mode='tensor')
    torch.testing.assert_close(logits, parity_pp['logits'], atol=1e-3,
                               rtol=0)


def test_output_independent_of_previous_calls(parity_pp):
    """The official dense forward sets ``lsda_flag = 0`` for good after one
    small map; here a small input first changes nothing."""
    model = dense_backbone(parity_pp).eval()
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        fresh = model(x)
        model(torch.randn(1, 3, 40, 600))  # stage maps of height <= 7
        again = model(x)
    for a, b in zip(fresh, again):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


# ------------------------------------------------------------- the rules
@pytest.mark.parametrize('depth, blocks', [
    (1, []), (2, []), (3, []), (4, [2]), (6, [2]), (7, [2, 5]),
    (18, [2, 5, 8, 11, 14])])
def test_cooling_layer_placement(depth, blocks):
    assert [i for i in range(depth) if has_cooling_layer(i, depth)] == blocks
    model = CrossFormer(arch=dict(embed_dims=16, depths=[depth, 1],
                                  num_heads=[1, 2]),
                        merge_sizes=((2, 4), ), interval=(2, 1),
                        out_indices=(0, 1), acl=True)
    assert [i for i, b in enumerate(model.stages[0].blocks)
            if b.cooling is not None] == blocks
    assert all(b.cooling is None for b in CrossFormer(
        arch=dict(embed_dims=16, depths=[depth, 1], num_heads=[1, 2]),
        merge_sizes=((2, 4), ), interval=(2, 1),
        out_indices=(0, 1)).stages[0].blocks)


@pytest.mark.parametrize('hw, group_size, interval', [
    ((10, 13), 2, 3), ((16, 16), 4, 2), ((17, 5), 2, 2), ((9, 30), 3, 4)])
def test_region_grouping_rule(hw, group_size, interval):
    """Group (rh, rw, a, b) holds rows ``rh*S + a + I*u`` and columns
    ``rw*S + b + I*v`` of the padded map, S = G*I, row-major in (u, v)."""
    h, w = hw
    layout = group_layout(hw, group_size, interval, True, 'region')
    span = group_size * interval
    assert (layout.pad_h, layout.pad_w) == (-h % span, -w % span)
    assert (layout.group_h, layout.group_w) == (group_size, group_size)
    hp, wp = h + layout.pad_h, w + layout.pad_w
    rows = torch.arange(hp)[:, None].expand(hp, wp)
    cols = torch.arange(wp)[None, :].expand(hp, wp)
    coords = torch.stack([rows, cols], -1)[:h, :w][None].float()
    groups = group_embeddings(coords, layout, pad_value=-1.)
    expected = []
    for rh in range(hp // span):
        for rw in range(wp // span):
            for a in range(interval):
                for b in range(interval):
                    expected.append([[rh * span + a + interval * u,
                                      rw * span + b + interval * v]
                                     for u in range(group_size)
                                     for v in range(group_size)])
    expected = torch.tensor(expected).float()
    padded = (expected[..., 0] >= h) | (expected[..., 1] >= w)
    expected[padded] = -1.
    assert torch.equal(groups, expected)
    assert torch.equal(ungroup_embeddings(groups, layout), coords)


def test_region_equals_image_grouping_on_one_region():
    """With Hp = Wp = G*I the two long-distance rules agree."""
    x = torch.randn(2, 12, 12, 3)
    region = group_layout((12, 12), 4, 3, True, 'region')
    image = group_layout((12, 12), 4, 3, True, 'image')
    assert torch.equal(group_embeddings(x, region), group_embeddings(x, image))


@pytest.mark.parametrize('hw, mode, group, num_groups', [
    ((5, 9), 'region', (5, 9), 1), ((5, 9), 'image', (5, 5), 2),
    ((7, 7), 'region', (7, 7), 1), ((3, 20), 'region', (3, 20), 1),
    ((2, 512), 'region', (2, 512), 1), ((8, 7), 'region', (8, 7), 1)])
def test_small_map_rule(hw, mode, group, num_groups):
    """``min(H, W) <= G``: SDA in both modes; in region mode one group of
    the whole map (what the official max(H, W)-sided padded group computes),
    in image mode groups of side min(H, W) (ICLR)."""
    for long_distance in (False, True):
        layout = group_layout(hw, 7, 2, long_distance, mode)
        assert not layout.long_distance
        assert (layout.group_h, layout.group_w) == group
        assert layout.num_groups == num_groups


def test_small_map_equals_the_official_padded_square_group():
    """One HxW group gives what the official max(H, W)-sided group, padded
    and masked with -1e6, gives."""
    from mmcrossformer.models import CrossFormerBlock
    block = CrossFormerBlock(16, 2, group_size=7, interval=2,
                             long_distance=True, lda_mode='region').eval()
    h, w, side = 5, 9, 9
    x = torch.randn(1, h * w, 16)
    with torch.no_grad():
        ours = block(x, (h, w))
        y = block.norm1(x).view(1, h, w, 16)
        y = torch.nn.functional.pad(y, (0, 0, 0, side - w, 0, side - h))
        mask = torch.zeros(side, side)
        mask[h:] = mask[:, w:] = -1e6
        attn = block.attn
        qkv = attn.qkv(y.view(1, side * side, 16)).view(
            1, side * side, 3, 2, 8).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        logits = (q * attn.scale) @ k.transpose(-2, -1) + \
            attn.position_bias.group_bias(side, side) + mask.view(1, -1)
        out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(
            1, side, side, 16)
        out = attn.proj(out)[:, :h, :w].reshape(1, h * w, 16)
        x = x + out
        official = block.ffn(block.norm2(x), identity=x)
    torch.testing.assert_close(ours, official, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('size', [(224, 224), (250, 333), (33, 65), (7, 5),
                                  (64, 1)])
def test_any_input_size(size):
    model = CrossFormer(arch=dict(embed_dims=16, depths=[1, 3, 4, 1],
                                  num_heads=[1, 2, 2, 4]), acl=True,
                        lda_mode='region').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    for i, out in enumerate(outs):
        stride = 2**(i + 2)
        assert out.shape == (1, 16 * 2**i, -(-size[0] // stride),
                             -(-size[1] // stride))
        assert torch.isfinite(out).all()


# -------------------------------------------------------- presets, args
@pytest.mark.parametrize('variant', PRESETS)
def test_preset_parameters(variant):
    """With a 1000-class head, exactly the official classifiers' counts."""
    entry, _ = layout_of(variant)
    assert entry['params'] == PARAMS[variant]
    with uninitialised_weights():  # only the structure is checked
        model = CrossFormer(arch=variant, final_norm=True, out_indices=(3, ))
    assert model.acl and model.lda_mode == 'region'
    assert (model.embed_dims, model.depths, model.num_heads) == (
        entry['embed_dim'], entry['depths'], entry['num_heads'])
    head = nn.Linear(model.channels[-1], 1000)
    total = sum(p.numel() for p in [*model.parameters(), *head.parameters()])
    assert total == PARAMS[variant]


def test_short_names_and_overrides():
    assert CrossFormer(arch='pp-s').depths == CrossFormer(
        arch='pp-small').depths
    model = CrossFormer(arch='pp-small', acl=False, lda_mode='image',
                        drop_path_rate=0.)
    assert not model.acl and model.lda_mode == 'image'
    assert all(b.cooling is None for s in model.stages for b in s.blocks)
    # ICLR weights in region mode.
    model = CrossFormer(arch='small', lda_mode='region')
    assert not model.acl and model.lda_mode == 'region'
    assert model.stages[0].blocks[1].lda_mode == 'region'
    custom = CrossFormer(arch=dict(embed_dims=32, depths=[2, 4, 2, 2],
                                   num_heads=[1, 2, 4, 8], acl=True,
                                   lda_mode='region'))
    assert custom.acl and custom.stages[1].blocks[2].cooling is not None


def test_bad_lda_mode():
    with pytest.raises(ValueError, match="lda_mode must be 'image'"):
        CrossFormer(arch='pp-small', lda_mode='regions')


# --------------------------------------------------------- checkpoints
@pytest.mark.parametrize('variant', PRESETS)
def test_real_layouts_convert_and_load_strictly(tmp_path, variant):
    entry, official = layout_of(variant)
    # Files saved by older code hold the group-size buffers too.
    official['layers.0.blocks.0.attn.biases'] = torch.zeros(49, 2)
    official['layers.0.blocks.0.attn.relative_position_index'] = torch.zeros(
        16, 16, dtype=torch.long)
    official['layers.0.blocks.0.attn_mask'] = torch.zeros(4, 16, 16)
    converted, info = convert_state_dict(official)
    assert info['layout'] == 'imagenet' and info['variant'] == variant
    assert info['acl'] and info['dropped'] == 3
    assert not any(k.endswith(('biases', 'index', 'attn_mask'))
                   for k in converted)
    assert any('.cooling.conv.' in k for k in converted)
    with uninitialised_weights():  # strict loading replaces every value
        model = CrossFormer(arch=variant, final_norm=True, out_indices=(3, ))
    state_dict, _ = backbone_state_dict({'model': official})
    model.load_state_dict(state_dict, strict=True)


def test_cli_names_the_variant(tmp_path, capsys):
    """What ``crossformer2mm`` prints (its ``main``, in this process)."""
    _, official = layout_of('pp-small')
    src, dst = tmp_path / 'crossformer++-s.pth', tmp_path / 'mm.pth'
    torch.save({'model': official}, src)
    assert main([str(src), str(dst)]) == 0
    assert 'CrossFormer++-S, official ImageNet classifier' in (
        capsys.readouterr().out)
    assert torch.load(dst, weights_only=True)['meta']['arch']['acl'] is True


def test_mismatched_checkpoints_name_the_switch(tmp_path, parity_pp, parity):
    pp_file, iclr_file = tmp_path / 'pp.pth', tmp_path / 'iclr.pth'
    torch.save(parity_pp['checkpoint'], pp_file)
    torch.save(parity['checkpoint'], iclr_file)
    iclr_arch = pp_arch(parity_pp)
    iclr_arch['depths'] = [2, 2, 2, 2]  # the ICLR parity arch
    # A ++ checkpoint into an ICLR backbone.
    model = CrossFormer(arch=pp_arch(parity_pp), init_cfg=dict(
        type='Pretrained', checkpoint=str(pp_file)))
    with pytest.raises(CheckpointError, match='set acl=True'):
        model.init_weights()
    state_dict, _ = backbone_state_dict(parity_pp['checkpoint'])
    with pytest.raises(CheckpointError, match='set acl=True'):
        model.load_state_dict(state_dict, strict=False)
    # An ICLR checkpoint into a ++ backbone (depth 4 in stage 2 has one).
    model = CrossFormer(arch=dict(iclr_arch, depths=[2, 2, 4, 2]), acl=True,
                        init_cfg=dict(type='Pretrained',
                                      checkpoint=str(iclr_file)))
    with pytest.raises(CheckpointError, match='set acl=False'):
        model.init_weights()


# ------------------------------------------------- training behaviour
def test_with_cp_same_gradients():
    arch = dict(embed_dims=16, depths=[1, 4, 1, 1], num_heads=[1, 2, 2, 4])
    x = torch.randn(2, 3, 70, 90)
    grads = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        model = CrossFormer(arch=arch, acl=True, lda_mode='region',
                            group_size=3, interval=(3, 2, 2, 1),
                            with_cp=with_cp).train()
        sum(o.square().mean() for o in model(x.clone().requires_grad_()
                                             )).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name],
                                   atol=1e-6, rtol=1e-5, msg=name)
    assert grads[0]['stages.1.blocks.2.cooling.conv.weight'].abs().sum() > 0


def test_frozen_stages_freeze_cooling_layers():
    model = CrossFormer(arch=dict(embed_dims=16, depths=[1, 4, 1, 1],
                                  num_heads=[1, 2, 2, 4]), acl=True,
                        frozen_stages=1).train()
    cooling = model.stages[1].blocks[2].cooling
    assert not cooling.training
    assert not any(p.requires_grad for p in cooling.parameters())


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_with_padded_regions(dtype):
    """Regions of mostly padding (a 17-row map in 16-row regions): the
    fp16-safe mask keeps every output finite."""
    model = CrossFormer(arch=dict(embed_dims=16, depths=[2, 1, 1, 1],
                                  num_heads=[1, 2, 2, 4]), acl=True,
                        lda_mode='region', group_size=4,
                        interval=(4, 2, 2, 1)).eval()
    x = torch.randn(1, 3, 68, 100)
    with torch.no_grad():
        ref = model(x)
        outs = model.to(dtype)(x.to(dtype))
    for out, r in zip(outs, ref):
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out.float(), r, atol=0.1, rtol=0.05)
