import os
import os.path as osp

import pytest
import torch

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DATA_DIR = osp.join(REPO_ROOT, 'tests', 'data')
CONFIG_DIR = osp.join(REPO_ROOT, 'configs')


def load_script(relpath: str):
    """The module of a script that is not a package member (``benchmarks/x.py``,
    ``tools/analysis_tools/x.py``), loaded from its path under the repository."""
    import importlib.util
    name = osp.splitext(osp.basename(relpath))[0]
    spec = importlib.util.spec_from_file_location(name, osp.join(REPO_ROOT, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_SCRIPT_RUNNER = r"""
import os, runpy, sys
for script, *args in {calls!r}:
    sys.argv, sys.path[0] = [script, *args], os.path.dirname(os.path.abspath(script))
    try:
        runpy.run_path(script, run_name='__main__')
    except SystemExit as stop:
        if stop.code not in (None, 0):
            raise
    print({marker!r}, flush=True)
"""


def run_scripts(*calls, cwd: str = REPO_ROOT) -> list:
    """Run ``(script, *args)`` calls one after another as ``python script args`` would
    (``__main__``, ``sys.argv``, the script's folder first on ``sys.path``), in one fresh
    interpreter that pays the mm* imports once. Returns each call's stdout; asserts that
    all succeeded."""
    import subprocess
    import sys
    marker = '<<end of script>>'
    code = _SCRIPT_RUNNER.format(calls=[tuple(map(str, c)) for c in calls], marker=marker)
    proc = subprocess.run([sys.executable, '-c', code], cwd=cwd, capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=REPO_ROOT))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    outputs = proc.stdout.split(marker + '\n')
    assert len(outputs) == len(calls) + 1
    return outputs[:-1]


# torch's default (the cores, or OMP_NUM_THREADS) shared among pytest-xdist's workers (-n N)
TORCH_THREADS = max(1, torch.get_num_threads()
                    // int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', 1)))


@pytest.fixture(autouse=True)
def _torch_thread_count():
    """Every test starts with the same thread count: a tool run in-process
    (``torch.set_num_threads(1)`` in a benchmark's main) leaks none to the next."""
    torch.set_num_threads(TORCH_THREADS)
    yield


@pytest.fixture
def record_log(monkeypatch):
    """``record_log(module, name)``: the list of messages that ``module.name(msg, ...)``
    (a module's logging function) receives for the rest of the test."""
    def record(module, name: str) -> list:
        messages = []
        monkeypatch.setattr(module, name, lambda msg, *args, **kwargs: messages.append(msg))
        return messages
    return record


@pytest.fixture
def repo_root():
    return REPO_ROOT


def tree_config(name: str) -> dict:
    """The ``label_tree`` dict of ``configs/_base_/datasets/<name>_label_tree.py``."""
    import runpy
    return runpy.run_path(osp.join(CONFIG_DIR, '_base_', 'datasets', f'{name}_label_tree.py'))['label_tree']


SMOKE_CONFIG = osp.join(CONFIG_DIR, 'synthetic', 'orientedformer_r18_1xb4-12e_synthetic.py')
BHCL_SMOKE_CONFIG = osp.join(CONFIG_DIR, 'synthetic',
                             'bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py')


@pytest.fixture(scope='session')
def tiny_synthetic(tmp_path_factory):
    """A tiny synthetic dataset (8 train / 4 val images of 128 px), made once."""
    from bhcl.datasets.synthetic import SyntheticConfig, generate_synthetic_dataset
    out = tmp_path_factory.mktemp('synthetic')
    cfg = SyntheticConfig(num_train=8, num_val=4, img_size=128, min_length=20, max_length=44,
                          seed=1)
    generate_synthetic_dataset(str(out), tree_config('synthetic'), cfg)
    return str(out) + '/'


NOT_A_PNG = b'\x89PNG\r\n\x1a\n but the rest is not an image'


@pytest.fixture
def corrupt_synthetic(tiny_synthetic, tmp_path):
    """(data_root, {split: path}): a copy of the tiny synthetic set whose first train and
    first val image are corrupt PNGs (:data:`NOT_A_PNG`)."""
    import shutil
    root = tmp_path / 'data'
    shutil.copytree(tiny_synthetic, root)
    bad = {}
    for split in ('train', 'val'):
        name = sorted(os.listdir(root / split / 'images'))[0]
        (root / split / 'images' / name).write_bytes(NOT_A_PNG)
        bad[split] = str(root / split / 'images' / name)
    return str(root) + '/', bad

TINY_SCALE = (128, 128)


def smoke_overrides(data_root: str, max_epochs: int = 1, two_view: bool = False) -> dict:
    """cfg-options that point the smoke config at ``data_root`` and shorten it.

    ``two_view``: the training set sits inside a ``MultiViewDataset`` (the HCL/BHCL configs).
    The tiny images stay at their own 128 px instead of the configs' 256 (a quarter of the
    work per image); runs that are compared with each other all use these options.
    """
    train = 'train_dataloader.dataset.dataset' if two_view else 'train_dataloader.dataset'
    return {
        f'{train}.data_root': data_root,
        f'{train}.pipeline.3.scale': TINY_SCALE,            # mmdet.Resize
        'val_dataloader.dataset.data_root': data_root,
        'val_dataloader.dataset.pipeline.1.scale': TINY_SCALE,
        'test_dataloader.dataset.data_root': data_root,
        'test_dataloader.dataset.pipeline.1.scale': TINY_SCALE,
        'train_dataloader.batch_size': 2,
        'train_cfg.max_epochs': max_epochs,
        'train_cfg.val_interval': 1,
        'default_hooks.checkpoint.interval': 1,
        'default_hooks.logger.interval': 1,
        'randomness.seed': 0,
    }
