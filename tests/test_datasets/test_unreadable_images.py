"""An image that cannot be read is named with what is wrong and the fix."""
import os
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmrotate.registry import DATASETS

from bhcl.datasets.image_check import UnreadableImageError, image_problem, read_image_or_raise
from tests.conftest import NOT_A_PNG, SMOKE_CONFIG

def test_image_problem_says_missing_empty_or_not_an_image(tmp_path, tiny_synthetic):
    good = osp.join(tiny_synthetic, 'val', 'images', sorted(os.listdir(
        osp.join(tiny_synthetic, 'val', 'images')))[0])
    assert image_problem(good) is None
    assert image_problem(str(tmp_path / 'gone.png')) == 'is missing'
    (tmp_path / 'empty.png').write_bytes(b'')
    assert image_problem(str(tmp_path / 'empty.png')) == 'is empty (0 bytes)'
    (tmp_path / 'bad.png').write_bytes(NOT_A_PNG)
    assert image_problem(str(tmp_path / 'bad.png')) == (
        f'is not an image OpenCV can decode ({len(NOT_A_PNG)} bytes: truncated, corrupt or '
        'another format under an image suffix)')
    os.symlink(tmp_path / 'nowhere.png', tmp_path / 'link.png')
    assert image_problem(str(tmp_path / 'link.png')) == (
        'is a broken symbolic link (its target is missing)')
    (tmp_path / 'dir.png').mkdir()
    assert image_problem(str(tmp_path / 'dir.png')) == 'is a folder'
    with pytest.raises(UnreadableImageError) as info:
        read_image_or_raise(str(tmp_path / 'empty.png'), 'restore it')
    assert str(info.value) == (f'{tmp_path}/empty.png: cannot read the image: the file is empty '
                               '(0 bytes); restore it')


def build_dataset(split: str, data_root: str, **overrides):
    cfg = Config.fromfile(SMOKE_CONFIG)
    init_default_scope('mmrotate')
    ds_cfg = cfg[f'{split}_dataloader'].dataset
    ds_cfg.update(data_root=data_root, **overrides)
    return DATASETS.build(ds_cfg)


def index_of(dataset, path: str) -> int:
    return next(i for i in range(len(dataset)) if dataset.get_data_info(i)['img_path'] == path)


def test_corrupt_png_in_a_test_set_names_file_problem_and_fix(corrupt_synthetic):
    data_root, bad = corrupt_synthetic
    dataset = build_dataset('val', data_root)
    with pytest.raises(UnreadableImageError) as info:
        dataset[index_of(dataset, bad['val'])]
    assert str(info.value) == (
        f'{bad["val"]}: cannot read the image: the file is not an image OpenCV can decode '
        f'({len(NOT_A_PNG)} bytes: truncated, corrupt or another format under an image '
        'suffix); restore it, or delete it and its annotation file from the dataset (a test or '
        'validation set evaluates every image: none is skipped)')
    assert isinstance(info.value.__cause__, AssertionError)   # mmcv's 'failed to load image'


def test_corrupt_png_in_a_training_set_gives_the_skip_option(corrupt_synthetic):
    data_root, bad = corrupt_synthetic
    dataset = build_dataset('train', data_root)
    idx = index_of(dataset, bad['train'])
    with pytest.raises(UnreadableImageError, match="or skip such images in training with "
                       "on_invalid='skip' in this dataset's config$"):
        dataset[idx]
    dataset = build_dataset('train', data_root, on_invalid='skip')
    sample = dataset[idx]   # logged and skipped: BaseDataset fetches another image
    assert sample['data_samples'].img_path != bad['train']
    assert set(dataset.skip_policy.counts) == {'unreadable_image'}   # (1 unless drawn again)
    assert dataset.skip_policy.messages[-1].startswith(f'{bad["train"]}: cannot read the image')
    assert dataset.skip_policy.messages[-1].endswith('Skipped this image.')


def test_other_pipeline_errors_are_not_rewritten(tiny_synthetic):
    dataset = build_dataset('val', tiny_synthetic)
    dataset.pipeline.transforms.insert(1, _Fail())
    with pytest.raises(RuntimeError, match='^not about the image$'):
        dataset[0]


class _Fail:
    def __call__(self, results):
        raise RuntimeError('not about the image')
