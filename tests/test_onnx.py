"""ONNX export (``mmcrossformer.deployment``, ``tools/deployment/
pytorch2onnx.py``): the default (dynamo) exporter's graph run by ONNX
Runtime reproduces PyTorch in CrossFormer and CrossFormer++ modes, at a
size with padded groups and no SDA fallback (250x333) and at 512x768 scaled
by 1/4 (128x192: padded groups, and a last-stage map of 4x6, smaller than
the group size 7, so it falls back to SDA); the command line on a tiny
RetinaNet config (backbone + FPN); an existing output is refused and a
graph that does not reproduce PyTorch is not written; the size caches step
aside under ``torch.export``.

Each ``torch.onnx.export`` costs ~20-40 s on 2 cores, almost all of it
fixed (tracing, decomposition, translation), so the four parity cases are
one export: :class:`BothModesBothSizes` runs both backbones on the input
and on its top-left 128x192 crop. Its graph is the four backbones' graphs
side by side; each output is compared on its own.
"""
import os
import os.path as osp

import pytest
import torch
import torch.nn as nn
from helpers.archs import TINY_ARCH
from helpers.configs import tiny_detector_overrides, write_derived_config
from helpers.paths import REPO
from mmengine.config import Config

import mmcrossformer  # noqa: F401  registers CrossFormer
from mmcrossformer.cli import pytorch2onnx
from mmcrossformer.deployment import onnx as deploy_onnx
from mmcrossformer.models import CrossFormer, grouping, position_bias
from mmcrossformer.models.caching import capturing_graph, eager_lru_cache

ort = pytest.importorskip(
    'onnxruntime',
    reason='the deploy extra is not installed (pip install -r '
    'requirements/deploy.txt)')

pytestmark = pytest.mark.usefixtures('one_thread')

# Two blocks in stage 0 (SDA, then LDA with interval 8), one in stages 1-2,
# four in stage 3 (SDA, LDA with interval 1, SDA with a cooling layer in
# CrossFormer++ mode, LDA): every grouping kind, small and quick to export.
ARCH = dict(TINY_ARCH, depths=[2, 1, 1, 4])
MODES = dict(crossformer=dict(),
             crossformerpp=dict(acl=True, lda_mode='region'))
SIZES = dict(padded=(250, 333), small_maps=(128, 192))
# 1e-3 on outputs that reach tens, as relative figures.
TOLERANCE = 1e-4


class BothModesBothSizes(nn.Module):
    """Each mode's backbone on the input (250x333) and on its 128x192 crop:
    the 16 outputs in (mode, size, stage) order."""

    def __init__(self):
        super().__init__()
        self.backbones = nn.ModuleList(
            CrossFormer(arch=ARCH, **MODES[mode]) for mode in sorted(MODES))
        for backbone in self.backbones:
            backbone.init_weights()

    def forward(self, x):
        small = x[:, :, :SIZES['small_maps'][0], :SIZES['small_maps'][1]]
        return tuple(out for backbone in self.backbones
                     for inputs in (x, small) for out in backbone(inputs))


@pytest.fixture(scope='module')
def parity(tmp_path_factory):
    """The exported probe's differences from PyTorch, keyed by (mode, size
    name): one per stage."""
    probe = BothModesBothSizes().eval()
    path = str(tmp_path_factory.mktemp('onnx') / 'probe.onnx')
    inputs = deploy_onnx.random_input(probe, SIZES['padded'])
    deploy_onnx.export_onnx(probe, inputs, path)
    diffs = deploy_onnx.compare_with_onnxruntime(path, probe, inputs)
    cases = [(mode, size) for mode in sorted(MODES)
             for size in ('padded', 'small_maps')]
    assert len(diffs) == 4 * len(cases)
    return {case: diffs[4 * i:4 * i + 4] for i, case in enumerate(cases)}


