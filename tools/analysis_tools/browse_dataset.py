"""Draw a config's ground truth, after its pipeline, with tree-path labels.

    python tools/analysis_tools/browse_dataset.py CONFIG [--phase train|val|test]
        [--output-dir DIR] [--not-show] [--show-interval 2] [--max-images N]
        [--cfg-options k=v ...]

Each box is labelled with its class and its path in the label tree
(``Frigate`` over ``Vessel/Warship/Frigate``); objects that an "Other X"
annotation reallocated to an internal node read ``Other -> X``, so the
reallocation rule can be checked by eye. A multi-view training set draws
every view (``<image>_view<k>``). Val/test pipelines keep the boxes in the
original frame (they load them after resizing), so those images are drawn
at their original size. With --output-dir the images are written
there (file name of the source image); --not-show skips the window (needed
without a display). At the end the objects drawn per node are printed,
reallocated ones marked.
"""
import argparse
import os.path as osp
import sys
from collections import Counter

import cv2
import numpy as np
from mmengine.config import DictAction
from mmengine.registry import init_default_scope
from mmengine.utils import ProgressBar
from mmrotate.registry import DATASETS, VISUALIZERS

import bhcl  # noqa: F401  (registers bhcl modules)
from bhcl.structures import LabelTree
from bhcl.utils.setup_env import load_cfg


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file path')
    parser.add_argument('--phase', default='train', choices=['train', 'val', 'test'],
                        help='which dataloader\'s dataset and pipeline to draw (train)')
    parser.add_argument('--output-dir', help='write the drawn images here')
    parser.add_argument('--not-show', action='store_true', help='do not open a window')
    parser.add_argument('--show-interval', type=float, default=2,
                        help='seconds each image is shown (2)')
    parser.add_argument('--max-images', type=int, help='stop after this many images')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. train_dataloader.dataset.data_root=x '
                        '(a key the config lacks is an error unless written +key=value)')
    args = parser.parse_args(argv)
    if args.not_show and not args.output_dir:
        parser.error('--not-show without --output-dir would draw nothing anyone sees')
    return args


def views_of(item):
    """``[(suffix, packed sample)]``: one entry, or one per view of a multi-view item."""
    if isinstance(item, (list, tuple)):
        return [(f'_view{k}', view) for k, view in enumerate(item)]
    return [('', item)]


def main(argv=None):
    args = parse_args(argv)
    cfg = load_cfg(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmrotate'))
    dataset = DATASETS.build(cfg[f'{args.phase}_dataloader'].dataset)
    visualizer = VISUALIZERS.build(cfg.visualizer)
    visualizer.dataset_meta = dataset.metainfo
    tree = LabelTree.from_config(dataset.metainfo['label_tree'])
    total = len(dataset) if args.max_images is None else min(args.max_images, len(dataset))
    drawn = Counter()
    bar = ProgressBar(total, file=sys.stdout)
    for idx in range(total):
        for suffix, sample in views_of(dataset[idx]):
            data_sample = sample['data_samples'].numpy()
            drawn.update(int(k) for k in data_sample.gt_instances.labels)
            img = sample['inputs'].permute(1, 2, 0).numpy()[..., ::-1]   # BGR -> RGB
            if args.phase != 'train':
                img = to_original_frame(img, data_sample)
            stem, ext = osp.splitext(osp.basename(data_sample.img_path))
            out_file = (osp.join(args.output_dir, f'{stem}{suffix}{ext or ".png"}')
                        if args.output_dir else None)
            visualizer.add_datasample(f'{stem}{suffix}', np.ascontiguousarray(img), data_sample,
                                      draw_pred=False, show=not args.not_show,
                                      wait_time=args.show_interval, out_file=out_file)
        bar.update()
    print('\n' + node_report(tree, drawn))
    return drawn


def to_original_frame(img: np.ndarray, data_sample) -> np.ndarray:
    """Val/test pipelines (OpenMMLab convention) resize the image but load the
    boxes afterwards, in the original frame: bring the image back to that frame."""
    ori_h, ori_w = data_sample.metainfo.get('ori_shape', img.shape[:2])
    if img.shape[:2] == (ori_h, ori_w):
        return img
    return cv2.resize(np.ascontiguousarray(img), (ori_w, ori_h), interpolation=cv2.INTER_AREA)


def node_report(tree: LabelTree, drawn: Counter) -> str:
    """Objects drawn per node, reallocated "Other" objects (internal nodes) marked."""
    lines = ['objects drawn per node (* = reallocated from "Other ..." annotations):']
    for k in sorted(drawn, key=lambda n: (tree.path(n), n)):
        mark = '' if tree.is_leaf(k) else ' *'
        lines.append(f'  {"/".join(tree.path(k))}: {drawn[k]}{mark}')
    other = sum(n for k, n in drawn.items() if not tree.is_leaf(k))
    lines.append(f'total {sum(drawn.values())}, reallocated {other}')
    return '\n'.join(lines)


if __name__ == '__main__':
    main()
