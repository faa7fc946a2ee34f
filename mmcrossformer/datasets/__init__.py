"""Generated datasets: written to disk in a standard layout, so that the
OpenMMLab dataset classes read them as they read the real ones."""
from .coco_shapes import SHAPES, ensure_coco_shapes, make_coco_shapes

__all__ = ['SHAPES', 'ensure_coco_shapes', 'make_coco_shapes']
