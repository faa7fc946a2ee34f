"""Independent pieces of work spread over the intra-op threads, one piece
list per thread, each thread running its torch ops single-threaded.

An attention tile (one head of a long-distance group: ``(N, N)`` logits, N
~ 1000, head size 32) is a few GEMMs with an inner size of 32 and a few
element-wise passes. Split across two threads, op by op, each of them pays a
fork and join and shares its operands' cache lines; two tiles side by side,
one per thread, take about 0.6x the time (measured on a 2-core CPU). This
is the parallelism of a fused kernel, over heads and groups, written with
torch ops.
"""
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Sequence, TypeVar

import torch

Item = TypeVar('Item')
Result = TypeVar('Result')


def split_evenly(items: Sequence[Item], parts: int) -> List[Sequence[Item]]:
    """``items`` cut into ``parts`` contiguous runs whose lengths differ by
    at most one (in order: run ``i`` precedes run ``i + 1``)."""
    return [
        items[i * len(items) // parts:(i + 1) * len(items) // parts]
        for i in range(parts)
    ]


def map_in_threads(work: Callable[[Sequence[Item]], Result],
                   items: Sequence[Item]) -> List[Result]:
    """``[work(run) for run in split_evenly(items, n)]`` with each call in a
    thread of its own, ``n = min(torch.get_num_threads(), len(items))``.

    Each thread runs its ops with one intra-op thread, so the ``n`` threads
    together use what the caller's ops would have used, under the caller's
    grad and inference modes (thread-local in torch; autocast, also
    thread-local, is not carried over). With ``n == 1``
    ``work`` runs here, on all items, with the caller's settings. The split
    depends only on ``n``, so results are reproducible at a given thread
    count. The caller's thread count is restored afterwards (also on error).
    """
    threads = torch.get_num_threads()
    workers = min(threads, len(items))
    if workers <= 1:
        return [work(items)]

    grad = torch.is_grad_enabled()
    inference = torch.is_inference_mode_enabled()

    def run(run_items):
        # Thread-local for OpenMP and MKL; the process-wide default that it
        # also sets is restored below.
        torch.set_num_threads(1)
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return work(run_items)

    try:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(run, split_evenly(items, workers)))
    finally:
        torch.set_num_threads(threads)
