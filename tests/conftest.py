"""Fixtures shared by the tests; shared constants and functions are in
``tests/helpers`` (imported as ``helpers.<module>``)."""
import pytest
import torch
from helpers.paths import reference_path


@pytest.fixture(scope='session')
def parity():
    return torch.load(reference_path('crossformer_parity.pt'),
                      weights_only=True)


@pytest.fixture(scope='session')
def parity_pp():
    """The CrossFormer++ reference (``CROSSFORMERPP.md``, last section)."""
    return torch.load(reference_path('crossformerpp_parity.pt'),
                      weights_only=True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope='module')
def one_thread():
    """One intra-op thread for a module's tests (``pytestmark =
    pytest.mark.usefixtures('one_thread')``): their tiny models and the
    heads' many small ops gain little from a second thread, and OpenMP slows
    down several-fold when cores are oversubscribed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def torch_threads():
    """``torch_threads(n)`` sets the intra-op thread count for one test;
    the count from before is restored afterwards."""
    threads = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def mask_rcnn_runs(tmp_path_factory):
    """The tiny Mask R-CNN runs of :mod:`helpers.mask_rcnn_runs` (trained,
    tested, killed and resumed once per session; test_det_e2e.py and
    test_resume.py read them)."""
    from helpers.mask_rcnn_runs import make_runs
    return make_runs(tmp_path_factory.mktemp('mask_rcnn_runs'))


@pytest.fixture
def compiled_kernel(monkeypatch):
    """The compiled CPU attention kernel (``mmcrossformer/csrc``), turned on;
    it must build on a test machine."""
    from mmcrossformer.models import native_kernel
    monkeypatch.setenv(native_kernel.ENV_SWITCH, '1')
    kernel = native_kernel.cpu_kernel()
    assert kernel is not None, (
        'the compiled CPU attention kernel did not build: see the warning '
        'above')
    return kernel


@pytest.fixture(params=['compiled', 'pytorch'])
def attention_path(request, monkeypatch):
    """Runs a test on each CPU attention path: the compiled kernel
    (:func:`compiled_kernel`) and the pure-PyTorch tiled path that replaces
    it where it cannot be built."""
    from mmcrossformer.models import native_kernel
    if request.param == 'compiled':
        request.getfixturevalue('compiled_kernel')
    else:
        monkeypatch.setenv(native_kernel.ENV_SWITCH, '0')
    return request.param
