"""Evaluate a checkpoint of an mmdet / mmseg / mmpretrain config with
mmengine's Runner, on one process or under ``torchrun``.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--tta]
        [--cfg-options KEY=VALUE ...]
    PYTHONPATH=. torchrun --nproc_per_node N tools/test.py CONFIG CHECKPOINT \
        --launcher pytorch

The metrics of ``mim test`` (the packages' own ``tools/test.py``; use that
for ``--out`` / ``--show-dir``). The config's ``default_scope`` picks the
package; without a CUDA GPU ``--launcher pytorch`` runs on gloo
(:mod:`mmcrossformer.engine.launch`).
"""
import argparse

from mmengine.config import ConfigDict

import mmcrossformer  # noqa: F401  registers CrossFormer, loader
from mmcrossformer.engine.launch import (add_common_arguments, build_runner,
                                         load_config)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Test a checkpoint of an mmdet / mmseg / mmpretrain '
        'config')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--tta',
        action='store_true',
        help="test-time augmentation (the config's "
        'tta_model and tta_pipeline)')
    add_common_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    if args.tta:
        missing = [k for k in ('tta_model', 'tta_pipeline') if k not in cfg]
        if missing:
            raise SystemExit(f'--tta: {args.config} has no {missing}')
        cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    build_runner(cfg).test()


if __name__ == '__main__':
    main()
