#!/usr/bin/env python
"""Memory of the backbone over many input sizes: does it stay flat?

    python tools/analysis/benchmark_memory.py --arch small --sizes 100
    python tools/analysis/benchmark_memory.py --mode inference --sizes 100
    python tools/analysis/benchmark_memory.py --device cuda
    python tools/analysis/benchmark_memory.py --largest-first  # see below

Runs ``--sizes`` distinct input sizes drawn (seeded) from the range of
mmdet's 3x multi-scale pipeline (short side 480-800, long side at most
1333, aspect ratios of COCO images), each through one training step
(forward + backward of a scalar loss on all outputs; ``--mode inference``:
one forward without gradients), and prints the peak resident set size of
the process (CPU) or ``torch.cuda.max_memory_allocated`` (CUDA) after each
size, and its growth after the first ``--warmup`` sizes. Any cache that
grows with the number of distinct sizes shows as a rising curve. The peak
also rises when a later image is larger than every earlier one (its
activations are larger): ``--largest-first`` runs the largest size first,
so that after the warm-up only what is kept can raise it.

On a CPU, two allocators outside the model also grow with the number of
sizes (docs/performance.md, "Memory over many input sizes"): glibc's heap
(``MALLOC_MMAP_THRESHOLD_=65536``) and oneDNN's cache of compiled
convolutions, one entry per convolution and input shape, up to 1024
(``ONEDNN_PRIMITIVE_CACHE_CAPACITY=256``). Both are read from the
environment when the process starts; the header line prints them::

    MALLOC_MMAP_THRESHOLD_=65536 ONEDNN_PRIMITIVE_CACHE_CAPACITY=256 \\
        python tools/analysis/benchmark_memory.py --largest-first

A measurement to report, not an assertion: nothing here fails.
"""
import argparse
import os
import random
import resource
import time

import torch


def draw_sizes(count: int, seed: int = 0):
    """``count`` distinct ``(H, W)``, as the 3x pipeline resizes COCO
    images: the short side uniform in 480..800, the long side the short
    side times an aspect ratio in 1..1.78, capped at 1333; landscape or
    portrait at random."""
    rng = random.Random(seed)
    sizes = []
    while len(sizes) < count:
        short = rng.randint(480, 800)
        long = min(1333, round(short * rng.uniform(1.0, 1.78)))
        size = (short, long) if rng.random() < 0.5 else (long, short)
        if size not in sizes:
            sizes.append(size)
    return sizes


def current_mib(device: str) -> float:
    """Memory held now: allocated CUDA memory, or the resident set."""
    if device == 'cuda':
        return torch.cuda.memory_allocated() / 2**20
    with open('/proc/self/statm') as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_mib(device: str) -> float:
    if device == 'cuda':
        return torch.cuda.max_memory_allocated() / 2**20
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arch', default='small')
    parser.add_argument('--acl', action='store_true',
                        help='activation cooling layers (CrossFormer++)')
    parser.add_argument('--lda-mode', default=None,
                        choices=('image', 'region'))
    parser.add_argument('--mode', default='training',
                        choices=('training', 'inference'))
    parser.add_argument('--sizes', type=int, default=100)
    parser.add_argument('--warmup', type=int, default=10,
                        help='sizes before the growth is measured')
    parser.add_argument('--scale', type=float, default=1.0,
                        help='scale every size (for quick runs)')
    parser.add_argument('--largest-first', action='store_true',
                        help='run the largest size (by area) first, so '
                        'that the peak after the warm-up can only grow by '
                        'what is kept, not by a larger image\'s activations')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import mmcrossformer
    model = mmcrossformer.CrossFormer(
        arch=args.arch, acl=args.acl or None, lda_mode=args.lda_mode,
        drop_path_rate=0.).to(args.device)
    model.train(args.mode == 'training')
    sizes = [(max(1, round(h * args.scale)), max(1, round(w * args.scale)))
             for h, w in draw_sizes(args.sizes)]
    if args.largest_first:
        largest = max(sizes, key=lambda hw: hw[0] * hw[1])
        sizes.remove(largest)
        sizes.insert(0, largest)
    print(f'CrossFormer arch={args.arch} acl={model.acl} '
          f'lda_mode={model.lda_mode}, {args.mode}, {len(sizes)} sizes, '
          f'{args.device}')
    if args.device == 'cpu':
        print('allocator settings: ' + ', '.join(
            f'{name}={os.environ.get(name, "(default)")}'
            for name in ('MALLOC_MMAP_THRESHOLD_',
                         'ONEDNN_PRIMITIVE_CACHE_CAPACITY')))
    print(f'{"#":>4} {"size":>11} {"step s":>7} {"peak MiB":>9} '
          f'{"held MiB":>9}')
    baseline = held = None
    for i, (h, w) in enumerate(sizes, 1):
        x = torch.randn(1, 3, h, w, device=args.device)
        start = time.perf_counter()
        if args.mode == 'training':
            loss = sum(o.float().mean() for o in model(x))
            loss.backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                model(x)
        if args.device == 'cuda':
            torch.cuda.synchronize()
        del x
        peak, now = peak_mib(args.device), current_mib(args.device)
        if i == args.warmup:
            baseline, held = peak, now
        print(f'{i:>4} {h:>5}x{w:<5} {time.perf_counter() - start:>7.2f} '
              f'{peak:>9.1f} {now:>9.1f}', flush=True)
    if baseline is not None:
        print(f'after the first {args.warmup} sizes, over '
              f'{len(sizes) - args.warmup} more: peak grew '
              f'{peak - baseline:.1f} MiB, memory held between steps '
              f'{now - held:+.1f} MiB')


if __name__ == '__main__':
    main()
