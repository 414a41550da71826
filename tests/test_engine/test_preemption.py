"""Preemption-safe training, end to end with tools/train.py in fresh processes.

The BHCL smoke config (two views, EMA prototype banks, random flips) on the
tiny synthetic set: 2 epochs of 4 iterations, a checkpoint every iteration
(``by_epoch=False, interval=1``). A straight run is compared, weights,
buffers, optimizer and scheduler state bit for bit, with runs that are killed
(SIGKILL at seeded iterations: inside an iteration, after its update, while
its checkpoint is serialised), stopped by SIGTERM / SIGUSR1 (checkpoint at the
next iteration boundary, exit status 75) and resumed with ``--resume``, one of
them from a work dir whose newest checkpoint was truncated on disk.
"""
import random
import signal

import pytest

from bhcl.engine import EXIT_PREEMPTED
from tests.conftest import BHCL_SMOKE_CONFIG, smoke_overrides
from tests.training import load_checkpoint, max_difference, train_process

EPOCHS, ITERS_PER_EPOCH = 2, 4
LAST = EPOCHS * ITERS_PER_EPOCH


def _options(data_root, num_workers=0, keep=2, batch_size=2):
    opts = smoke_overrides(data_root, max_epochs=EPOCHS, two_view=True)
    opts.update({
        'train_dataloader.batch_size': batch_size,  # 8 images -> 4 iterations of 4 views
        'train_dataloader.num_workers': num_workers,
        'train_cfg.val_interval': 100,
        'randomness.deterministic': True,
        'default_hooks.checkpoint.by_epoch': False,
        'default_hooks.checkpoint.interval': 1,
        'default_hooks.checkpoint.max_keep_ckpts': keep,
    })
    return opts


def _config(tmp_path, name, fault=None):
    """The smoke config, plus a SignalAtIterHook when ``fault`` is given."""
    if fault is None:
        return BHCL_SMOKE_CONFIG
    path = tmp_path / f'{name}.py'
    path.write_text(
        f'_base_ = [{BHCL_SMOKE_CONFIG!r}]\n'
        "custom_imports = dict(imports=['bhcl', 'tests.test_engine.fault_hooks'],\n"
        '                      allow_failed_imports=False)\n'
        "custom_hooks = [dict(type='EpochSeedHook'), dict(type='mmdet.SetEpochInfoHook'),\n"
        f"                dict(type='SignalAtIterHook', **{fault!r})]\n")
    return str(path)


def train(data_root, work_dir, config=BHCL_SMOKE_CONFIG, resume=None, expect=0, nproc=1,
          **options):
    """Train in fresh processes; returns their output (asserting the exit status)."""
    return train_process(config, work_dir, _options(data_root, **options), resume=resume,
                         nproc=nproc, expect=expect)


def load(work_dir, iteration=LAST):
    return load_checkpoint(work_dir, f'iter_{iteration}.pth')


# the tests that compare with the straight run share one worker under pytest-xdist, so it
# trains once
SHARES_STRAIGHT = pytest.mark.xdist_group('preemption_straight')


@pytest.fixture(scope='module')
def straight(tiny_synthetic, tmp_path_factory):
    """The uninterrupted run (every checkpoint kept)."""
    work_dir = tmp_path_factory.mktemp('straight')
    train(tiny_synthetic, work_dir, keep=-1)
    return work_dir


def kill_plan(seed=32, kills=3):
    """Seeded (iteration, moment) of each SIGKILL, in increasing iterations."""
    rng = random.Random(seed)
    iterations = sorted(rng.sample(range(2, LAST), kills))
    return [(it, rng.choice(['before', 'after', 'save'])) for it in iterations]


