"""Official CrossFormer / CrossFormer++ state dicts -> this package's names.

Pure functions on state dicts (no file I/O; see
:mod:`mmcrossformer.fileio` and ``tools/model_converters/crossformer2mm.py``).
Conversion only renames: DPB makes no weight depend on the group size, so
every tensor is kept unchanged except the group-size-dependent buffers
(``attn.biases``, ``attn.relative_position_index``, ``attn_mask``), which are
dropped where a file holds them.

Layouts understood (after unwrapping ``{'model': ...}`` / ``{'state_dict':
...}`` and stripping ``module.``):

- ``imagenet``: the official classifier (``patch_embed.projs.N``,
  ``layers.S...``, ``norm``, ``head``) -> ``backbone.*`` + ``head.fc.*``
  (mmpretrain's ``ImageClassifier`` with ``LinearClsHead``).
- ``dense``: a published COCO / ADE20K model (``backbone.layers.S...`` under
  mmdet / mmseg heads) -> ``backbone.*`` renamed, heads untouched.
- ``mm``: already converted (``backbone.stages.S...`` or ``stages.S...``).

CrossFormer++ files are the same layouts plus the activation cooling layers
(``layers.S.blocks.B.ex_conv`` / ``ex_ln`` ->
``stages.S.blocks.B.cooling.conv`` / ``cooling.norm``).
"""
import re
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import torch

from .presets import preset_name

OFFICIAL_MARKER = 'patch_embed.projs.0.weight'
MM_MARKER = 'patch_embed.projections.0.weight'
DROPPED_BUFFERS = ('attn.biases', 'attn.relative_position_index',
                   'attn_mask')

# Official backbone key -> ours; applied in order, first match wins.
_BLOCK = r'^layers\.(\d+)\.blocks\.(\d+)\.'
_BACKBONE_RULES = [
    (r'^patch_embed\.projs\.(\d+)\.', r'patch_embed.projections.\1.'),
    (r'^patch_embed\.norm\.', 'patch_embed.norm.'),
    (_BLOCK + r'attn\.pos\.pos_proj\.',
     r'stages.\1.blocks.\2.attn.position_bias.proj.'),
    (_BLOCK + r'attn\.pos\.pos([123])\.(\d+)\.',
     lambda m: f'stages.{m[1]}.blocks.{m[2]}.attn.position_bias.layers.'
     f'{int(m[3]) - 1}.{m[4]}.'),
    (_BLOCK + r'attn\.(qkv|proj)\.', r'stages.\1.blocks.\2.attn.\3.'),
    (_BLOCK + r'(norm1|norm2)\.', r'stages.\1.blocks.\2.\3.'),
    (_BLOCK + r'mlp\.fc1\.', r'stages.\1.blocks.\2.ffn.layers.0.0.'),
    (_BLOCK + r'mlp\.fc2\.', r'stages.\1.blocks.\2.ffn.layers.1.'),
    (_BLOCK + r'ex_conv\.', r'stages.\1.blocks.\2.cooling.conv.'),
    (_BLOCK + r'ex_ln\.', r'stages.\1.blocks.\2.cooling.norm.'),
    (r'^layers\.(\d+)\.downsample\.norm\.', r'stages.\1.downsample.norm.'),
    (r'^layers\.(\d+)\.downsample\.reductions\.(\d+)\.',
     r'stages.\1.downsample.projections.\2.'),
    (r'^norm\.', 'norm.'),
]


class CheckpointError(ValueError):
    """A checkpoint that cannot be converted or loaded; the message says why
    and what to do."""


