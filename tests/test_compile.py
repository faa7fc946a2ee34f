"""``torch.compile``: the backbone compiles with ``fullgraph=True`` (so no
graph break) in eval and training mode, in both CrossFormer and CrossFormer++
modes, and gives the eager outputs and gradients; a detector config with
mmengine's ``compile`` trains a step through the ``Runner``, with this
package's optimizer wrapper constructor (``mmcrossformer/engine/optim.py``).

The backbone tests compile with the ``aot_eager`` backend: dynamo's capture
and AOT autograd's joint forward/backward graph, which is where graph breaks
and untraceable caches show, without inductor's C++ code generation (minutes
on 2 cores).
"""
import pytest
import torch
from helpers.configs import write_tiny_detection_config
from helpers.paths import REPO
from helpers.training import SOFTMAX_INVARIANT, unchanged_parameters
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.runner import Runner
from torch._dynamo.backends.registry import (_BACKENDS, _COMPILER_FNS,
                                             lookup_backend)

import mmcrossformer  # noqa: F401  registers CrossFormer
from mmcrossformer.datasets import make_coco_shapes
from mmcrossformer.engine import CompilableOptimWrapperConstructor
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


# --------------------------------------------- mmengine's Runner(compile=)
def recording_backend(name):
    """A dynamo backend that records the FX graphs it is given and compiles
    them with backend ``name``; returns ``(backend, graphs)``."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return lookup_backend(name)(gm, example_inputs)

    return backend, graphs


def test_constructor_builds_the_default_groups_as_dicts():
    """:class:`CompilableOptimWrapperConstructor` builds the default
    constructor's parameter groups (same parameters, same hyper-parameters,
    same order) as plain dicts, which ``torch.compile`` traces."""
    model = CrossFormer(arch=ARCH)
    settings = dict(
        optim_wrapper_cfg=dict(type='OptimWrapper', optimizer=dict(
            type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4)),
        paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.,
                           flat_decay_mult=0.))
    default = DefaultOptimWrapperConstructor(**settings)(model)
    ours = CompilableOptimWrapperConstructor(**settings)(model)
    assert type(ours) is type(default)
    groups = ours.optimizer.param_groups
    assert [type(g) for g in groups] == [dict] * len(
        default.optimizer.param_groups)
    assert len(groups) == sum(1 for _ in model.parameters())
    for group, expected in zip(groups, default.optimizer.param_groups):
        assert group.keys() == expected.keys()
        for key, value in expected.items():
            if key == 'params':
                assert [id(p) for p in group[key]] == [id(p) for p in value]
            else:
                assert group[key] == value, key
    decays = {g['weight_decay'] for g in groups}
    assert decays == {0., 1e-4}  # the paramwise rules did apply


def test_runner_compile_trains_a_step(tmp_path, monkeypatch):
    """mmengine's ``Runner`` with ``compile`` set trains RetinaNet
    CrossFormer-S (``configs/retinanet_crossformer_s_fpn_1x_coco.py``,
    shrunk by ``helpers.configs``, its paramwise AdamW kept) for one
    iteration: ``runner.train()`` compiles ``model.train_step``, the
    optimizer step included, the loss is finite and every trained parameter
    moves. The config as shipped: it selects
    ``CompilableOptimWrapperConstructor``, without which dynamo stops in
    ``AdamW.step`` on the ``ConfigDict`` parameter groups
    (``mmcrossformer/engine/optim.py``).

    The backend is ``eager`` (dynamo's capture only), wrapped to record the
    graphs: the capture is where that failure and graph breaks show, and
    the backbone's AOT autograd graphs are checked above (``aot_eager``).
    The capture alone takes most of this test's time (some 40 graphs, as
    mmdet's heads break the graph often, and AdamW's step unrolled over one
    parameter group per parameter, about a third of it); ``aot_eager``
    adds about half as much again, and inductor's C++ code generation
    minutes more on 2 cores. The recorded graphs hold the backbone's
    attention and AdamW's update, so both were captured, not run eagerly
    after a failed capture.
    """
    torch._dynamo.reset()
    train = make_coco_shapes(tmp_path / 'data', 1, split='train')
    val = make_coco_shapes(tmp_path / 'data', 1, split='val')
    config = write_tiny_detection_config(
        str(tmp_path / 'retinanet_compile.py'),
        f'{REPO}/configs/retinanet_crossformer_s_fpn_1x_coco.py', train, val,
        # One image, batch 1 (dynamo traces the heads' per-image code once
        # per image): one iteration.
        train_cfg=dict(max_epochs=1), train_dataloader=dict(batch_size=1),
        # Stochastic depth would drop whole residual branches at random,
        # leaving their parameters without a gradient in this one step.
        model=dict(backbone=dict(drop_path_rate=0.)),
        # No warm-up: its first learning rate (1e-7) moves some weights by
        # less than their float32 spacing.
        param_scheduler=[],
        compile=dict(backend='eager'))
    cfg = Config.fromfile(config)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None  # train only
    cfg.work_dir = str(tmp_path / 'work')
    # The config's backend, recording its graphs, registered by name
    # (mmengine writes its config to a file).
    backend, graphs = recording_backend(cfg.compile.backend)
    monkeypatch.setitem(_BACKENDS, 'recording', None)
    monkeypatch.setitem(_COMPILER_FNS, 'recording', backend)
    cfg.compile.backend = 'recording'

    class Snapshot(Hook):
        """The parameters after initialisation, before the first step."""

        def before_train(self, runner):
            self.params = {n: p.detach().clone()
                           for n, p in runner.model.named_parameters()}

    snapshot = Snapshot()
    runner = Runner.from_cfg(cfg)
    runner.register_hook(snapshot, priority='LOWEST')
    runner.train()

    assert runner.iter == 1
    assert hasattr(runner.model.train_step, '_torchdynamo_orig_callable')
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert torch.isfinite(torch.tensor(loss)), loss
    assert not unchanged_parameters(runner.model, snapshot.params)
    targets = [str(node.target) for gm in graphs for node in gm.graph.nodes]
    assert any('scaled_dot_product_attention' in t for t in targets)
    assert any('addcdiv' in t for t in targets)  # AdamW's update