@SHARES_STRAIGHT
@pytest.mark.slow
def test_three_sigkills_then_resume_is_bit_exact(tiny_synthetic, straight, tmp_path):
    work_dir = tmp_path / 'killed'
    for i, (at, when) in enumerate(kill_plan()):
        config = _config(tmp_path, f'kill{i}', dict(at=at, sig='SIGKILL', when=when))
        train(tiny_synthetic, work_dir, config, resume=True if i else None,
              expect=-signal.SIGKILL)
        # killed inside iteration `at`, after its update or while saving it:
        # the newest checkpoint on record is the one before
        last = open(work_dir / 'last_checkpoint').read().strip()
        assert last == str(work_dir / f'iter_{at - 1}.pth')
    # a kill while writing leaves a partial temporary file: removed, never resumed from
    (work_dir / '.iter_99.pth.tmp').write_bytes(open(last, 'rb').read()[:1000])
    out = train(tiny_synthetic, work_dir, resume=True)
    assert 'removed .iter_99.pth.tmp' in out
    assert max_difference(load(straight), load(work_dir)) == 0.0


@SHARES_STRAIGHT
@pytest.mark.slow
def test_sigterm_sigusr1_and_a_truncated_checkpoint(tiny_synthetic, straight, tmp_path):
    work_dir = tmp_path / 'stopped'
    config = _config(tmp_path, 'term', dict(at=3, sig='SIGTERM', when='before'))
    out = train(tiny_synthetic, work_dir, config, expect=EXIT_PREEMPTED)
    assert 'SIGTERM: stopped after iteration 3' in out
    assert max_difference(load(straight, 3), load(work_dir, 3)) == 0.0
    # resumed inside epoch 1, stopped again inside epoch 2
    config = _config(tmp_path, 'usr1', dict(at=7, sig='SIGUSR1', when='before'))
    out = train(tiny_synthetic, work_dir, config, resume=True, expect=EXIT_PREEMPTED)
    assert 'resuming epoch 1 after batch 3/4' in out
    assert 'SIGUSR1: stopped after iteration 7' in out
    newest = work_dir / 'iter_7.pth'
    newest.write_bytes(newest.read_bytes()[:newest.stat().st_size // 2])
    out = train(tiny_synthetic, work_dir, resume=True)
    assert f'cannot resume from {newest}: not a complete checkpoint' in out
    assert 'resuming epoch 2 after batch 2/4' in out
    assert max_difference(load(straight), load(work_dir)) == 0.0


@SHARES_STRAIGHT
@pytest.mark.slow
@pytest.mark.parametrize('num_workers, start', [(0, 5), (2, 3)])
def test_resume_from_a_mid_epoch_checkpoint_is_bit_exact(tiny_synthetic, straight, tmp_path,
                                                         num_workers, start):
    """``--resume iter_N.pth`` (inside an epoch) continues as the straight run did;
    with data workers, whose streams depend on which of them loaded which batch."""
    reference = straight
    if num_workers:
        reference = tmp_path / 'straight'
        train(tiny_synthetic, reference, num_workers=num_workers, keep=-1)
    resumed = tmp_path / 'resumed'
    out = train(tiny_synthetic, resumed, num_workers=num_workers,
                resume=str(reference / f'iter_{start}.pth'))
    position = start % ITERS_PER_EPOCH
    assert f'after batch {position}/{ITERS_PER_EPOCH}' in out
    assert max_difference(load(reference), load(resumed)) == 0.0


@pytest.mark.slow
@pytest.mark.dist
def test_sigusr1_to_one_rank_stops_both_and_resume_is_bit_exact(tiny_synthetic, tmp_path):
    """Two gloo processes; rank 1 alone gets SIGUSR1 during iteration 3 (the
    first of epoch 2): both save at its end and stop; --resume finishes the run."""
    straight_dir, stopped = tmp_path / 'straight', tmp_path / 'stopped'
    train(tiny_synthetic, straight_dir, nproc=2)  # per process: 2 iterations of 2 x 2 views
    config = _config(tmp_path, 'usr1_rank1', dict(at=3, sig='SIGUSR1', when='before', rank=1))
    out = train(tiny_synthetic, stopped, config, expect=EXIT_PREEMPTED, nproc=2)
    assert 'a signal to another rank: stopped after iteration 3' in out
    assert 'exitcode  : 75' in out  # torchrun's report of each process
    train(tiny_synthetic, stopped, resume=True, nproc=2)
    assert max_difference(load(straight_dir, 4), load(stopped, 4)) == 0.0
