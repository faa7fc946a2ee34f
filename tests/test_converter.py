"""Checkpoint converter: official ImageNet layouts into the backbone and
mmpretrain, the parity checkpoint's logits and features, and bad inputs."""
import json
import os
import os.path as osp
import subprocess
import sys
from typing import NamedTuple
from unittest.mock import patch

import pytest
import torch
import torch.nn.functional as F
from helpers.archs import PARITY_ARCH
from helpers.building import uninitialised_weights
from helpers.mim import run_mim
from helpers.paths import REPO, reference_path
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmcrossformer  # noqa: F401
from mmcrossformer.cli.crossformer2mm import convert_file, main
from mmcrossformer.models import CrossFormer
from mmcrossformer.models.checkpoint import (CheckpointError,
                                             backbone_state_dict,
                                             convert_state_dict,
                                             unwrap_state_dict)

CONVERTER = osp.join(REPO, 'tools', 'model_converters', 'crossformer2mm.py')
CONSOLE_COMMAND = osp.join(osp.dirname(sys.executable), 'crossformer2mm')
VARIANTS = ['tiny', 'small', 'base', 'large']


def imagenet_layout(variant):
    with open(reference_path('crossformer_imagenet_keys.json')) as f:
        shapes = json.load(f)[variant]
    return {k: torch.zeros(s, dtype=torch.long if k.endswith('index')
                           else torch.float32) for k, s in shapes.items()}


def build_classifier(config, **head):
    """The classifier of ``configs/<config>`` (in mmpretrain's scope, whatever
    scope an earlier test left current), ``head`` merged into its head."""
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(osp.join(REPO, 'configs', config))
    cfg.model.head.update(head)
    cfg.model.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(cfg.model)


@pytest.mark.parametrize('variant', VARIANTS)
def test_real_layouts_convert_and_load_strictly(tmp_path, variant):
    src, dst = tmp_path / f'{variant}.pth', tmp_path / f'{variant}_mm.pth'
    official = imagenet_layout(variant)
    torch.save({'model': official}, src)
    info = convert_file(str(src), str(dst))
    assert info['layout'] == 'imagenet' and info['variant'] == variant
    num_blocks = sum(CrossFormer.arch_zoo[variant]['depths'])
    assert info['dropped'] == 2 * num_blocks
    assert info['num_tensors'] == len(official) - 2 * num_blocks

    ckpt = torch.load(dst, weights_only=True)
    assert ckpt['meta']['arch']['variant'] == variant
    assert ckpt['meta']['source']['file'] == src.name
    assert len(ckpt['meta']['source']['sha256']) == 64
    # Every tensor is the official one, renamed.
    assert sorted(t.shape for t in ckpt['state_dict'].values()) == sorted(
        t.shape for k, t in official.items()
        if not k.endswith(('biases', 'relative_position_index')))

    # (strict loading replaces every value: no need to draw initial ones)
    with uninitialised_weights():
        backbone = CrossFormer(arch=variant, final_norm=True)
        classifier = build_classifier(f'crossformer_{variant[0]}_in1k.py')
    state_dict, _ = backbone_state_dict(ckpt)
    backbone.load_state_dict(state_dict, strict=True)
    classifier.load_state_dict(ckpt['state_dict'], strict=True)


def test_parity_logits_in_mmpretrain(tmp_path, parity):
    src, dst = tmp_path / 'parity.pth', tmp_path / 'parity_mm.pth'
    torch.save(parity['checkpoint'], src)
    convert_file(str(src), str(dst))
    classifier = build_classifier(
        'crossformer_s_in1k.py', num_classes=10, in_channels=128)
    cfg_arch = classifier.backbone
    assert cfg_arch.final_norm and cfg_arch.out_indices == (3, )
    classifier.backbone = CrossFormer(
        arch=PARITY_ARCH, final_norm=True, out_indices=(3, ))
    classifier.load_state_dict(
        torch.load(dst, weights_only=True)['state_dict'], strict=True)
    classifier.eval()
    with torch.no_grad():
        logits = classifier(parity['logits_input'], mode='tensor')
    torch.testing.assert_close(logits, parity['logits'], atol=1e-4, rtol=0)


@pytest.mark.parametrize('converted', [True, False])
def test_parity_features_through_pretrained_init(tmp_path, parity,
                                                 converted):
    """``init_cfg=dict(type='Pretrained', prefix='backbone.')`` loads the
    converter's output, and also the official file as released."""
    src = tmp_path / 'official.pth'
    torch.save(parity['checkpoint'], src)
    checkpoint = src
    if converted:
        checkpoint = tmp_path / 'mm.pth'
        convert_file(str(src), str(checkpoint))
    model = CrossFormer(
        arch=PARITY_ARCH,
        init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint),
                      prefix='backbone.'))
    model.init_weights()
    model.eval()
    with torch.no_grad():
        outs = model(parity['inputs']['256x416'])
    for out, ref in zip(outs, parity['features']['256x416']):
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=2e-6)


