from .preemptible_checkpoint_hook import EXIT_PREEMPTED, PreemptibleCheckpointHook, Preempted
from .reproducibility import EpochSeedHook, derive_seed, epoch_worker_init, seed_all
from .train_state import ResumableLoader

__all__ = [
    'EXIT_PREEMPTED', 'EpochSeedHook', 'PreemptibleCheckpointHook', 'Preempted',
    'ResumableLoader', 'derive_seed', 'epoch_worker_init', 'seed_all'
]
