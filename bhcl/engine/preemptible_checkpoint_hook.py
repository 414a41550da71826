"""``CheckpointHook`` for jobs that may be stopped at any moment.

Configured exactly like mmengine's ``CheckpointHook`` (the default runtime of
every bhcl config selects it), it adds:

* **exact resume inside an epoch**: a checkpoint saved every N iterations
  (``by_epoch=False, interval=N``) also holds the data position within the
  epoch and the random state of every rank (``train_state``, see
  ``train_state.py``); ``--resume`` continues the epoch where it stopped;
* **atomic files**: a checkpoint is written under a temporary name and
  renamed, ``last_checkpoint`` is replaced after the rename, and old
  checkpoints (``max_keep_ckpts``) are removed only after the new one exists;
* **a safe ``--resume``**: an unreadable or truncated checkpoint is reported
  and the previous readable one used; a checkpoint whose weights do not fit
  the model is refused with the mismatching keys listed;
* **signals**: SIGTERM or SIGUSR1 make training save a checkpoint at the next
  iteration boundary and exit with status ``EXIT_PREEMPTED`` (75); a second
  signal stops the process the usual way. Data workers started by ``fork``
  inherit the handler and so survive the first signal too (Slurm signals
  every process of a job step, workers included).
"""
from __future__ import annotations

import os
import os.path as osp
import signal
import threading
import time
from typing import Optional, Sequence

from mmengine.dist import is_main_process
from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import BaseLoop, EpochBasedTrainLoop

from ..utils.dist import all_gather_object, any_rank, barrier, broadcast_object, get_rank
from .checkpoint_io import (checkpoint_problem, describe_mismatch, first_readable, publish,
                            remove_stale_temporaries, resume_candidates, state_dict_mismatch,
                            temporary_name, write_text_atomic)
from .train_state import ResumableLoader, get_rng_state, set_rng_state

EXIT_PREEMPTED = 75  # sysexits' EX_TEMPFAIL: stopped on request, run again to continue


class Preempted(SystemExit):
    """Training stopped by a signal after saving its checkpoint; the process
    exits with ``EXIT_PREEMPTED`` unless a caller catches it."""

    def __init__(self, checkpoint: str) -> None:
        super().__init__(EXIT_PREEMPTED)
        self.checkpoint = checkpoint