def test_out_norms_start_fresh_on_official_weights(tmp_path, parity):
    """With ``out_norms`` an official checkpoint loads everything but
    ``norm{i}``, which it lacks: the outputs are the official features,
    LayerNorm-ed over channels, and loading says which norms are fresh."""
    from mmengine.logging import MMLogger
    src = tmp_path / 'official.pth'
    torch.save(parity['checkpoint'], src)
    model = CrossFormer(
        arch=PARITY_ARCH, out_norms=True, out_indices=(1, 3),
        init_cfg=dict(type='Pretrained', checkpoint=str(src),
                      prefix='backbone.'))
    logger = MMLogger.get_instance('test_out_norms', log_file=str(
        tmp_path / 'log.txt'), log_level='INFO')
    with patch.object(MMLogger, 'get_current_instance', return_value=logger):
        model.init_weights()
    log = (tmp_path / 'log.txt').read_text()
    assert 'norm1, norm3 (out_norms) are not in the checkpoint' in log
    model.eval()
    with torch.no_grad():
        outs = model(parity['inputs']['96x160'])
    refs = [parity['features']['96x160'][i] for i in (1, 3)]
    for out, ref in zip(outs, refs):
        expected = F.layer_norm(ref.permute(0, 2, 3, 1), ref.shape[1:2])
        torch.testing.assert_close(out, expected.permute(0, 3, 1, 2),
                                   atol=1e-4, rtol=1e-4)


def test_bare_state_dict_and_module_prefix():
    official = imagenet_layout('tiny')
    wrapped = {'module.' + k: v for k, v in official.items()}
    a, info_a = convert_state_dict(unwrap_state_dict(official))
    b, info_b = convert_state_dict(unwrap_state_dict({'state_dict': wrapped}))
    assert list(a) == list(b) and info_a['variant'] == info_b['variant']
    dpb = 'backbone.stages.2.blocks.7.attn.position_bias.'
    assert dpb + 'layers.2.2.weight' in a
    assert 'head.fc.weight' in a


def test_converted_checkpoint_converts_to_itself(tmp_path):
    src, dst, again = (tmp_path / n for n in ('a.pth', 'b.pth', 'c.pth'))
    torch.save({'model': imagenet_layout('tiny')}, src)
    convert_file(str(src), str(dst))
    info = convert_file(str(dst), str(again))
    assert info['layout'] == 'mm' and info['variant'] == 'tiny'
    first = torch.load(dst, weights_only=True)['state_dict']
    second = torch.load(again, weights_only=True)['state_dict']
    assert list(first) == list(second)


