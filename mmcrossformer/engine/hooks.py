"""Resume that continues the random streams: :class:`RNGStateHook`.

mmengine's checkpoints hold the model, optimizer, schedulers, message hub
and seed, but not the states of the random number generators, so a resumed
run re-seeds them and draws other flips, crops, drop-path masks and RoI
samples than the uninterrupted run would have. ``RNGStateHook`` stores each
process's states in every checkpoint and puts them back on ``--resume``:

- **saved** (``before_save_checkpoint``, on rank 0, which writes the file):
  ``checkpoint['rng_states']``, one entry per rank, as they were at the end
  of the last training iteration (gathered from all ranks then): Python's
  ``random``, NumPy's global generator, torch's CPU generator and, where
  CUDA is available, the current device's CUDA generator. Tensors and plain
  Python values only, so ``torch.load(weights_only=True)`` reads them.
- **restored** on every rank, from its own entry, at the point where the
  uninterrupted run continues: at the start of training (epoch-based
  loops), or, in an ``IterBasedTrainLoop``, right after the loop has
  replayed the batches trained before the checkpoint (it fetches them again
  to advance the sampler, which draws augmentation randomness). ``load_from``
  without ``--resume`` restores nothing.
- **validation draws nothing from training**: the states at ``before_val``
  are put back at ``after_val``, so a validation between a checkpoint and
  the next iteration (which the resumed run does not repeat) changes
  nothing. This makes runs with the hook draw differently from runs without
  it after a validation, not less randomly.

Not restored: the generators of data loader **worker processes**. mmengine
seeds each worker when it starts (``seed + rank * num_workers + worker_id``)
and the states stay in the worker. With ``num_workers=0`` (augmentation in
the main process) a resume is exact; with workers it is exact for
everything drawn in the main process (drop path, dropout, RoI sampling,
batch augments such as Mixup / CutMix in the data preprocessor), while the
pipeline's draws restart from the worker seeds (for non-persistent workers
of an epoch-based loop, which restart every epoch, a resume at an epoch
boundary is exact too). The samplers need nothing from here: mmengine's
``DefaultSampler`` shuffles by ``seed + epoch`` and ``InfiniteSampler`` is
replayed by the loop.

Enable it in a config with ``custom_hooks = [dict(type='RNGStateHook')]``.
"""
import random
from typing import List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop

CHECKPOINT_KEY = 'rng_states'


def get_rng_states() -> dict:
    """This process's generator states, as tensors and plain Python values.

    Returns:
        dict: ``python`` (``random.getstate()``), ``numpy`` (the MT19937
        ``keys`` as an int64 tensor of 624, ``pos``, ``has_gauss``,
        ``cached_gaussian``), ``torch`` (CPU generator, uint8 tensor) and
        ``cuda`` (the current CUDA device's generator, or None without CUDA).
    """
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    assert name == 'MT19937', name
    return dict(
        python=random.getstate(),
        numpy=dict(
            keys=torch.from_numpy(keys.astype(np.int64)),
            pos=int(pos),
            has_gauss=int(has_gauss),
            cached_gaussian=float(cached_gaussian)),
        torch=torch.get_rng_state(),
        cuda=torch.cuda.get_rng_state() if torch.cuda.is_available() else None)


def set_rng_states(states: dict) -> None:
    """Set this process's generators to ``states`` (from
    :func:`get_rng_states`; tensors may have been loaded onto a GPU)."""
    version, internal, gauss = states['python']
    random.setstate((version, tuple(internal), gauss))
    state = states['numpy']
    np.random.set_state(
        ('MT19937', state['keys'].cpu().numpy().astype(np.uint32),
         state['pos'], state['has_gauss'], state['cached_gaussian']))
    torch.set_rng_state(states['torch'].cpu())
    if states.get('cuda') is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(states['cuda'].cpu())


class _RestoreAfterReplay:
    """Stands in for an ``IterBasedTrainLoop``'s data loader iterator while
    the loop fetches the ``num_replayed`` batches trained before a resume;
    right after the last one it sets the generators to ``states`` and puts
    the loop's iterator back, so the first new batch draws as in the
    uninterrupted run."""

    def __init__(self, loop, num_replayed: int, states: dict):
        self._loop = loop
        self._iterator = loop.dataloader_iterator
        self._left = num_replayed
        self._states = states

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self._iterator)
        self._left -= 1
        if self._left == 0:
            set_rng_states(self._states)
            self._loop.dataloader_iterator = self._iterator
        return batch


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save the random generators' states in checkpoints and restore them on
    resume, per rank (see :mod:`mmcrossformer.engine.hooks`).

    Its priority (``LOW``) places it before mmengine's ``CheckpointHook``
    (``VERY_LOW``) at the end of each iteration, so the states it gathers
    there are the ones the checkpoint written next belongs to. In a
    distributed run that is one ``all_gather_object`` of a few kilobytes per
    iteration.
    """
    priority = 'LOW'

    def __init__(self) -> None:
        self._train_states: Optional[List[dict]] = None  # per rank
        self._val_states: Optional[dict] = None  # this rank, at before_val
        self._loaded: Optional[tuple] = None  # (iter, this rank's states)

    # ------------------------------------------------------------ saving
    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        self._train_states = all_gather_object(get_rng_states())

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        states = self._train_states
        if states is None and runner.world_size == 1:
            states = [get_rng_states()]  # a save before any iteration
        if states is not None:
            checkpoint[CHECKPOINT_KEY] = states

    # ------------------------------------------------------------ validation
    def before_val(self, runner) -> None:
        self._val_states = get_rng_states()

    def after_val(self, runner) -> None:
        if self._val_states is not None:
            set_rng_states(self._val_states)
            self._val_states = None

    # ------------------------------------------------------------ resuming
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded = None
        states = checkpoint.get(CHECKPOINT_KEY)
        rank, world_size = get_dist_info()
        if states is None:
            runner.logger.info(
                'RNGStateHook: the checkpoint holds no random generator '
                'states (saved without this hook); a resumed run draws '
                'from freshly seeded generators')
        elif len(states) != world_size:
            runner.logger.warning(
                f'RNGStateHook: the checkpoint holds the random generator '
                f'states of {len(states)} processes, this run has '
                f'{world_size}; they are not restored (a resume draws from '
                'freshly seeded generators)')
        else:
            self._loaded = (checkpoint.get('meta',
                                           {}).get('iter'), states[rank])

    def before_train(self, runner) -> None:
        if self._loaded is None:
            return
        saved_iter, states = self._loaded
        self._loaded = None
        if runner.iter == 0 or runner.iter != saved_iter:
            return  # load_from without --resume: a new run
        loop = runner.train_loop
        if isinstance(loop, IterBasedTrainLoop):
            loop.dataloader_iterator = _RestoreAfterReplay(
                loop, runner.iter, states)
        else:
            set_rng_states(states)
        runner.logger.info(
            f'RNGStateHook: random generator states restored as they were '
            f'after iteration {saved_iter}')