@HOOKS.register_module()
class PreemptibleCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` made safe for preemption (module doc).

    Args:
        signals (Sequence[str]): signals that request a checkpoint and a stop.
        **kwargs: ``CheckpointHook`` arguments (``interval``, ``by_epoch``,
            ``max_keep_ckpts``, ``save_best``, ...).
    """

    def __init__(self, *args, signals: Sequence[str] = ('SIGTERM', 'SIGUSR1'),
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.signals = tuple(signals)
        self._received: Optional[int] = None
        self._previous_handlers: dict = {}
        self._train_state: Optional[dict] = None
        self._resume_state: Optional[dict] = None

    # ----------------------------------------------------------------- resume
    def before_run(self, runner) -> None:
        """Choose the checkpoint of ``--resume`` before mmengine loads it."""
        if not getattr(runner, '_resume', False) or not isinstance(runner._train_loop, BaseLoop):
            return
        if runner._load_from is not None:
            problem = checkpoint_problem(runner._load_from) if is_main_process() else None
            problem = broadcast_object(problem)
            if problem is not None:
                raise RuntimeError(f'cannot resume from {runner._load_from}: {problem}. Pass '
                                   'another checkpoint, or --resume without a value to take '
                                   'the newest readable one of the work dir.')
            return
        chosen, skipped = None, []
        if is_main_process():
            chosen, skipped = first_readable(
                resume_candidates(runner.work_dir, len(runner.train_dataloader)))
        chosen, skipped = broadcast_object((chosen, skipped))
        for path, problem in skipped:
            runner.logger.warning(f'cannot resume from {path}: {problem}; trying the '
                                  'previous checkpoint')
        if chosen is not None:
            runner._load_from = chosen  # mmengine resumes from an explicit file
        elif skipped:
            runner.logger.warning('no readable checkpoint in the work dir: training starts '
                                  'from the beginning')
            runner._resume = False

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Refuse to resume from a checkpoint that does not fit the model."""
        if not getattr(runner, '_resume', False):
            return  # load_from (fine-tuning) keeps mmengine's lenient loading
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        mismatch = state_dict_mismatch(model.state_dict(), checkpoint.get('state_dict', {}))
        if mismatch:
            raise RuntimeError(
                f'the checkpoint {runner._load_from} does not fit the model of this config:\n'
                f'{describe_mismatch(mismatch)}\nResume with the config it was trained with, '
                'or start a new run that loads its weights with load_from=CHECKPOINT.')
        self._resume_state = checkpoint.get('train_state')

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if is_main_process() and isinstance(self.file_backend, LocalBackend):
            for name in remove_stale_temporaries(self.out_dir):
                runner.logger.info(f'removed {name}, a checkpoint left unfinished by a '
                                   'killed run')
        loop = runner.train_loop
        if isinstance(loop, EpochBasedTrainLoop) and not isinstance(loop.dataloader,
                                                                    ResumableLoader):
            loop.dataloader = ResumableLoader(loop.dataloader)
        self._install_signal_handlers(runner)
        if self._resume_state is not None:
            self._restore(runner, self._resume_state)
        elif getattr(runner, '_resume', False) and isinstance(loop, EpochBasedTrainLoop) \
                and runner.iter != runner.epoch * len(loop.dataloader):
            runner.logger.warning('this checkpoint was saved inside an epoch without its data '
                                  'position: the epoch restarts from its first batch')

    def _restore(self, runner, state: dict) -> None:
        loader = runner.train_loop.dataloader
        if (state['epoch'], state['iter']) != (runner.epoch, runner.iter):
            runner.logger.warning(f'train_state of epoch {state["epoch"]}, iteration '
                                  f'{state["iter"]} does not belong to this checkpoint '
                                  f'(epoch {runner.epoch}, iteration {runner.iter}); ignored')
            return
        if state['world_size'] != runner.world_size:
            runner.logger.warning(f'the checkpoint was saved by {state["world_size"]} processes, '
                                  f'this run has {runner.world_size}: random streams restart and '
                                  'the epoch restarts from its first batch')
            return
        if state['iters_per_epoch'] != len(loader):
            runner.logger.warning(f'an epoch had {state["iters_per_epoch"]} iterations, it has '
                                  f'{len(loader)} now: the epoch restarts from its first batch')
            return
        mine = state['ranks'][get_rank()]
        if state['position'] and isinstance(loader, ResumableLoader):
            loader.resume_from(state['position'], mine['epoch_rng'], mine['rng'],
                               mine['worker_base_seed'])
            runner.logger.info(f'resuming epoch {runner.epoch + 1} after batch '
                               f'{state["position"]}/{len(loader)} (those batches are loaded '
                               'again and skipped, so that the data streams continue exactly)')
        else:
            set_rng_state(mine['rng'])

    # ----------------------------------------------------------------- saving
    def _capture(self, runner, epoch: int, iteration: int, position: int) -> None:
        """Gather every rank's random state and data position (collective)."""
        loader = runner.train_loop.dataloader
        if not isinstance(loader, ResumableLoader):
            self._train_state = None
            return
        mine = dict(rng=get_rng_state(), epoch_rng=loader.epoch_rng,
                    worker_base_seed=loader.worker_base_seed)
        ranks = all_gather_object(mine)
        self._train_state = dict(epoch=epoch, iter=iteration, position=position,
                                 iters_per_epoch=len(loader), world_size=len(ranks),
                                 ranks=ranks)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._train_state is not None:
            checkpoint['train_state'] = self._train_state

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        stop = any_rank(self._received is not None)
        periodic = not self.by_epoch and (
            self.every_n_train_iters(runner, self.interval, self.save_begin)
            or (self.save_last and self.is_last_train_iter(runner)))
        if periodic or stop:
            position = getattr(runner.train_loop.dataloader, 'position', 0)
            self._capture(runner, runner.epoch, runner.iter + 1, position)
        if periodic:
            super().after_train_iter(runner, batch_idx, data_batch, outputs)
        if stop:
            self._save_and_stop(runner, saved=periodic)

    def after_train_epoch(self, runner) -> None:
        self._capture(runner, runner.epoch + 1, runner.iter, 0)
        super().after_train_epoch(runner)

    def _save_and_stop(self, runner, saved: bool) -> None:
        step = runner.iter + 1
        if not saved:
            runner.logger.info(f'Saving checkpoint at {step} iterations (stop requested)')
            name = None if not self.by_epoch else f'iter_{step}.pth'
            self._save_checkpoint_with_step(runner, step, dict(epoch=runner.epoch, iter=step),
                                            filename=name)
        barrier()  # no rank leaves before the checkpoint is on disk
        why = signal.Signals(self._received).name if self._received else 'a signal to another rank'
        runner.logger.warning(f'{why}: stopped after iteration {step}, checkpoint '
                              f'{self.last_ckpt}; run the same command with --resume to '
                              f'continue (exit status {EXIT_PREEMPTED})')
        raise Preempted(self.last_ckpt)

    def _save_checkpoint_with_step(self, runner, step, meta, filename: Optional[str] = None):
        """Save atomically; remove expired checkpoints only once it is saved.

        ``filename`` other than the template's (a stop requested while saving
        by epoch) marks a one-off checkpoint, deleted once a later one exists.
        """
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_checkpoint_with_step(runner, step, meta)
        hub = runner.message_hub
        one_off = filename is not None
        filename = filename or self.filename_tmpl.format(step)
        expired = []
        if self.max_keep_ckpts > 0 and not one_off and not (
                self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                expired.append(self.filename_tmpl.format(self.keep_ckpt_ids.popleft()))
            self.keep_ckpt_ids.append(step)
            hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        superseded = hub.get_info('one_off_ckpt')
        hub.update_info('one_off_ckpt', filename if one_off else None)
        path = self.file_backend.join_path(self.out_dir, filename)
        self.last_ckpt = path
        hub.update_info('last_ckpt', path)

        start = time.perf_counter()
        runner.save_checkpoint(self.out_dir, temporary_name(filename), self.file_client_args,
                               save_optimizer=self.save_optimizer,
                               save_param_scheduler=self.save_param_scheduler, meta=meta,
                               by_epoch=self.by_epoch, backend_args=self.backend_args,
                               **self.args)
        if not is_main_process():
            return
        publish(osp.join(self.out_dir, temporary_name(filename)), path)
        write_text_atomic(osp.join(runner.work_dir, 'last_checkpoint'), path)
        runner.logger.info(f'checkpoint {filename}: {osp.getsize(path) / 2**20:.1f} MiB '
                           f'written in {time.perf_counter() - start:.2f} s')
        if superseded and superseded != filename:
            expired.append(superseded)
        for name in expired:
            old = osp.join(self.out_dir, name)
            if osp.isfile(old):
                os.remove(old)

    # ---------------------------------------------------------------- signals
    def _install_signal_handlers(self, runner) -> None:
        if threading.current_thread() is not threading.main_thread():
            runner.logger.warning('training outside the main thread: SIGTERM/SIGUSR1 do not '
                                  'save a checkpoint')
            return
        for name in self.signals:
            signum = getattr(signal, name)
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if self._received is not None:  # asked twice: stop now, the usual way
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self._received = signum  # acted upon at the next iteration boundary

    def after_train(self, runner) -> None:
        super().after_train(runner)
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous_handlers = {}
