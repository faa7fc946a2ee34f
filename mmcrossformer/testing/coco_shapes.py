"""A small, deterministic COCO-format instance-segmentation dataset of simple
shapes, and helpers that point (and shrink) an mmdet config at it.

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
gives other images.

For tests and demos, :func:`write_tiny_detection_config` (built from
:func:`tiny_detector_overrides`, :func:`mmdet_data_overrides`,
:func:`shrink_pipeline` and :func:`write_derived_config`) writes a config
that inherits a real detection config and trains it on this data in seconds
on a CPU, keeping every other setting::

    train = make_coco_shapes(root, 8, split='train')
    val = make_coco_shapes(root, 4, split='val')
    write_tiny_detection_config(
        'tiny.py', 'configs/maskrcnn_crossformer_s_fpn_1x_coco.py', train,
        val, train_cfg=dict(max_epochs=1))
    # mim train mmdet tiny.py
"""
import copy
import json
import os
import os.path as osp
import zlib
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

SHAPES = ('square', 'circle', 'triangle')
# Polygon vertices of each shape on its circumscribed circle.
_VERTICES = dict(square=4, circle=32, triangle=3)

# A reduced CrossFormer for tests: one block per stage, channels 16..128.
# Shapes differ from the background under them by at least this much (RGB
# distance; the background waves swing by up to +-60 per channel).
MIN_COLOR_DISTANCE = 100.

TINY_ARCH = dict(embed_dims=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2])


# --------------------------------------------------------------- generator
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
        file_name = f'{split}_{index:06d}.jpg'
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


# ------------------------------------------------------------ config helpers
def shrink_pipeline(pipeline: List[dict], factor: float) -> List[dict]:
    """A copy of a data pipeline with every size multiplied by ``factor``:
    ``scale`` and ``crop_size`` (a pair, or a list of pairs for ranges) and
    ``scales`` (a list of pairs), inside ``RandomChoice`` / ``TestTimeAug``
    ``transforms`` (lists and lists of lists) too."""

    def scaled(value):
        if isinstance(value, (tuple, list)) and value and all(
                isinstance(v, (tuple, list)) for v in value):
            return [scaled(v) for v in value]
        if isinstance(value, (tuple, list)) and all(
                isinstance(v, (int, float)) for v in value):
            return tuple(max(1, int(round(v * factor))) for v in value)
        return value

    def shrink(node):
        if isinstance(node, list):
            return [shrink(item) for item in node]
        node = copy.deepcopy(node)
        for key in ('scale', 'scales', 'crop_size'):
            if key in node:
                node[key] = scaled(node[key])
        if 'transforms' in node:
            node['transforms'] = shrink(node['transforms'])
        return node

    return shrink(list(pipeline))


def _with_num_classes(node, num_classes: int):
    """A deep copy of ``node`` with every ``num_classes`` replaced."""
    if isinstance(node, dict):
        return {k: num_classes if k == 'num_classes' else
                _with_num_classes(v, num_classes) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_with_num_classes(v, num_classes) for v in node)
    return node


