"""Helpers shared by the tests (``tests/`` is on ``sys.path`` under pytest,
so they import as ``helpers.<module>``):

- :mod:`helpers.paths`: the repository root and the reference data;
- :mod:`helpers.archs`: the reduced CrossFormer arches of the tests;
- :mod:`helpers.configs`: derived configs that train a real config in
  seconds on a CPU (the one way the tests shrink a config);
- :mod:`helpers.ade_shapes`: a generated ADE20K-layout dataset;
- :mod:`helpers.mim`: the ``mim`` command line, run on the CPU;
- :mod:`helpers.commands`: other commands (and ``mim`` calls that must
  fail), and the scalars mmengine logged;
- :mod:`helpers.train_hooks`: hooks that the tests' training processes
  import;
- :mod:`helpers.training`: what a training step must update;
- :mod:`helpers.official_block`: the official dense block, transcribed.

The COCO shapes dataset is part of the package
(:mod:`mmcrossformer.datasets.coco_shapes`), since ``make demo`` uses it.
"""
