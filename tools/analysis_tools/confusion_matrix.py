"""Confusion matrices per label-tree level, written as PNG images.

    python tools/analysis_tools/confusion_matrix.py CONFIG PRED SAVE_DIR
        [--phase test|val] [--score-thr 0.3] [--iou-thr 0.5] [--counts]
        [--cfg-options k=v ...]

PRED is the .pkl of `tools/test.py CONFIG CKPT --out preds.pkl`; the ground
truth is the config's test (or val) dataset. Writes
SAVE_DIR/confusion_matrix_level<l>.png for every tree level (rows: objects,
columns: predictions, both mapped to their level-l ancestor, plus
background; cells are row percentages, or counts with --counts) and
SAVE_DIR/confusion_matrices.json with the raw counts. Matching and the
handling of "Other" objects are described in
bhcl/evaluation/functional/confusion_matrix.py.
"""
import argparse
import json
import os
import os.path as osp
import sys

import numpy as np
from mmengine.config import DictAction
from mmengine.registry import init_default_scope
from mmengine.utils import ProgressBar
from mmrotate.registry import DATASETS

import bhcl  # noqa: F401  (registers bhcl modules)
from bhcl.datasets.export import load_prediction_pickle
from bhcl.utils.setup_env import load_cfg
from bhcl.evaluation.functional.confusion_matrix import (ConfusionSample, LevelConfusion,
                                                         level_confusion_matrices)
from bhcl.structures import LabelTree


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file used to make the predictions')
    parser.add_argument('pred', help='.pkl written by tools/test.py --out')
    parser.add_argument('save_dir', help='folder for the PNG images and the JSON counts')
    parser.add_argument('--phase', default='test', choices=['test', 'val'],
                        help='dataset holding the ground truth (test)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='ignore detections scoring below this (0.3)')
    parser.add_argument('--iou-thr', type=float, default=0.5,
                        help='rotated IoU for a detection to hit an object (0.5)')
    parser.add_argument('--counts', action='store_true',
                        help='draw counts instead of row percentages')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. test_dataloader.dataset.data_root=x '
                        '(a key the config lacks is an error unless written +key=value)')
    return parser.parse_args(argv)


def load_samples(dataset, preds: dict, pred_path: str):
    """One ``ConfusionSample`` per dataset image; predictions matched by image id."""
    from bhcl.datasets.merge import Detections
    ids = [dataset.get_data_info(i)['img_id'] for i in range(len(dataset))]
    unknown = sorted(set(preds) - set(ids))
    if unknown:
        raise ValueError(f'{pred_path}: predictions for {len(unknown)} images the dataset lacks '
                         f'(e.g. {unknown[:3]}); use the config and --phase of the run that '
                         'wrote them.')
    bar = ProgressBar(len(ids), file=sys.stdout)
    for i, img_id in enumerate(ids):
        info = dataset.get_data_info(i)
        inst = info['instances']
        dets = preds.get(img_id, Detections.empty())
        bar.update()
        yield ConfusionSample(
            gt_boxes=np.asarray([x['bbox'] for x in inst], dtype=np.float64).reshape(-1, 8),
            gt_labels=np.asarray([x['bbox_label'] for x in inst], dtype=np.int64),
            gt_ignore=np.asarray([x.get('ignore_flag', 0) for x in inst], dtype=bool),
            det_boxes=dets.rboxes, det_scores=dets.scores, det_labels=dets.labels)


def plot(conf: LevelConfusion, path: str, counts: bool = False) -> None:
    """Save one level's matrix as a PNG image."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    values = conf.counts if counts else 100 * conf.normalized()
    n = len(conf.names)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size * 1.15, size), dpi=100)
    im = ax.imshow(values, cmap='Blues')
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), conf.names, rotation=60, ha='right', fontsize=8)
    ax.set_yticks(range(n), conf.names, fontsize=8)
    ax.set_xlabel('prediction')
    ax.set_ylabel('ground truth')
    what = 'counts' if counts else '% of each row'
    ax.set_title(f'level {conf.level} ({what}; {conf.coarser} pairs coarser than the level)',
                 fontsize=9)
    if n <= 40:
        for r in range(n):
            for c in range(n):
                if conf.counts[r, c]:
                    ax.text(c, r, f'{values[r, c]:.0f}', ha='center', va='center', fontsize=6,
                            color='white' if values[r, c] > values.max() / 2 else 'black')
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_cfg(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmrotate'))
    dataset = DATASETS.build(cfg[f'{args.phase}_dataloader'].dataset)
    tree = LabelTree.from_config(dataset.metainfo['label_tree'])
    preds = load_prediction_pickle(args.pred)
    levels = level_confusion_matrices(load_samples(dataset, preds, args.pred), tree,
                                      args.score_thr, args.iou_thr)
    os.makedirs(args.save_dir, exist_ok=True)
    for conf in levels:
        plot(conf, osp.join(args.save_dir, f'confusion_matrix_level{conf.level}.png'),
             args.counts)
    with open(osp.join(args.save_dir, 'confusion_matrices.json'), 'w') as f:
        json.dump([dict(level=c.level, names=c.names, counts=c.counts.tolist(),
                        coarser=c.coarser) for c in levels], f, indent=1)
    print(f'\nwrote {len(levels)} confusion matrices to {args.save_dir}')
    return levels


if __name__ == '__main__':
    main()
