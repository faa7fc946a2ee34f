"""Parameters and FLOPs of a config's model at a given input size, with and
without the attention matmuls (see :mod:`mmcrossformer.analysis`).

    python tools/analysis/get_flops.py \
        configs/maskrcnn_crossformer_s_fpn_1x_coco.py --shape 800 1280

FLOPs are multiply-accumulates of one forward pass of a random ``(1, 3, H,
W)`` image (H and W should be multiples of 32, as the detectors pad to), in
the model's ``tensor`` mode: for a two-stage detector the backbone, the neck,
the RPN head (its proposals, up to 1000, go to the box head and the first
100 to the mask head, as mmdet's own FLOP tool counts) and the RoI heads.
Element-wise ops count 0 (the convention of mmcv's and fvcore's counters),
and so do custom ops (mmcv's RoIAlign, NMS), which the tool lists.
"""
import argparse
import sys

import torch
import torch.nn as nn
from mmengine.analysis import parameter_count
from mmengine.config import Config, DictAction
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS, init_default_scope

from mmcrossformer.analysis import ATTENTION_KEY, flop_analyzer


class TensorMode(nn.Module):
    """``model(inputs, data_samples, mode='tensor')`` as a module of one
    input, for tracing; the model is its child ``model``."""

    def __init__(self, model: nn.Module, data_samples=None):
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, inputs: torch.Tensor):
        return self.model(inputs, self.data_samples, mode='tensor')


def detection_samples(height: int, width: int) -> list:
    """One ``DetDataSample`` describing an unscaled, unpadded image."""
    from mmdet.structures import DetDataSample
    shape = (height, width)
    return [DetDataSample(metainfo=dict(
        img_shape=shape, ori_shape=shape, pad_shape=shape,
        batch_input_shape=shape, scale_factor=(1., 1.)))]


def build_model(cfg: Config) -> nn.Module:
    """The config's model, built in its default scope (no checkpoint is
    loaded: weights keep their constructors' random initialisation)."""
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    return model.eval()


def measure(cfg: Config, height: int, width: int, max_depth: int = 0):
    """Returns a dict of params, FLOPs, attention FLOPs for ``'backbone'``
    and ``'model'``, the uncounted non-element-wise ops and (if
    ``max_depth``) a per-module table."""
    from mmengine.analysis.print_helper import complexity_stats_table
    torch.manual_seed(0)
    model = build_model(cfg)
    samples = (detection_samples(height, width)
               if cfg.get('default_scope') == 'mmdet' else None)
    wrapper = TensorMode(model, samples)
    inputs = torch.rand(1, 3, height, width)
    with torch.no_grad():
        analyzer = flop_analyzer(wrapper, (inputs, ))
        by_module = analyzer.by_module_and_operator()
    params = parameter_count(model)
    result = {}
    for name, prefix in (('backbone', 'model.backbone'), ('model', '')):
        ops = by_module.get(prefix, {})
        result[name] = dict(
            params=params['backbone' if name == 'backbone' else ''],
            flops=sum(ops.values()),
            attention=ops.get(ATTENTION_KEY, 0))
    # Element-wise aten ops count 0 by convention; list the rest.
    result['uncounted'] = {
        op: n for op, n in analyzer.unsupported_ops().items()
        if not op.startswith('aten::')}
    if max_depth:
        result['table'] = complexity_stats_table(
            analyzer, max_depth=max_depth, show_param_shapes=False)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description='Parameters and FLOPs (multiply-accumulates) of a '
        "config's model, with and without attention matmuls")
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--shape', type=int, nargs='+', default=[800, 1280],
        help='input height and width (one value: square). Default: 800 '
        '1280, the "1280x800" of detection papers')
    parser.add_argument(
        '--table-depth', type=int, default=0,
        help='also print a per-module table this deep (0: none)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, xxx=yyy')
    args = parser.parse_args(argv)
    if len(args.shape) not in (1, 2):
        parser.error('--shape takes H W or a single size')
    height, width = (args.shape * 2)[:2]
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)

    result = measure(cfg, height, width, args.table_depth)
    print(f'config: {args.config}')
    print(f'input: 1x3x{height}x{width} (HxW {height}x{width}); FLOPs are '
          'multiply-accumulates')
    for name in ('backbone', 'model'):
        r = result[name]
        print(f"{name + ':':10s}params {r['params'] / 1e6:.2f}M, "
              f"FLOPs {r['flops'] / 1e9:.2f}G with attention matmuls "
              f"({r['attention'] / 1e9:.2f}G), "
              f"{(r['flops'] - r['attention']) / 1e9:.2f}G without")
    if result['uncounted']:
        ops = ', '.join(f'{op} x{n}' for op, n in
                        sorted(result['uncounted'].items()))
        print(f'custom ops not counted: {ops}')
    if 'table' in result:
        print(result['table'])
    return 0


if __name__ == '__main__':
    sys.exit(main())
