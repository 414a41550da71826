from .reproducibility import EpochSeedHook, derive_seed, epoch_worker_init, seed_all

__all__ = ['EpochSeedHook', 'derive_seed', 'epoch_worker_init', 'seed_all']
