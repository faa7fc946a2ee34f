"""The repository root and the reference data of the parity tests."""
import os
import os.path as osp

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
REFERENCE_DIR = os.environ.get(
    'MMCROSSFORMER_REFERENCE', osp.join(osp.dirname(REPO), 'shared',
                                        'reference'))


def reference_path(name: str) -> str:
    """``REFERENCE_DIR/name``; fails the test, naming the fix, if missing."""
    path = osp.join(REFERENCE_DIR, name)
    if not osp.exists(path):
        pytest.fail(f'reference data {path} is missing: the parity tests '
                    'need ../shared/reference beside the repository (or '
                    'MMCROSSFORMER_REFERENCE pointing at it)')
    return path
