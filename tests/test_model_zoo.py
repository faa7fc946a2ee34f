"""The model zoo: ``model-index.yml`` and its metafiles against the configs.

Every config has exactly one entry and every entry names a config; each
entry's parameter count is what its config builds (and, for the smallest
classifiers, its FLOPs at 224x224); every config applies the one
weight-decay policy of ``configs/_base_/crossformer.py``; mmpretrain's model
hub lists and builds the classifiers after ``import mmcrossformer``; the
model-zoo tables of ``configs/README.md`` are the ones the metafiles
generate.
"""
import contextlib
import glob
import importlib
import importlib.util
import os.path as osp
import subprocess
import sys

import pytest
import torch
from helpers.building import uninitialised_weights
from helpers.paths import REPO
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

import mmcrossformer  # noqa: F401  registers CrossFormer
from mmcrossformer import zoo
from mmcrossformer.analysis import count_flops

MODELS = zoo.load_models(REPO)
BY_CONFIG = zoo.models_by_config(REPO)
# Every config users run: configs/*.py (not the bases, not the demo's).
CONFIGS = sorted(
    osp.relpath(path, REPO)
    for path in glob.glob(osp.join(REPO, 'configs', '*.py')))
CLASSIFIERS = sorted(m['Name'] for m in MODELS
                     if m['Results'][0]['Task'] == 'Image Classification')
FLOPS_COUNTED = ('configs/crossformer_t_in1k.py',
                 'configs/crossformerpp_s_in1k.py')
OFFICIAL_REPO = 'https://github.com/cheerss/CrossFormer'
TABLE_TOOL = osp.join(REPO, 'tools', 'misc', 'model_zoo_table.py')

pytestmark = pytest.mark.usefixtures('one_thread')


# ------------------------------------------------------- index and entries
def test_every_config_has_one_entry_and_every_entry_a_config():
    configs = [m['Config'] for m in MODELS]
    assert len(configs) == len(set(configs)), 'a config has two entries'
    missing = sorted(set(CONFIGS) - set(configs))
    assert not missing, f'configs without a metafile entry: {missing}'
    dangling = sorted(set(configs) - set(CONFIGS))
    assert not dangling, f'entries naming no config: {dangling}'
    names = [m['Name'] for m in MODELS]
    assert len(names) == len(set(names)), 'model names repeat'


def test_entries_are_complete_and_claim_only_official_results():
    for model in MODELS:
        name = model['Name']
        meta = model['Metadata']
        assert isinstance(meta['Parameters'], int), name
        assert isinstance(meta['FLOPs'], int), name
        height, width = meta['FLOPs Input Size'].split('x')
        assert int(height) > 0 and int(width) > 0, name
        assert meta['Training Data'], name
        assert model['Results'] and all(
            r['Task'] and r['Dataset'] and r['Metrics']
            for r in model['Results']), name
        official = model['Official']
        assert official['Source'].startswith('the official README'), name
        assert official['Parameters'].endswith('M'), name
        assert official['FLOPs'].endswith('G'), name
        # No weights are hosted here: no download URL, only a pointer to
        # where the official README lists them.
        assert 'Weights' not in model, name
        if 'Converted From' in model:
            source = model['Converted From']
            assert source['Code'] == OFFICIAL_REPO, name
            assert source['Weights'].startswith(OFFICIAL_REPO), name
            assert not source['Weights'].endswith('.pth'), name


def test_model_index_imports_every_metafile():
    metafiles = sorted(
        osp.relpath(p, REPO)
        for p in glob.glob(osp.join(REPO, 'configs', 'metafile_*.yml')))
    import yaml
    with open(osp.join(REPO, 'model-index.yml')) as f:
        assert sorted(yaml.safe_load(f)['Import']) == metafiles


# --------------------------------------------- each config's built model
@pytest.fixture(scope='module', params=CONFIGS)
def built(request):
    """``(config path, Config, model)``, built once for the tests of a
    config (module scope: pytest runs them together, one model alive);
    without drawing initial weights, except where FLOPs are counted (which
    runs the model)."""
    cfg = Config.fromfile(osp.join(REPO, request.param))
    scope = cfg.default_scope
    registry = importlib.import_module(f'{scope}.registry').MODELS
    weights = (contextlib.nullcontext() if request.param in FLOPS_COUNTED
               else uninitialised_weights())
    with DefaultScope.overwrite_default_scope(scope), weights:
        model = revert_sync_batchnorm(registry.build(cfg.model))
    return request.param, cfg, model


def test_parameters_and_flops_are_the_entry(built):
    config, _, model = built
    meta = BY_CONFIG[config]['Metadata']
    assert sum(p.numel() for p in model.parameters()) == meta['Parameters']
    # Counting FLOPs takes seconds for the smallest classifier of each
    # family at 224x224 and minutes for the rest, which were measured once
    # with tools/analysis/get_flops.py.
    if config in FLOPS_COUNTED:
        assert meta['FLOPs Input Size'] == '224x224'
        result = count_flops(model, torch.rand(1, 3, 224, 224))
        assert result.flops == meta['FLOPs']


def test_enables_the_rng_hook(built):
    """Resume restores the random streams (``RNGStateHook``, in
    ``configs/_base_/crossformer.py``)."""
    config, cfg, _ = built
    assert dict(type='RNGStateHook') in cfg.get('custom_hooks', []), config


