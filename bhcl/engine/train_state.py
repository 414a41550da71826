"""The random state and data position that mmengine does not checkpoint.

Resuming inside an epoch needs, besides weights, optimizer and scheduler:

* the data position: how many batches of the epoch were consumed (the
  epoch's order itself is a function of the sampler's seed and epoch);
* the main process's generators (Python, NumPy, torch CPU and CUDA) at the
  iteration boundary: they drive augmentation with ``num_workers=0`` and any
  sampling the model does;
* the same generators where the epoch's data-loader iterator was created:
  torch draws the workers' base seed there, and the workers' streams follow
  from it and from the batches each worker has loaded.

:class:`ResumableLoader` wraps the training data loader to record the last
two and, on resume, to rebuild the interrupted epoch: it restores the
generators of the iterator's creation, lets the loader produce and discard the
batches already trained on (so every worker's stream advances exactly as it
did, whichever worker loaded which batch), then restores the generators of
the iteration boundary. The discarded batches cost their loading time only.
"""
from __future__ import annotations

import random
from typing import Iterator, Optional

import numpy as np
import torch
from mmengine.logging import print_log


def get_rng_state() -> dict:
    """Python's, NumPy's and torch's (CPU, current CUDA device) generator states."""
    state = dict(python=random.getstate(), numpy=np.random.get_state(),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'])


class ResumableLoader:
    """A training data loader that knows its position in the epoch and can
    continue an interrupted epoch exactly (see the module doc).

    Every other attribute is the wrapped loader's, read and written through,
    so hooks that set a sampler's epoch or swap a dataset's pipeline still
    reach the real loader.
    """

    _own = ('loader', 'position', 'epoch_rng', 'worker_base_seed', '_pending')

    def __init__(self, loader) -> None:
        self.loader = loader
        self.position = 0  # batches of the current epoch handed out so far
        self.epoch_rng: Optional[dict] = None  # generators where this epoch's iterator began
        self.worker_base_seed: Optional[int] = None
        self._pending: Optional[dict] = None

    def __getattr__(self, name):
        return getattr(self.__dict__['loader'], name)

    def __setattr__(self, name, value):
        if name in self._own:
            self.__dict__[name] = value
        else:
            setattr(self.loader, name, value)

    def __len__(self) -> int:
        return len(self.loader)

    def resume_from(self, position: int, epoch_rng: dict, rng: dict,
                    worker_base_seed: Optional[int]) -> None:
        """Make the next epoch continue at batch ``position`` with the random
        state the interrupted run had there."""
        self._pending = dict(position=position, epoch_rng=epoch_rng, rng=rng,
                             worker_base_seed=worker_base_seed)

    def __iter__(self) -> Iterator:
        resume, self._pending = self._pending, None
        self.position = 0
        if resume is not None:
            set_rng_state(resume['epoch_rng'])
        self.epoch_rng = get_rng_state()
        if resume is not None and resume['position'] >= len(self.loader):
            set_rng_state(resume['rng'])  # the whole epoch was trained
            self.position = len(self.loader)
            return
        iterator = iter(self.loader)
        # torch draws the workers' base seed when the iterator is created
        self.worker_base_seed = getattr(iterator, '_base_seed', None)
        if resume is not None:
            self._check_worker_seed(resume['worker_base_seed'])
            for _ in range(resume['position']):
                next(iterator)
                self.position += 1
            set_rng_state(resume['rng'])
        for batch in iterator:
            self.position += 1
            yield batch

    def _check_worker_seed(self, expected: Optional[int]) -> None:
        if expected is not None and self.worker_base_seed is not None \
                and expected != self.worker_base_seed:
            print_log(f'ResumableLoader: the data workers of the resumed epoch got base seed '
                      f'{self.worker_base_seed}, the interrupted run had {expected}; the rest '
                      'of this epoch is augmented differently (is the data loader built with '
                      'a generator of its own?).', logger='current', level=30)
