"""Official CrossFormer checkpoints -> this project's module names.

Conversion only renames: DPB makes no weight depend on the group size, so
every tensor is kept unchanged except the group-size-dependent buffers
(``attn.biases``, ``attn.relative_position_index``), which are dropped.

Layouts understood (after unwrapping ``{'model': ...}`` / ``{'state_dict':
...}`` and stripping ``module.``):

- ``imagenet``: the official classifier (``patch_embed.projs.N``,
  ``layers.S...``, ``norm``, ``head``) -> ``backbone.*`` + ``head.fc.*``
  (mmpretrain's ``ImageClassifier`` with ``LinearClsHead``).
- ``dense``: a published COCO / ADE20K model (``backbone.layers.S...`` under
  mmdet / mmseg heads) -> ``backbone.*`` renamed, heads untouched.
- ``mm``: already converted (``backbone.stages.S...`` or ``stages.S...``).
"""
import re
import sys
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import torch

OFFICIAL_MARKER = 'patch_embed.projs.0.weight'
MM_MARKER = 'patch_embed.projections.0.weight'
DROPPED_BUFFERS = ('attn.biases', 'attn.relative_position_index')

# Official backbone key -> ours; applied in order, first match wins.
_BACKBONE_RULES = [
    (r'^patch_embed\.projs\.(\d+)\.', r'patch_embed.projections.\1.'),
    (r'^patch_embed\.norm\.', 'patch_embed.norm.'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.attn\.pos\.pos_proj\.',
     r'stages.\1.blocks.\2.attn.position_bias.proj.'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.attn\.pos\.pos([123])\.(\d+)\.',
     lambda m: f'stages.{m[1]}.blocks.{m[2]}.attn.position_bias.layers.'
     f'{int(m[3]) - 1}.{m[4]}.'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.attn\.(qkv|proj)\.',
     r'stages.\1.blocks.\2.attn.\3.'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.(norm1|norm2)\.',
     r'stages.\1.blocks.\2.\3.'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.',
     r'stages.\1.blocks.\2.ffn.layers.0.0.'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.',
     r'stages.\1.blocks.\2.ffn.layers.1.'),
    (r'^layers\.(\d+)\.downsample\.norm\.', r'stages.\1.downsample.norm.'),
    (r'^layers\.(\d+)\.downsample\.reductions\.(\d+)\.',
     r'stages.\1.downsample.projections.\2.'),
    (r'^norm\.', 'norm.'),
]


class CheckpointError(ValueError):
    """A checkpoint that cannot be converted; the message says why."""


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
    """Read embed_dims, depths and num_heads off an official or converted
    backbone state dict and name the matching preset (or ``'custom'``)."""
    from .models import CrossFormer
    stage_key = 'stages' if prefix + MM_MARKER in state_dict else 'layers'
    norm = state_dict[prefix + 'patch_embed.norm.weight']
    depths, num_heads = [], []
    pattern = re.compile(
        re.escape(prefix) + stage_key + r'\.(\d+)\.blocks\.(\d+)\.')
    for key in state_dict:
        m = pattern.match(key)
        if m:
            stage, block = int(m[1]), int(m[2])
            while len(depths) <= stage:
                depths.append(0)
            depths[stage] = max(depths[stage], block + 1)
    head_key = ('attn.position_bias.layers.2.2.weight'
                if stage_key == 'stages' else 'attn.pos.pos3.2.weight')
    for stage in range(len(depths)):
        weight = state_dict[f'{prefix}{stage_key}.{stage}.blocks.0.{head_key}']
        num_heads.append(weight.shape[0])
    arch = dict(embed_dims=norm.shape[0], depths=depths, num_heads=num_heads)
    variant = next((name for name, preset in CrossFormer.arch_zoo.items()
                    if len(name) > 1 and all(preset[k] == arch[k]
                                             for k in arch)), 'custom')
    return dict(variant=variant, **arch)


