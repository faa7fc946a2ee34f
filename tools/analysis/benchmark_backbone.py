#!/usr/bin/env python
"""Benchmark the CrossFormer backbone against the official implementation
and mmdet's Swin-T, in one run; or two whole detectors / segmentors.

    python tools/analysis/benchmark_backbone.py --arch small --shape 800 1216
    python tools/analysis/benchmark_backbone.py --device cuda --dtype fp16
    python tools/analysis/benchmark_backbone.py --models crossformer \
        crossformer-region         # the two long-distance groupings
    python tools/analysis/benchmark_backbone.py --models crossformer \
        --compile inductor --skip-train --skip-memory   # compiled vs eager
    python tools/analysis/benchmark_backbone.py --models crossformer \
        crossformer-region --arch tiny --shape 480 640 \
        --compile-dynamic 12       # recompiles of dynamic=True over 12 sizes
    python tools/analysis/benchmark_backbone.py --detector \
        configs/maskrcnn_crossformer_s_fpn_1x_coco.py \
        mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py

**Backbone mode** (the default). For each model of ``--models`` it prints

- the median forward time (eval mode, batch 1, no autograd);
- the median training-step time: ``model.train()`` (drop path as built),
  forward of ``--train-batch`` images and backward of
  ``sum(out.float().mean())`` over all outputs, gradients dropped after
  each step (no optimizer);
- the FLOPs of the eval forward (mmengine's FlopAnalyzer with the attention
  matmuls counted, see ``mmcrossformer/analysis.py``) and the GFLOP/s;
- the peak memory of one training step (the same step): on CPU the growth
  of the peak resident set size of a fresh process running only that step,
  on CUDA ``torch.cuda.max_memory_allocated``.

Each median is over ``--repeat`` runs after one warm-up run. Each model
runs in a worker process of its own (its own allocator, as in a training
run: in one process a model reuses the memory its predecessor freed, and
its time depends on which models ran before it), and the models are timed
alternately, one forward (then one training step) of each in turn, so that
a change of the machine's load affects all of them alike; with
``swin-t`` among the models, the table's "train step / Swin-T's" column is
the median over those rounds of the ratio of the two steps, next to the
ratio of forward FLOPs (equal efficiency per FLOP).
``--compile BACKEND`` adds the forward of ``torch.compile(model,
backend=BACKEND)`` (e.g. ``inductor``): the first call's time (compilation
included) and the median of ``--repeat`` calls after it, timed alternately
with as many eager calls (their median is printed beside it: on a shared
machine the load changes between the eager timing above and the
compilation).

``--compile-dynamic N`` measures instead how often ``torch.compile(model,
dynamic=True)`` (backend ``--compile`` or ``aot_eager``) compiles over N
input sizes: ``(H - i*d, W - i*d)`` for ``i < N`` with ``d =
--size-divisor`` (mmdet pads inputs to multiples of 32). It prints, per
size, the graphs compiled and dynamo's guard failure that caused the
recompilation, then the total, against ``torch._dynamo.config.
recompile_limit`` (after which dynamo runs the frame eagerly). A first
symbolic compile can take many minutes (docs/performance.md, Compilation).

**Detector mode** (``--detector CONFIG_A CONFIG_B``, two mmdet or two mmseg
configs, files or ``package::path`` names as ``mim`` takes them): builds
both models, each in a worker process of its own, without pretrained
weights (``Pretrained`` init_cfgs dropped, then ``init_weights()``; SyncBN
reverted to BN, as mmengine's Runner does without a process group), and
the optimizer wrapper of each config. One
synthetic batch of ``--train-batch`` images (``--shape``, default 800x1216
for mmdet, the config's ``crop_size`` for mmseg) goes through the real
``model.train_step``: data preprocessor, forward with losses, backward and
the optimizer step, as mmengine's training loop runs it (without data
loading). mmdet images get 8 random instances each (boxes, their
rectangular masks, labels); mmseg images a random segmentation map
(UperNet's pooling module needs ``--train-batch`` 2 or more). It
prints the median (and best) step time of both over ``--repeat`` steps after
one warm-up each, the two models alternating step by step, the median over
those rounds of the ratio of their steps and, on CUDA, the peak memory of
each one's warm-up step.

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
import copy
import json
import logging
import multiprocessing
import os.path as osp
import resource
import statistics
import subprocess
import sys
import time
import traceback
from contextlib import nullcontext

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
BACKBONE_SHAPE = (800, 1216)
# Random instances per image in --detector mode (mmdet).
NUM_INSTANCES = 8


def parse_arch(text):
    """``--arch``: a preset name, or a JSON dict (``'{"embed_dims": 32,
    "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 4]}'``)."""
    if text.lstrip().startswith('{'):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(
                f'--arch {text!r} is not a valid JSON dict: {e}')
    return text


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
    if name == 'official':
        return import_official_forward()(model)
    return nullcontext()


def sync(device):
    if device == 'cuda':
        torch.cuda.synchronize()


def autocast_to(dtype, device):
    return torch.autocast(device, dtype=dtype_of(dtype),
                          enabled=dtype != 'fp32')


def timed(fn, repeat, device, warm_up=True):
    """``fn()`` once (warm-up, unless ``warm_up`` is False), then the
    seconds of ``repeat`` more calls."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def forward_step(name, model, x, dtype, device):
    """A function running an eval forward of ``x`` without autograd."""
    def forward():
        with torch.no_grad(), run_context(name, model), \
                autocast_to(dtype, device):
            model(x)
    return forward


def time_compiled_forward(name, model, x, repeat, dtype, device, backend):
    """``(first-call seconds, eager median, compiled median)`` of the forward
    of ``torch.compile(model, backend=backend)`` against the eager one: the
    first compiled call compiles; then eager and compiled calls alternate,
    so that a change of the machine's load affects both alike."""
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend)
    with torch.no_grad(), run_context(name, model), \
            autocast_to(dtype, device):
        first, = timed(lambda: compiled(x), 1, device, warm_up=False)
        times = interleaved({'eager': lambda: model(x),
                             'compiled': lambda: compiled(x)}, repeat,
                            device, warm_up=False)
    return (first, statistics.median(times['eager']),
            statistics.median(times['compiled']))


