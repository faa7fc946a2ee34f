"""A small, deterministic COCO-format instance-segmentation dataset of simple
shapes: the data of ``make demo`` (``tools/demo/make_demo_data.py``) and of
the detection tests.

:func:`make_coco_shapes` writes::

    out_dir/
        annotations/instances_<split>.json
        <split>/<split>_000000.jpg ...        (H, W, 3) JPEG

Every image has a textured background (random base colour, two sinusoidal
waves and noise) and 1..``max_instances`` non-overlapping shapes, each of a
random colour (at least :data:`MIN_COLOR_DISTANCE` from the background
under it), size and rotation; the class is the shape (``square``,
``circle``, ``triangle``), never the colour, so a detector has to learn it.
Each shape is a polygon (a circle has 32 vertices); its mask is that polygon
rasterised by pycocotools, exactly what the COCO evaluation rasterises, and
the image is painted with that mask, so pixels, ``bbox``, ``area`` and
``segmentation`` agree. Most instances store the polygon; every
``rle_every``-th one stores its mask as RLE instead, alternately compressed
(``counts`` a string) and uncompressed (``counts`` a list, as COCO's own
crowd annotations), so both mask paths of mmdet and pycocotools run.

Image ``i`` of a split depends only on ``(seed, split, i)``: more images
extend a set without changing the first ones, and another split (or seed)
gives other images. A dataset config points at it with the returned
``ann_file`` / ``img_dir`` and ``metainfo=dict(classes=SHAPES)``.

:func:`ensure_coco_shapes` makes several splits at once, or reuses them if
``out_dir`` already holds them made with the same settings (recorded in
``out_dir/coco_shapes.json``).
"""
import json
import os
import os.path as osp
import zlib
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

SHAPES = ('square', 'circle', 'triangle')
# The settings and splits :func:`ensure_coco_shapes` made, in its out_dir.
MANIFEST = 'coco_shapes.json'
# Polygon vertices of each shape on its circumscribed circle.
_VERTICES = dict(square=4, circle=32, triangle=3)

# Shapes differ from the background under them by at least this much (RGB
# distance; the background waves swing by up to +-60 per channel).
MIN_COLOR_DISTANCE = 100.


def _background(rng: np.random.Generator, height: int,
                width: int) -> np.ndarray:
    """``(H, W, 3)`` float RGB texture: base colour + two waves + noise."""
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    image = np.empty((height, width, 3), np.float32)
    image[:] = rng.uniform(40, 215, size=3)
    for _ in range(2):
        freq = rng.uniform(0.03, 0.25, size=2)
        wave = np.sin(freq[0] * yy + freq[1] * xx + rng.uniform(0, 2 * np.pi))
        image += wave[..., None] * rng.uniform(-30, 30, size=3)
    image += rng.normal(0, 6, size=image.shape)
    return image


def _shape_color(rng: np.random.Generator, background: np.ndarray,
                 min_distance: float = MIN_COLOR_DISTANCE) -> np.ndarray:
    """A random RGB colour at least ``min_distance`` from ``background``
    (the mean colour under the shape), so that every shape is visible."""
    while True:
        color = rng.uniform(0, 255, size=3)
        if np.linalg.norm(color - background) >= min_distance:
            return color


def _place(rng: np.random.Generator, height: int, width: int,
           placed: List[Tuple[float, float, float]], max_tries: int = 20
           ) -> Optional[Tuple[float, float, float]]:
    """A ``(cx, cy, r)`` circle inside the image, clear of ``placed``."""
    side = min(height, width)
    for _ in range(max_tries):
        r = rng.uniform(0.09, 0.25) * side
        cx = rng.uniform(r + 1, width - r - 1)
        cy = rng.uniform(r + 1, height - r - 1)
        if all(np.hypot(cx - x, cy - y) > r + q + 2 for x, y, q in placed):
            return cx, cy, r
    return None


def _polygon(rng: np.random.Generator, shape: str, cx: float, cy: float,
             r: float) -> List[float]:
    """Flat ``[x0, y0, x1, y1, ...]`` vertices of a rotated shape."""
    n = _VERTICES[shape]
    angles = rng.uniform(0, 2 * np.pi) + np.arange(n) * 2 * np.pi / n
    xy = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1)
    return [round(float(v), 2) for v in xy.reshape(-1)]