def unwrap_state_dict(checkpoint) -> Dict[str, torch.Tensor]:
    """The state dict of a checkpoint as saved by the official code, mmengine
    or by hand, without ``module.`` prefixes."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f'expected a dict (a state dict or a checkpoint holding one), '
            f'got {type(checkpoint).__name__}')
    for key in ('state_dict', 'model'):
        if key in checkpoint and isinstance(checkpoint[key], dict):
            checkpoint = checkpoint[key]
            break
    state_dict = OrderedDict()
    for key, value in checkpoint.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f'entry {key!r} is a {type(value).__name__}, not a tensor: '
                "this is not a state dict, nor a checkpoint with 'model' or "
                "'state_dict'")
        state_dict[key[7:] if key.startswith('module.') else key] = value
    return state_dict


def convert_backbone_key(key: str) -> Optional[str]:
    """Our name for an official backbone key (without ``backbone.``), or None
    for the buffers that are dropped."""
    if key.endswith(DROPPED_BUFFERS):
        return None
    for pattern, replacement in _BACKBONE_RULES:
        new_key, count = re.subn(pattern, replacement, key)
        if count:
            return new_key
    raise CheckpointError(f'unknown CrossFormer backbone key {key!r}')


def detect_layout(state_dict: Dict[str, torch.Tensor]) -> str:
    """``'imagenet'``, ``'dense'`` or ``'mm'``; a clear error otherwise."""
    if OFFICIAL_MARKER in state_dict:
        return 'imagenet'
    if 'backbone.' + OFFICIAL_MARKER in state_dict:
        return 'dense'
    if MM_MARKER in state_dict or 'backbone.' + MM_MARKER in state_dict:
        return 'mm'
    sample = ', '.join(repr(k) for k in list(state_dict)[:4]) or 'no keys'
    raise CheckpointError(
        'not a CrossFormer checkpoint: expected official keys such as '
        f"'{OFFICIAL_MARKER}' (ImageNet) or 'backbone.{OFFICIAL_MARKER}' "
        f"(COCO / ADE20K), or converted ones such as 'backbone.{MM_MARKER}'; "
        f'found {sample}')


def describe_backbone(state_dict: Dict[str, torch.Tensor],
                      prefix: str = '') -> Dict:
    """Read ``embed_dims``, ``depths``, ``num_heads`` and ``acl`` (whether
    the blocks have activation cooling layers, i.e. CrossFormer++) off an
    official or converted backbone state dict, and name the matching preset
    (``variant``, e.g. ``'small'`` or ``'pp-small'``, else ``'custom'``)."""
    converted = prefix + MM_MARKER in state_dict
    stage_key = 'stages' if converted else 'layers'
    cooling_key = 'cooling.conv.weight' if converted else 'ex_conv.weight'
    norm = state_dict[prefix + 'patch_embed.norm.weight']
    depths, num_heads, acl = [], [], False
    pattern = re.compile(
        re.escape(prefix) + stage_key + r'\.(\d+)\.blocks\.(\d+)\.(.*)')
    for key in state_dict:
        m = pattern.match(key)
        if m:
            stage, block = int(m[1]), int(m[2])
            while len(depths) <= stage:
                depths.append(0)
            depths[stage] = max(depths[stage], block + 1)
            acl = acl or m[3] == cooling_key
    head_key = ('attn.position_bias.layers.2.2.weight'
                if converted else 'attn.pos.pos3.2.weight')
    for stage in range(len(depths)):
        weight = state_dict[f'{prefix}{stage_key}.{stage}.blocks.0.{head_key}']
        num_heads.append(weight.shape[0])
    arch = dict(embed_dims=norm.shape[0], depths=depths, num_heads=num_heads,
                acl=acl)
    return dict(variant=preset_name(**arch), **arch)


def convert_state_dict(state_dict: Dict[str, torch.Tensor]
                       ) -> Tuple[Dict[str, torch.Tensor], Dict]:
    """Convert an (unwrapped) official state dict to this package's layout.

    Returns:
        tuple: the mm state dict (``backbone.*`` plus heads) and a report
        dict with ``layout``, ``variant``, ``embed_dims``, ``depths``,
        ``num_heads``, ``acl``, ``num_tensors`` and ``dropped`` (buffers
        removed).
    """
    layout = detect_layout(state_dict)
    if layout == 'mm':
        prefix = 'backbone.' if 'backbone.' + MM_MARKER in state_dict else ''
        converted = OrderedDict(
            (k if prefix else 'backbone.' + k, v)
            for k, v in state_dict.items())
        info = describe_backbone(converted, 'backbone.')
        return converted, dict(layout='mm', num_tensors=len(converted),
                               dropped=0, **info)
    prefix = 'backbone.' if layout == 'dense' else ''
    info = describe_backbone(state_dict, prefix)
    converted, dropped = OrderedDict(), 0
    for key, value in state_dict.items():
        if layout == 'imagenet' and key.startswith('head.'):
            converted['head.fc.' + key[5:]] = value
            continue
        if not key.startswith(prefix):  # mmdet / mmseg heads: unchanged
            converted[key] = value
            continue
        new_key = convert_backbone_key(key[len(prefix):])
        if new_key is None:
            dropped += 1
        else:
            converted['backbone.' + new_key] = value
    return converted, dict(layout=layout, num_tensors=len(converted),
                           dropped=dropped, **info)


def backbone_state_dict(checkpoint, prefix: Optional[str] = 'backbone.'
                        ) -> Tuple[Dict[str, torch.Tensor], Dict]:
    """The backbone weights of any understood checkpoint, in our names and
    without prefix (what ``CrossFormer.init_weights`` loads).

    Returns:
        tuple: the state dict and the report of :func:`convert_state_dict`.
    """
    converted, info = convert_state_dict(unwrap_state_dict(checkpoint))
    prefix = prefix or 'backbone.'
    selected = OrderedDict((k[len(prefix):], v) for k, v in converted.items()
                           if k.startswith(prefix))
    if not selected:
        raise CheckpointError(f'no keys start with prefix {prefix!r}')
    return selected, info