def train_step(name, model, x, dtype, device):
    """One backbone training step on ``x``: forward (``model`` in train
    mode), backward of ``sum(out.float().mean())`` over the outputs, then
    the gradients dropped (``zero_grad(set_to_none=True)``)."""
    with run_context(name, model), autocast_to(dtype, device):
        loss = sum(out.float().mean() for out in model(x))
    loss.backward()
    model.zero_grad(set_to_none=True)


def interleaved(steps, repeat, device=None, warm_up=True, measure=None):
    """Seconds of ``repeat`` rounds in which every function of ``steps``
    (``{name: fn}``) runs once, after one warm-up round: ``{name:
    [seconds, ...]}``. Alternating the models, rather than timing one and
    then the next, lets a change of the machine's load during the run
    affect all of them alike, so their ratio round by round is what the
    run measures. ``warm_up=False``: the caller ran each already.
    ``measure(fn)`` gives the seconds of one call (default: :func:`timed`
    on ``device``; a :class:`Worker`'s functions return their own)."""
    measure = measure or (lambda fn: timed(fn, 1, device, warm_up=False)[0])
    times = {name: [] for name in steps}
    for fn in steps.values() if warm_up else ():
        fn()
    for _ in range(repeat):
        for name, fn in steps.items():
            times[name].append(measure(fn))
    return times


def round_ratios(times, reference):
    """``{name: median over rounds of (its time / reference's time)}``."""
    return {name: statistics.median(
        a / b for a, b in zip(seconds, times[reference]))
        for name, seconds in times.items() if name != reference}