# ------------------------------------------------------------ bad input
class CliResult(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def run_cli(capsys, *args) -> CliResult:
    """``crossformer2mm ARGS`` in this process: the command line's
    :func:`~mmcrossformer.cli.crossformer2mm.main`, which the script and the
    console command run (an uncaught exception fails the test; two tests
    below run the real commands)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return CliResult(code, out, err)


def run_command(command, *args) -> CliResult:
    result = subprocess.run([*command, *map(str, args)], capture_output=True,
                            text=True, cwd=REPO)
    return CliResult(result.returncode, result.stdout, result.stderr)


def assert_refused(result, message, folder):
    assert result.returncode != 0
    assert 'Traceback' not in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
    assert not [f for f in os.listdir(folder) if f.startswith(('out', '.'))]


def test_cli_converts_and_reports(tmp_path):
    """The script (``python tools/model_converters/crossformer2mm.py``)."""
    src, dst = tmp_path / 'crossformer-t.pth', tmp_path / 'out' / 'mm.pth'
    torch.save({'model': imagenet_layout('tiny')}, src)
    result = run_command([sys.executable, CONVERTER], src, dst)
    assert result.returncode == 0, result.stderr
    assert 'official ImageNet classifier, variant tiny' in result.stdout
    assert 'wrote' in result.stdout and dst.exists()


def test_console_command_refuses_without_a_traceback(tmp_path):
    """The installed ``crossformer2mm`` command: exit code 2 and the
    one-line error, in a process of its own."""
    src = tmp_path / 'notes.pth'
    src.write_text('these are not weights\n')
    result = run_command([CONSOLE_COMMAND], src, tmp_path / 'out.pth')
    assert result.returncode == 2
    assert_refused(result, 'is not a PyTorch checkpoint', tmp_path)
    assert result.stderr.startswith('crossformer2mm: error: ')


def test_cli_missing_file(tmp_path, capsys):
    assert_refused(run_cli(capsys, tmp_path / 'nope.pth',
                           tmp_path / 'out.pth'),
                   'no such file', tmp_path)


def test_cli_truncated_file(tmp_path, capsys):
    full = tmp_path / 'full.pth'
    torch.save({'model': imagenet_layout('tiny')}, full)
    data = full.read_bytes()
    src = tmp_path / 'truncated.pth'
    src.write_bytes(data[:len(data) // 2])
    assert_refused(run_cli(capsys, src, tmp_path / 'out.pth'),
                   'truncated or corrupt', tmp_path)


def test_cli_other_model(tmp_path, capsys):
    src = tmp_path / 'resnet.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(64, 3, 7, 7),
                               'fc.weight': torch.zeros(10, 64)}}, src)
    result = run_cli(capsys, src, tmp_path / 'out.pth')
    assert_refused(result, 'not a CrossFormer checkpoint', tmp_path)
    assert "'conv1.weight'" in result.stderr
    assert 'patch_embed.projs.0.weight' in result.stderr


def test_cli_existing_destination(tmp_path, capsys):
    src, dst = tmp_path / 'src.pth', tmp_path / 'out.pth'
    torch.save({'model': imagenet_layout('tiny')}, src)
    dst.write_bytes(b'precious')
    result = run_cli(capsys, src, dst)
    assert result.returncode != 0 and 'Traceback' not in result.stderr
    assert '--overwrite' in result.stderr
    assert dst.read_bytes() == b'precious'
    assert run_cli(capsys, src, dst, '--overwrite').returncode == 0
    assert torch.load(dst, weights_only=True)['meta']['arch'][
        'variant'] == 'tiny'


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    src, dst = tmp_path / 'src.pth', tmp_path / 'out.pth'
    torch.save({'model': imagenet_layout('tiny')}, src)
    dst.write_bytes(b'precious')

    def broken_save(obj, f):
        f.write(b'half a file')
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, 'save', broken_save)
    with pytest.raises(KeyboardInterrupt):
        convert_file(str(src), str(dst), overwrite=True)
    assert dst.read_bytes() == b'precious'
    assert sorted(os.listdir(tmp_path)) == ['out.pth', 'src.pth']


def test_unknown_key_is_refused():
    official = imagenet_layout('tiny')
    official['layers.0.blocks.0.attn.extra.weight'] = torch.zeros(1)
    with pytest.raises(CheckpointError, match='attn.extra.weight'):
        convert_state_dict(official)


def test_cli_pickled_objects_need_allow_pickle(tmp_path, capsys):
    import argparse
    src = tmp_path / 'with_config.pth'
    torch.save({'model': imagenet_layout('tiny'),
                'config': argparse.Namespace(lr=1e-3)}, src)
    assert_refused(run_cli(capsys, src, tmp_path / 'out.pth'),
                   '--allow-pickle', tmp_path)
    result = run_cli(capsys, src, tmp_path / 'out.pth', '--allow-pickle')
    assert result.returncode == 0, result.stderr


def test_mim_test_mmpretrain_reports_top1(tmp_path, parity):
    """`mim test mmpretrain configs/crossformer_s_in1k.py --checkpoint ...`
    on a converted checkpoint, with the official evaluation pipeline, on a
    tiny folder dataset (the parity model has 10 classes)."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for cls in range(10):
        os.makedirs(tmp_path / 'val' / f'class{cls}')
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (300, 260, 3), np.uint8)) \
                .save(tmp_path / 'val' / f'class{cls}' / f'{i}.jpg')
    src, dst = tmp_path / 'parity.pth', tmp_path / 'parity_mm.pth'
    torch.save(parity['checkpoint'], src)
    convert_file(str(src), str(dst))
    config = tmp_path / 'cls_parity.py'
    config.write_text(f"""
_base_ = '{REPO}/configs/crossformer_s_in1k.py'
model = dict(
    backbone=dict(arch=dict(_delete_=True, **{PARITY_ARCH!r})),
    head=dict(num_classes=10, in_channels=128))
data_preprocessor = dict(num_classes=10)
test_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root='{tmp_path}',
                 data_prefix='val', pipeline={{{{_base_.test_pipeline}}}}))
test_evaluator = dict(type='Accuracy', topk=(1, ))
""")
    log = run_mim('test', 'mmpretrain', config, '--checkpoint', dst,
                  '--work-dir', tmp_path / 'work', cwd=REPO)
    assert 'accuracy/top1:' in log
