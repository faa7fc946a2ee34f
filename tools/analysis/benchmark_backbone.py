#!/usr/bin/env python
"""Benchmark the CrossFormer backbone against the official implementation
and mmdet's Swin-T, in one run.

    python tools/analysis/benchmark_backbone.py --arch small --shape 800 1216
    python tools/analysis/benchmark_backbone.py --device cuda --dtype fp16
    python tools/analysis/benchmark_backbone.py --models crossformer \
        crossformer-region         # the two long-distance groupings

For each model it prints the median forward time (eval mode, batch 1), the
FLOPs (mmengine's FlopAnalyzer with the attention matmuls counted, see
``mmcrossformer/analysis.py``), the GFLOP/s, and the peak memory of one
training step (forward + backward, ``--train-batch`` images): on CPU the
growth of the peak resident set size of a fresh process running only that
step, on CUDA ``torch.cuda.max_memory_allocated``.

"official" is this project's model run through
``tests/helpers/official_block.py``, a line-by-line transcription of the
official dense block (per-call tables and masks, explicit softmax attention)
whose outputs equal ours (``tests/test_attention_reference.py``). It is test
code, not part of the package: this tool imports it from the checkout it
lives in by putting ``<repo>/tests`` on ``sys.path`` (``--models crossformer
swin-t`` leaves it out). These are measurements to report, not assertions:
nothing here fails on a slow run.
"""
import argparse
import json
import os.path as osp
import resource
import statistics
import subprocess
import sys
import time

import torch

MODELS = ('crossformer', 'crossformer-region', 'official', 'swin-t')
# Backbone arguments of the CrossFormer entries: 'crossformer-region' is the
# same arch and weights with CrossFormer++'s region grouping
# (lda_mode='region'), as the official main branch runs the ICLR models.
CROSSFORMER_KWARGS = {'crossformer': {}, 'official': {},
                      'crossformer-region': dict(lda_mode='region')}
# Where the transcription of the official block lives (see the docstring).
TESTS_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))), 'tests')


def build(name, arch, drop_path_rate=None):
    from mmengine.registry import MODELS as REGISTRY

    import mmcrossformer  # noqa: F401
    if name == 'swin-t':
        from mmdet.models.backbones import SwinTransformer
        return SwinTransformer(drop_path_rate=0.2 if drop_path_rate is None
                               else drop_path_rate)
    return REGISTRY.build(dict(type='CrossFormer', arch=arch,
                               drop_path_rate=drop_path_rate,
                               **CROSSFORMER_KWARGS[name]))


def import_official_forward():
    """``official_forward`` of ``tests/helpers/official_block.py`` (see the
    module docstring)."""
    if not osp.isfile(osp.join(TESTS_DIR, 'helpers', 'official_block.py')):
        raise SystemExit(
            f'the official baseline needs {TESTS_DIR}/helpers/'
            'official_block.py of the repository checkout; run this tool '
            'from a checkout, or pass --models crossformer swin-t')
    if TESTS_DIR not in sys.path:
        sys.path.insert(0, TESTS_DIR)
    from helpers.official_block import official_forward
    return official_forward


def run_context(name, model):
    """The context ``model`` runs in: the official block's forward for
    ``'official'``, else none."""
    from contextlib import nullcontext
    if name == 'official':
        return import_official_forward()(model)
    return nullcontext()


def sync(device):
    if device == 'cuda':
        torch.cuda.synchronize()


def autocast_to(dtype, device):
    return torch.autocast(device, dtype=dtype_of(dtype),
                          enabled=dtype != 'fp32')


def time_forward(name, model, x, repeat, dtype, device):
    autocast = autocast_to(dtype, device)
    times = []
    with torch.no_grad(), run_context(name, model), autocast:
        model(x)  # warm-up (and kernel selection on CUDA)
        for _ in range(repeat):
            sync(device)
            start = time.perf_counter()
            model(x)
            sync(device)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_step_peak_memory(name, args):
    """Peak memory of one training step, in bytes (see module docstring)."""
    model = build(name, args.arch).to(args.device)
    model.train()
    x = torch.rand(args.train_batch, 3, *args.shape, device=args.device)
    autocast = autocast_to(args.dtype, args.device)
    if args.device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        import psutil
        base = psutil.Process().memory_info().rss
    with run_context(name, model), autocast:
        loss = sum(out.float().mean() for out in model(x))
    loss.backward()
    if args.device == 'cuda':
        return torch.cuda.max_memory_allocated() - base
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return peak - base


