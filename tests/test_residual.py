"""``residual_add``: ``identity + DropPath(branch)`` in one pass, with the
same random draw as mmcv's DropPath."""
import pytest
import torch
import torch.nn as nn
from mmcv.cnn.bricks.drop import DropPath

from mmcrossformer.models.residual import residual_add


def _inputs(batch=16, dtype=torch.float32):
    identity = torch.randn(batch, 5, 7, 8, requires_grad=True)
    branch = torch.randn(batch, 5, 7, 8, dtype=dtype, requires_grad=True)
    return identity, branch


def _value_and_grads(fn, identity, branch, grad):
    identity, branch = (t.detach().clone().requires_grad_()
                        for t in (identity, branch))
    out = fn(identity, branch)
    out.backward(grad)
    return out, identity.grad, branch.grad


def test_equals_mmcv_drop_path_in_training():
    """Same seed, same dropped samples, same values and gradients as
    ``identity + DropPath(p)(branch)``; some samples are dropped (their
    output is the identity), the others scaled by 1 / keep."""
    drop = DropPath(0.5).train()
    identity, branch = _inputs(batch=32)
    grad = torch.randn_like(identity)
    torch.manual_seed(3)
    expected = _value_and_grads(lambda i, b: i + drop(b), identity, branch,
                                grad)
    torch.manual_seed(3)
    actual = _value_and_grads(lambda i, b: residual_add(i, b, drop),
                              identity, branch, grad)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e)
    out = actual[0].detach()
    dropped = (out == identity).flatten(1).all(1)
    kept = torch.isclose(out, identity + 2 * branch).flatten(1).all(1)
    assert dropped.any() and kept.any() and (dropped ^ kept).all()
    assert out.is_contiguous()


@pytest.mark.parametrize('module', [
    DropPath(0.5).eval(),
    DropPath(0.).train(),
    nn.Identity(),
    nn.Dropout(0.).train(),
])
def test_other_modules_and_eval_add_the_branch_as_is(module):
    identity, branch = _inputs()
    torch.testing.assert_close(
        residual_add(identity, branch, module), identity + module(branch),
        rtol=0, atol=0)


def test_mixed_precision_promotes_like_the_sum():
    """A bfloat16 branch (autocast) onto a float32 residual gives float32,
    as ``identity + branch`` does, with the same samples dropped; the kept
    ones are scaled in float32 (mmcv divides in bfloat16 first)."""
    drop = DropPath(0.3).train()
    identity, branch = _inputs(batch=32, dtype=torch.bfloat16)
    torch.manual_seed(0)
    expected = identity + drop(branch)
    torch.manual_seed(0)
    actual = residual_add(identity, branch, drop)
    assert actual.dtype == expected.dtype == torch.float32
    dropped = (actual == identity).flatten(1).all(1)
    assert dropped.any() and not dropped.all()
    torch.testing.assert_close(actual[dropped], expected[dropped])
    torch.testing.assert_close(actual[~dropped],
                               (identity + branch.float() / 0.7)[~dropped])
    torch.testing.assert_close(actual, expected, rtol=0.02, atol=0.02)
