"""The compiled CPU attention kernel (``mmcrossformer/csrc``): exact
derivatives, the pure-PyTorch path's results, its own errors, and the
fallback when it cannot be built."""
import warnings

import pytest
import torch

from mmcrossformer.models import attention_kernel, native_kernel
from mmcrossformer.models.attention_kernel import biased_attention
from mmcrossformer.models.position_bias import RelativeBias


def _inputs(images, groups, heads, head_dims, group_h, group_w,
            padded=False, dtype=torch.float32):
    length = group_h * group_w
    qkv = torch.randn(images * groups, length, 3 * heads * head_dims,
                      dtype=dtype)
    table = torch.randn(heads, 2 * group_h - 1, 2 * group_w - 1, dtype=dtype)
    padding = None
    if padded:  # a few padded keys in every group but the first
        padding = torch.zeros(groups, length, dtype=dtype)
        padding[1:, -3:] = -1e4
        if groups > 2:
            padding[2, 1] = -1e4
    return qkv, table, padding


def _run(qkv, table, group_h, group_w, padding, scale, grad_out=None):
    """Output and gradients of qkv and the table; the output's grad_fn."""
    qkv = qkv.detach().clone().requires_grad_()
    table = table.detach().clone().requires_grad_()
    out = biased_attention(qkv, RelativeBias(table, group_h, group_w),
                           padding, scale, training=True)
    if grad_out is None:
        grad_out = torch.randn_like(out)
    out.backward(grad_out)
    return (out.detach(), qkv.grad, table.grad), type(out.grad_fn).__name__