def convert_state_dict(state_dict: Dict[str, torch.Tensor]
                       ) -> Tuple[Dict[str, torch.Tensor], Dict]:
    """Convert an (unwrapped) official state dict to this project's layout.

    Returns:
        tuple: the mm state dict (``backbone.*`` plus heads) and a report
        dict with ``layout``, ``variant``, ``arch``, ``num_tensors``,
        ``dropped`` (buffers removed).
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
                        ) -> Tuple[Dict[str, torch.Tensor], str]:
    """The backbone weights of any understood checkpoint, in our names and
    without prefix, for ``CrossFormer.init_weights``.

    Returns:
        tuple: the state dict and a one-line report of what was mapped.
    """
    converted, info = convert_state_dict(unwrap_state_dict(checkpoint))
    prefix = prefix or 'backbone.'
    selected = OrderedDict((k[len(prefix):], v) for k, v in converted.items()
                           if k.startswith(prefix))
    if not selected:
        raise CheckpointError(f'no keys start with prefix {prefix!r}')
    report = (f"{info['layout']} layout, variant {info['variant']}, "
              f'{len(selected)} backbone tensors')
    if info['layout'] != 'mm':
        report += (f" (mapped from official names, {info['dropped']} "
                   'group-size buffers dropped)')
    return selected, report


# --------------------------------------------------------------------- files
def _sha256(path: str) -> str:
    import hashlib
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def load_checkpoint_file(path: str, allow_pickle: bool = False):
    """``torch.load`` with errors a person can act on."""
    import os
    if not os.path.exists(path):
        raise CheckpointError(f'{path}: no such file')
    if os.path.isdir(path):
        raise CheckpointError(f'{path} is a folder, not a checkpoint file')
    with open(path, 'rb') as f:
        magic = f.read(4)
    try:
        return torch.load(path, map_location='cpu',
                          weights_only=not allow_pickle)
    except Exception as e:  # torch raises many types on bad files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if 'Unsupported global' in str(e):
            raise CheckpointError(
                f'{path} holds Python objects besides tensors, which are not '
                'loaded by default because unpickling can run code. If you '
                'trust the file, re-run with --allow-pickle.') from None
        if magic == b'PK\x03\x04':
            raise CheckpointError(
                f'{path} is truncated or corrupt (a PyTorch zip checkpoint '
                f'that cannot be read: {reason}); download it again') from None
        raise CheckpointError(
            f'{path} is not a PyTorch checkpoint ({reason})') from None


def convert_file(src: str, dst: str, overwrite: bool = False,
                 allow_pickle: bool = False) -> Dict:
    """Convert ``src`` into ``dst`` atomically; returns the report."""
    import os
    import os.path as osp
    import tempfile
    if osp.exists(dst) and not overwrite:
        raise CheckpointError(
            f'{dst} exists; pass --overwrite to replace it')
    if osp.abspath(src) == osp.abspath(dst):
        raise CheckpointError('SRC and DST are the same file')
    state_dict = unwrap_state_dict(load_checkpoint_file(src, allow_pickle))
    converted, info = convert_state_dict(state_dict)
    meta = dict(
        converted_by='mmcrossformer.converters',
        source=dict(file=osp.basename(src), sha256=_sha256(src),
                    layout=info['layout']),
        arch=dict(variant=info['variant'], embed_dims=info['embed_dims'],
                  depths=list(info['depths']),
                  num_heads=list(info['num_heads'])))
    out_dir = osp.dirname(osp.abspath(dst))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir,
                               prefix=f'.{osp.basename(dst)}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(dict(state_dict=converted, meta=meta), f)
        os.replace(tmp, dst)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    return dict(info, dst=dst)


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(
        prog='crossformer2mm',
        description='Convert an official CrossFormer checkpoint (ImageNet, '
        'COCO or ADE20K) to mmcrossformer / mmpretrain / mmdet / mmseg '
        'format.')
    parser.add_argument('src', help='official checkpoint')
    parser.add_argument('dst', help='output checkpoint (.pth)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace DST if it exists')
    parser.add_argument(
        '--allow-pickle', action='store_true',
        help='load SRC with full unpickling (only for files you trust)')
    args = parser.parse_args(argv)
    try:
        info = convert_file(args.src, args.dst, args.overwrite,
                            args.allow_pickle)
    except CheckpointError as e:
        print(f'crossformer2mm: error: {e}', file=sys.stderr)
        return 2
    kind = dict(imagenet='official ImageNet classifier',
                dense='official COCO / ADE20K model',
                mm='already-converted checkpoint')[info['layout']]
    print(f"detected: {kind}, variant {info['variant']} (embed_dims "
          f"{info['embed_dims']}, depths {info['depths']}, num_heads "
          f"{info['num_heads']})")
    print(f"converted {info['num_tensors']} tensors "
          f"({info['dropped']} group-size buffers dropped)")
    print(f"wrote {info['dst']}")
    return 0
