#!/usr/bin/env python
"""Export a config's CrossFormer backbone (+ neck) to ONNX and check it with
ONNX Runtime.

    python tools/deployment/pytorch2onnx.py CONFIG [CHECKPOINT] --shape H W
        [--out FILE] [--overwrite] [--tolerance T] [--cfg-options ...]

Builds the config's model (mmdet / mmseg / mmpretrain, by its
``default_scope``), exports its backbone and neck with ``torch.onnx.export``
(the default, dynamo exporter), runs the file with ONNX Runtime and PyTorch
on a random input and prints the max abs and relative difference of each
output. The file is written through a temporary one, only if it reproduces
PyTorch; an existing one is refused without ``--overwrite``. The graph
holds the groupings of its input size and is valid for that size only: see
``docs/deployment.md``. Needs the
``deploy`` extra (``pip install "mmcrossformer[deploy]"``). The same
command is installed as ``crossformer2onnx``.
"""
import sys

from mmcrossformer.cli.pytorch2onnx import main

if __name__ == '__main__':
    sys.exit(main())