def test_weight_decay_policy(built):
    """No decay on 1-D parameters (norm weights and biases, biases), decay
    on every weight matrix and conv kernel: the official ImageNet rule,
    applied alike in every config (``configs/_base_/crossformer.py``)."""
    config, cfg, model = built
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {id(p): group['weight_decay']
             for group in wrapper.optimizer.param_groups
             for p in group['params']}
    wd = cfg.optim_wrapper.optimizer.weight_decay
    assert wd > 0
    # Plain dict groups, which mmengine's compile=True can trace
    # (CompilableOptimWrapperConstructor; the default gives ConfigDicts).
    assert all(type(g) is dict for g in wrapper.optimizer.param_groups), (
        f"{config}: set optim_wrapper.constructor="
        "'CompilableOptimWrapperConstructor'")
    params = dict(model.named_parameters())
    wrong = [name for name, p in params.items()
             if decay[id(p)] != (wd if p.ndim > 1 else 0.)]
    assert not wrong, f'{config}: against the policy: {wrong[:10]}'
    # The modules the official recipes disagree on.
    block = 'backbone.stages.2.blocks.2.'
    dpb = block + 'attn.position_bias.'
    expected = {
        block + 'norm1.weight': 0.,
        'backbone.stages.1.downsample.norm.weight': 0.,
        dpb + 'proj.weight': wd,                # DPB Linear
        dpb + 'layers.0.0.weight': 0.,          # DPB LayerNorm
        dpb + 'layers.0.2.weight': wd,
        dpb + 'layers.0.2.bias': 0.,
    }
    if model.backbone.acl:                      # CrossFormer++ cooling layer
        expected.update({
            block + 'cooling.conv.weight': wd,
            block + 'cooling.conv.bias': 0.,
            block + 'cooling.norm.weight': 0.,
        })
    for name, value in expected.items():
        assert decay[id(params[name])] == value, name


# --------------------------------------------------------------- mmpretrain
def test_import_registers_classifiers_without_importing_mmpretrain():
    code = ('import sys, mmcrossformer\n'
            "assert 'mmpretrain' not in sys.modules, sorted(\n"
            "    m for m in sys.modules if m.startswith('mmpretrain'))\n"
            'import mmpretrain\n'
            "print(' '.join(sorted(mmpretrain.list_models('*crossformer*'))))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == CLASSIFIERS


def test_mmpretrain_get_model_builds_the_classifier(tmp_path):
    import mmpretrain
    assert sorted(mmpretrain.list_models('*crossformer*')) == CLASSIFIERS
    assert len(CLASSIFIERS) == 8
    name = 'crossformerpp-small_3rdparty_in1k'
    model = mmpretrain.get_model(name)
    assert type(model).__name__ == 'ImageClassifier'
    assert model.backbone.acl and model.backbone.lda_mode == 'region'
    entry = next(m for m in MODELS if m['Name'] == name)
    assert sum(p.numel() for p in model.parameters()) == (
        entry['Metadata']['Parameters'])
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (1, 1000)
    # No weights are hosted: a converted checkpoint is passed by path.
    path = tmp_path / 'converted.pth'
    torch.save({'state_dict': model.state_dict()}, path)
    loaded = mmpretrain.get_model(name, pretrained=str(path))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), logits, rtol=0, atol=0)


# ------------------------------------------------------------- the tables
@pytest.fixture(scope='module')
def table_tool():
    """``tools/misc/model_zoo_table.py`` as a module (its ``main(argv)`` is
    the command line; run here, not in a new interpreter)."""
    spec = importlib.util.spec_from_file_location('model_zoo_table',
                                                  TABLE_TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_table_tool(tool, capsys, *args):
    """``(exit code, stdout, stderr)`` of the tool's command line."""
    capsys.readouterr()
    code = tool.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_table_tool_updates_only_between_the_markers(tmp_path, table_tool,
                                                     capsys):
    readme = tmp_path / 'README.md'
    readme.write_text('# title\n<!-- model-zoo:start -->\nold table\n'
                      '<!-- model-zoo:end -->\nafter\n')
    code, _, err = run_table_tool(table_tool, capsys, '--check', readme)
    assert code == 1 and '--update' in err
    code, _, err = run_table_tool(table_tool, capsys, '--update', readme)
    assert code == 0, err
    text = readme.read_text()
    assert text.startswith('# title\n<!-- model-zoo:start -->\n')
    assert text.endswith('\n<!-- model-zoo:end -->\nafter\n')
    assert 'old table' not in text
    for model in MODELS:
        # Links relative to the updated file's folder.
        link = osp.relpath(osp.join(REPO, model['Config']), tmp_path)
        assert f"| [{model['Name']}]({link}) |" in text, model['Name']
    assert text.splitlines()[2] == '## Image Classification'
    assert '(official) |' in text.splitlines()[4]
    code, out, _ = run_table_tool(table_tool, capsys, '--update', readme)
    assert code == 0 and 'up to date' in out and readme.read_text() == text
    assert run_table_tool(table_tool, capsys, '--check', readme)[0] == 0

    readme.write_text('no markers\n')
    code, _, err = run_table_tool(table_tool, capsys, '--update', readme)
    assert code == 1
    assert 'model-zoo:start' in err
    assert readme.read_text() == 'no markers\n'


def test_configs_readme_tables_are_the_generated_ones(table_tool, capsys):
    """``configs/README.md`` holds the tables, linking its own folder's
    configs; the README points to it."""
    path = osp.join(REPO, 'configs', 'README.md')
    code, out, err = run_table_tool(table_tool, capsys, '--check', path)
    assert code == 0, err
    with open(path, encoding='utf-8') as f:
        text = f.read()
    for model in MODELS:
        assert f"]({osp.basename(model['Config'])}) |" in text
    with open(osp.join(REPO, 'README.md'), encoding='utf-8') as f:
        assert '(configs/README.md)' in f.read()
