"""Work spread over threads of one intra-op thread each
(``models/tile_threads.py``), as the attention's tiles are."""
import threading

import pytest
import torch

from mmcrossformer.models.tile_threads import map_in_threads, split_evenly


@pytest.fixture
def two_threads(torch_threads):
    torch_threads(2)


def test_split_evenly_keeps_order_and_balances():
    assert split_evenly(list(range(7)), 3) == [[0, 1], [2, 3], [4, 5, 6]]
    assert split_evenly(list(range(4)), 4) == [[0], [1], [2], [3]]
    runs = split_evenly(list(range(100)), 7)
    assert sum(runs, []) == list(range(100))
    assert max(map(len, runs)) - min(map(len, runs)) <= 1


def _where(items):
    return (list(items), threading.get_ident(), torch.get_num_threads(),
            torch.is_grad_enabled(), torch.is_inference_mode_enabled())


def test_each_run_in_its_own_single_threaded_thread(two_threads):
    both_running = threading.Barrier(2, timeout=60)

    def meet(items):
        both_running.wait()  # raises unless the two runs are concurrent
        return _where(items)

    results = map_in_threads(meet, list(range(5)))
    assert [r[0] for r in results] == [[0, 1], [2, 3, 4]]
    assert len({r[1] for r in results}) == 2
    assert threading.get_ident() not in {r[1] for r in results}
    assert all(r[2] == 1 for r in results)
    assert torch.get_num_threads() == 2  # the caller's count, restored


def test_grad_and_inference_modes_are_carried_over(two_threads):
    assert all(r[3] and not r[4] for r in map_in_threads(_where, [1, 2]))
    with torch.no_grad():
        assert not any(r[3] for r in map_in_threads(_where, [1, 2]))
    with torch.inference_mode():
        results = map_in_threads(_where, [1, 2])
    assert all(r[4] and not r[3] for r in results)


def test_one_thread_runs_everything_here(torch_threads):
    torch_threads(1)
    [(items, ident, *_)] = map_in_threads(_where, [1, 2, 3])
    assert items == [1, 2, 3] and ident == threading.get_ident()
    # One item: no thread either, whatever the thread count.
    torch_threads(2)
    [(items, ident, *_)] = map_in_threads(_where, [1])
    assert ident == threading.get_ident()


def test_an_error_reaches_the_caller_and_the_count_is_restored(two_threads):

    def fail(items):
        if 3 in items:
            raise ValueError('tile 3')
        return items

    with pytest.raises(ValueError, match='tile 3'):
        map_in_threads(fail, [1, 2, 3])
    assert torch.get_num_threads() == 2