class Worker:
    """A model in a process of its own (started with ``spawn``) that runs
    the steps it is sent and returns their seconds.

    Each model then has its own allocator, as in a training run. In one
    process a model reuses the memory that the model timed before it freed
    (fewer page faults), so its time depended on its neighbours: Swin-T's
    training step measured 4.3 s after the official block's and 5.2 s after
    CrossFormer-S's, in the same session.

    ``factory(name, args)`` (a module-level function) runs in the worker and
    returns ``({step: fn}, info)``; ``info`` (a dict, updated by the steps)
    comes back from :meth:`close`. The constructor returns once the factory
    has run (and raises its error if it failed).
    """

    def __init__(self, factory, name, args):
        context = multiprocessing.get_context('spawn')
        self.name = name
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, factory, name, args), daemon=True)
        self._process.start()
        self._receive()  # the factory's info: the model is ready

    def _receive(self):
        try:
            ok, value = self._conn.recv()
        except EOFError:
            self._process.join()
            raise RuntimeError(f'[{self.name}] the worker exited (exit code '
                               f'{self._process.exitcode})')
        if not ok:
            raise RuntimeError(f'[{self.name}] {value}')
        return value

    def seconds(self, step):
        """Seconds of one run of ``step`` in the worker."""
        self._conn.send(step)
        return self._receive()

    def close(self):
        """Stop the worker; its final ``info``."""
        self._conn.send(None)
        info = self._receive()
        self._process.join()
        return info


def _serve(conn, factory, name, args):
    """The worker's loop (see :class:`Worker`)."""
    torch.set_num_threads(args.threads)
    try:
        steps, info = factory(name, args)
        conn.send((True, info))
        while True:
            try:
                step = conn.recv()
            except EOFError:  # the parent has gone: nothing to answer
                return
            if step is None:
                conn.send((True, info))
                return
            conn.send((True, timed(steps[step], 1, args.device,
                                   warm_up=False)[0]))
    except Exception:
        conn.send((False, traceback.format_exc().strip().splitlines()[-1]))


def interleaved_in_workers(workers, step, repeat, warm_up=True):
    """:func:`interleaved` of ``step`` over ``{name: Worker}``."""
    return interleaved({name: lambda w=worker: w.seconds(step)
                        for name, worker in workers.items()}, repeat,
                       warm_up=warm_up, measure=lambda fn: fn())


def backbone_steps(name, args):
    """Worker factory: backbone ``name``'s ``'forward'`` (eval, batch 1,
    no autograd) and ``'train'`` (:func:`train_step` of ``--train-batch``
    images) steps."""
    model = build(name, args.arch).to(args.device)
    x = torch.rand(1, 3, *args.shape, device=args.device)
    batch = torch.rand(args.train_batch, 3, *args.shape, device=args.device)
    forward = forward_step(name, model, x, args.dtype, args.device)

    def eval_forward():
        model.eval()
        forward()

    def train():
        model.train()  # mmdet's Swin returns None from train()
        train_step(name, model, batch, args.dtype, args.device)

    return dict(forward=eval_forward, train=train), {}


def detector_steps(name, args):
    """Worker factory: ``'train'``, one ``train_step`` of config ``name``
    (see :func:`prepare_detector`)."""
    from mmengine.logging import MMLogger

    # The worker's current mmengine logger: warnings only (building a model
    # logs every parameter's initialisation and weight-decay setting).
    MMLogger.get_instance('benchmark_backbone', log_level='WARNING')
    result, step = prepare_detector(name, args)
    return dict(train=step), result


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
    return peak_rss() - base


