"""Memory over many input sizes: what the backbone keeps between calls is
bounded (``tools/analysis/benchmark_memory.py`` prints the growth curve of
CrossFormer-S; this test uses a smaller model)."""
import ctypes
import gc
import random
import resource

import torch

from mmcrossformer.models import (CrossFormer, DynamicPositionBias, grouping,
                                  position_bias)

SMALL = dict(embed_dims=16, depths=[1, 2, 2, 2], num_heads=[1, 2, 2, 4])


def fix_mmap_threshold(threshold=1 << 16):
    """Make glibc serve allocations above ``threshold`` with mmap, returned
    to the system on free. By default glibc raises that threshold to the
    largest block freed so far (up to 32 MiB), after which activations of
    ever-changing sizes fragment its heap and the resident set grows with
    the number of sizes seen, whatever the model keeps: this test measures
    what the model keeps. (``MALLOC_MMAP_THRESHOLD_=65536`` does the same
    for a training run; see docs/performance.md.)"""
    M_MMAP_THRESHOLD = -3
    ctypes.CDLL('libc.so.6').mallopt(M_MMAP_THRESHOLD, threshold)


def held_mib() -> float:
    gc.collect()
    with open('/proc/self/statm') as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def detection_sizes(count, seed=0):
    """Distinct sizes of the 3x pipeline's range (short side 480-800, long
    side up to 1333)."""
    rng, sizes = random.Random(seed), set()
    while len(sizes) < count:
        short = rng.randint(480, 800)
        sizes.add((short, min(1333, round(short * rng.uniform(1, 1.78)))))
    return sorted(sizes)


def test_memory_stays_flat_over_input_sizes():
    """Inference over 25 detection sizes after 5 to warm up: the memory held
    between calls grows by less than 64 MiB. (Per-block tables of the
    pairwise position index, as this package kept before, grew by tens of
    MiB per size: a 25x42 long-distance group alone needs 8.8 MB.)"""
    fix_mmap_threshold()
    torch.manual_seed(0)
    model = CrossFormer(arch=SMALL).eval()
    sizes = detection_sizes(30)
    with torch.no_grad():
        for h, w in sizes[:5]:
            model(torch.rand(1, 3, h, w))
        before = held_mib()
        for h, w in sizes[5:]:
            model(torch.rand(1, 3, h, w))
    growth = held_mib() - before
    print(f'memory held: {growth:+.1f} MiB over {len(sizes) - 5} sizes')
    assert growth < 64
    # The caches are shared and bounded, whatever sizes ran.
    assert grouping.key_padding_mask.cache_info().currsize <= 128
    assert position_bias.relative_tables.cache_info().currsize <= 256
    for module in model.modules():
        if isinstance(module, DynamicPositionBias):
            assert len(module._outputs) <= 8


def test_position_tables_are_per_axis():
    """The gather tables of a 25x42 group hold 25^2 + 42^2 indices, not
    (25*42)^2; the bias they give is the pairwise one."""
    offsets, rows, cols = position_bias.relative_tables(
        25, 42, torch.device('cpu'))
    assert rows.numel() == 25 * 25 and cols.numel() == 42 * 42
    assert offsets.shape == ((2 * 25 - 1) * (2 * 42 - 1), 2)
    dpb = DynamicPositionBias(4, 2)
    with torch.no_grad():
        bias = dpb.group_bias(3, 4)
        table = dpb(offsets.new_tensor(
            [[dy, dx] for dy in range(-2, 3) for dx in range(-3, 4)]))
    ys, xs = torch.meshgrid(torch.arange(3), torch.arange(4), indexing='ij')
    ys, xs = ys.flatten(), xs.flatten()
    index = ((ys[:, None] - ys[None, :] + 2) * 7 + xs[:, None] - xs[None, :]
             + 3)
    torch.testing.assert_close(bias, table[index].permute(2, 0, 1))
