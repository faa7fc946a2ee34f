"""CrossFormer backbone: parity with the official model, shapes, state,
checkpointing, mixed precision, freezing and argument errors."""
import copy
import math

import pytest
import torch
import torch.nn as nn
from helpers.archs import PARITY_ARCH
from helpers.training import SOFTMAX_INVARIANT

import mmcrossformer  # noqa: F401  registers CrossFormer
from mmcrossformer.models import CrossFormer
from mmcrossformer.models.checkpoint import backbone_state_dict

TINY = dict(embed_dims=16, depths=[1, 2, 1, 1], num_heads=[1, 2, 2, 4])


def parity_backbone(parity, **kwargs):
    model = CrossFormer(arch=PARITY_ARCH, **kwargs)
    state_dict, _ = backbone_state_dict(parity['checkpoint'])
    if not kwargs.get('final_norm'):
        state_dict = {k: v for k, v in state_dict.items()
                      if not k.startswith('norm.')}
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('case', ['224x224', '256x416', '96x160'])
def test_parity_with_official_features(parity, case, dtype):
    """Stage outputs equal the official backbone's to 1e-4.

    The reference was computed in fp32 and is itself about 4e-5 from the
    exact result at the last stage (values reach ~70): in float64 our model
    is within 1e-4 with margin. In float32 our own rounding adds as much
    again, so there the bound is 1e-4 plus 2e-6 relative (~16 ulp), still
    far below the O(1) errors of a mapping or grouping mistake.
    """
    model = parity_backbone(parity).to(dtype)
    with torch.no_grad():
        outs = model(parity['inputs'][case].to(dtype))
    expected = parity['features'][case]
    assert len(outs) == len(expected) == 4
    rtol = 0 if dtype == torch.float64 else 2e-6
    for out, ref in zip(outs, expected):
        assert out.shape == ref.shape
        torch.testing.assert_close(out.float(), ref, atol=1e-4, rtol=rtol)


def test_parity_with_official_logits(parity):
    model = parity_backbone(parity, final_norm=True, out_indices=(3, ))
    head = nn.Linear(128, 10)
    sd = parity['checkpoint']['model']
    head.load_state_dict({'weight': sd['head.weight'],
                          'bias': sd['head.bias']})
    with torch.no_grad():
        feat = model(parity['logits_input'])[0]
        logits = head(feat.mean(dim=(2, 3)))
    torch.testing.assert_close(logits, parity['logits'], atol=1e-4, rtol=0)


def test_output_independent_of_previous_calls(parity):
    """The official code mutates group_size/lsda_flag on small inputs."""
    model = parity_backbone(parity)
    with torch.no_grad():
        model(parity['inputs']['96x160'])
        after_small = model(parity['inputs']['256x416'])
    with torch.no_grad():
        fresh = parity_backbone(parity)(parity['inputs']['256x416'])
    for out, ref in zip(after_small, fresh):
        torch.testing.assert_close(out, ref, atol=0, rtol=0)
    assert [b.group_size for s in model.stages for b in s.blocks] == [7] * 8


@pytest.mark.parametrize('size', [(250, 333), (33, 65), (7, 5), (64, 1)])
def test_any_input_size(size):
    model = CrossFormer(arch=TINY).eval()
    h, w = size
    with torch.no_grad():
        outs = model(torch.rand(1, 3, h, w))
    for i, out in enumerate(outs):
        stride = 2**(i + 2)
        assert out.shape == (1, 16 * 2**i, math.ceil(h / stride),
                             math.ceil(w / stride))
        assert torch.isfinite(out).all()


def test_grouping_round_trip_and_padding_mask():
    from mmcrossformer.models.grouping import (group_embeddings, group_layout,
                                               key_padding_mask,
                                               ungroup_embeddings)
    x = torch.rand(2, 10, 13, 4)
    for long_distance in (False, True):
        layout = group_layout((10, 13), 4, 3, long_distance)
        groups = group_embeddings(x, layout)
        assert groups.shape == (2 * layout.num_groups,
                                layout.group_h * layout.group_w, 4)
        torch.testing.assert_close(ungroup_embeddings(groups, layout), x)
        mask = key_padding_mask(layout, x.device)
        # Exactly the padded positions are masked.
        padded = (layout.height + layout.pad_h) * (layout.width + layout.pad_w)
        assert int(mask.sum()) == padded - 10 * 13


