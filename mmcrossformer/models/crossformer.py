"""CrossFormer backbone: CrossFormer (Wang et al., "CrossFormer: A Versatile
Vision Transformer Hinging on Cross-Scale Attention", ICLR 2022) and
CrossFormer++ (TPAMI 2023).

Design note. A stage is a stack of blocks that alternate short-distance (SDA,
even blocks) and long-distance attention (LDA, odd blocks); grouping is a
permutation of the padded ``(B, Hp, Wp, C)`` map (see ``grouping.py``):

- SDA: ``(B, Hp/G, G, Wp/G, G, C) -> (B, Hp/G, Wp/G, G, G, C)``: GxG windows of
  adjacent embeddings.
- LDA, ``lda_mode='image'`` (ICLR): ``(B, Hp/I, I, Wp/I, I, C) -> (B, I, I,
  Hp/I, Wp/I, C)``: embeddings sampled every I rows and columns.
- LDA, ``lda_mode='region'`` (CrossFormer++): ``(B, Rh, G, I, Rw, G, I, C) ->
  (B, Rh, Rw, I, I, G, G, C)``: GxG groups sampled every I inside
  ``(G*I) x (G*I)`` regions.

CrossFormer++ also adds activation cooling layers (``cooling.py``) to every
third block. Everything that depends on the input size (padding, group
shape, the SDA fallback for small maps) is decided per call and never
stored, so an output does not depend on what ran before (the official
``forward`` mutates ``lsda_flag`` and ``group_size``).
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.logging import MMLogger
from mmengine.model import BaseModule, ModuleList
from mmengine.model.weight_init import trunc_normal_
from mmengine.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from .block import CrossFormerBlock
from .checkpoint import CheckpointError, backbone_state_dict
from .cooling import has_cooling_layer
from .embedding import CrossScaleEmbedding
from .grouping import LONG_IMAGE, check_lda_mode
from .presets import ARCH_ZOO, ESSENTIAL_KEYS, display_name, preset_name


class CrossFormerStage(BaseModule):
    """Blocks alternating SDA / LDA, then an optional merging layer.

    ``forward`` returns the stage's output map (before merging) and the
    merged tokens for the next stage.
    """

    def __init__(self,
                 embed_dims: int,
                 depth: int,
                 num_heads: int,
                 group_size: int,
                 interval: int,
                 drop_path_rates: Sequence[float],
                 merge_sizes: Sequence[int] = (),
                 acl: bool = False,
                 norm_cfg: dict = dict(type='LN'),
                 with_cp: bool = False,
                 init_cfg=None,
                 **block_kwargs):
        super().__init__(init_cfg=init_cfg)
        self.blocks = ModuleList(
            CrossFormerBlock(
                embed_dims,
                num_heads,
                group_size=group_size,
                interval=interval,
                long_distance=i % 2 == 1,
                acl=acl and has_cooling_layer(i, depth),
                drop_path_rate=drop_path_rates[i],
                norm_cfg=norm_cfg,
                with_cp=with_cp,
                **block_kwargs) for i in range(depth))
        self.downsample = CrossScaleEmbedding(
            embed_dims, 2 * embed_dims, merge_sizes, stride=2,
            norm_cfg=norm_cfg, norm_before=True) if merge_sizes else None

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int]):
        """``(B, H*W, C)`` -> ``(B, C, H, W)`` output map and the next
        stage's ``(B, H'*W', 2C)`` tokens with their ``(H', W')``."""
        for block in self.blocks:
            x = block(x, hw_shape)
        out = x.transpose(1, 2).reshape(x.shape[0], -1, *hw_shape)
        if self.downsample is None:
            return out, x, hw_shape
        x, hw_shape = self.downsample(out)
        return out, x, hw_shape


