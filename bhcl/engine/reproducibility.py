"""Exact resume: every random stream of training is a function of (seed, epoch, rank, worker).

mmengine seeds Python, NumPy and torch once, when the run starts, and saves
only the seed in a checkpoint. The streams then run on across epochs: data
augmentation (flips, the two views) in the main process, the seeds torch hands
to data-loader workers, and any sampling a module does. A run resumed from an
epoch checkpoint starts them afresh, so it diverges from the uninterrupted run
from its first iteration.

``EpochSeedHook`` re-seeds the three generators of every process at the start
of every training epoch from ``SeedSequence((seed, epoch, rank))``. The data
loader builds its iterator after ``before_train_epoch``, so the shuffling and
the base seed of this epoch's workers derive from the same state;
``epoch_worker_init`` then seeds each worker's Python, NumPy and torch
generators from that base seed, the worker id and the rank. Whatever happened
before the epoch (how many epochs ran in this process, whether it was
resumed, validation in between) no longer matters.

What this does not cover, and says so at run time:

* ``persistent_workers=True`` keeps workers, and their streams, across epochs;
  a resumed run restarts them at another epoch. The hook warns.
* A checkpoint written in the middle of an epoch (``by_epoch=False``
  checkpointing) needs the data position and the random state of that
  iteration as well: ``PreemptibleCheckpointHook`` (the default checkpoint
  hook of bhcl configs) stores and restores them; mmengine's own
  ``CheckpointHook`` restarts the epoch from its first batch.
* Non-deterministic kernels (CUDA atomics in deformable attention, scatter)
  differ from run to run whatever the seeds; see docs/get_started.md.
"""
from __future__ import annotations

import os
import random
from typing import Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import FUNCTIONS, HOOKS

from ..utils.dist import get_rank


def derive_seed(*keys: int) -> int:
    """A 63-bit seed mixed from integer keys with NumPy's ``SeedSequence``
    (distinct keys give statistically independent streams)."""
    state = np.random.SeedSequence([int(k) % (1 << 63) for k in keys]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) % (1 << 63)


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's (every device's) generators."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


@HOOKS.register_module()
class EpochSeedHook(Hook):
    """Re-seed every process at the start of each training epoch (see module doc).

    Args:
        seed (int, optional): base seed; by default the runner's seed
            (``randomness.seed``, or the one stored in the resumed checkpoint).
    """

    priority = 'LOWEST'  # last before the epoch's data-loader iterator is built

    def __init__(self, seed: Optional[int] = None) -> None:
        self.seed = seed

    def before_train(self, runner) -> None:
        loader = runner.train_loop.dataloader
        if getattr(loader, 'num_workers', 0) > 0 and getattr(loader, 'persistent_workers', False):
            print_log('EpochSeedHook: train_dataloader has persistent_workers=True; worker '
                      'augmentation streams then carry over between epochs and a resumed run '
                      'differs from an uninterrupted one. Set persistent_workers=False for '
                      'exact resume.', logger='current', level=30)

    def before_train_epoch(self, runner) -> None:
        base = self.seed if self.seed is not None else runner.seed
        seed_all(derive_seed(base, runner.epoch, get_rank()))


@FUNCTIONS.register_module()
def epoch_worker_init(worker_id: int) -> None:
    """Data-loader ``worker_init_fn``: seed the worker's generators from the
    base seed torch drew for this epoch's iterator, the worker id and the rank.

    Use it in a config as ``worker_init_fn=dict(type='epoch_worker_init')``.
    torch shares the base seed across ranks, hence the rank in the mix.
    """
    rank = get_rank() if torch.distributed.is_initialized() else int(os.environ.get('RANK', 0))
    seed_all(derive_seed(torch.initial_seed(), worker_id, rank))
