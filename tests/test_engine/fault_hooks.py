"""Hooks that break a training run on purpose (imported by the fault-injection
tests through ``custom_imports``; never used by a real config)."""
import os
import signal

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


class _KillOnPickle:
    """Kills its process with SIGKILL when pickled, i.e. while the checkpoint
    that holds it is being serialised."""

    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGKILL)
        return (object, ())


@HOOKS.register_module()
class SignalAtIterHook(Hook):
    """Send ``sig`` to this process during iteration ``at`` (1-based).

    ``when``: ``'before'`` (during the iteration's forward and backward pass),
    ``'after'`` (after its update, before its checkpoint) or ``'save'`` (SIGKILL
    while that iteration's checkpoint is being written). ``rank`` limits the
    signal to one process of a distributed run.
    """

    priority = 'HIGH'  # before the checkpoint hook

    def __init__(self, at: int, sig: str = 'SIGKILL', when: str = 'after',
                 rank: int = -1) -> None:
        assert when in ('before', 'after', 'save')
        self.at, self.sig, self.when, self.rank = at, getattr(signal, sig), when, rank

    def _armed(self, runner) -> bool:
        return runner.iter + 1 == self.at and self.rank in (-1, runner.rank)

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if self.when == 'before' and self._armed(runner):
            os.kill(os.getpid(), self.sig)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if self.when == 'after' and self._armed(runner):
            os.kill(os.getpid(), self.sig)

    def before_save_checkpoint(self, runner, checkpoint):
        if self.when == 'save' and runner.iter + 1 == self.at:
            checkpoint['zz_kill'] = _KillOnPickle()