def _instances(rng: np.random.Generator, height: int, width: int,
               classes: Sequence[str], max_instances: int) -> List[dict]:
    """Shapes as ``dict(label, polygon, mask, rle)`` (``mask``: (H, W) uint8
    as pycocotools rasterises the polygon)."""
    from pycocotools import mask as mask_utils
    placed, instances = [], []
    for _ in range(int(rng.integers(1, max_instances + 1))):
        circle = _place(rng, height, width, placed)
        if circle is None:
            break
        placed.append(circle)
        label = int(rng.integers(len(classes)))
        polygon = _polygon(rng, classes[label], *circle)
        rle = mask_utils.merge(
            mask_utils.frPyObjects([polygon], height, width))
        instances.append(dict(label=label, polygon=polygon, rle=rle,
                              mask=mask_utils.decode(rle)))
    return instances


def _rle_segmentation(mask: np.ndarray, rle: dict, compressed: bool) -> dict:
    """A JSON-able RLE of ``mask``: compressed (string counts) or COCO's
    uncompressed form (column-major run lengths starting with zeros)."""
    if compressed:
        return dict(size=list(rle['size']),
                    counts=rle['counts'].decode('ascii'))
    flat = mask.flatten(order='F')
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:  # runs start with a (possibly empty) run of zeros
        counts = [0] + counts
    return dict(size=list(mask.shape), counts=counts)


def _image_file(split: str, index: int) -> str:
    return f'{split}_{index:06d}.jpg'


