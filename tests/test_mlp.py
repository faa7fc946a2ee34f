"""The block MLP's fused Linear + GELU + Linear (``CrossFormerFFN``) against
mmcv's ``FFN``: same outputs and gradients, whether the rows go through in
one chunk or several."""
import pytest
import torch
from mmcv.cnn.bricks.transformer import FFN

from mmcrossformer.models import mlp
from mmcrossformer.models.mlp import CrossFormerFFN


@pytest.mark.parametrize('chunk_elements', [1 << 20, 3 * 16, 16])
@pytest.mark.parametrize('bias1', [True, False])
@pytest.mark.parametrize('bias2', [True, False])
def test_mlp_gradcheck(chunk_elements, bias1, bias2, monkeypatch):
    """The chunked forward and backward are the exact function and
    derivative (float64) for the input, both weights and both biases: one
    chunk (2**20), chunks of 3 rows of 16 hidden channels, so the 10 rows
    end in a partial chunk, and chunks of one row."""
    monkeypatch.setattr(mlp, 'CHUNK_ELEMENTS', chunk_elements)

    def param(*shape, present=True):
        return (torch.randn(*shape, dtype=torch.float64, requires_grad=True)
                if present else None)

    x = param(2, 5, 6)
    weight1, bias1 = param(16, 6), param(16, present=bias1)
    weight2, bias2 = param(4, 16), param(4, present=bias2)
    inputs = [t for t in (x, weight1, bias1, weight2, bias2) if t is not None]

    def function(*tensors):
        tensors = iter(tensors)
        return mlp._Mlp.apply(*(None if t is None else next(tensors)
                                for t in (x, weight1, bias1, weight2, bias2)))

    assert torch.autograd.gradcheck(function, inputs)


def _counting_mlp(monkeypatch):
    """Counts the calls of the fused function (so a test knows it ran)."""
    calls = []
    apply = mlp._Mlp.apply

    def counted(*args):
        calls.append(1)
        return apply(*args)

    monkeypatch.setattr(mlp._Mlp, 'apply', counted)
    return calls


@pytest.mark.parametrize('chunk_elements', [1 << 20, 7 * 32])
def test_ffn_equals_mmcv_ffn(chunk_elements, monkeypatch):
    """Output and gradients (input and every parameter) of a training step
    equal mmcv's FFN with the same weights, through the fused function; the
    weight gradients are summed chunk by chunk, hence the float32
    tolerance."""
    monkeypatch.setattr(mlp, 'CHUNK_ELEMENTS', chunk_elements)
    calls = _counting_mlp(monkeypatch)
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
    assert len(calls) == 1
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('frozen', ['fc2', 'both'])
def test_frozen_weights_get_no_gradient(frozen, monkeypatch):
    """Frozen Linears get no gradient; the input (and an unfrozen first
    Linear) still do."""
    calls = _counting_mlp(monkeypatch)
    ffn = CrossFormerFFN(embed_dims=8, feedforward_channels=32,
                         act_cfg=dict(type='GELU'))
    fc1, fc2 = ffn.layers[0][0], ffn.layers[1]
    fc2.requires_grad_(False)
    if frozen == 'both':
        fc1.requires_grad_(False)
    x = torch.randn(3, 8, requires_grad=True)
    ffn(x).sum().backward()
    assert calls and x.grad is not None and fc2.weight.grad is None
    assert (fc1.weight.grad is None) == (frozen == 'both')


def test_no_rows(monkeypatch):
    """An empty batch of tokens goes through both passes."""
    calls = _counting_mlp(monkeypatch)
    ffn = CrossFormerFFN(embed_dims=8, feedforward_channels=32,
                         act_cfg=dict(type='GELU'))
    x = torch.randn(0, 8, requires_grad=True)
    out = ffn(x)
    out.sum().backward()
    assert calls and out.shape == (0, 8) and x.grad.shape == (0, 8)