def peak_rss():
    """Bytes of this process image's peak resident set. On Linux, from
    ``VmHWM``: ``getrusage``'s ``ru_maxrss`` carries over ``fork`` and
    ``exec``, so a worker started by a larger parent would report the
    parent's size."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def dtype_of(name):
    return dict(fp32=torch.float32, fp16=torch.float16,
                bf16=torch.bfloat16)[name]


def memory_in_subprocess(name, args):
    """Run the training step in a fresh process so that the peak is its own."""
    arch = args.arch if isinstance(args.arch, str) else json.dumps(args.arch)
    cmd = [sys.executable, __file__, '--memory-worker', name,
           '--arch', arch, '--shape', *map(str, args.shape),
           '--train-batch', str(args.train_batch), '--device', args.device,
           '--dtype', args.dtype, '--threads', str(args.threads)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode:
        return None, result.stderr.strip().splitlines()[-1:]
    return json.loads(result.stdout.strip().splitlines()[-1])['peak'], None


def attention_path(device, dtype):
    """Which attention implementation CrossFormer's blocks run on
    ``device`` in ``dtype`` (builds the compiled CPU kernel here, before the
    workers start, if it is not in the cache yet)."""
    if device != 'cpu':
        return 'one SDPA call per block'
    from mmcrossformer.models import native_kernel
    if dtype != 'fp32':
        return 'pure-PyTorch tiled path (the compiled kernel takes fp32)'
    if native_kernel.cpu_kernel() is not None:
        return 'compiled CPU kernel'
    return (f'pure-PyTorch tiled path ({native_kernel.ENV_SWITCH}=0 or '
            'not built)')


# ---------------------------------------------------------------- backbones
def benchmark_backbones(args):
    if 'official' in args.models:
        import_official_forward()  # fails here, before any measurement
    from mmcrossformer.analysis import count_flops
    h, w = args.shape
    compiled = f', forward also compiled ({args.compile})' \
        if args.compile else ''
    print(f'CrossFormer-{args.arch} vs official vs Swin-T: input 1x3x{h}x{w}'
          f' (training steps {args.train_batch}x3x{h}x{w}), {args.device}, '
          f'{args.dtype}, torch {torch.__version__}, {args.threads} threads, '
          f'median of {args.repeat}{compiled}; attention: '
          f'{attention_path(args.device, args.dtype)}')
    results = {}
    for name in args.models:
        model = build(name, args.arch)
        model.eval()  # mmdet's Swin returns None from train()
        print(f'[{name}] counting FLOPs ...', flush=True)
        flops = count_flops(model, torch.rand(1, 3, h, w)).flops
        results[name] = dict(gflops=flops / 1e9, train_seconds=None,
                             train_ratio=None)
        if args.compile:
            print(f'[{name}] compiling the forward ({args.compile}) ...',
                  flush=True)
            first, eager, median = time_compiled_forward(
                name, model.to(args.device),
                torch.rand(1, 3, h, w, device=args.device), args.repeat,
                args.dtype, args.device, args.compile)
            results[name].update(compiled_first_call_s=first,
                                 compiled_seconds=median,
                                 eager_interleaved_seconds=eager)
        del model
    print('starting one worker process per model ...', flush=True)
    workers = {name: Worker(backbone_steps, name, args)
               for name in args.models}
    print(f'timing forwards ({", ".join(workers)} alternately) ...',
          flush=True)
    times = interleaved_in_workers(workers, 'forward', args.repeat)
    for name, r in results.items():
        r['seconds'] = statistics.median(times[name])
        r['gflops_per_s'] = r['gflops'] / r['seconds']
    if not args.skip_train:
        print(f'timing training steps, batch {args.train_batch} '
              f'({", ".join(workers)} alternately) ...', flush=True)
        times = interleaved_in_workers(workers, 'train', args.repeat)
        for name in workers:
            results[name]['train_seconds'] = statistics.median(times[name])
        if 'swin-t' in times:
            for name, ratio in round_ratios(times, 'swin-t').items():
                results[name]['train_ratio'] = ratio
    for worker in workers.values():
        worker.close()
    for name, result in results.items():
        peak = None
        if not args.skip_memory:
            print(f'[{name}] training-step memory, batch {args.train_batch}'
                  ' ...', flush=True)
            peak, error = memory_in_subprocess(name, args)
            if error:
                print(f'[{name}] training step failed: {error}')
        result['train_peak_mib'] = None if peak is None else peak / 2**20
    print_backbone_table(args, results)
    return results


def _fmt(value, spec):
    return '-' if value is None else format(value, spec)


def print_backbone_table(args, results):
    batch = args.train_batch
    compiled = args.compile
    header = ['model', 'forward (s)']
    if compiled:
        header += [f'forward {compiled} (s)', f'{compiled} first call (s)']
    header += [f'train step (s, batch {batch})', "train step / Swin-T's",
               'GFLOPs', 'GFLOP/s', f'train-step peak (MiB, batch {batch})']
    print()
    print('| ' + ' | '.join(header) + ' |')
    print('| --- |' + ' ---: |' * (len(header) - 1))
    for name, r in results.items():
        row = [name, _fmt(r['seconds'], '.3f')]
        if compiled:
            row += [_fmt(r['compiled_seconds'], '.3f'),
                    _fmt(r['compiled_first_call_s'], '.1f')]
        row += [_fmt(r['train_seconds'], '.3f'),
                _fmt(r['train_ratio'], '.2f'), _fmt(r['gflops'], '.1f'),
                _fmt(r['gflops_per_s'], '.1f'),
                _fmt(r['train_peak_mib'], '.0f')]
        print('| ' + ' | '.join(row) + ' |')
    if compiled:
        for name, r in results.items():
            eager = r['eager_interleaved_seconds']
            print(f'{name}: compiled forward {r["compiled_seconds"]:.3f} s vs '
                  f'eager {eager:.3f} s, timed alternately '
                  f'({eager / r["compiled_seconds"]:.2f}x); first call '
                  f'{r["compiled_first_call_s"]:.1f} s')
    ours = results.get('crossformer')
    if ours and 'official' in results:
        off = results['official']
        print('speed-up over official: '
              f"{off['seconds'] / ours['seconds']:.2f}x (forward)"
              + (f", {off['train_seconds'] / ours['train_seconds']:.2f}x "
                 '(training step)' if ours['train_seconds'] else ''))
        if ours['train_peak_mib'] and off['train_peak_mib']:
            print('training-step memory vs official: '
                  f"{ours['train_peak_mib'] / off['train_peak_mib']:.2f}x")
    if ours and 'swin-t' in results:
        ratio = ours['gflops_per_s'] / results['swin-t']['gflops_per_s']
        print(f'GFLOP/s vs Swin-T: {ratio:.2f}x')
    swin = results.get('swin-t')
    for name, r in results.items():
        if swin and r['train_ratio'] is not None:
            print(f"{name}: training step {r['train_ratio']:.2f}x Swin-T's "
                  '(median over rounds of the two steps timed one after the '
                  f"other), forward FLOPs {r['gflops'] / swin['gflops']:.2f}x")


# ------------------------------------------------------ dynamic=True sweep
def dynamic_sizes(shape, count, divisor):
    """``count`` sizes ``(H - i*d, W - i*d)``, ``i < count``."""
    h, w = shape
    if min(h, w) - (count - 1) * divisor < divisor:
        raise SystemExit(
            f'--compile-dynamic {count} with --size-divisor {divisor} needs '
            f'--shape sides of at least {count * divisor}, got {h}x{w}')
    return [(h - i * divisor, w - i * divisor) for i in range(count)]


class _Recompiles(logging.Handler):
    """Collects dynamo's recompilation messages (the ``recompiles`` log)."""

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def first_guard_failure(message):
    """The first guard failure line of a ``Recompiling function ...``
    message."""
    lines = [line.strip() for line in message.splitlines()]
    failures = [line[2:] for line in lines if line.startswith('- ')]
    return failures[0] if failures else lines[-1]


