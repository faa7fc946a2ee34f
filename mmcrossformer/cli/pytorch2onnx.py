"""``pytorch2onnx CONFIG [CHECKPOINT] --shape H W``: export a config's
backbone (+ neck) to ONNX and check it with ONNX Runtime.

:func:`main` is the command line (also ``tools/deployment/pytorch2onnx.py``);
the work is :func:`mmcrossformer.deployment.onnx.export_checked`.
"""
import argparse
import os.path as osp
import sys

from mmengine.config import DictAction

from ..deployment.onnx import (DEFAULT_TOLERANCE, DeploymentError,
                               build_feature_extractor, export_checked)
from ..fileio import refuse_overwrite


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='pytorch2onnx',
        description='Export the backbone (+ neck) of an mmdet / mmseg / '
        'mmpretrain config to ONNX (torch.onnx.export, dynamo exporter), run '
        'it with ONNX Runtime on a random input and print the difference '
        'from PyTorch per output. The file is written only if it '
        'reproduces PyTorch.')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        'checkpoint',
        nargs='?',
        help='weights of the config\'s model (default: random weights, the '
        'same graph)')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        required=True,
        metavar=('H', 'W'),
        help='input size (the preprocessed, padded image). CrossFormer '
        'chooses its groupings from the size, so the graph is valid for '
        'this size only')
    parser.add_argument(
        '--out',
        help='output file (default: <config name>_<H>x<W>.onnx in the '
        'current folder); an existing file is refused unless --overwrite')
    parser.add_argument(
        '--tolerance',
        type=float,
        default=DEFAULT_TOLERANCE,
        help='largest accepted max abs difference, relative to the '
        'largest output magnitude (default: %(default)g)')
    parser.add_argument('--opset', type=int, help='ONNX opset version')
    parser.add_argument(
        '--overwrite', action='store_true', help='replace --out if it exists')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, KEY=VALUE (a.b=1 c=[1,2])')
    args = parser.parse_args(argv)
    if min(args.shape) < 1:
        parser.error(f'--shape must be positive, got {args.shape}')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    height, width = args.shape
    out = args.out or (f'{osp.splitext(osp.basename(args.config))[0]}_'
                       f'{height}x{width}.onnx')
    try:
        refuse_overwrite(out, args.overwrite, error=DeploymentError)
        module = build_feature_extractor(args.config, args.checkpoint,
                                         args.cfg_options)
        parts = 'backbone + neck' if module.neck is not None else 'backbone'
        weights = args.checkpoint or 'random weights (no CHECKPOINT)'
        print(f'exporting the {parts} of {args.config} ({weights}) at '
              f'{height}x{width}')
        report = export_checked(
            module, (height, width),
            out,
            tolerance=args.tolerance,
            overwrite=args.overwrite,
            opset_version=args.opset)
    except DeploymentError as e:
        print(f'pytorch2onnx: error: {e}', file=sys.stderr)
        return 2
    print(f"exported in {report['export_seconds']:.1f} s; ONNX Runtime vs "
          f'PyTorch on a random {height}x{width} input:')
    for diff in report['diffs']:
        print(f'  {diff}')
    print(f"wrote {report['path']}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
