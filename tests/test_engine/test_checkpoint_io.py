"""Atomic checkpoint files, the readability check, the choice of a resume
checkpoint, the weights-fit check, and the loader that continues an epoch."""
import os
import os.path as osp
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from bhcl.engine import PreemptibleCheckpointHook
from bhcl.engine.checkpoint_io import (checkpoint_problem, describe_mismatch, first_readable,
                                       publish, remove_stale_temporaries, resume_candidates,
                                       state_dict_mismatch, temporary_name, write_text_atomic)
from bhcl.engine.train_state import ResumableLoader, get_rng_state, set_rng_state
from bhcl.utils.class_order import CLASS_ORDER_KEY


def _save(path, value=0.0):
    weights = torch.arange(4096, dtype=torch.float32).reshape(64, 64) + value
    torch.save({'state_dict': {'w': weights}, 'meta': {}}, path)
    return path


def test_checkpoint_problem_flags_truncated_empty_and_corrupt_files(tmp_path):
    good = _save(str(tmp_path / 'good.pth'))
    assert checkpoint_problem(good) is None
    data = open(good, 'rb').read()
    (tmp_path / 'cut.pth').write_bytes(data[:len(data) // 2])
    assert 'not a complete checkpoint' in checkpoint_problem(str(tmp_path / 'cut.pth'))
    (tmp_path / 'empty.pth').write_bytes(b'')
    assert checkpoint_problem(str(tmp_path / 'empty.pth')) == 'empty file'
    assert checkpoint_problem(str(tmp_path / 'absent.pth')) == 'no such file'
    flipped = bytearray(data)
    start = data.index(torch.arange(100, 116, dtype=torch.float32).numpy().tobytes())
    flipped[start + 10] ^= 0xFF  # one byte of the stored tensor
    (tmp_path / 'flipped.pth').write_bytes(bytes(flipped))
    assert 'damaged checkpoint (Bad CRC-32' in checkpoint_problem(str(tmp_path / 'flipped.pth'))


def test_publish_and_write_text_atomic_leave_no_temporary(tmp_path):
    tmp = str(tmp_path / temporary_name('iter_3.pth'))
    _save(tmp, 3.0)
    publish(tmp, str(tmp_path / 'iter_3.pth'))
    assert os.listdir(tmp_path) == ['iter_3.pth']
    write_text_atomic(str(tmp_path / 'last_checkpoint'), 'a')
    write_text_atomic(str(tmp_path / 'last_checkpoint'), 'b')
    assert sorted(os.listdir(tmp_path)) == ['iter_3.pth', 'last_checkpoint']
    assert (tmp_path / 'last_checkpoint').read_text() == 'b'
    (tmp_path / temporary_name('iter_4.pth')).write_bytes(b'partial')
    assert remove_stale_temporaries(str(tmp_path)) == ['.iter_4.pth.tmp']


def test_resume_candidates_newest_first_then_fallback(tmp_path):
    for name in ('iter_2.pth', 'iter_10.pth', 'epoch_1.pth', 'iter_12.pth', 'best_x.pth'):
        _save(str(tmp_path / name))
    # last_checkpoint names iter_10: iter_12 (from a stale longer run) is not a candidate
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_10.pth'))
    names = [osp.basename(p) for p in resume_candidates(str(tmp_path), iters_per_epoch=4)]
    assert names == ['iter_10.pth', 'epoch_1.pth', 'iter_2.pth']
    data = open(tmp_path / 'iter_10.pth', 'rb').read()
    (tmp_path / 'iter_10.pth').write_bytes(data[:100])
    chosen, skipped = first_readable(resume_candidates(str(tmp_path), 4))
    assert osp.basename(chosen) == 'epoch_1.pth'
    assert [osp.basename(p) for p, _ in skipped] == ['iter_10.pth']
    os.remove(tmp_path / 'last_checkpoint')
    names = [osp.basename(p) for p in resume_candidates(str(tmp_path), 4)]
    assert names == ['iter_12.pth', 'iter_10.pth', 'epoch_1.pth', 'iter_2.pth']


def test_state_dict_mismatch_lists_every_key():
    model = {'a': torch.zeros(2), 'b': torch.zeros(3), 'c': torch.zeros(1)}
    assert state_dict_mismatch(model, {'module.a': torch.ones(2), 'b': torch.ones(3),
                                       'c': torch.ones(1)}) == {}
    found = state_dict_mismatch(model, {'a': torch.ones(2), 'b': torch.ones(4),
                                        'd': torch.ones(1)})
    assert found == {'in the model, not in the checkpoint': ['c'],
                     'in the checkpoint, not in the model': ['d'],
                     'with another shape': ['b: (4,) in the checkpoint, (3,) in the model']}
    # the class-order record is optional: checkpoints written before it lack it
    assert state_dict_mismatch({'a': torch.ones(2), CLASS_ORDER_KEY: torch.ones(3)},
                               {'a': torch.ones(2)}) == {}
    many = describe_mismatch({'in the model, not in the checkpoint': list('abcdef')}, shown=2)
    assert many.split('\n') == ['6 keys in the model, not in the checkpoint:', '    a', '    b',
                                '    ... and 4 more']


def test_hook_refuses_to_resume_from_a_checkpoint_that_does_not_fit():
    hook = PreemptibleCheckpointHook(interval=1)
    runner = SimpleNamespace(_resume=True, _load_from='work/iter_4.pth',
                             model=torch.nn.Sequential(torch.nn.Linear(2, 3)))
    fitting = {'state_dict': {'0.weight': torch.ones(3, 2), '0.bias': torch.ones(3)},
               'train_state': {'position': 1}}
    hook.after_load_checkpoint(runner, fitting)
    assert hook._resume_state == {'position': 1}
    other = {'state_dict': {'0.weight': torch.ones(4, 2), 'extra': torch.ones(1)}}
    with pytest.raises(RuntimeError) as error:
        hook.after_load_checkpoint(runner, other)
    assert str(error.value).split('\n')[:7] == [
        'the checkpoint work/iter_4.pth does not fit the model of this config:',
        '1 key in the model, not in the checkpoint:', '    0.bias',
        '1 key in the checkpoint, not in the model:', '    extra',
        '1 key with another shape:', '    0.weight: (4, 2) in the checkpoint, (3, 2) in the model']
    runner._resume = False  # load_from (fine-tuning) stays lenient
    hook.after_load_checkpoint(runner, other)


def test_rng_state_round_trip():
    state = get_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


class _NoisyDataset(Dataset):
    """Each item draws from Python's, NumPy's and torch's global generators,
    as augmentation pipelines do."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return torch.tensor([i, random.random(), np.random.rand(), torch.rand(1).item()],
                            dtype=torch.float64)


def _seed_worker(worker_id):
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def _epoch(loader, model_noise=True):
    """Batches of one epoch, and the generators' states after each
    iteration (a 'model' draws from torch between batches)."""
    batches, states = [], []
    for batch in loader:
        batches.append(batch)
        if model_noise:
            torch.rand(3)  # e.g. dropout in the training step
        states.append(get_rng_state())
    return batches, states


@pytest.mark.parametrize('num_workers', [0, 2])
def test_resumable_loader_continues_an_epoch_exactly(num_workers):
    def make():
        return ResumableLoader(DataLoader(_NoisyDataset(), batch_size=2, shuffle=True,
                                          num_workers=num_workers,
                                          worker_init_fn=_seed_worker,
                                          generator=None))
    torch.manual_seed(7)
    random.seed(7)
    np.random.seed(7)
    loader = make()
    straight, states = _epoch(loader)
    assert loader.position == 5
    epoch_rng, seed = loader.epoch_rng, loader.worker_base_seed

    for cut in (1, 3, 5):
        torch.manual_seed(123)  # whatever the state is now
        resumed = make()
        resumed.resume_from(cut, epoch_rng, states[cut - 1], seed)
        rest, _ = _epoch(resumed)
        assert resumed.position == 5
        assert len(rest) == 5 - cut
        for a, b in zip(rest, straight[cut:]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        if cut < 5:
            assert get_rng_state()['torch'].equal(states[-1]['torch'])

    # without the recorded state the same cut continues differently
    plain = make()
    plain_rest = list(plain)[3:]
    assert any(not torch.equal(a, b) for a, b in zip(plain_rest, straight[3:]))


def test_resumable_loader_forwards_attributes():
    inner = DataLoader(_NoisyDataset(), batch_size=3)
    loader = ResumableLoader(inner)
    assert len(loader) == 4 and loader.batch_size == 3 and loader.dataset is inner.dataset
    loader.some_flag = 1  # hooks that set loader attributes reach the real loader
    assert inner.some_flag == 1 and 'some_flag' not in loader.__dict__