def dynamic_recompiles(name, args, sizes):
    """Run ``sizes`` through ``torch.compile(model, dynamic=True)`` (eval,
    no autograd); return per-size graph counts and recompile reasons."""
    from torch._dynamo.testing import CompileCounterWithBackend
    backend = args.compile or 'aot_eager'
    model = build(name, args.arch).to(args.device)
    model.eval()  # mmdet's Swin returns None from train() and eval()
    torch._dynamo.reset()
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(model, dynamic=True, backend=counter)
    torch._logging.set_logs(recompiles=True)
    logger = logging.getLogger('torch._dynamo.guards.__recompiles')
    handler = _Recompiles()
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    rows = []
    try:
        with torch.no_grad(), run_context(name, model):
            for size in sizes:
                before, seen = counter.frame_count, len(handler.messages)
                start = time.perf_counter()
                compiled(torch.rand(1, 3, *size, device=args.device))
                reasons = [first_guard_failure(m)
                           for m in handler.messages[seen:]]
                rows.append(dict(size=size,
                                 graphs=counter.frame_count - before,
                                 seconds=time.perf_counter() - start,
                                 recompile_reasons=reasons))
                print(f'[{name}] {size[0]}x{size[1]}: '
                      f'{rows[-1]["graphs"]} graph(s) compiled, '
                      f'{rows[-1]["seconds"]:.1f} s'
                      + (f'; guard failed: {reasons[0]}' if reasons else ''),
                      flush=True)
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        torch._logging.set_logs()
    return dict(backend=backend, graphs=counter.frame_count, sizes=rows)


