"""``crossformer2mm SRC DST``: convert an official CrossFormer or
CrossFormer++ checkpoint to this package's format.

:func:`convert_file` reads SRC (:mod:`mmcrossformer.fileio`), renames its
keys (:mod:`mmcrossformer.models.checkpoint`) and writes DST atomically;
:func:`main` is the command line (also ``tools/model_converters/
crossformer2mm.py``).
"""
import argparse
import hashlib
import os.path as osp
import sys
from typing import Dict

from ..fileio import load_checkpoint_file, refuse_overwrite, save_atomic
from ..models.checkpoint import (CheckpointError, convert_state_dict,
                                 unwrap_state_dict)
from ..models.presets import display_name

LAYOUT_NAMES = dict(imagenet='official ImageNet classifier',
                    dense='official COCO / ADE20K model',
                    mm='already-converted checkpoint')


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def convert_file(src: str, dst: str, overwrite: bool = False,
                 allow_pickle: bool = False) -> Dict:
    """Convert ``src`` into ``dst`` (``{'state_dict', 'meta'}``) atomically.

    Returns:
        dict: the report of
        :func:`~mmcrossformer.models.checkpoint.convert_state_dict` and
        ``dst``. Raises :class:`CheckpointError` on bad input, before
        anything is written.
    """
    refuse_overwrite(dst, overwrite)  # before reading SRC; save_atomic again
    if osp.abspath(src) == osp.abspath(dst):
        raise CheckpointError('SRC and DST are the same file')
    state_dict = unwrap_state_dict(load_checkpoint_file(src, allow_pickle))
    converted, info = convert_state_dict(state_dict)
    meta = dict(
        converted_by='mmcrossformer',
        source=dict(file=osp.basename(src), sha256=_sha256(src),
                    layout=info['layout']),
        arch=dict(variant=info['variant'], embed_dims=info['embed_dims'],
                  depths=list(info['depths']),
                  num_heads=list(info['num_heads']), acl=info['acl']))
    save_atomic(dict(state_dict=converted, meta=meta), dst, overwrite)
    return dict(info, dst=dst)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog='crossformer2mm',
        description='Convert an official CrossFormer or CrossFormer++ '
        'checkpoint (ImageNet, COCO or ADE20K) to mmcrossformer / mmpretrain '
        '/ mmdet / mmseg format.')
    parser.add_argument('src', help='official checkpoint')
    parser.add_argument('dst', help='output checkpoint (.pth)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace DST if it exists')
    parser.add_argument(
        '--allow-pickle', action='store_true',
        help='load SRC with full unpickling (only for files you trust)')
    args = parser.parse_args(argv)
    try:
        info = convert_file(args.src, args.dst, args.overwrite,
                            args.allow_pickle)
    except CheckpointError as e:
        print(f'crossformer2mm: error: {e}', file=sys.stderr)
        return 2
    extras = ', activation cooling layers' if info['acl'] else ''
    print(f"detected: {display_name(info['variant'], info['acl'])}, "
          f"{LAYOUT_NAMES[info['layout']]}, variant {info['variant']} "
          f"(embed_dims {info['embed_dims']}, depths {info['depths']}, "
          f"num_heads {info['num_heads']}{extras})")
    print(f"converted {info['num_tensors']} tensors "
          f"({info['dropped']} group-size buffers dropped)")
    print(f"wrote {info['dst']}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
