"""``torch.compile``: the backbone compiles with ``fullgraph=True`` (so no
graph break) in eval and training mode, in both CrossFormer and CrossFormer++
modes, and gives the eager outputs and gradients.

The tests compile with the ``aot_eager`` backend: dynamo's capture and AOT
autograd's joint forward/backward graph, which is where graph breaks and
untraceable caches show, without inductor's C++ code generation (minutes on
2 cores).
"""
import pytest
import torch
from helpers.training import SOFTMAX_INVARIANT

import mmcrossformer  # noqa: F401  registers CrossFormer
from mmcrossformer.models import CrossFormer

# Wide enough that the DPB MLP (embed_dims // 16 wide) has a gradient that
# is not rounding noise (at width 1 or 2 its LayerNorms flatten it).
ARCH = dict(embed_dims=64, depths=[1, 2, 1, 1], num_heads=[2, 2, 4, 4])
MODES = dict(crossformer=dict(),
             crossformerpp=dict(acl=True, lda_mode='region'))


def relative_error(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize('mode', sorted(MODES))
def test_fullgraph_matches_eager(mode):
    """A padded, non-square input (100x140: padded SDA and LDA groups) in
    eval and in training mode."""
    torch._dynamo.reset()
    model = CrossFormer(arch=ARCH, **MODES[mode]).eval()
    compiled = torch.compile(model, fullgraph=True, backend='aot_eager')
    x = torch.randn(1, 3, 100, 140)
    with torch.no_grad():
        expected, outs = model(x), compiled(x)
    for out, ref in zip(outs, expected):
        assert out.shape == ref.shape
        assert relative_error(out, ref) < 1e-5

    model.train()
    sum(o.square().mean() for o in model(x)).backward()
    eager = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    sum(o.square().mean() for o in compiled(x)).backward()
    # 1e-4 relative per tensor, with a floor of 1e-6 of the whole gradient's
    # norm for the few tensors whose gradients are ~1e-7 (fp32 noise there).
    total = torch.cat([g.flatten() for g in eager.values()]).norm()
    for name, param in model.named_parameters():
        if name.endswith(SOFTMAX_INVARIANT):  # its gradient is noise
            continue
        error = (param.grad - eager[name]).norm()
        assert error <= 1e-4 * eager[name].norm() + 1e-6 * total, name
