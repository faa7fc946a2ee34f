"""Commands run by the training tests (CPU, one thread per process), with
the outcome they expect: :func:`run_command` for scripts such as
``tools/dist_train.sh``, :func:`run_mim_expecting_failure` for a ``mim``
call that must be refused (``helpers.mim.run_mim`` runs the ones that must
succeed), and :func:`scalars_records` to read what mmengine logged."""
import glob
import json
import os
import os.path as osp
import socket
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

import pytest
from helpers.mim import CPU_ENV, MIM
from helpers.paths import REPO

TESTS = osp.dirname(osp.dirname(osp.abspath(__file__)))


def run_command(args: Sequence,
                cwd,
                env: Optional[Dict[str, str]] = None,
                expect_failure: bool = False,
                timeout: int = 900) -> str:
    """Run ``args`` in ``cwd`` with ``CPU_ENV`` (plus ``tests/`` on
    ``PYTHONPATH``, so training processes import ``helpers``, and ``env``);
    the combined output. Fails the test with the output's tail if it exits
    with an error (or, with ``expect_failure``, if it does not)."""
    args = [str(a) for a in args]
    full_env = dict(os.environ, **CPU_ENV)
    full_env['PYTHONPATH'] = os.pathsep.join(
        p for p in (TESTS, REPO, os.environ.get('PYTHONPATH')) if p)
    full_env['PYTHON'] = sys.executable
    full_env.update(env or {})
    proc = subprocess.run(
        args,
        cwd=str(cwd),
        env=full_env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout)
    if bool(proc.returncode) != expect_failure:
        expected = 'an error' if expect_failure else 'success'
        pytest.fail(f'{" ".join(args)} exited with {proc.returncode} '
                    f'(expected {expected}):\n' + proc.stdout[-6000:])
    return proc.stdout


def run_mim_expecting_failure(*args, cwd, timeout: int = 900) -> str:
    """Run ``mim ARGS``, which must exit with an error; its output."""
    return run_command([MIM, *args], cwd, expect_failure=True, timeout=timeout)


def free_port() -> int:
    """A TCP port nothing listens on now (for torchrun's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def scalars_records(work_dir) -> List[dict]:
    """Every record mmengine's json backend wrote under ``work_dir``
    (``<timestamp>/vis_data/scalars.json`` of each run, oldest first)."""
    records = []
    for path in sorted(
            glob.glob(
                osp.join(str(work_dir), '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            records += [json.loads(line) for line in f if line.strip()]
    return records
