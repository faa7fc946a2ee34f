"""The README's model-zoo tables (markdown), generated from the metafiles
that ``model-index.yml`` imports: one table per task, with the parameters
and FLOPs measured here and the official results, labelled as such.

    python tools/misc/model_zoo_table.py                    # print them
    python tools/misc/model_zoo_table.py --update README.md # rewrite them

``--update`` replaces only the lines between ``<!-- model-zoo:start -->``
and ``<!-- model-zoo:end -->`` and refuses a file without both markers.
"""
import argparse
import sys
from typing import Dict, List

from mmcrossformer.zoo import load_models

START = '<!-- model-zoo:start -->'
END = '<!-- model-zoo:end -->'


def zoo_table(models: List[Dict], task: str) -> str:
    """The markdown table of the ``models`` whose first result is
    ``task``: name and config, parameters and FLOPs as measured here and as
    the official README states them, the official metrics (every metric any
    of them reports) and where the official weights are."""
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
            f"[{model['Name']}]({model['Config']})",
            f"{meta['Parameters'] / 1e6:.2f}M",
            official['Parameters'],
            f"{meta['FLOPs'] / 1e9:.2f}G ({meta['FLOPs Input Size']})",
            official['FLOPs'],
            *(str(values.get(metric, '-')) for metric in metrics),
            f'[official README]({weights})' if weights else 'not released',
        ]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def zoo_tables(models: List[Dict]) -> str:
    """One :func:`zoo_table` per task, in the order the tasks appear."""
    tasks = []
    for model in models:
        if model['Results'][0]['Task'] not in tasks:
            tasks.append(model['Results'][0]['Task'])
    return '\n\n'.join(f'{task}:\n\n{zoo_table(models, task)}'
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
        description='Print (or write into a README) the model-zoo tables '
        'generated from the metafiles of model-index.yml')
    parser.add_argument(
        '--update', metavar='README',
        help='replace the text between the model-zoo markers of this file')
    args = parser.parse_args(argv)
    tables = zoo_tables(load_models())
    if not args.update:
        print(tables)
        return 0
    with open(args.update, encoding='utf-8') as f:
        text = f.read()
    try:
        updated = replace_between_markers(text, tables)
    except ValueError as error:
        print(f'error: {args.update}: {error}', file=sys.stderr)
        return 1
    if updated == text:
        print(f'{args.update}: the model-zoo tables are up to date')
        return 0
    with open(args.update, 'w', encoding='utf-8') as f:
        f.write(updated)
    print(f'{args.update}: model-zoo tables updated')
    return 0


if __name__ == '__main__':
    sys.exit(main())
