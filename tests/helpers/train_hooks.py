"""Hooks that training processes of the tests import (``custom_imports``,
with ``tests/`` on ``PYTHONPATH``; see :func:`helpers.commands.run_command`):

- ``RankDigestsHook`` writes, per rank, the SHA-256 of every parameter at
  the start and at the end of training (and of the random generators'
  states at the end), to compare the ranks of a DDP run;
- ``KillAfterCheckpointsHook`` kills its own process with SIGKILL once the
  n-th checkpoint is on disk, as a crash or a preempted job would.
"""
import hashlib
import json
import os
import os.path as osp
import signal
from typing import Dict, Iterable, Tuple

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from mmcrossformer.engine import get_rng_states


def tensor_digests(
        named_tensors: Iterable[Tuple[str, torch.Tensor]]) -> Dict[str, str]:
    """``{name: sha256 of the tensor's bytes}`` (any device, any dtype)."""
    return {
        name:
        hashlib.sha256(t.detach().cpu().contiguous().view(
            torch.uint8).numpy().tobytes()).hexdigest()
        for name, t in named_tensors
    }


def rng_digests(states: dict) -> Dict[str, str]:
    """Digests of the tensors of :func:`mmcrossformer.engine.get_rng_states`
    (``torch``, ``numpy``) and of the Python state's integers."""
    out = tensor_digests([('torch', states['torch']),
                          ('numpy', states['numpy']['keys'])])
    out['python'] = hashlib.sha256(repr(states['python']).encode()).hexdigest()
    return out


def digests_path(work_dir: str, rank: int, when: str) -> str:
    return osp.join(work_dir, f'digests_{when}_rank{rank}.json')


@HOOKS.register_module()
class RankDigestsHook(Hook):
    """``work_dir/digests_{start,end}_rank{R}.json``: every parameter's
    digest (``digests``), the trainable ones' names (``trainable``) and the
    generators' digests (``rng``), after the weights are initialised and
    after the last iteration."""

    def _dump(self, runner, when: str) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        params = list(model.named_parameters())
        out = dict(
            digests=tensor_digests(params),
            trainable=[n for n, p in params if p.requires_grad],
            rng=rng_digests(get_rng_states()))
        with open(digests_path(runner.work_dir, runner.rank, when), 'w') as f:
            json.dump(out, f)

    def before_train(self, runner) -> None:
        self._dump(runner, 'start')

    def after_train(self, runner) -> None:
        self._dump(runner, 'end')


@HOOKS.register_module()
class KillAfterCheckpointsHook(Hook):
    """SIGKILL this process right after the ``num_checkpoints``-th
    checkpoint is written (after the ``CheckpointHook`` of the same
    iteration / epoch: this hook runs last)."""
    priority = 'LOWEST'

    def __init__(self, num_checkpoints: int) -> None:
        self.num_checkpoints = num_checkpoints
        self._saved = 0

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        self._saved += 1

    def _maybe_kill(self) -> None:
        if self._saved >= self.num_checkpoints:
            os.kill(os.getpid(), signal.SIGKILL)

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None) -> None:
        self._maybe_kill()

    def after_train_epoch(self, runner) -> None:
        self._maybe_kill()