@pytest.mark.parametrize('padded', [False, True])
@pytest.mark.parametrize('block_rows', [0, 4])
@pytest.mark.parametrize('threads', [1, 2])
def test_gradcheck(padded, block_rows, threads, compiled_kernel,
                   torch_threads, monkeypatch):
    """The compiled backward is the exact derivative (float64) for the
    packed qkv and the bias table, without and with padded keys, a tile in
    one block or in blocks of 4 query rows (2 + 4 + 4 of a 2x5 group: the
    keys' and values' gradients summed over the blocks), on one thread or
    on two (each thread's part of the table gradient summed)."""
    monkeypatch.setattr(attention_kernel, 'NATIVE_BLOCK_ROWS', block_rows)
    torch_threads(threads)
    qkv, table, padding = _inputs(2, 3, 2, 4, 2, 5, padded, torch.float64)
    out = biased_attention(qkv, RelativeBias(table.requires_grad_(), 2, 5),
                           padding, 0.5, training=True)
    assert type(out.grad_fn).__name__ == '_NativeBiasedAttentionBackward'
    assert torch.autograd.gradcheck(
        lambda qkv, table: biased_attention(
            qkv, RelativeBias(table, 2, 5), padding, 0.5, training=True),
        (qkv.requires_grad_(), table), atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize('shape', [
    # images, groups, heads, head_dims, Gh, Gw, padded
    (1, 1, 3, 32, 25, 38, False),  # one long-distance group of 950
    (2, 2, 4, 16, 9, 14, True),    # long-distance groups, padded, 2 images
    (2, 12, 3, 32, 7, 7, True),    # short-distance windows, padded
])
def test_equals_pytorch_path(shape, compiled_kernel, monkeypatch):
    """Float32 outputs and gradients of the compiled kernel are those of
    the pure-PyTorch tiled path (which ``test_attention_reference.py``
    checks against the official transcription), in training and in
    inference; padded keys (-1e4) get no weight at all."""
    *dims, padded = shape
    qkv, table, padding = _inputs(*dims, padded=padded)
    group_h, group_w = dims[-2:]
    scale = dims[3]**-0.5
    grad_out = torch.randn(qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3)
    got, grad_fn = _run(qkv, table, group_h, group_w, padding, scale,
                        grad_out)
    assert grad_fn == '_NativeBiasedAttentionBackward'
    with torch.no_grad():
        inferred = biased_attention(
            qkv, RelativeBias(table, group_h, group_w), padding, scale)
    monkeypatch.setenv(native_kernel.ENV_SWITCH, '0')
    expected, grad_fn = _run(qkv, table, group_h, group_w, padding, scale,
                             grad_out)
    assert grad_fn == '_BiasedAttentionBackward'
    for name, a, b in zip(('output', 'qkv gradient', 'table gradient'), got,
                          expected):
        error = (a - b).abs().max() / b.abs().max()
        assert error < 2e-6, f'{name}: relative error {error:.2e}'
    torch.testing.assert_close(inferred, got[0], atol=0, rtol=0)


def test_padded_keys_get_exactly_zero_weight(compiled_kernel):
    """A key padded with the model's -1e4 changes nothing, not even by
    rounding: its weight is exactly 0 (2^x below 2^-126 is 0), and its own
    gradients are exactly 0."""
    qkv, table, _ = _inputs(1, 1, 2, 8, 3, 4)
    padding = torch.zeros(1, 12)
    padding[0, 5] = -1e4
    (out, grad_qkv, _), _ = _run(qkv, table, 3, 4, padding, 0.3)
    changed = qkv.clone()
    changed[:, 5, 16:] = torch.randn(32)  # the padded key and value
    (out2, _, _), _ = _run(changed, table, 3, 4, padding, 0.3)
    torch.testing.assert_close(out, out2, atol=0, rtol=0)
    assert grad_qkv[:, 5, 16:].abs().max() == 0


def test_switch_turns_the_kernel_off(monkeypatch):
    """``MMCROSSFORMER_CPU_KERNEL=0`` selects the pure-PyTorch path."""
    monkeypatch.setenv(native_kernel.ENV_SWITCH, '0')
    assert native_kernel.cpu_kernel() is None
    qkv, table, _ = _inputs(1, 2, 2, 4, 2, 3)
    assert _run(qkv, table, 2, 3, None, 0.5)[1] == '_BiasedAttentionBackward'


def test_build_failure_warns_once_and_falls_back(monkeypatch):
    """Where the kernel cannot be built, one warning names the cause and the
    fix, and the attention runs its pure-PyTorch path."""

    def no_compiler():
        raise RuntimeError('g++: command not found')

    monkeypatch.setenv(native_kernel.ENV_SWITCH, '1')
    monkeypatch.setattr(native_kernel, '_loaded', {})
    monkeypatch.setattr(native_kernel, 'build', no_compiler)
    qkv, table, _ = _inputs(1, 2, 2, 4, 2, 3)
    with pytest.warns(UserWarning, match='g\\+\\+: command not found.*'
                      'pure-PyTorch path.*C\\+\\+ compiler'):
        assert not attention_kernel.native_kernel_for(qkv)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no second warning
        assert _run(qkv, table, 2, 3, None, 0.5)[1] == \
            '_BiasedAttentionBackward'


def test_other_dtypes_take_the_pytorch_path(compiled_kernel):
    """bfloat16 (CPU autocast) goes through the pure-PyTorch path; the
    kernel itself refuses it with an error that names the dtypes it
    takes."""
    qkv, table, _ = _inputs(1, 2, 2, 4, 2, 3, dtype=torch.bfloat16)
    assert not attention_kernel.native_kernel_for(qkv)
    with pytest.raises(RuntimeError, match='float32 or float64'):
        compiled_kernel.forward(qkv, table, torch.empty(0), 2, 2, 3, 0.5,
                                0)


def test_kernel_checks_shapes(compiled_kernel):
    """A qkv that does not fit the group shape is refused, not read out of
    bounds."""
    qkv, table, _ = _inputs(1, 2, 2, 4, 2, 3)
    with pytest.raises(RuntimeError, match='does not fit the group shape'):
        compiled_kernel.forward(qkv, table[:, :, :3], torch.empty(0), 2, 2,
                                2, 0.5, 0)
    with pytest.raises(RuntimeError, match='padding must be'):
        compiled_kernel.forward(qkv, table, torch.zeros(3, 6), 2, 2, 3, 0.5,
                                0)