def make_coco_shapes(out_dir: str,
                     num_images: int,
                     image_size: Union[int, Sequence[int]] = (96, 128),
                     seed: int = 0,
                     split: str = 'train',
                     classes: Sequence[str] = SHAPES,
                     max_instances: int = 4,
                     rle_every: int = 3,
                     progress: bool = False) -> Dict:
    """Write a COCO-format shapes dataset (see the module docstring).

    Args:
        out_dir (str): Dataset root; created if missing. Other splits may
            live in the same root.
        num_images (int): Number of images (>= 1).
        image_size (int | (H, W)): Image height and width, each >= 32.
        seed (int): The same ``(seed, split)`` writes the same files.
        split (str): Names the image folder and ``instances_<split>.json``.
        classes (Sequence[str]): Shape names, a subset of :data:`SHAPES`, in
            category order (category ids ``1..len(classes)``).
        max_instances (int): Shapes per image are ``1..max_instances`` (fewer
            where they do not fit without overlapping).
        rle_every (int): Every ``rle_every``-th instance (by annotation id)
            stores an RLE mask instead of a polygon; 0 stores polygons only.
        progress (bool): Show a tqdm progress bar.

    Returns:
        dict: ``data_root`` (``out_dir``), ``ann_file`` and ``img_dir``
        (absolute paths, ``img_dir`` ending in ``/``), ``classes`` (tuple),
        ``num_images``, ``num_instances``, ``num_rle``.
    """
    import cv2
    from pycocotools import mask as mask_utils
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    height, width = (int(s) for s in image_size)
    if min(height, width) < 32:
        raise ValueError('image_size (H, W) must be at least 32 each, got '
                         f'{tuple(image_size)}')
    if num_images < 1:
        raise ValueError(f'num_images must be >= 1, got {num_images}')
    if max_instances < 1:
        raise ValueError(f'max_instances must be >= 1, got {max_instances}')
    classes = tuple(classes)
    unknown = [c for c in classes if c not in SHAPES]
    if unknown or not classes or len(set(classes)) != len(classes):
        raise ValueError(f'classes must be distinct names from {SHAPES}, '
                         f'got {classes}')

    out_dir = osp.abspath(out_dir)
    img_dir = osp.join(out_dir, split)
    ann_file = osp.join(out_dir, 'annotations', f'instances_{split}.json')
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(osp.dirname(ann_file), exist_ok=True)
    images, annotations = [], []
    indices = range(num_images)
    if progress:
        from tqdm import tqdm
        indices = tqdm(indices, desc=f'coco shapes ({split})', unit='img')
    split_key = zlib.crc32(split.encode())
    for index in indices:
        rng = np.random.default_rng([seed, split_key, index])
        image = _background(rng, height, width)
        file_name = _image_file(split, index)
        images.append(dict(id=index + 1, file_name=file_name,
                           height=height, width=width))
        for inst in _instances(rng, height, width, classes, max_instances):
            mask = inst['mask'].astype(bool)
            color = _shape_color(rng, image[mask].mean(0))
            image[mask] = color + rng.normal(0, 6, size=(mask.sum(), 3))
            ann_id = len(annotations) + 1
            if rle_every and ann_id % rle_every == 0:
                compressed = (ann_id // rle_every) % 2 == 1
                segmentation = _rle_segmentation(inst['mask'], inst['rle'],
                                                 compressed)
            else:
                segmentation = [inst['polygon']]
            bbox = [round(float(v), 2)
                    for v in mask_utils.toBbox(inst['rle'])]
            annotations.append(dict(
                id=ann_id, image_id=index + 1,
                category_id=inst['label'] + 1, segmentation=segmentation,
                area=float(mask_utils.area(inst['rle'])), bbox=bbox,
                iscrowd=0))
        image = np.clip(image, 0, 255).astype(np.uint8)
        cv2.imwrite(osp.join(img_dir, file_name), image[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
    coco = dict(
        info=dict(description=f'mmcrossformer coco shapes, split {split}, '
                  f'seed {seed}'),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=[dict(id=i + 1, name=name, supercategory='shape')
                    for i, name in enumerate(classes)])
    with open(ann_file, 'w') as f:
        json.dump(coco, f)
    num_rle = sum(isinstance(a['segmentation'], dict) for a in annotations)
    return dict(data_root=out_dir, ann_file=ann_file,
                img_dir=img_dir + os.sep, classes=classes,
                num_images=num_images, num_instances=len(annotations),
                num_rle=num_rle)


def _recorded_splits(out_dir: str, settings: Dict) -> Optional[Dict]:
    """``{split: info}`` of the data in ``out_dir`` if its manifest records
    ``settings`` and all the files are there, else None."""
    try:
        with open(osp.join(out_dir, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    if manifest.get('settings') != settings:
        return None
    splits = manifest.get('splits', {})
    for split in settings['num_images']:
        info = splits.get(split)
        if info is None or not osp.isfile(info['ann_file']) or not all(
                osp.isfile(osp.join(info['img_dir'], _image_file(split, i)))
                for i in range(info['num_images'])):
            return None
    return splits


def ensure_coco_shapes(out_dir: str,
                       num_images: Dict[str, int],
                       image_size: Union[int, Sequence[int]] = (96, 128),
                       seed: int = 0,
                       classes: Sequence[str] = SHAPES,
                       max_instances: int = 4,
                       rle_every: int = 3,
                       force: bool = False,
                       progress: bool = False) -> Dict:
    """Make the splits ``num_images`` (``{split: number of images}``) of a
    shapes dataset in ``out_dir`` with :func:`make_coco_shapes`, or reuse
    them if ``out_dir`` holds them, made with the same settings, and all
    their files (unless ``force``). The other arguments are those of
    :func:`make_coco_shapes`.

    Returns:
        dict: ``reused`` (bool) and, per split, the info of
        :func:`make_coco_shapes` (``classes`` as a list).
    """
    if 'reused' in num_images:
        raise ValueError("'reused' cannot name a split: it is a key of the "
                         'returned dict')
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    out_dir = osp.abspath(out_dir)
    settings = dict(num_images=dict(num_images), image_size=list(image_size),
                    seed=seed, classes=list(classes),
                    max_instances=max_instances, rle_every=rle_every)
    splits = None if force else _recorded_splits(out_dir, settings)
    reused = splits is not None
    if not reused:
        splits = {
            split: make_coco_shapes(
                out_dir, num, image_size=image_size, seed=seed, split=split,
                classes=classes, max_instances=max_instances,
                rle_every=rle_every, progress=progress)
            for split, num in num_images.items()}
        for info in splits.values():
            info['classes'] = list(info['classes'])
        with open(osp.join(out_dir, MANIFEST), 'w') as f:
            json.dump(dict(settings=settings, splits=splits), f, indent=1)
    return dict(reused=reused, **splits)