def test_gradients_reach_every_parameter_but_the_softmax_invariant_bias():
    """The training tests exempt exactly the DPB's last bias from "the step
    moved it"; here is why: softmax cancels a per-head constant, so its exact
    gradient is 0, while every other parameter gets a real one. (With
    embed_dims 64 every DPB is at least 4 wide: at width 1 its LayerNorms
    map every offset to one value, at width 2 to +-1, as in the official
    model, and pass next to no gradient.)"""
    model = CrossFormer(arch=dict(TINY, embed_dims=64),
                        drop_path_rate=0.).double()
    model.init_weights()
    model.train()
    x = torch.rand(2, 3, 72, 88, dtype=torch.float64)
    sum(o.square().mean() for o in model(x)).backward()
    invariant = [n for n, _ in model.named_parameters()
                 if n.endswith(SOFTMAX_INVARIANT)]
    assert len(invariant) == sum(TINY['depths'])
    for name, p in model.named_parameters():
        scale = p.grad.abs().max().item()
        if name in invariant:
            weight = name[:-len('bias')] + 'weight'
            weight_scale = model.get_parameter(weight).grad.abs().max()
            assert scale < 1e-9 * weight_scale, name
        else:
            assert scale > 0, f'{name} gets no gradient'


def test_with_cp_same_gradients_and_runs():
    x = torch.rand(2, 3, 64, 96)
    model = CrossFormer(arch=TINY, drop_path_rate=0.)
    model_cp = copy.deepcopy(model)
    for block in (b for s in model_cp.stages for b in s.blocks):
        block.with_cp = True
    grads = []
    for m in (model, model_cp):
        m.train()
        sum(o.square().mean() for o in m(x)).backward()
        grads.append({n: p.grad for n, p in m.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-5,
                                   rtol=1e-4, msg=name)
    built = CrossFormer(arch=TINY, with_cp=True)
    assert all(b.with_cp for s in built.stages for b in s.blocks)


def _peak_training_memory(model, x):
    """Bytes held for backward: the sum of the saved tensors of autograd."""
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outs = model(x)
    sum(o.sum() for o in outs).backward()
    return sum(saved)


def test_with_cp_saves_memory():
    x = torch.rand(1, 3, 128, 128)
    model = CrossFormer(arch=TINY).train()
    plain = _peak_training_memory(model, x)
    for block in (b for s in model.stages for b in s.blocks):
        block.with_cp = True
    checkpointed = _peak_training_memory(model, x)
    assert checkpointed < 0.5 * plain, (checkpointed, plain)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_mixed_precision_finite_and_close(parity, dtype):
    model = parity_backbone(parity)
    x = parity['inputs']['256x416']  # exercises padding masks
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=dtype):
            low = model(x)
    for out, r in zip(low, ref):
        assert out.dtype in (dtype, torch.float32)
        assert torch.isfinite(out).all()
        rel = (out.float() - r).norm() / r.norm()
        assert rel < 0.02, f'relative error {rel:.4f} under {dtype}'


def test_half_precision_weights_with_fully_padded_groups():
    """Interval larger than the map: whole long-distance groups are padding.
    The official -1e6 mask is -inf in fp16 and gives NaN there."""
    model = CrossFormer(arch=TINY, interval=(16, 4, 2, 1)).eval()
    x = torch.rand(1, 3, 40, 44)  # stage 1: 10x11 map, interval 16
    with torch.no_grad():
        ref = model(x)
        half = model.to(torch.float16)(x.half()) if _has_half_sdpa() else ref
    for h, r in zip(half, ref):
        assert torch.isfinite(h).all()
        torch.testing.assert_close(h.float(), r, atol=0.05, rtol=0.05)


def _has_half_sdpa():
    try:
        q = torch.rand(1, 1, 2, 2, dtype=torch.float16)
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
        return True
    except RuntimeError:
        return False


def test_frozen_stages():
    model = CrossFormer(arch=TINY, frozen_stages=1)
    model.train()
    frozen = [model.patch_embed, model.stages[0], model.stages[1]]
    for module in frozen:
        assert not module.training
        assert all(not p.requires_grad for p in module.parameters())
    for module in model.stages[2:]:
        assert module.training
        assert all(p.requires_grad for p in module.parameters())


