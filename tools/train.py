"""Train a CrossFormer detector, segmentor or classifier with mmengine's
Runner, on one process or under ``torchrun``.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CHECKPOINT]]
        [--amp] [--auto-scale-lr] [--cfg-options KEY=VALUE ...]
    tools/dist_train.sh CONFIG NUM_PROCESSES [ARGS]  # torchrun + --launcher

The arguments are those of mmdet's ``tools/train.py`` (what ``mim train``
runs) and work for mmdet, mmseg and mmpretrain configs alike: the config's
``default_scope`` picks the package. ``--resume`` without a path resumes
from the work dir's latest checkpoint. Under ``--launcher pytorch`` on a
machine without a CUDA GPU the processes join a gloo group on the CPU
(:mod:`mmcrossformer.engine.launch`); with GPUs it is mmengine's NCCL path
unchanged.
"""
import argparse

import mmcrossformer  # noqa: F401  registers CrossFormer, hooks, loader
from mmcrossformer.engine.launch import (add_common_arguments, build_runner,
                                         load_config)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Train a model of an mmdet / mmseg / mmpretrain config')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint, or without a path from the '
        'latest checkpoint in the work dir')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='automatic mixed precision training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by the total batch size '
        "(the config's auto_scale_lr.base_batch_size)")
    add_common_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = load_config(args)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if not cfg.get('auto_scale_lr', {}).get('base_batch_size'):
            raise SystemExit(
                f'--auto-scale-lr: {args.config} sets no '
                'auto_scale_lr.base_batch_size (the batch size its learning '
                'rate is for); add e.g. auto_scale_lr = dict(enable=False, '
                'base_batch_size=16)')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    build_runner(cfg).train()


if __name__ == '__main__':
    main()
