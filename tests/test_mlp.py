"""The block MLP's fused GELU + Linear (``CrossFormerFFN``) against mmcv's
``FFN``: same outputs and gradients, whether the rows go through in one
chunk or several."""
import pytest
import torch
from mmcv.cnn.bricks.transformer import FFN

from mmcrossformer.models import mlp
from mmcrossformer.models.mlp import CrossFormerFFN


@pytest.mark.parametrize('chunk_elements', [1 << 20, 3 * 16, 16])
@pytest.mark.parametrize('bias', [True, False])
def test_gelu_linear_gradcheck(chunk_elements, bias, monkeypatch):
    """The chunked forward and backward are the exact function and
    derivative (float64) for the hidden tensor, the weight and the bias:
    one chunk (2**20), chunks of 3 rows of 16 hidden channels, so the 10
    rows end in a partial chunk, and chunks of one row."""
    monkeypatch.setattr(mlp, 'CHUNK_ELEMENTS', chunk_elements)
    hidden = torch.randn(2, 5, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 16, dtype=torch.float64, requires_grad=True)
    args = (hidden, weight)
    if bias:
        args += (torch.randn(4, dtype=torch.float64, requires_grad=True), )
    assert torch.autograd.gradcheck(
        lambda *a: mlp._GeluLinear.apply(*a, *((None, ) * (3 - len(a)))),
        args)


@pytest.mark.parametrize('chunk_elements', [1 << 20, 7 * 32])
def test_ffn_equals_mmcv_ffn(chunk_elements, monkeypatch):
    """Output and gradients (input and every parameter) of a training step
    equal mmcv's FFN with the same weights; the weight gradient is summed
    chunk by chunk, hence the float32 tolerance."""
    monkeypatch.setattr(mlp, 'CHUNK_ELEMENTS', chunk_elements)
    kwargs = dict(embed_dims=8, feedforward_channels=32, num_fcs=2,
                  act_cfg=dict(type='GELU'), add_identity=True)
    ours, theirs = CrossFormerFFN(**kwargs), FFN(**kwargs)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 45, 8)
    grad_out = torch.randn(2, 45, 8)
    results = []
    for module in (ours, theirs):
        inp = x.clone().requires_grad_()
        out = module(inp)
        out.backward(grad_out)
        results.append([out, inp.grad] +
                       [p.grad for p in module.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_frozen_weights_get_no_gradient():
    """With the second Linear frozen, only the input gets a gradient."""
    ffn = CrossFormerFFN(embed_dims=8, feedforward_channels=32)
    fc2 = ffn.layers[1]
    fc2.requires_grad_(False)
    x = torch.randn(3, 8, requires_grad=True)
    ffn(x).sum().backward()
    assert x.grad is not None and fc2.weight.grad is None
