"""What ``tools/train.py`` and ``tools/test.py`` share: their common
arguments, the config they load (:func:`load_config`) and the Runner they
build for the launcher they run under (:func:`build_runner`).

Distributed runs take mmengine's path: ``torchrun`` starts one process per
device, ``--launcher pytorch`` makes the Runner call ``init_dist``, which
sets the process's GPU (``torch.cuda.set_device(LOCAL_RANK)``) and joins the
NCCL group of ``env_cfg.dist_cfg``. On a machine without a CUDA GPU
mmengine 0.10.7 stops at that ``set_device``; there
:func:`prepare_distributed_run` makes the same Runner path run on the CPU:

- it joins the process group itself with ``gloo`` (mmengine's Runner then
  skips ``init_dist``: it only initialises a group that does not exist),
  recorded as ``env_cfg.dist_cfg.backend='gloo'``;
- the DDP wrapper (``model_wrapper_cfg``, by default the one mmengine
  builds: ``MMDistributedDataParallel`` without buffer broadcast, with the
  config's ``find_unused_parameters``) gets ``device_ids=None``: mmengine
  passes ``[LOCAL_RANK]``, which DDP accepts only for a module on that GPU;
- ``SyncBN`` / ``MMSyncBN`` become ``BN``: neither has a CPU kernel (each
  process then normalises over its own batch); ``sync_bn`` is dropped.

With a GPU nothing changes (NCCL, as the configs say).
"""
import argparse
import datetime
import os
import os.path as osp
from typing import List

import torch
import torch.distributed as dist
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

SUPPORTED_SCOPES = ('mmdet', 'mmseg', 'mmpretrain')
CPU_BACKEND = 'gloo'
SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN')


def check_default_scope(cfg: Config, config_path: str) -> str:
    """The config's ``default_scope`` (which package's registries build it,
    as ``mim train <package>`` would choose), or a ValueError that says how
    to set it."""
    scope = cfg.get('default_scope')
    if scope not in SUPPORTED_SCOPES:
        raise ValueError(
            f'{config_path} has default_scope={scope!r}; tools/train.py and '
            f'tools/test.py run configs of {", ".join(SUPPORTED_SCOPES)}: '
            f"inherit the package's default_runtime (e.g. "
            f"'mmdet::_base_/default_runtime.py') or set default_scope")
    return scope


def _replace_sync_bn(node) -> int:
    """Set every ``type`` in ``SYNC_BN_TYPES`` under ``node`` to ``'BN'``;
    the number replaced."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') in SYNC_BN_TYPES:
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += _replace_sync_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _replace_sync_bn(value)
    return count


def prepare_distributed_run(cfg: Config) -> List[str]:
    """Adapt ``cfg`` (with ``cfg.launcher`` set) to a distributed run on a
    machine without a CUDA GPU and join the gloo process group (see the
    module docstring); nothing on a single process or with CUDA.

    Returns:
        list[str]: What was changed, for the log.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return []
    if launcher != 'pytorch':
        raise ValueError(
            f'--launcher {launcher} on a machine without a CUDA GPU: only '
            "'pytorch' (torchrun, tools/dist_train.sh) runs on the CPU")
    notes = []
    if cfg.get('env_cfg') is None:
        cfg.env_cfg = ConfigDict()
    if cfg.env_cfg.get('dist_cfg') is None:
        cfg.env_cfg.dist_cfg = ConfigDict()
    dist_cfg = cfg.env_cfg.dist_cfg
    if dist_cfg.get('backend', 'nccl') != CPU_BACKEND:
        notes.append(f"no CUDA GPU: process group backend "
                     f"{dist_cfg.get('backend', 'nccl')!r} -> 'gloo'")
    dist_cfg['backend'] = CPU_BACKEND
    # What mmengine's Runner builds when the config has no wrapper.
    wrapper = cfg.get('model_wrapper_cfg') or ConfigDict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    replaced = _replace_sync_bn(cfg.model)
    if replaced:
        notes.append(f'no CUDA GPU: {replaced} SyncBN norm_cfg -> BN (SyncBN '
                     'has no CPU kernel; each process normalises its own '
                     'batch)')
    if cfg.get('sync_bn'):
        notes.append(f'no CUDA GPU: sync_bn={cfg.sync_bn!r} ignored')
        cfg.sync_bn = None
    if not dist.is_initialized():
        kwargs = {k: v for k, v in dist_cfg.items() if k != 'backend'}
        if kwargs.get('timeout') is not None:
            kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
        dist.init_process_group(backend=CPU_BACKEND, **kwargs)
        notes.append(f'joined the gloo process group as rank '
                     f'{dist.get_rank()} of {dist.get_world_size()} '
                     f"(LOCAL_RANK {os.environ.get('LOCAL_RANK')})")
    return notes


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--work-dir``, ``--cfg-options``, ``--launcher`` and
    ``--local-rank``, as the OpenMMLab tools take them."""
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, KEY=VALUE (a.b=1 c=[1,2])')
    parser.add_argument(
        '--launcher',
        default='none',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def load_config(args: argparse.Namespace) -> Config:
    """``args.config`` with ``--cfg-options``, the launcher and the work dir
    (``--work-dir``, else the config's, else ``./work_dirs/<config name>``)
    set; its ``default_scope`` checked."""
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    check_default_scope(cfg, args.config)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg


def build_runner(cfg: Config) -> Runner:
    """The Runner of ``cfg`` (``runner_type`` if set), after
    :func:`prepare_distributed_run`, whose changes it logs."""
    notes = prepare_distributed_run(cfg)
    runner = (
        Runner.from_cfg(cfg)
        if 'runner_type' not in cfg else RUNNERS.build(cfg))
    for note in notes:
        runner.logger.info(f'mmcrossformer: {note}')
    return runner