def _num_classes_overrides(node, num_classes: int):
    """The part of ``node`` to merge so that every head predicts
    ``num_classes``: dicts hold only the changed keys, lists (the bbox heads
    of a cascade) come whole, since a config replaces lists."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == 'num_classes':
                out[key] = num_classes
            else:
                sub = _num_classes_overrides(value, num_classes)
                if sub:
                    out[key] = sub
        return out
    if isinstance(node, (list, tuple)) and any(
            _num_classes_overrides(v, num_classes) for v in node):
        return _with_num_classes(list(node), num_classes)
    return None


def _limit_rois(node, num_rois: int, num_dets: int, section: str = ''):
    """A deep copy of a ``train_cfg`` / ``test_cfg`` with at most
    ``num_rois`` RoIs sampled per image (``sampler.num``) and proposals
    (``max_per_img`` of ``rpn`` / ``rpn_proposal``), and at most
    ``num_dets`` detections (any other ``max_per_img``)."""
    if isinstance(node, (list, tuple)):
        return [_limit_rois(v, num_rois, num_dets, section) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == 'num' and section == 'sampler':
            value = min(value, num_rois)
        elif key == 'max_per_img':
            value = min(value, num_rois if section.startswith('rpn')
                        else num_dets)
        elif isinstance(value, (dict, list, tuple)):
            value = _limit_rois(value, num_rois, num_dets, key)
        out[key] = value
    return out


def tiny_detector_overrides(model: dict,
                            num_classes: int,
                            arch: dict = TINY_ARCH,
                            num_rois: int = 32,
                            num_dets: int = 10) -> dict:
    """Overrides (to merge into ``cfg.model``) that make a CrossFormer
    detector train in seconds on a CPU, keeping its heads as configured:

    - the reduced ``arch`` without pretrained weights, and the neck's
      ``in_channels`` matching it (the last ``len(in_channels)`` stages, as
      the config wires them);
    - every head's ``num_classes``;
    - at most ``num_rois`` proposals / sampled RoIs per image and
      ``num_dets`` detections (the RoI heads cost the same on any image
      size: Mask R-CNN's mask head alone is about 0.5 GFLOPs per RoI).
    """
    dims = [arch['embed_dims'] * 2**i for i in range(len(arch['depths']))]
    num_in = len(model['neck']['in_channels'])
    out = dict(
        # _delete_: the dict replaces the config's arch name.
        backbone=dict(arch=dict(_delete_=True, **arch), init_cfg=None),
        neck=dict(in_channels=dims[len(dims) - num_in:]))
    heads = {k: v for k, v in model.items()
             if k not in ('backbone', 'neck', 'data_preprocessor',
                          'train_cfg', 'test_cfg')}
    out.update(_num_classes_overrides(heads, num_classes) or {})
    for key in ('train_cfg', 'test_cfg'):
        if model.get(key):
            out[key] = _limit_rois(model[key], num_rois, num_dets)
    return out


def mmdet_data_overrides(cfg, train: Dict, val: Dict, factor: float = 1.,
                         batch_size: int = 2) -> Dict:
    """Config overrides that train on ``train`` and validate / test on
    ``val`` (both returned by :func:`make_coco_shapes`) in the main process,
    with the config's own pipelines scaled by ``factor``."""

    def loader(name: str, info: Dict, **kwargs) -> dict:
        pipeline = cfg[name]['dataset']['pipeline']
        return dict(
            num_workers=0,
            persistent_workers=False,
            dataset=dict(
                data_root=info['data_root'],
                ann_file=info['ann_file'],
                data_prefix=dict(img=info['img_dir']),
                metainfo=dict(classes=tuple(info['classes'])),
                pipeline=shrink_pipeline(pipeline, factor)),
            **kwargs)

    return dict(
        train_dataloader=loader('train_dataloader', train,
                                batch_size=batch_size),
        val_dataloader=loader('val_dataloader', val),
        test_dataloader=loader('test_dataloader', val),
        val_evaluator=dict(ann_file=val['ann_file']),
        test_evaluator=dict(ann_file=val['ann_file']))


def write_derived_config(path: str, base: str, overrides: Dict) -> str:
    """Write a config that inherits ``base`` (an absolute path or a
    package-scoped name) and sets ``overrides`` (merged into it as a config
    file's top-level assignments are); returns ``path``."""
    lines = [f'_base_ = {base!r}']
    lines += [f'{key} = {value!r}' for key, value in overrides.items()]
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return str(path)


def _merge(base: Dict, extra: Dict) -> Dict:
    """``extra`` merged into a copy of ``base`` (dicts recursively)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def write_tiny_detection_config(path: str,
                                config: str,
                                train: Dict,
                                val: Dict,
                                factor: float = 0.1,
                                arch: dict = TINY_ARCH,
                                **overrides) -> str:
    """Write a config that inherits the detection ``config`` and trains it
    on the generated ``train`` / ``val`` sets (from
    :func:`make_coco_shapes`) on a CPU: :func:`tiny_detector_overrides`
    (``arch``, one class per shape), :func:`mmdet_data_overrides` (pipelines
    scaled by ``factor``) and ``overrides`` on top (e.g.
    ``train_cfg=dict(max_epochs=1)``; a ``model`` entry is merged into the
    model overrides). Returns ``path``."""
    from mmengine.config import Config
    if tuple(train['classes']) != tuple(val['classes']):
        raise ValueError(f"train and val classes differ: {train['classes']} "
                         f"and {val['classes']}")
    cfg = Config.fromfile(config)
    model = _merge(
        tiny_detector_overrides(cfg.model, len(train['classes']), arch),
        overrides.pop('model', {}))
    settings = dict(model=model,
                    **mmdet_data_overrides(cfg, train, val, factor))
    return write_derived_config(path, osp.abspath(config),
                                _merge(settings, overrides))