def test_out_norms():
    """``out_norms`` adds ``norm{i}`` for the returned stages only; each
    returned token is normalised over channels; freezing covers them."""
    model = CrossFormer(arch=TINY, out_norms=True, out_indices=(0, 2),
                        frozen_stages=0)
    names = {n for n, _ in model.named_children() if n.startswith('norm')}
    assert names == {'norm0', 'norm2'}
    assert not any(n.startswith('norm') for n, _ in
                   CrossFormer(arch=TINY).named_children())
    model.train()
    assert not model.norm0.training and model.norm2.training
    assert not model.norm0.weight.requires_grad
    outs = model(torch.rand(2, 3, 70, 90))
    assert [tuple(o.shape) for o in outs] == [(2, 16, 18, 23), (2, 64, 5, 6)]
    for out in outs:
        mean, var = out.mean(1), out.var(1, unbiased=False)
        torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-5,
                                   rtol=0)
        torch.testing.assert_close(var, torch.ones_like(var), atol=1e-3,
                                   rtol=0)


def test_norm_eval():
    model = CrossFormer(arch=TINY, norm_eval=True)
    model.train()
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(not m.training for m in norms)
    assert model.stages[0].blocks[0].attn.qkv.training


@pytest.mark.parametrize('kwargs, match', [
    (dict(arch='huge'), r"unknown arch 'huge'.*'base'.*'large'"),
    (dict(arch=dict(embed_dims=16, depths=[1, 1])),
     r"missing \['num_heads'\]"),
    (dict(arch=dict(embed_dims=16, depths=[1, 1, 1], num_heads=[1, 2])),
     'depths .* and num_heads .* one entry per stage'),
    (dict(arch=dict(embed_dims=20, depths=[1] * 4, num_heads=[3] * 4)),
     r'not divisible by num_heads\[0\]'),
    (dict(arch=TINY, out_indices=(0, 4)), 'out_indices 4 is out of range'),
    (dict(arch=TINY, group_size=(7, 7)), 'group_size needs one value per'),
    (dict(arch=TINY, frozen_stages=4), 'frozen_stages'),
    (dict(arch=TINY, final_norm=True, out_norms=True),
     'final_norm and out_norms both'),
])
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CrossFormer(**kwargs)


def test_wrong_input_channels():
    model = CrossFormer(arch=TINY)
    with pytest.raises(ValueError, match=r'in_channels=3.*\(1, 1, 64, 64\)'):
        model(torch.rand(1, 1, 64, 64))


@pytest.mark.parametrize('registry', [
    'mmengine.registry', 'mmdet.registry', 'mmseg.registry',
    'mmpretrain.registry'
])
def test_registries_build(registry):
    import importlib
    models = importlib.import_module(registry).MODELS
    model = models.build(dict(type='CrossFormer', arch=TINY))
    assert isinstance(model, CrossFormer)


def test_presets():
    for arch, dims in [('tiny', 64), ('small', 96), ('base', 96),
                       ('large', 128)]:
        model = CrossFormer(arch=arch)
        assert model.channels == [dims * 2**i for i in range(4)]
    assert CrossFormer(arch='s').depths == [2, 2, 6, 2]


def test_inference_cache_follows_weight_changes():
    """The DPB output cached for inference is recomputed when weights change
    in place, are loaded, or are cast: outputs equal an uncached run."""
    from mmcrossformer.models import DynamicPositionBias
    model = CrossFormer(arch=TINY).eval()
    x = torch.rand(1, 3, 64, 96)

    def uncached():
        for m in model.modules():
            if isinstance(m, DynamicPositionBias):
                m._outputs.clear()
        return model(x.to(model.patch_embed.norm.weight.dtype))

    with torch.no_grad():
        before = model(x)
        for p in model.parameters():
            p.mul_(1.1)
        scaled, expected = model(x), uncached()
        for a, b, c in zip(before, scaled, expected):
            assert not torch.allclose(a, b)
            torch.testing.assert_close(b, c, atol=0, rtol=0)
        model.load_state_dict(CrossFormer(arch=TINY).state_dict())
        loaded, expected = model(x), uncached()
        for a, b in zip(loaded, expected):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
        model.double()
        cast, expected = model(x.double()), uncached()
        for a, b in zip(cast, expected):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