def benchmark_dynamic(args):
    sizes = dynamic_sizes(args.shape, args.compile_dynamic,
                          args.size_divisor)
    limit = torch._dynamo.config.recompile_limit
    print(f'torch.compile(dynamic=True, backend='
          f'{args.compile or "aot_eager"}) over {len(sizes)} sizes '
          f'{sizes[0][0]}x{sizes[0][1]} .. {sizes[-1][0]}x{sizes[-1][1]} '
          f'(step {args.size_divisor}), arch {args.arch}, torch '
          f'{torch.__version__}, recompile_limit {limit}')
    results = {}
    for name in args.models:
        results[name] = dynamic_recompiles(name, args, sizes)
    print()
    print('| model | sizes | graphs compiled | sizes that compiled |')
    print('| --- | ---: | ---: | ---: |')
    for name, r in results.items():
        compiling = sum(1 for row in r['sizes'] if row['graphs'])
        print(f"| {name} | {len(sizes)} | {r['graphs']} | {compiling} |")
    return results


# ------------------------------------------------------------ --detector
def _drop_pretrained(node):
    """``node`` (a model config) without ``Pretrained`` init_cfgs and
    ``pretrained`` paths, in place."""
    if isinstance(node, dict):
        for key in list(node):
            value = node[key]
            if key == 'pretrained' and isinstance(value, str):
                node[key] = None
            elif key == 'init_cfg':
                items = value if isinstance(value, list) else [value]
                kept = [c for c in items if not (
                    isinstance(c, dict) and c.get('type') == 'Pretrained')]
                node[key] = (kept if isinstance(value, list) else
                             (kept[0] if kept else None))
            else:
                _drop_pretrained(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _drop_pretrained(value)
    return node


def load_config(name):
    """A config file, or a ``package::path`` name (``mmdet::swin/...``)."""
    from mmengine.config import Config
    if '::' in name:
        from mmengine.hub import get_config
        return get_config(name)
    if not osp.isfile(name):
        raise SystemExit(f'--detector: no config file {name!r}')
    return Config.fromfile(name)


def synthetic_batch(scope, cfg, shape, batch):
    """``dict(inputs=[uint8 (3, H, W)], data_samples=[...])`` as a data
    loader yields it: 8 random boxes, rectangular masks and labels per image
    (mmdet), or a random segmentation map (mmseg)."""
    import numpy as np
    h, w = shape
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8))
        meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                    scale_factor=(1., 1.), flip=False, flip_direction=None)
        if scope == 'mmdet':
            from mmdet.structures import DetDataSample
            from mmdet.structures.bbox import HorizontalBoxes
            from mmdet.structures.mask import BitmapMasks
            from mmengine.structures import InstanceData
            xy = torch.rand(NUM_INSTANCES, 2) * torch.tensor([w, h]) * 0.75
            wh = (torch.rand(NUM_INSTANCES, 2) * 0.5 + 0.1) * torch.tensor(
                [w, h]) * 0.4
            boxes = torch.cat([xy, xy + wh], 1).round()
            masks = np.zeros((NUM_INSTANCES, h, w), dtype=np.uint8)
            for m, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist()):
                m[y0:y1, x0:x1] = 1
            sample = DetDataSample(metainfo=meta)
            sample.gt_instances = InstanceData(
                bboxes=HorizontalBoxes(boxes),
                labels=torch.randint(0, 10, (NUM_INSTANCES, )),
                masks=BitmapMasks(masks, h, w))
        else:
            from mmengine.structures import PixelData
            from mmseg.structures import SegDataSample
            num_classes = cfg.model.get('decode_head', {}).get(
                'num_classes', 150)
            sample = SegDataSample(metainfo=meta)
            sample.gt_sem_seg = PixelData(data=torch.randint(
                0, num_classes, (1, h, w), dtype=torch.long))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def prepare_detector(name, args):
    """Build ``name``'s model and optimizer wrapper and a synthetic batch:
    ``(result, step)``, ``step()`` one ``train_step`` on the batch (see the
    module docstring), whose losses it appends to ``result['losses']``."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS as REGISTRY
    from mmengine.registry import DefaultScope
    cfg = load_config(name)
    scope = cfg.get('default_scope')
    if scope not in ('mmdet', 'mmseg'):
        raise SystemExit(f'--detector takes mmdet or mmseg configs; {name} '
                         f'has default_scope={scope!r}')
    shape = tuple(args.shape or (BACKBONE_SHAPE if scope == 'mmdet' else
                                 cfg.get('crop_size', (512, 512))))
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    if args.dtype != 'fp32':
        if args.device != 'cuda':
            raise SystemExit(f'--detector --dtype {args.dtype} needs --device'
                             " cuda (mmengine's AmpOptimWrapper)")
        optim_cfg.update(type='AmpOptimWrapper', dtype=dict(
            fp16='float16', bf16='bfloat16')[args.dtype])
    with DefaultScope.overwrite_default_scope(scope):
        model = REGISTRY.build(_drop_pretrained(copy.deepcopy(cfg.model)))
        model.init_weights()
        # As mmengine's Runner does without a process group (SyncBN -> BN).
        model = revert_sync_batchnorm(model)
        model = model.to(args.device).train()
        optim_wrapper = build_optim_wrapper(model, optim_cfg)
        data = synthetic_batch(scope, cfg, shape, args.train_batch)
        # What the model sees: the data preprocessor pads (mmdet to
        # multiples of 32, mmseg to the crop size).
        model_input = tuple(model.data_preprocessor(
            copy.deepcopy(data), True)['inputs'].shape[-2:])
        losses = []

    def step():
        with DefaultScope.overwrite_default_scope(scope):
            log_vars = model.train_step(copy.deepcopy(data), optim_wrapper)
        losses.append(float(torch.as_tensor(log_vars['loss']).detach()))

    # The warm-up step: on CUDA its peak is this model's (each detector runs
    # in a worker process of its own).
    print(f'[{name}] warm-up step, {args.train_batch}x3x{shape[0]}x'
          f'{shape[1]} ...', flush=True)
    if args.device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    step()
    peak = torch.cuda.max_memory_allocated() / 2**20 \
        if args.device == 'cuda' else None
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return dict(scope=scope, shape=shape, model_input=model_input,
                params_m=params, losses=losses, peak_mib=peak), step


def benchmark_detectors(args):
    if args.compile or args.compile_dynamic:
        raise SystemExit('--compile / --compile-dynamic time the backbone; '
                         'they do not combine with --detector')
    print(f'training steps (model.train_step: data preprocessor, forward '
          f'with losses, backward, optimizer step), {args.device}, '
          f'{args.dtype}, torch {torch.__version__}, {args.threads} threads,'
          f' median of {args.repeat} after a warm-up; CrossFormer\'s '
          f'attention: {attention_path(args.device, args.dtype)}')
    # Each model in a worker process of its own (see Worker); the workers
    # start one after the other, and each runs its warm-up step alone.
    workers = {name: Worker(detector_steps, name, args)
               for name in args.detector}
    print('timing training steps (the two alternately) ...', flush=True)
    times = interleaved_in_workers(workers, 'train', args.repeat,
                                   warm_up=False)
    results = {name: worker.close() for name, worker in workers.items()}
    for name, r in results.items():
        r.update(median_s=statistics.median(times[name]),
                 best_s=min(times[name]))
    scopes = {r['scope'] for r in results.values()}
    if len(scopes) > 1:
        print(f'note: the configs are of different scopes {sorted(scopes)}')
    print()
    print(f'| config | params (M) | image (padded) | train step median (s, '
          f'batch {args.train_batch}) | best (s) | peak (MiB) | last loss |')
    print('| --- | ---: | --- | ---: | ---: | ---: | ---: |')
    for name, r in results.items():
        (h, w), (ph, pw) = r['shape'], r['model_input']
        print(f"| {name} | {r['params_m']:.1f} | {h}x{w} ({ph}x{pw}) | "
              f"{r['median_s']:.3f} | {r['best_s']:.3f} | "
              f"{_fmt(r['peak_mib'], '.0f')} | {r['losses'][-1]:.3f} |")
    (a, ra), (b, rb) = results.items()
    ratio, = round_ratios(times, b).values()
    print(f'{osp.basename(a)} / {osp.basename(b)}: {ratio:.2f}x the step '
          'time (median over rounds of the two steps timed one after the '
          f"other; ratio of the medians {ra['median_s'] / rb['median_s']:.2f}"
          'x)')
    return results


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        epilog='What each figure is: the docstring at the top of this file; '
        'figures measured so far: docs/performance.md.')
    parser.add_argument('--arch', default='small', type=parse_arch,
                        help='CrossFormer arch: a preset name (tiny, small, '
                        'base, large, pp-small, ...) or a JSON dict with '
                        'embed_dims, depths, num_heads')
    parser.add_argument('--shape', type=int, nargs=2, default=None,
                        metavar=('H', 'W'),
                        help='input size (default 800 1216; with --detector '
                        "800 1216 for mmdet, the config's crop_size for "
                        'mmseg)')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--dtype', default='fp32',
                        choices=('fp32', 'fp16', 'bf16'),
                        help='autocast dtype (fp32: no autocast)')
    parser.add_argument('--threads', type=int, default=2,
                        help='torch CPU threads')
    parser.add_argument('--repeat', type=int, default=5,
                        help='timed runs after one warm-up; the median is '
                        'reported')
    parser.add_argument('--train-batch', type=int, default=2,
                        help='images per training step (and per memory '
                        'measurement)')
    parser.add_argument('--models', nargs='+', default=list(MODELS),
                        choices=MODELS)
    parser.add_argument('--skip-train', action='store_true',
                        help='do not time training steps')
    parser.add_argument('--skip-memory', action='store_true',
                        help='do not measure training-step memory')
    parser.add_argument('--compile', metavar='BACKEND',
                        help='also time the forward of torch.compile(model, '
                        'backend=BACKEND), e.g. inductor; with '
                        '--compile-dynamic, the backend (default aot_eager)')
    parser.add_argument('--compile-dynamic', type=int, metavar='N',
                        help='instead of timing, count the compilations of '
                        'torch.compile(model, dynamic=True) over N sizes '
                        'from --shape down in steps of --size-divisor')
    parser.add_argument('--size-divisor', type=int, default=32,
                        help='size step of --compile-dynamic (default 32)')
    parser.add_argument('--detector', nargs=2, metavar=('CONFIG_A',
                                                        'CONFIG_B'),
                        help='time whole training steps of two mmdet (or two '
                        'mmseg) configs instead, e.g. '
                        'configs/maskrcnn_crossformer_s_fpn_1x_coco.py '
                        'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')
    parser.add_argument('--json', help='also write the results here')
    parser.add_argument('--memory-worker', choices=MODELS,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.shape is None and not args.detector:
        args.shape = BACKBONE_SHAPE
    return args


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
    if args.detector:
        results = benchmark_detectors(args)
    elif args.compile_dynamic:
        results = benchmark_dynamic(args)
    else:
        results = benchmark_backbones(args)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(args=vars(args), results=results), f, indent=2,
                      default=str)
    return 0


if __name__ == '__main__':
    sys.exit(main())
