import os
import os.path as osp

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
REFERENCE_DIR = os.environ.get(
    'MMCROSSFORMER_REFERENCE', osp.join(osp.dirname(REPO), 'shared',
                                        'reference'))
PARITY_ARCH = dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8])
# The bias of the DPB's last Linear adds one constant per head to every logit
# of a group, which softmax cancels: its gradient is rounding noise (~1e-10,
# exactly 0 on some CPUs), so an optimizer step may leave it where it is.
SOFTMAX_INVARIANT = 'position_bias.layers.2.2.bias'


def unchanged_parameters(module, before):
    """Names of ``module``'s parameters still equal to ``before[name]``,
    apart from the softmax-invariant DPB biases."""
    return [name for name, p in module.named_parameters()
            if not name.endswith(SOFTMAX_INVARIANT)
            and torch.equal(p.detach(), before[name])]


def reference_path(name):
    path = osp.join(REFERENCE_DIR, name)
    if not osp.exists(path):
        pytest.fail(f'reference data {path} is missing: the parity tests '
                    'need ../shared/reference beside the repository (or '
                    'MMCROSSFORMER_REFERENCE pointing at it)')
    return path


@pytest.fixture(scope='session')
def parity():
    return torch.load(reference_path('crossformer_parity.pt'),
                      weights_only=True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
