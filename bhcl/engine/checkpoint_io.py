"""Checkpoint files that survive a kill: atomic writes, a readability check,
and the choice of the newest readable checkpoint for ``--resume``.

A checkpoint is written under a temporary name in its final folder and renamed
once complete (``os.replace`` is atomic on POSIX file systems), so a process
killed while writing leaves a stray ``.NAME.tmp`` file, never a truncated
``iter_N.pth``; ``last_checkpoint`` is replaced the same way after the rename.
A file truncated by other means (a full disk, a copy cut short) is recognised
by :func:`checkpoint_problem` before mmengine tries to load it.
"""
from __future__ import annotations

import os
import os.path as osp
import re
import zipfile
from typing import Dict, List, Optional, Tuple

import torch

from ..utils.class_order import CLASS_ORDER_KEY

CHECKPOINT_NAME = re.compile(r'^(epoch|iter)_(\d+)\.pth$')
TMP_SUFFIX = '.tmp'


def temporary_name(filename: str) -> str:
    """The hidden name a checkpoint is written under before its rename."""
    return f'.{filename}{TMP_SUFFIX}'


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp_path: str, path: str) -> None:
    """Flush ``tmp_path`` to disk and rename it to ``path`` in one step."""
    _fsync(tmp_path)
    os.replace(tmp_path, path)
    try:
        _fsync(osp.dirname(osp.abspath(path)))  # the rename itself
    except OSError:  # some file systems cannot sync a folder
        pass


def write_text_atomic(path: str, text: str) -> None:
    """Replace the text file ``path`` without a moment where it is partial."""
    tmp = osp.join(osp.dirname(path), temporary_name(osp.basename(path)))
    with open(tmp, 'w') as f:
        f.write(text)
    publish(tmp, path)


def remove_stale_temporaries(folder: str) -> List[str]:
    """Delete the ``.NAME.pth.tmp`` files a killed run left in ``folder``."""
    removed = []
    if not osp.isdir(folder):
        return removed
    for name in os.listdir(folder):
        if name.startswith('.') and name.endswith('.pth' + TMP_SUFFIX):
            os.remove(osp.join(folder, name))
            removed.append(name)
    return removed


def checkpoint_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be resumed from, or None when it reads completely.

    torch's zip format puts its directory at the end of the file, so a
    truncated file fails to open; every record's CRC is then checked.
    """
    if not osp.isfile(path):
        return 'no such file'
    if osp.getsize(path) == 0:
        return 'empty file'
    if not zipfile.is_zipfile(path):
        try:  # a legacy (non-zip) torch file, or a zip cut before its directory
            torch.load(path, map_location='cpu', weights_only=False)
        except Exception as exc:  # noqa: BLE001  (any failure means unreadable)
            return f'not a complete checkpoint ({type(exc).__name__}: {exc})'
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            for record in archive.infolist():
                if record.CRC == 0 and record.file_size > 0:
                    continue  # saved without checksums
                with archive.open(record) as stream:  # checks the CRC at the end
                    while stream.read(1 << 24):
                        pass
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f'damaged checkpoint ({exc})'
    return None


def checkpoint_progress(name: str, iters_per_epoch: int) -> Optional[int]:
    """Training iterations done when ``epoch_E.pth`` / ``iter_N.pth`` was saved."""
    match = CHECKPOINT_NAME.match(osp.basename(name))
    if match is None:
        return None
    count = int(match.group(2))
    return count * iters_per_epoch if match.group(1) == 'epoch' else count


def resume_candidates(work_dir: str, iters_per_epoch: int) -> List[str]:
    """Checkpoints to try for ``--resume`` auto, newest first.

    The file named by ``work_dir/last_checkpoint`` comes first, then the
    ``epoch_E.pth`` / ``iter_N.pth`` files beside it that hold less progress
    (best-metric and published checkpoints are not resume points).
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    latest = None
    if osp.isfile(pointer):
        with open(pointer) as f:
            latest = f.read().strip() or None
    folder = osp.dirname(latest) if latest else work_dir
    found: Dict[str, Tuple[int, float]] = {}
    if osp.isdir(folder):
        for name in os.listdir(folder):
            progress = checkpoint_progress(name, iters_per_epoch)
            if progress is not None:
                path = osp.join(folder, name)
                found[path] = (progress, osp.getmtime(path))
    if latest is not None:
        limit = checkpoint_progress(latest, iters_per_epoch)
        found.pop(latest, None)
        if limit is not None:
            found = {p: key for p, key in found.items() if key[0] < limit}
    older = sorted(found, key=found.get, reverse=True)
    return ([latest] if latest else []) + older


def first_readable(candidates: List[str]) -> Tuple[Optional[str], List[Tuple[str, str]]]:
    """The first readable checkpoint of ``candidates`` and the (path, problem)
    of each one skipped before it."""
    skipped = []
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            return path, skipped
        skipped.append((path, problem))
    return None, skipped


def state_dict_mismatch(model_state: dict, checkpoint_state: dict) -> Dict[str, List[str]]:
    """The keys a checkpoint lacks, the keys the model lacks and the keys whose
    shapes differ, by kind (empty when the checkpoint fits the model). A recorded class
    order (``CLASS_ORDER_KEY``) is a record, not a weight: checkpoints written before it
    existed lack it, and where present the model's load hook checks it."""
    ckpt = {k[len('module.'):] if k.startswith('module.') else k: v
            for k, v in checkpoint_state.items() if k != CLASS_ORDER_KEY}
    model_state = {k: v for k, v in model_state.items() if k != CLASS_ORDER_KEY}
    shapes = [f'{k}: {tuple(ckpt[k].shape)} in the checkpoint, {tuple(model_state[k].shape)} '
              'in the model' for k in sorted(set(model_state) & set(ckpt))
              if hasattr(ckpt[k], 'shape') and tuple(ckpt[k].shape) != tuple(model_state[k].shape)]
    found = {'in the model, not in the checkpoint': sorted(set(model_state) - set(ckpt)),
             'in the checkpoint, not in the model': sorted(set(ckpt) - set(model_state)),
             'with another shape': shapes}
    return {kind: keys for kind, keys in found.items() if keys}


def describe_mismatch(mismatch: Dict[str, List[str]], shown: int = 10) -> str:
    """A few keys of each kind of :func:`state_dict_mismatch`, one per line."""
    lines = []
    for kind, keys in mismatch.items():
        lines.append(f'{len(keys)} {"key" if len(keys) == 1 else "keys"} {kind}:')
        lines += [f'    {k}' for k in keys[:shown]]
        if len(keys) > shown:
            lines.append(f'    ... and {len(keys) - shown} more')
    return '\n'.join(lines)
