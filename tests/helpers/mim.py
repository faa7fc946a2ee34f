"""The ``mim`` command line of this interpreter's environment, on the CPU."""
import os
import os.path as osp
import subprocess
import sys

import pytest

MIM = osp.join(osp.dirname(sys.executable), 'mim')
# CPU only; one thread per process: the runs are small, and OpenMP slows
# down several-fold when parallel processes oversubscribe the cores. The
# third-party deprecation warnings would bury a failure's log tail.
CPU_ENV = dict(CUDA_VISIBLE_DEVICES='-1', OMP_NUM_THREADS='1',
               MKL_NUM_THREADS='1', PYTHONWARNINGS='ignore')


def run_mim(*args, cwd, timeout: int = 900) -> str:
    """Run ``mim ARGS`` in ``cwd``; its combined stdout and stderr. Fails
    the test with the output's tail if it exits with an error."""
    args = [str(a) for a in args]
    proc = subprocess.run([MIM, *args], cwd=str(cwd),
                          env=dict(os.environ, **CPU_ENV), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout)
    if proc.returncode:
        pytest.fail(f'mim {" ".join(args)} exited with {proc.returncode}:\n'
                    + proc.stdout[-6000:])
    return proc.stdout
