import os.path as osp

import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DATA_DIR = osp.join(REPO_ROOT, 'tests', 'data')
CONFIG_DIR = osp.join(REPO_ROOT, 'configs')


@pytest.fixture
def repo_root():
    return REPO_ROOT


def tree_config(name: str) -> dict:
    """The ``label_tree`` dict of ``configs/_base_/datasets/<name>_label_tree.py``."""
    import runpy
    return runpy.run_path(osp.join(CONFIG_DIR, '_base_', 'datasets', f'{name}_label_tree.py'))['label_tree']
