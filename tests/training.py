"""Training runs in fresh processes, started as a user starts them (``tools/train.py``,
``tools/dist_train.sh``), and bit-for-bit comparison of their checkpoints."""
import os
import os.path as osp
import socket
import subprocess
import sys
from typing import Mapping, Optional, Union

import torch

from tests.conftest import REPO_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def train_process(config: str, work_dir, options: Mapping[str, object],
                  resume: Optional[Union[bool, str]] = None, nproc: int = 1,
                  expect: int = 0) -> str:
    """Train ``config`` in fresh processes with ``--cfg-options`` ``options``: one
    ``tools/train.py``, or ``tools/dist_train.sh`` with ``nproc`` gloo processes.

    ``resume``: ``True`` for ``--resume`` (the work dir's newest checkpoint), a path for
    ``--resume PATH``. Asserts the exit status ``expect`` (through torchrun only zero or
    not: it reports a failed process as its own status 1) and returns stdout + stderr.
    """
    args = ['--work-dir', str(work_dir), '--cfg-options',
            *[f'{k}={v}' for k, v in options.items()]]
    if resume:
        args += ['--resume'] + ([] if resume is True else [str(resume)])
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS='1')
    if nproc == 1:
        cmd = [sys.executable, osp.join(REPO_ROOT, 'tools', 'train.py'), config, *args]
    else:
        cmd = ['bash', osp.join(REPO_ROOT, 'tools', 'dist_train.sh'), config, str(nproc), *args]
        env['PORT'] = str(free_port())
    proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=900)
    out = proc.stdout + proc.stderr
    ok = proc.returncode == expect if nproc == 1 else (proc.returncode == 0) == (expect == 0)
    assert ok, f'exit status {proc.returncode}\n' + out[-4000:]
    return out


def load_checkpoint(work_dir, name: str) -> dict:
    return torch.load(osp.join(str(work_dir), name), map_location='cpu', weights_only=False)


def _flat(obj, prefix=''):
    """Every tensor and number of a nested checkpoint entry, by path."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flat(v, f'{prefix}.{k}'))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flat(v, f'{prefix}.{i}'))
        return out
    if isinstance(obj, (int, float)):
        return {prefix: torch.tensor(obj)}
    return {}


def max_difference(a: dict, b: dict) -> float:
    """Largest absolute difference over weights, buffers, optimizer and
    scheduler state of two checkpoints (their keys must match)."""
    fa = _flat({k: a[k] for k in ('state_dict', 'optimizer', 'param_schedulers')})
    fb = _flat({k: b[k] for k in ('state_dict', 'optimizer', 'param_schedulers')})
    assert fa.keys() == fb.keys()
    return max(float((fa[k].double() - fb[k].double()).abs().max()) if fa[k].numel() else 0.0
               for k in fa)