@MODELS.register_module()
class CrossFormer(BaseModule):
    """CrossFormer and CrossFormer++ backbone for classification, detection
    and segmentation.

    Args:
        arch (str | dict): CrossFormer ``'tiny'``, ``'small'``, ``'base'``,
            ``'large'`` (or ``'t'``, ``'s'``, ``'b'``, ``'l'``),
            CrossFormer++ ``'pp-small'``, ``'pp-base'``, ``'pp-large'``,
            ``'pp-huge'`` (or ``'pp-s'``, ``'pp-b'``, ``'pp-l'``,
            ``'pp-h'``), or a dict with ``embed_dims``, ``depths`` and
            ``num_heads`` (and optionally ``drop_path_rate``, ``acl``,
            ``lda_mode``).
        in_channels (int): Image channels. Default: 3.
        patch_sizes (Sequence[int]): Stem kernels, stride 4.
            Default: (4, 8, 16, 32).
        merge_sizes (Sequence[Sequence[int]]): Kernels of the three merging
            layers, stride 2. Default: ((2, 4), (2, 4), (2, 4)).
        group_size (int | Sequence[int]): SDA group side ``G``, one for all
            stages or one per stage. Default: 7.
        interval (int | Sequence[int]): LDA interval ``I`` per stage.
            Default: (8, 4, 2, 1).
        acl (bool, optional): Activation cooling layers in blocks 2, 5,
            8, ... of each stage, never a stage's last block
            (CrossFormer++). None takes the arch preset (on for ``pp-*``,
            off otherwise). Default: None.
        lda_mode (str, optional): Long-distance grouping: ``'image'``,
            (H/I)x(W/I) groups spanning the map (CrossFormer, ICLR code), or
            ``'region'``, GxG groups sampled every I inside (G*I)x(G*I)
            regions (CrossFormer++, official main branch, which also runs
            ICLR weights this way). Maps whose short side is at most G use
            short-distance groups of side ``min(H, W)`` in ``'image'`` mode
            and one group of the whole map in ``'region'`` mode, as the
            official codes compute. None takes the preset (``'region'`` for
            ``pp-*``, ``'image'`` otherwise). Default: None.
        mlp_ratio (float): MLP hidden ratio. Default: 4.
        qkv_bias (bool): Default: True.
        qk_scale (float, optional): Default: None (``head_dims ** -0.5``).
        drop_rate (float): Dropout after the embedding, attention projection
            and MLP. Default: 0.
        attn_drop_rate (float): Dropout of attention weights. Default: 0.
        drop_path_rate (float, optional): Stochastic depth, rising linearly
            over blocks to this value. None takes the arch preset (the
            official ImageNet value). Default: None.
        out_indices (Sequence[int]): Stages whose maps are returned. Stages
            after the last one returned are not built (they would only hold
            parameters without gradients, which DDP refuses).
            Default: (0, 1, 2, 3).
        final_norm (bool): LayerNorm on the last stage's output, as the
            official classifier applies before pooling; the last stage must
            then be returned. Default: False.
        out_norms (bool): A norm layer ``norm{i}`` (``norm_cfg``) on each
            returned map, as mmdet's Swin. The official dense-prediction
            backbone has none, so official and ImageNet checkpoints leave
            them at their initialisation (reported on loading); they help
            training from scratch, where the raw stage outputs reach
            magnitudes of tens and a small Mask R-CNN stalls. Not
            combinable with ``final_norm``. Default: False.
        frozen_stages (int): Freeze the stem and stages ``0..frozen_stages``
            (-1: nothing). Default: -1.
        with_cp (bool): Gradient checkpointing of every block. Default: False.
        norm_eval (bool): Keep norm layers in eval mode. Default: False.
        norm_cfg (dict): Norm layers. Default: ``dict(type='LN')``.
        act_cfg (dict): MLP activation. Default: ``dict(type='GELU')``.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=...,
            prefix='backbone.')`` loads a converted checkpoint (see
            ``tools/model_converters/crossformer2mm.py``) or an official one
            as released (detected and mapped). A CrossFormer++ checkpoint
            (with cooling layers) needs ``acl=True`` and an ICLR one
            ``acl=False``; loading says so otherwise.

    Shapes: ``forward`` takes ``(B, in_channels, H, W)`` for any ``H, W`` and
    returns, for each ``i`` in ``out_indices``, ``(B, embed_dims * 2**i,
    ceil(H / 2**(i+2)), ceil(W / 2**(i+2)))``.

    Example:
        >>> import torch, mmcrossformer
        >>> from mmengine.registry import MODELS
        >>> model = MODELS.build(dict(type='CrossFormer', arch='small'))
        >>> [tuple(o.shape) for o in model(torch.rand(1, 3, 250, 333))]
        [(1, 96, 63, 84), (1, 192, 32, 42), (1, 384, 16, 21), (1, 768, 8, 11)]
        >>> model = MODELS.build(dict(type='CrossFormer', arch='pp-small'))
        >>> model.acl, model.lda_mode
        (True, 'region')
    """
    arch_zoo = ARCH_ZOO
    essential_keys = ESSENTIAL_KEYS

    def __init__(self,
                 arch: Union[str, Dict] = 'tiny',
                 in_channels: int = 3,
                 patch_sizes: Sequence[int] = (4, 8, 16, 32),
                 merge_sizes: Sequence[Sequence[int]] = ((2, 4), (2, 4),
                                                         (2, 4)),
                 group_size: Union[int, Sequence[int]] = 7,
                 interval: Union[int, Sequence[int]] = (8, 4, 2, 1),
                 acl: Optional[bool] = None,
                 lda_mode: Optional[str] = None,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = True,
                 qk_scale=None,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate=None,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 final_norm: bool = False,
                 out_norms: bool = False,
                 frozen_stages: int = -1,
                 with_cp: bool = False,
                 norm_eval: bool = False,
                 norm_cfg: dict = dict(type='LN'),
                 act_cfg: dict = dict(type='GELU'),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        arch = self._parse_arch(arch)
        self.embed_dims = arch['embed_dims']
        self.depths = list(arch['depths'])
        self.num_heads = list(arch['num_heads'])
        num_stages = self.num_stages = len(self.depths)
        if drop_path_rate is None:
            drop_path_rate = arch.get('drop_path_rate', 0.)
        self.acl = bool(arch.get('acl', False) if acl is None else acl)
        self.lda_mode = check_lda_mode(
            arch.get('lda_mode', LONG_IMAGE) if lda_mode is None else lda_mode)
        self.group_size = self._per_stage(group_size, 'group_size')
        self.interval = self._per_stage(interval, 'interval')
        merge_sizes = [tuple(m) for m in merge_sizes]
        if len(merge_sizes) != num_stages - 1:
            raise ValueError(f'merge_sizes needs {num_stages - 1} entries '
                             f'(one per merging layer between {num_stages} '
                             f'stages), got {len(merge_sizes)}')
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        out_indices = [i + num_stages if i < 0 else i for i in out_indices]
        for i in out_indices:
            if not 0 <= i < num_stages:
                raise ValueError(f'out_indices {i} is out of range for '
                                 f'{num_stages} stages (valid: 0..'
                                 f'{num_stages - 1}, or negative)')
        self.out_indices = tuple(out_indices)
        if final_norm and num_stages - 1 not in self.out_indices:
            raise ValueError(
                f'final_norm normalises the last stage ({num_stages - 1}), '
                f'which out_indices {self.out_indices} does not return: add '
                f'{num_stages - 1} to out_indices or set final_norm=False')
        # Stages after the last returned one would get no gradient.
        num_built = max(self.out_indices) + 1
        if not -1 <= frozen_stages < num_stages:
            raise ValueError(f'frozen_stages must be -1..{num_stages - 1}, '
                             f'got {frozen_stages}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.in_channels = in_channels
        self.channels = [self.embed_dims * 2**i for i in range(num_stages)]
        for i, (dims, heads) in enumerate(zip(self.channels, self.num_heads)):
            if dims % heads:
                raise ValueError(
                    f'stage {i} has {dims} channels (embed_dims '
                    f'{self.embed_dims} * 2**{i}), not divisible by '
                    f'num_heads[{i}] = {heads}')

        self.patch_embed = CrossScaleEmbedding(
            in_channels, self.embed_dims, patch_sizes, stride=4,
            norm_cfg=norm_cfg, norm_before=False)
        self.drop_after_pos = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(self.depths)).tolist()
        self.stages = ModuleList()
        for i in range(num_built):
            start = sum(self.depths[:i])
            self.stages.append(
                CrossFormerStage(
                    self.channels[i],
                    self.depths[i],
                    self.num_heads[i],
                    group_size=self.group_size[i],
                    interval=self.interval[i],
                    drop_path_rates=dpr[start:start + self.depths[i]],
                    merge_sizes=merge_sizes[i] if i < num_built - 1 else (),
                    acl=self.acl,
                    lda_mode=self.lda_mode,
                    norm_cfg=norm_cfg,
                    with_cp=with_cp,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop_rate=drop_rate,
                    attn_drop_rate=attn_drop_rate,
                    act_cfg=act_cfg))
        if final_norm and out_norms:
            raise ValueError(
                'final_norm and out_norms both normalise the last stage\'s '
                'output; set one of them (final_norm for classification, '
                'out_norms for dense prediction)')
        self.final_norm = final_norm
        if final_norm:
            self.norm = build_norm_layer(norm_cfg, self.channels[-1])[1]
        self.out_norms = out_norms
        if out_norms:
            for i in self.out_indices:
                self.add_module(
                    f'norm{i}',
                    build_norm_layer(norm_cfg, self.channels[i])[1])
        self._freeze_stages()

    # ------------------------------------------------------------ arguments
    def _parse_arch(self, arch) -> dict:
        if isinstance(arch, str):
            key = arch.lower()
            if key not in self.arch_zoo:
                raise ValueError(
                    f'unknown arch {arch!r}; choose one of '
                    f'{sorted(set(self.arch_zoo))} or pass a dict with '
                    f'{list(self.essential_keys)}')
            return copy.deepcopy(self.arch_zoo[key])
        if not isinstance(arch, dict):
            raise TypeError(f'arch must be a str or a dict, got {type(arch)}')
        missing = [k for k in self.essential_keys if k not in arch]
        if missing:
            raise ValueError(f'arch dict is missing {missing}; it needs '
                             f'{list(self.essential_keys)}')
        arch = copy.deepcopy(arch)
        if isinstance(arch['num_heads'], int):
            arch['num_heads'] = [arch['num_heads']] * len(arch['depths'])
        if len(arch['depths']) != len(arch['num_heads']):
            raise ValueError(
                f'arch depths {list(arch["depths"])} and num_heads '
                f'{list(arch["num_heads"])} must have one entry per stage '
                f'(got {len(arch["depths"])} and {len(arch["num_heads"])})')
        return arch

    def _per_stage(self, value, name: str) -> List[int]:
        if isinstance(value, int):
            return [value] * self.num_stages
        value = list(value)
        if len(value) != self.num_stages:
            raise ValueError(f'{name} needs one value per stage '
                             f'({self.num_stages}), got {value}')
        return value

    # ------------------------------------------------------------ training
    def _freeze_stages(self):
        if self.frozen_stages < 0:
            return
        frozen = [self.patch_embed]
        for i in range(min(self.frozen_stages + 1, len(self.stages))):
            frozen += [self.stages[i], self._output_norm(i)]
        for module in (m for m in frozen if m is not None):
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def _output_norm(self, i: int):
        """The norm applied to stage ``i``'s returned map, or None:
        ``norm{i}`` (``out_norms``) or, for the last stage, ``norm``
        (``final_norm``)."""
        if self.final_norm and i == self.num_stages - 1:
            return self.norm
        return getattr(self, f'norm{i}', None)

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, (_BatchNorm, nn.LayerNorm, nn.GroupNorm)):
                    m.eval()
        return self

    # ------------------------------------------------------------ weights
    def init_weights(self):
        if (isinstance(self.init_cfg, dict)
                and self.init_cfg.get('type') == 'Pretrained'):
            self._load_pretrained(self.init_cfg)
            return
        if self.init_cfg is not None:
            super().init_weights()
            return
        # The official initialisation: truncated normal Linear weights.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.weight, 1.0)
                nn.init.constant_(m.bias, 0)

    def _load_pretrained(self, init_cfg: dict):
        from mmengine.runner.checkpoint import (CheckpointLoader,
                                                load_state_dict)
        logger = MMLogger.get_current_instance()
        if 'checkpoint' not in init_cfg:
            raise KeyError("init_cfg of type 'Pretrained' needs 'checkpoint'")
        ckpt = CheckpointLoader.load_checkpoint(
            init_cfg['checkpoint'], logger=logger, map_location='cpu')
        state_dict, info = backbone_state_dict(
            ckpt, prefix=init_cfg.get('prefix'))
        report = (f"{display_name(info['variant'], info['acl'])} "
                  f"({info['layout']} layout), {len(state_dict)} backbone "
                  'tensors')
        if info['layout'] != 'mm':
            report += (f" (mapped from official names, {info['dropped']} "
                       'group-size buffers dropped)')
        logger.info(f'CrossFormer: loading {init_cfg["checkpoint"]}: '
                    f'{report}')
        load_state_dict(self, state_dict, strict=False, logger=logger)
        fresh = [f'norm{i}' for i in self.out_indices if self.out_norms
                 and not any(k.startswith(f'norm{i}.') for k in state_dict)]
        if fresh:
            logger.info(f'CrossFormer: {", ".join(fresh)} (out_norms) are '
                        'not in the checkpoint and keep their '
                        'initialisation (weight 1, bias 0)')

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Every load (init_cfg, mmpretrain / mmdet / mmseg checkpoints,
        # load_state_dict) passes here: refuse weights whose cooling layers
        # do not match ours rather than leave random ones or drop trained
        # ones.
        self._check_cooling_layers(
            [k[len(prefix):] for k in state_dict if k.startswith(prefix)])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _check_cooling_layers(self, keys: Sequence[str]) -> None:
        block_keys = [k for k in keys if k.startswith('stages.')
                      and '.blocks.' in k]
        if not block_keys:
            return
        theirs = any('.cooling.' in k for k in block_keys)
        ours = any(block.cooling is not None for stage in self.stages
                   for block in stage.blocks)
        if theirs and not ours:
            raise CheckpointError(
                'the checkpoint is a CrossFormer++ one (its blocks have '
                'activation cooling layers, `cooling.*`), but this backbone '
                "has none: set acl=True (the arch='pp-*' presets do, with "
                "lda_mode='region')")
        if ours and not theirs:
            raise CheckpointError(
                'the checkpoint is a CrossFormer (ICLR) one, without '
                'activation cooling layers, but this backbone has them '
                f'(acl=True, arch {self._arch_name()}): set acl=False, or '
                'load a CrossFormer++ checkpoint')

    def _arch_name(self) -> str:
        return preset_name(self.embed_dims, self.depths, self.num_heads,
                           self.acl)

    # ------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``(B, in_channels, H, W)`` -> tuple of ``(B, C_i, H_i, W_i)``
        maps for ``out_indices``; see the class docstring for the sizes."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'CrossFormer expects (B, {self.in_channels}, H, W) input '
                f'(in_channels={self.in_channels}), got {tuple(x.shape)}')
        x, hw_shape = self.patch_embed(x)
        x = self.drop_after_pos(x)
        outs = []
        for i, stage in enumerate(self.stages):
            out, x, next_hw_shape = stage(x, hw_shape)
            if i in self.out_indices:
                norm = self._output_norm(i)
                if norm is not None:  # over channels: (B, H, W, C)
                    out = norm(out.permute(0, 2, 3, 1)).permute(
                        0, 3, 1, 2).contiguous()
                outs.append(out)
            hw_shape = next_hw_shape
        return tuple(outs)
