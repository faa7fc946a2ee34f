"""Generated datasets and config helpers for tests and demos."""
from .coco_shapes import make_coco_shapes  # noqa: F401
from .ade_shapes import make_ade_shapes  # noqa
