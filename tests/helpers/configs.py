"""Derived configs that train a real config in seconds on a CPU.

A derived config inherits the real one (``_base_ = '<abs path>'``) and
overrides only what must shrink: the backbone (``TINY_ARCH`` of
:mod:`helpers.archs`, no pretrained weights) and what is wired to its
widths, the image sizes (every ``scale`` / ``crop_size`` of the pipelines
times a factor), the number of RoIs, and the data (generated, read in the
main process); every other setting is the config's own (the long
multi-process and multi-run Mask R-CNN tests also narrow its neck and heads,
:data:`MASK_RCNN_NARROW_HEADS`). Every derived config of the tests is
written by :func:`write_derived_config`:

    from mmcrossformer.datasets import make_coco_shapes
    from helpers.ade_shapes import make_ade_shapes

    train = make_coco_shapes(root, 8, split='train')
    val = make_coco_shapes(root, 4, split='val')
    write_tiny_detection_config(
        'tiny.py', 'configs/maskrcnn_crossformer_s_fpn_1x_coco.py', train,
        val, train_cfg=dict(max_epochs=1))
    # mim train mmdet tiny.py

    make_ade_shapes('ade')
    write_tiny_segmentation_config(
        'tiny.py', 'configs/upernet_crossformer_s_160k_ade20k.py', 'ade')
"""
import copy
import os.path as osp
from typing import Dict, List, Tuple

from helpers.archs import TINY_ARCH
from mmengine.config import Config

# Mask R-CNN's neck and heads at 64 channels (not 256, and 1024 for the box
# head's fully connected layers), as a ``model`` override: on a CPU they
# would take most of a training step's time (and their gradients most of a
# DDP all-reduce), and their weights with the optimizer's state a 250 MB
# checkpoint (4 MB narrowed).
MASK_RCNN_NARROW_HEADS = dict(
    neck=dict(out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=64),
        mask_roi_extractor=dict(out_channels=64),
        mask_head=dict(in_channels=64, conv_out_channels=64)))


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
    ``val`` (both returned by
    :func:`mmcrossformer.datasets.make_coco_shapes`) in the main process,
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
    :func:`mmcrossformer.datasets.make_coco_shapes`) on a CPU:
    :func:`tiny_detector_overrides` (``arch``, one class per shape),
    :func:`mmdet_data_overrides` (pipelines scaled by ``factor``) and
    ``overrides`` on top (e.g.
    ``train_cfg=dict(max_epochs=1)``; a ``model`` entry is merged into the
    model overrides). Returns ``path``."""
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


def tiny_segmentor_overrides(model: dict,
                             arch: dict = TINY_ARCH,
                             channels: int = 16,
                             crop_size: Tuple[int, int] = (64, 64)) -> dict:
    """Overrides (to merge into ``cfg.model``) that shrink a CrossFormer
    segmentor config: the reduced ``arch``, no pretrained weights, every head
    / neck at ``channels`` with inputs matching the arch, and the training
    pad size ``crop_size``. Works for UperNet (+ FCN auxiliary head) and
    Semantic FPN configs; everything else stays as the config sets it.
    """
    dims = [arch['embed_dims'] * 2**i for i in range(len(arch['depths']))]
    out = dict(
        data_preprocessor=dict(size=tuple(crop_size)),
        # _delete_: the config's arch is a preset name, this a dict.
        backbone=dict(arch=dict(_delete_=True, **arch), init_cfg=None))
    neck = model.get('neck')
    if neck:
        out['neck'] = dict(in_channels=dims, out_channels=channels)
        head_in = [channels] * len(dims)
    else:
        head_in = [dims[i] for i in model['decode_head']['in_index']]
    out['decode_head'] = dict(in_channels=head_in, channels=channels)
    aux = model.get('auxiliary_head')
    if aux:
        out['auxiliary_head'] = dict(
            in_channels=dims[aux['in_index']], channels=channels)
    return out


def mmseg_data_overrides(cfg, data_root: str, factor: float = 1.) -> Dict:
    """Config overrides that train, validate and test on the ADE20K-layout
    dataset in ``data_root`` (from
    :func:`helpers.ade_shapes.make_ade_shapes`) in the main process, with
    the config's own pipelines scaled by ``factor``: the data loaders' and
    the top-level ``train_pipeline`` / ``test_pipeline`` / ``tta_pipeline``
    (``mmseg.apis.inference_model`` reads ``test_pipeline``, ``--tta``
    ``tta_pipeline``)."""

    def loader(name: str) -> dict:
        pipeline = cfg[name]['dataset']['pipeline']
        return dict(
            num_workers=0,
            persistent_workers=False,
            dataset=dict(data_root=data_root,
                         pipeline=shrink_pipeline(pipeline, factor)))

    out = {name: loader(name) for name in
           ('train_dataloader', 'val_dataloader', 'test_dataloader')}
    for name in ('train_pipeline', 'test_pipeline', 'tta_pipeline'):
        if name in cfg:
            out[name] = shrink_pipeline(cfg[name], factor)
    return out


def write_tiny_segmentation_config(path: str,
                                   config: str,
                                   data_root: str,
                                   factor: float = 1 / 8,
                                   arch: dict = TINY_ARCH,
                                   **overrides) -> str:
    """Write a config that inherits the segmentation ``config`` and trains
    it on the generated dataset in ``data_root`` on a CPU: the config's
    ``crop_size`` and pipelines scaled by ``factor``,
    :func:`tiny_segmentor_overrides` (``arch``, the scaled crop as the pad
    size), :func:`mmseg_data_overrides` and ``overrides`` on top (e.g.
    ``train_cfg=dict(max_iters=12)``; a ``model`` entry is merged into the
    model overrides). Returns ``path``."""
    cfg = Config.fromfile(config)
    crop = tuple(int(s * factor) for s in cfg.crop_size)
    model = _merge(tiny_segmentor_overrides(cfg.model, arch, crop_size=crop),
                   overrides.pop('model', {}))
    settings = dict(crop_size=crop, model=model,
                    **mmseg_data_overrides(cfg, data_root, factor))
    return write_derived_config(path, osp.abspath(config),
                                _merge(settings, overrides))