def dtype_of(name):
    return dict(fp32=torch.float32, fp16=torch.float16,
                bf16=torch.bfloat16)[name]


def memory_in_subprocess(name, args):
    """Run the training step in a fresh process so that the peak is its own."""
    cmd = [sys.executable, __file__, '--memory-worker', name,
           '--arch', args.arch, '--shape', *map(str, args.shape),
           '--train-batch', str(args.train_batch), '--device', args.device,
           '--dtype', args.dtype, '--threads', str(args.threads)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode:
        return None, result.stderr.strip().splitlines()[-1:]
    return json.loads(result.stdout.strip().splitlines()[-1])['peak'], None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', default='small',
                        help='CrossFormer arch (tiny/small/base/large)')
    parser.add_argument('--shape', type=int, nargs=2, default=(800, 1216),
                        metavar=('H', 'W'))
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--dtype', default='fp32',
                        choices=('fp32', 'fp16', 'bf16'),
                        help='autocast dtype (fp32: no autocast)')
    parser.add_argument('--threads', type=int, default=2,
                        help='torch CPU threads')
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--train-batch', type=int, default=2)
    parser.add_argument('--models', nargs='+', default=list(MODELS),
                        choices=MODELS)
    parser.add_argument('--skip-memory', action='store_true',
                        help='do not measure training-step memory')
    parser.add_argument('--json', help='also write the results here')
    parser.add_argument('--memory-worker', choices=MODELS,
                        help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_worker:
        print(json.dumps(dict(peak=train_step_peak_memory(
            args.memory_worker, args))))
        return 0
    if args.device == 'cuda' and not torch.cuda.is_available():
        print('error: --device cuda but no CUDA device is available',
              file=sys.stderr)
        return 2
    if 'official' in args.models:
        import_official_forward()  # fails here, before any measurement
    from mmcrossformer.analysis import count_flops
    h, w = args.shape
    print(f'CrossFormer-{args.arch} vs official vs Swin-T: input 1x3x{h}x{w}, '
          f'{args.device}, {args.dtype}, torch {torch.__version__}, '
          f'{args.threads} threads, median of {args.repeat}')
    results = {}
    for name in args.models:
        model = build(name, args.arch)
        model.eval()  # mmdet's Swin returns None from train()
        x = torch.rand(1, 3, h, w)
        print(f'[{name}] counting FLOPs ...', flush=True)
        flops = count_flops(model, x).flops
        model, x = model.to(args.device), x.to(args.device)
        print(f'[{name}] timing forward ...', flush=True)
        seconds = time_forward(name, model, x, args.repeat, args.dtype,
                               args.device)
        peak = None
        if not args.skip_memory:
            print(f'[{name}] training step, batch {args.train_batch} ...',
                  flush=True)
            peak, error = memory_in_subprocess(name, args)
            if error:
                print(f'[{name}] training step failed: {error}')
        results[name] = dict(seconds=seconds, gflops=flops / 1e9,
                             gflops_per_s=flops / 1e9 / seconds,
                             train_peak_mib=None if peak is None else
                             peak / 2**20)
        del model
    print()
    print(f"| model | forward (s) | GFLOPs | GFLOP/s | train-step peak "
          f"(MiB, batch {args.train_batch}) |")
    print('| --- | ---: | ---: | ---: | ---: |')
    for name, r in results.items():
        mem = '-' if r['train_peak_mib'] is None else \
            f"{r['train_peak_mib']:.0f}"
        print(f"| {name} | {r['seconds']:.3f} | {r['gflops']:.1f} | "
              f"{r['gflops_per_s']:.1f} | {mem} |")
    ours = results.get('crossformer')
    if ours and 'official' in results:
        off = results['official']
        print('speed-up over official: '
              f"{off['seconds'] / ours['seconds']:.2f}x")
        if ours['train_peak_mib'] and off['train_peak_mib']:
            print('training-step memory vs official: '
                  f"{ours['train_peak_mib'] / off['train_peak_mib']:.2f}x")
    if ours and 'swin-t' in results:
        ratio = ours['gflops_per_s'] / results['swin-t']['gflops_per_s']
        print(f'GFLOP/s vs Swin-T: {ratio:.2f}x')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(args=vars(args), results=results), f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
