"""A tiny, deterministic ADE20K-layout dataset for the segmentation tests.

:func:`make_ade_shapes` writes::

    out_dir/
        images/training/ade_shapes_train_0000.jpg       (H, W, 3) uint8 JPEG
        annotations/training/ade_shapes_train_0000.png  (H, W) uint8, 0..150
        images/validation/...  annotations/validation/...

as ``ADE20KDataset`` reads it: label 0 is "other" (ignored after
``reduce_zero_label``, which maps it to 255 and shifts 1..150 to 0..149), and
1..150 are the ADE classes. Each scene is a top band of one class, a bottom
band of another and a few solid shapes, every class painted in its own
colour (plus mild noise), so a model can learn it; a 2-pixel "other" border
exercises the ignored label.
:func:`helpers.configs.write_tiny_segmentation_config` points a config at
it.
"""
import os
import os.path as osp
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np

# ADE20K label ids (1-based, as in the PNGs) used by the scenes.
TOP_CLASSES = (1, 3)  # wall, sky
BOTTOM_CLASSES = (4, 7)  # floor, road
SHAPE_CLASSES = (5, 13, 21)  # tree, person, car
SCENE_CLASSES = TOP_CLASSES + BOTTOM_CLASSES + SHAPE_CLASSES
OTHER = 0
BORDER = 2


def class_color(label: int) -> Tuple[int, int, int]:
    """A fixed RGB colour for an ADE label id (0: grey)."""
    if label == OTHER:
        return (128, 128, 128)
    rng = np.random.RandomState(1000 + label)
    return tuple(int(c) for c in rng.randint(0, 256, size=3))


def _scene(rng: np.random.RandomState, height: int,
           width: int) -> Tuple[np.ndarray, np.ndarray]:
    """One ``(H, W, 3)`` RGB image and its ``(H, W)`` label map."""
    label = np.empty((height, width), np.uint8)
    horizon = rng.randint(height // 3, 2 * height // 3 + 1)
    label[:horizon] = rng.choice(TOP_CLASSES)
    label[horizon:] = rng.choice(BOTTOM_CLASSES)
    yy, xx = np.mgrid[:height, :width]
    for _ in range(rng.randint(1, 4)):
        cls = rng.choice(SHAPE_CLASSES)
        h = rng.randint(height // 6, height // 2 + 1)
        w = rng.randint(width // 6, width // 2 + 1)
        top = rng.randint(0, height - h + 1)
        left = rng.randint(0, width - w + 1)
        if rng.rand() < 0.5:  # rectangle
            mask = ((yy >= top) & (yy < top + h) & (xx >= left) &
                    (xx < left + w))
        else:  # ellipse inscribed in the box
            cy, cx = top + h / 2, left + w / 2
            mask = ((yy - cy) / (h / 2))**2 + ((xx - cx) / (w / 2))**2 <= 1
        label[mask] = cls
    label[:BORDER] = label[-BORDER:] = OTHER
    label[:, :BORDER] = label[:, -BORDER:] = OTHER
    palette = np.array([class_color(i) for i in range(151)], np.int16)
    image = palette[label] + rng.randint(-12, 13, size=(height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8), label


def make_ade_shapes(out_dir: str,
                    num_train: int = 8,
                    num_val: int = 4,
                    image_size: Union[int, Sequence[int]] = (72, 96),
                    seed: int = 0) -> Dict[str, List[str]]:
    """Write a tiny ADE20K-layout dataset (see the module docstring).

    Args:
        out_dir (str): The dataset root (``data_root`` of the config); created
            if missing.
        num_train (int): Training images (>= 1).
        num_val (int): Validation images (>= 1).
        image_size (int | (H, W)): Image height and width, each >= 16.
        seed (int): The same seed writes the same files.

    Returns:
        dict: ``{'training': [stem, ...], 'validation': [stem, ...]}``, the
        file names without suffix.
    """
    from PIL import Image
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    height, width = (int(s) for s in image_size)
    if min(height, width) < 16:
        raise ValueError(f'image_size (H, W) must be at least 16 each, got '
                         f'{tuple(image_size)}')
    if num_train < 1 or num_val < 1:
        raise ValueError(f'num_train and num_val must be >= 1, got '
                         f'{num_train} and {num_val}')
    rng = np.random.RandomState(seed)
    stems = {}
    for split, count in (('training', num_train), ('validation', num_val)):
        img_dir = osp.join(out_dir, 'images', split)
        ann_dir = osp.join(out_dir, 'annotations', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        tag = 'train' if split == 'training' else 'val'
        stems[split] = []
        for i in range(count):
            stem = f'ade_shapes_{tag}_{i:04d}'
            image, label = _scene(rng, height, width)
            Image.fromarray(image).save(
                osp.join(img_dir, stem + '.jpg'), quality=95)
            Image.fromarray(label).save(osp.join(ann_dir, stem + '.png'))
            stems[split].append(stem)
    return stems
