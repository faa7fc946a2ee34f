"""The ``arch`` presets of :class:`~mmcrossformer.models.CrossFormer`: the
official ImageNet models of CrossFormer (ICLR 2022) and CrossFormer++
(TPAMI 2023), with their stochastic-depth rates."""
from typing import Dict

ESSENTIAL_KEYS = ('embed_dims', 'depths', 'num_heads')
# CrossFormer++ turns on both of its switches.
_PP = dict(acl=True, lda_mode='region')

ARCH_ZOO: Dict[str, dict] = {
    **dict.fromkeys(['t', 'tiny'], {
        'embed_dims': 64, 'depths': [1, 1, 8, 6],
        'num_heads': [2, 4, 8, 16], 'drop_path_rate': 0.1}),
    **dict.fromkeys(['s', 'small'], {
        'embed_dims': 96, 'depths': [2, 2, 6, 2],
        'num_heads': [3, 6, 12, 24], 'drop_path_rate': 0.2}),
    **dict.fromkeys(['b', 'base'], {
        'embed_dims': 96, 'depths': [2, 2, 18, 2],
        'num_heads': [3, 6, 12, 24], 'drop_path_rate': 0.3}),
    **dict.fromkeys(['l', 'large'], {
        'embed_dims': 128, 'depths': [2, 2, 18, 2],
        'num_heads': [4, 8, 16, 32], 'drop_path_rate': 0.5}),
    **dict.fromkeys(['pp-s', 'pp-small'], {
        'embed_dims': 64, 'depths': [2, 2, 18, 2],
        'num_heads': [2, 4, 8, 16], 'drop_path_rate': 0.2, **_PP}),
    **dict.fromkeys(['pp-b', 'pp-base'], {
        'embed_dims': 96, 'depths': [2, 2, 18, 2],
        'num_heads': [3, 6, 12, 24], 'drop_path_rate': 0.3, **_PP}),
    **dict.fromkeys(['pp-l', 'pp-large'], {
        'embed_dims': 128, 'depths': [2, 2, 18, 2],
        'num_heads': [4, 8, 16, 32], 'drop_path_rate': 0.5, **_PP}),
    **dict.fromkeys(['pp-h', 'pp-huge'], {
        'embed_dims': 128, 'depths': [6, 6, 18, 2],
        'num_heads': [4, 8, 16, 32], 'drop_path_rate': 0.5, **_PP}),
}  # yapf: disable


def preset_name(embed_dims: int, depths, num_heads, acl: bool) -> str:
    """The long name of the preset with these widths, depths, heads and
    cooling layers (e.g. ``'small'``, ``'pp-small'``), or ``'custom'``."""
    for name, preset in ARCH_ZOO.items():
        if len(name.replace('pp-', '')) > 1 and (  # long names only
                preset['embed_dims'] == embed_dims
                and list(preset['depths']) == list(depths)
                and list(preset['num_heads']) == list(num_heads)
                and preset.get('acl', False) == acl):
            return name
    return 'custom'


def display_name(variant: str, acl: bool = False) -> str:
    """``'small'`` -> ``'CrossFormer-S'``, ``'pp-small'`` ->
    ``'CrossFormer++-S'``; a custom architecture -> ``'custom CrossFormer'``
    (``'custom CrossFormer++'`` with cooling layers)."""
    family = 'CrossFormer++' if acl else 'CrossFormer'
    if variant == 'custom':
        return f'custom {family}'
    return f'{family}-{variant.replace("pp-", "")[0].upper()}'