@pytest.mark.parametrize('size', sorted(SIZES))
@pytest.mark.parametrize('mode', sorted(MODES))
def test_onnxruntime_reproduces_pytorch(parity, mode, size):
    height, width = SIZES[size]
    diffs = parity[mode, size]
    for stage, diff in enumerate(diffs):
        expected = (1, ARCH['embed_dims'] * 2**stage,
                    -(-height // 2**(stage + 2)), -(-width // 2**(stage + 2)))
        assert diff.shape == expected
        print(diff)
        assert diff.max_abs_diff <= TOLERANCE * max(diff.max_abs_ref, 1.), \
            diff


def test_groupings_of_the_sizes():
    """The two sizes cover what they are meant to: padded groups in both,
    a last stage below the group size (the SDA fallback) only at
    128x192."""
    backbone = CrossFormer(arch=ARCH)
    for size, fallback in (('padded', False), ('small_maps', True)):
        height, width = SIZES[size]
        maps = [(-(-height // 2**(i + 2)), -(-width // 2**(i + 2)))
                for i in range(4)]
        layouts = [
            grouping.group_layout(hw, backbone.group_size[i],
                                  backbone.interval[i], True)
            for i, hw in enumerate(maps)
        ]
        assert any(layout.pad_h or layout.pad_w for layout in layouts)
        assert (not layouts[3].long_distance) == fallback


def test_caches_step_aside_under_export():
    """``torch.export`` (which the default ONNX exporter runs) reports
    ``is_compiling()`` and ``is_exporting()``; a cached function then runs
    uncached, and in eager mode it caches."""
    calls, seen = [], []

    @eager_lru_cache(maxsize=4)
    def table(n):
        calls.append(n)
        seen.append((capturing_graph(), torch.compiler.is_compiling(),
                     torch.compiler.is_exporting()))
        return torch.arange(n)

    class Module(nn.Module):

        def forward(self, x):
            return x + table(3)

    x = torch.zeros(3)
    table(3), table(3)
    assert table.cache_info().hits == 1 and table.cache_info().misses == 1
    torch.export.export(Module(), (x, ), strict=False)
    assert seen[-1] == (True, True, True)
    assert len(calls) == 2  # ran once more, under export
    assert table.cache_info().hits == 1 and table.cache_info().misses == 1
    # The model's caches are these.
    for cached in (grouping.key_padding_mask, position_bias.relative_tables):
        assert callable(cached.cache_info) and callable(cached.cache_clear)


def tiny_retinanet(tmp_path):
    base = osp.join(REPO, 'configs', 'retinanet_crossformer_s_fpn_1x_coco.py')
    model = Config.fromfile(base).model
    return write_derived_config(
        str(tmp_path / 'tiny_retinanet.py'), base,
        dict(model=tiny_detector_overrides(model, num_classes=2)))


def test_command_line_exports_backbone_and_neck(tmp_path, capsys):
    config = tiny_retinanet(tmp_path)
    out = tmp_path / 'tiny.onnx'
    # 96x128: padded groups; the last two stages' maps (6x8, 3x4) are at
    # most the group size.
    assert pytorch2onnx.main(
        [config, '--shape', '96', '128', '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'backbone + neck' in printed and f'wrote {out}' in printed
    # The FPN's five levels, from stride 8 (it starts at stage 1).
    lines = [line for line in printed.splitlines() if 'max abs diff' in line]
    assert len(lines) == 5
    assert lines[0].strip().startswith('out0 (1, 256, 12, 16)')
    session = ort.InferenceSession(str(out),
                                   providers=['CPUExecutionProvider'])
    (inputs, ) = session.get_inputs()
    assert inputs.shape == [1, 3, 96, 128]
    assert [o.shape for o in session.get_outputs()] == [
        [1, 256, 12, 16], [1, 256, 6, 8], [1, 256, 3, 4], [1, 256, 2, 2],
        [1, 256, 1, 1]
    ]
    assert [p for p in os.listdir(tmp_path) if p.endswith('.tmp')] == []


def test_existing_output_is_refused_before_any_work(tmp_path, capsys,
                                                    monkeypatch):
    out = tmp_path / 'model.onnx'
    out.write_bytes(b'keep me')

    def fail(*args, **kwargs):
        raise AssertionError('the model was built despite the refusal')

    monkeypatch.setattr(pytorch2onnx, 'build_feature_extractor', fail)
    code = pytorch2onnx.main([
        osp.join(REPO, 'configs', 'retinanet_crossformer_s_fpn_1x_coco.py'),
        '--shape', '64', '64', '--out', str(out)
    ])
    assert code == 2
    assert f'{out} exists; pass --overwrite' in capsys.readouterr().err
    assert out.read_bytes() == b'keep me'


def test_graph_off_pytorch_is_not_written(tmp_path, monkeypatch):
    """A graph whose outputs are off is refused and leaves nothing behind
    (the export itself is replaced: what is checked is the file handling
    around it)."""
    module = CrossFormer(arch=TINY_ARCH, out_indices=(0, )).eval()

    def fake_export(module, inputs, path, opset_version=None):
        with open(path, 'wb') as f:
            f.write(b'half a graph')

    def fake_compare(path, module, inputs):
        return [deploy_onnx.OutputDifference('out0', (1, 32, 8, 8), 0.5, 2.)]

    monkeypatch.setattr(deploy_onnx, 'export_onnx', fake_export)
    monkeypatch.setattr(deploy_onnx, 'compare_with_onnxruntime', fake_compare)
    out = tmp_path / 'model.onnx'
    with pytest.raises(deploy_onnx.DeploymentError,
                       match='does not reproduce PyTorch.*not written'):
        deploy_onnx.export_checked(module, (32, 32), str(out))
    assert os.listdir(tmp_path) == []


def test_missing_package_names_the_extra(monkeypatch):
    real = deploy_onnx.importlib.util.find_spec
    monkeypatch.setattr(
        deploy_onnx.importlib.util, 'find_spec',
        lambda name, *a: None if name == 'onnxruntime' else real(name, *a))
    with pytest.raises(deploy_onnx.DeploymentError,
                       match=r'onnxruntime not installed.*mmcrossformer\['
                       r'deploy\]'):
        deploy_onnx.require_packages('onnx', 'onnxruntime')


def test_checkpoint_without_the_backbone_is_refused(tmp_path):
    config = tiny_retinanet(tmp_path)
    ckpt = tmp_path / 'heads_only.pth'
    torch.save({'state_dict': {'bbox_head.x': torch.zeros(1)}}, ckpt)
    with pytest.raises(deploy_onnx.DeploymentError,
                       match='lacks .* backbone and neck tensors'):
        deploy_onnx.build_feature_extractor(config, str(ckpt))
