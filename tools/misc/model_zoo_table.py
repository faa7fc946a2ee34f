"""The model-zoo tables of ``configs/README.md`` (markdown), generated from
the metafiles that ``model-index.yml`` imports: one table per task, with the
parameters and FLOPs measured here and the official results, labelled as
such.

    python tools/misc/model_zoo_table.py                           # print
    python tools/misc/model_zoo_table.py --update configs/README.md
    python tools/misc/model_zoo_table.py --check configs/README.md

``--update`` replaces only the lines between ``<!-- model-zoo:start -->``
and ``<!-- model-zoo:end -->`` and refuses a file without both markers; its
links to the configs are relative to that file's folder (printed, to the
repository root). ``--check`` writes nothing and exits with 1 if the tables
are not the generated ones.
"""
import argparse
import os.path as osp
import sys
from typing import Dict, List, Optional

from mmcrossformer.zoo import load_models, zoo_root

START = '<!-- model-zoo:start -->'
END = '<!-- model-zoo:end -->'


def config_link(config: str, link_dir: Optional[str] = None) -> str:
    """The link to ``config`` (relative to the model index's folder, e.g.
    ``configs/x.py``) from a markdown file in ``link_dir`` (None: that
    folder itself)."""
    if link_dir is None:
        return config
    target = osp.realpath(osp.join(zoo_root(), config))
    return osp.relpath(target, osp.realpath(link_dir)).replace(osp.sep, '/')


def zoo_table(models: List[Dict], task: str,
              link_dir: Optional[str] = None) -> str:
    """The markdown table of the ``models`` whose first result is
    ``task``: name and config (linked from ``link_dir``, see
    :func:`config_link`), parameters and FLOPs as measured here and as the
    official README states them, the official metrics (every metric any of
    them reports) and where the official weights are."""
    rows = [m for m in models if m['Results'][0]['Task'] == task]
    metrics = []
    for model in rows:
        for result in model['Results']:
            for metric in result['Metrics']:
                if metric not in metrics:
                    metrics.append(metric)
    header = ['model (config)', 'params', 'params (official)', 'FLOPs (HxW)',
              'FLOPs (official)',
              *(f'{metric} (official)' for metric in metrics),
              'official weights']
    lines = ['| ' + ' | '.join(header) + ' |',
             '| ' + ' | '.join(['---'] * len(header)) + ' |']
    for model in rows:
        meta = model['Metadata']
        values = {}
        for result in model['Results']:
            values.update(result['Metrics'])
        weights = model.get('Converted From', {}).get('Weights')
        official = model['Official']
        cells = [
            f"[{model['Name']}]({config_link(model['Config'], link_dir)})",
            f"{meta['Parameters'] / 1e6:.2f}M",
            official['Parameters'],
            f"{meta['FLOPs'] / 1e9:.2f}G ({meta['FLOPs Input Size']})",
            official['FLOPs'],
            *(str(values.get(metric, '-')) for metric in metrics),
            f'[official README]({weights})' if weights else 'not released',
        ]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def zoo_tables(models: List[Dict], link_dir: Optional[str] = None) -> str:
    """One :func:`zoo_table` per task, in the order the tasks appear, as
    ``## <task>`` sections."""
    tasks = []
    for model in models:
        if model['Results'][0]['Task'] not in tasks:
            tasks.append(model['Results'][0]['Task'])
    return '\n\n'.join(f'## {task}\n\n{zoo_table(models, task, link_dir)}'
                       for task in tasks)


def replace_between_markers(text: str, block: str) -> str:
    """``text`` with the lines between :data:`START` and :data:`END`
    replaced by ``block``.

    Raises:
        ValueError: A marker is missing, repeated or out of order.
    """
    lines = text.split('\n')
    starts = [i for i, line in enumerate(lines) if line.strip() == START]
    ends = [i for i, line in enumerate(lines) if line.strip() == END]
    if len(starts) != 1 or len(ends) != 1 or starts[0] > ends[0]:
        raise ValueError(
            f'expected one line {START!r} followed by one line {END!r} '
            f'(found {len(starts)} and {len(ends)}): add them around the '
            'model-zoo table')
    return '\n'.join([*lines[:starts[0] + 1], block, *lines[ends[0]:]])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description='Print (or write into a markdown file such as '
        'configs/README.md) the model-zoo tables generated from the '
        'metafiles of model-index.yml')
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        '--update', metavar='FILE',
        help='replace the text between the model-zoo markers of this file')
    group.add_argument(
        '--check', metavar='FILE',
        help='exit with 1 if the tables of this file are not the generated '
        'ones (writes nothing)')
    args = parser.parse_args(argv)
    path = args.update or args.check
    if not path:
        print(zoo_tables(load_models()))
        return 0
    tables = zoo_tables(load_models(), osp.dirname(osp.abspath(path)))
    with open(path, encoding='utf-8') as f:
        text = f.read()
    try:
        updated = replace_between_markers(text, tables)
    except ValueError as error:
        print(f'error: {path}: {error}', file=sys.stderr)
        return 1
    if updated == text:
        print(f'{path}: the model-zoo tables are up to date')
        return 0
    if args.check:
        print(f'error: {path}: the model-zoo tables are stale: run python '
              f'tools/misc/model_zoo_table.py --update {path}',
              file=sys.stderr)
        return 1
    with open(path, 'w', encoding='utf-8') as f:
        f.write(updated)
    print(f'{path}: model-zoo tables updated')
    return 0


if __name__ == '__main__':
    sys.exit(main())
