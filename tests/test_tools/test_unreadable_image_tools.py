"""A corrupt PNG through tools/test.py and browse_dataset: the error names the
file, what is wrong with it and the fix (not mmcv's bare 'failed to load image')."""
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from bhcl.datasets.image_check import UnreadableImageError
from tests.conftest import NOT_A_PNG, REPO_ROOT, SMOKE_CONFIG, load_script

sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
import test as test_tool  # noqa: E402

def expected_message(path: str) -> str:
    return (f'{path}: cannot read the image: the file is not an image OpenCV can decode '
            f'({len(NOT_A_PNG)} bytes: truncated, corrupt or another format under an image '
            'suffix); restore it, or delete it and its annotation file from the dataset (a test '
            'or validation set evaluates every image: none is skipped)')


def test_tools_test_names_the_corrupt_png(corrupt_synthetic, tmp_path):
    from mmrotate.registry import MODELS
    data_root, bad = corrupt_synthetic
    init_default_scope('mmrotate')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(SMOKE_CONFIG).model)
    ckpt = str(tmp_path / 'random.pth')
    torch.save(dict(state_dict=model.state_dict(), meta={}), ckpt)
    with pytest.raises(UnreadableImageError) as info:
        test_tool.main([SMOKE_CONFIG, ckpt, '--work-dir', str(tmp_path / 'work'),
                        '--cfg-options', f'test_dataloader.dataset.data_root={data_root}'])
    assert str(info.value) == expected_message(bad['val'])


def test_browse_dataset_names_the_corrupt_png(corrupt_synthetic, tmp_path):
    data_root, bad = corrupt_synthetic
    browse = load_script('tools/analysis_tools/browse_dataset.py')
    with pytest.raises(UnreadableImageError) as info:
        browse.main([SMOKE_CONFIG, '--phase', 'val', '--not-show', '--output-dir',
                     str(tmp_path / 'out'), '--cfg-options',
                     f'val_dataloader.dataset.data_root={data_root}'])
    assert str(info.value) == expected_message(bad['val'])
