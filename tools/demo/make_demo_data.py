"""Generate the `make demo` dataset: COCO-format instance segmentation of
squares, circles and triangles on textured backgrounds (polygon masks),
deterministic from a seed (see :mod:`mmcrossformer.datasets.coco_shapes`).

    python tools/demo/make_demo_data.py [--out data/demo] [--num-train 400]
        [--num-test 50] [--size 192] [--seed 0]

writes::

    data/demo/
        annotations/instances_train.json, annotations/instances_test.json
        train/train_000000.jpg ...   test/test_000000.jpg ...
        coco_shapes.json             (the settings that made them)

The held-out ``test`` split is another random stream than ``train`` (image
``i`` depends on ``(seed, split, i)``), so it shares no image with it. If the
directory already holds data made with the same settings, it is reused (and
the script says so) unless ``--force``.
"""
import argparse
import sys
from typing import Dict

from mmcrossformer.datasets import ensure_coco_shapes

SPLITS = ('train', 'test')
DEFAULTS = dict(num_train=400, num_test=50, size=192, seed=0,
                max_instances=4)


def ensure_demo_data(out_dir: str = 'data/demo',
                     num_train: int = DEFAULTS['num_train'],
                     num_test: int = DEFAULTS['num_test'],
                     size: int = DEFAULTS['size'],
                     seed: int = DEFAULTS['seed'],
                     max_instances: int = DEFAULTS['max_instances'],
                     force: bool = False,
                     progress: bool = True) -> Dict:
    """Make (or reuse) the demo dataset in ``out_dir``: square images,
    polygon masks only.

    Returns:
        dict: ``reused`` (bool) and, for ``'train'`` and ``'test'``, the
        info of :func:`~mmcrossformer.datasets.make_coco_shapes`
        (``data_root``, ``ann_file``, ``img_dir``, ``classes``,
        ``num_images``, ``num_instances``, ``num_rle``).
    """
    return ensure_coco_shapes(
        out_dir, dict(train=num_train, test=num_test), image_size=size,
        seed=seed, max_instances=max_instances, rle_every=0, force=force,
        progress=progress)


def describe(data: Dict) -> str:
    """One line per split: where it is and how much it holds."""
    how = 'reusing the data in' if data['reused'] else 'generated'
    root = data['train']['data_root']
    lines = [f'demo data: {how} {root} (delete it or pass --force to '
             'regenerate)' if data['reused'] else f'demo data: {how} {root}']
    for split in SPLITS:
        info = data[split]
        lines.append(f'  {split}: {info["num_images"]} images, '
                     f'{info["num_instances"]} instances '
                     f'({", ".join(info["classes"])}) -> {info["ann_file"]}')
    return '\n'.join(lines)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The data options, shared with ``run_demo.py``."""
    parser.add_argument('--num-train', type=int,
                        default=DEFAULTS['num_train'],
                        help='training images (default: %(default)s)')
    parser.add_argument('--num-test', type=int, default=DEFAULTS['num_test'],
                        help='held-out test images (default: %(default)s)')
    parser.add_argument('--size', type=int, default=DEFAULTS['size'],
                        help='image side in pixels (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=DEFAULTS['seed'],
                        help='data seed (default: %(default)s)')
    parser.add_argument('--force', action='store_true',
                        help='regenerate even if matching data exists')


def data_kwargs(args: argparse.Namespace) -> Dict:
    return dict(num_train=args.num_train, num_test=args.num_test,
                size=args.size, seed=args.seed, force=args.force)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='data/demo',
                        help='dataset directory (default: %(default)s)')
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    print(describe(ensure_demo_data(args.out, **data_kwargs(args))))
    return 0


if __name__ == '__main__':
    sys.exit(main())
