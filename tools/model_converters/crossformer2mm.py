#!/usr/bin/env python
"""Convert an official CrossFormer / CrossFormer++ checkpoint to this
project's format.

    python tools/model_converters/crossformer2mm.py SRC DST [--overwrite]

SRC: an official ImageNet classifier (``{'model': ...}``), a published COCO /
ADE20K model (``{'state_dict': ...}``), or a bare state dict; ``module.``
prefixes are removed. DST: an mm checkpoint ``{'state_dict', 'meta'}``:

- from ImageNet: ``backbone.*`` + ``head.fc.*``, usable by mmpretrain's
  ``ImageClassifier`` (``configs/crossformer*_in1k.py``) and by mmdet / mmseg
  through ``init_cfg=dict(type='Pretrained', checkpoint=DST,
  prefix='backbone.')``;
- from COCO / ADE20K: the whole detector / segmentor, loadable with
  ``strict=True`` into the matching ``configs/`` model (``mim test``).

Only names change; the group-size-dependent buffers are dropped. DST is
written to a temporary file beside it and renamed, so it is either complete
or absent. The same command is installed as ``crossformer2mm``.
"""
import sys

from mmcrossformer.cli.crossformer2mm import main

if __name__ == '__main__':
    sys.exit(main())
