"""Speed of HierarchicalDOTAMetric against mmrotate's DOTAMetric, AP50:95.

Generates a detection set in memory (default 500 images of 1024 x 1024 with
50 rotated objects each, labelled along the ShipRSImageNet tree: mostly
leaves, some "Other X" objects on internal nodes, 5 % difficult objects
passed as ``ignored_instances``; predictions are jittered copies of the
objects, a share with a wrong leaf, plus spurious boxes, scored so that good
boxes tend to score higher). Both metrics receive the same data samples (as
the mmengine ``Evaluator`` passes them), with IoU thresholds 0.50:0.05:0.95,
and are timed from ``process()`` to the returned metrics. mmrotate's metric
runs as shipped, starting its spawn pool for every threshold.

The values must agree: ``dota/mAP`` (mean over all tree nodes with ground
truth, the average DOTAMetric computes) to 1e-6 and every per-threshold AP
after DOTAMetric's rounding to 3 decimals.

    python benchmarks/eval_speed.py [--images 500] [--objects 50] [--seed 0] [--bootstrap 50]

``--bootstrap N`` also times the metric's bootstrap standard errors (N resamples of
the images, scored from the matching of the whole set) against evaluating each
resampled image list from scratch, and checks that the errors are equal.
"""
import argparse
import os.path as osp
import runpy
import sys
import time

import numpy as np
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TREE = osp.join(ROOT, 'configs', '_base_', 'datasets', 'shiprs_label_tree.py')
THRS = [round(0.5 + 0.05 * i, 2) for i in range(10)]


def make_images(tree, num_images, num_objects, rng):
    """Per image: ground truth, labels, difficult flags, predictions, labels
    and a raw quality score (higher for less jittered boxes)."""
    leaves = np.array(tree.leaf_ids)
    internal = np.array([k for k in range(tree.num_classes) if not tree.is_leaf(k)])
    leaves_below = {k: [c for c in leaves if k in tree.path_ids(c)] for k in internal}
    images = []
    for _ in range(num_images):
        n = num_objects
        gt = np.c_[rng.uniform(40, 984, (n, 2)), rng.uniform(20, 120, n), rng.uniform(8, 40, n),
                   rng.uniform(-np.pi / 2, np.pi / 2, n)]
        gl = np.where(rng.random(n) < 0.9, rng.choice(leaves, n), rng.choice(internal, n))
        difficult = rng.random(n) < 0.05
        difficult[0] = False
        # 1-2 predictions per object, jittered; a wrong leaf for 20 %
        pick = np.r_[np.arange(n), rng.choice(n, n // 2)]
        noise = rng.normal(0, 1, (len(pick), 5)) * [4, 4, 6, 3, 0.08]
        det = gt[pick] + noise
        dl = np.array([lab if tree.is_leaf(lab) else rng.choice(leaves_below[lab])
                       for lab in gl[pick]])
        wrong = rng.random(len(pick)) < 0.2
        dl[wrong] = rng.choice(leaves, wrong.sum())
        quality = -np.abs(noise).sum(1) / 20 + rng.normal(0, 0.1, len(pick))
        m = n // 5  # spurious boxes
        det = np.r_[det, np.c_[rng.uniform(40, 984, (m, 2)), rng.uniform(20, 120, m),
                               rng.uniform(8, 40, m), rng.uniform(-np.pi / 2, np.pi / 2, m)]]
        dl = np.r_[dl, rng.choice(leaves, m)]
        quality = np.r_[quality, rng.uniform(-1.5, -0.5, m)]
        det[:, 2:4] = np.abs(det[:, 2:4]) + 1
        images.append((gt, gl, difficult, det, dl, quality))
    return images


def make_samples(tree, num_images, num_objects, seed):
    """Data samples as dicts (what ``Evaluator.process`` hands to metrics).

    Scores are distinct float32 values ordered like the raw quality: with
    exact ties the two metrics may rank tied detections differently
    (mmrotate sorts with an unstable sort).
    """
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    from mmrotate.structures.bbox import RotatedBoxes

    images = make_images(tree, num_images, num_objects, np.random.default_rng(seed))
    quality = np.concatenate([im[5] for im in images])
    rank = np.empty(len(quality), dtype=np.int64)
    rank[np.argsort(quality, kind='stable')] = np.arange(len(quality))
    scores = np.split((rank + 1) / (len(rank) + 1), np.cumsum([len(im[5]) for im in images]))
    samples = []
    f32 = dict(dtype=torch.float32)
    for i, ((gt, gl, difficult, det, dl, _), score) in enumerate(zip(images, scores)):
        ds = DetDataSample(metainfo=dict(img_id=f'img{i:05d}'))
        ds.pred_instances = InstanceData(bboxes=RotatedBoxes(torch.tensor(det, **f32)),
                                         scores=torch.tensor(score, **f32),
                                         labels=torch.tensor(dl))
        ds.gt_instances = InstanceData(bboxes=RotatedBoxes(torch.tensor(gt[~difficult], **f32)),
                                       labels=torch.tensor(gl[~difficult]))
        ds.ignored_instances = InstanceData(
            bboxes=RotatedBoxes(torch.tensor(gt[difficult], **f32)),
            labels=torch.tensor(gl[difficult]))
        samples.append(ds.to_dict())
    return samples


def timed(metric, meta, samples, batch=8):
    metric.dataset_meta = meta
    start = time.perf_counter()
    for b in range(0, len(samples), batch):
        metric.process({}, samples[b:b + batch])
    out = metric.evaluate(len(samples))
    return out, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=500)
    parser.add_argument('--objects', type=int, default=50)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--verbose', action='store_true', help='show both metrics\' tables')
    parser.add_argument('--bootstrap', type=int, default=0,
                        help='also time N bootstrap resamples against evaluating each from scratch')
    args = parser.parse_args()

    sys.path.insert(0, ROOT)
    from mmengine.logging import MMLogger
    from mmrotate.evaluation import DOTAMetric

    from bhcl.evaluation import HierarchicalDOTAMetric
    from bhcl.structures import LabelTree

    MMLogger.get_instance('eval_speed', log_level='INFO' if args.verbose else 'WARNING')
    tree = LabelTree.from_config(runpy.run_path(TREE)['label_tree'])
    meta = dict(classes=tree.classes, label_tree=tree.to_config(), leaf_ids=tree.leaf_ids)
    samples = make_samples(tree, args.images, args.objects, args.seed)
    num_dets = sum(len(s['pred_instances']['labels']) for s in samples)
    num_gts = sum(len(s['gt_instances']['labels']) + len(s['ignored_instances']['labels'])
                  for s in samples)
    scores = np.concatenate([s['pred_instances']['scores'].numpy() for s in samples])
    assert len(np.unique(scores)) == len(scores), 'scores must be distinct'
    print(f'{args.images} images, {num_gts} objects ({tree.num_classes} tree nodes), '
          f'{num_dets} predictions, IoU thresholds {THRS[0]}:{THRS[-1]} ({len(THRS)})')

    ours, t_ours = timed(HierarchicalDOTAMetric(iou_thrs=THRS, report_thrs=THRS), meta, samples)
    print(f'HierarchicalDOTAMetric: {t_ours:8.2f} s  (leaf, all-node and '
          f'{tree.num_levels} per-level mAPs)')
    ref, t_ref = timed(DOTAMetric(iou_thrs=THRS), dict(classes=tree.classes), samples)
    print(f'mmrotate DOTAMetric:    {t_ref:8.2f} s  (all-node mAP only)')
    print(f'speed-up: {t_ref / t_ours:.1f}x')

    diff = abs(ours['dota/mAP'] - ref['dota/mAP'])
    rows = [(f'AP{int(round(t * 100))}', ours[f'dota/AP{int(round(t * 100))}'],
             ref[f'dota/AP{int(t * 100):02d}']) for t in THRS]
    same = all(round(a, 3) == b for _, a, b in rows)
    print(f"mAP: ours {ours['dota/mAP']:.7f}  DOTAMetric {ref['dota/mAP']:.7f}  "
          f'|diff| {diff:.2e}')
    print('per threshold (ours / DOTAMetric, 3 d.p.): '
          + ', '.join(f'{k} {a:.3f}/{b:.3f}' for k, a, b in rows))
    print(f"leaf mAP {ours['dota/leaf_mAP']:.4f}, "
          + ', '.join(f"lv{lv} {ours[f'dota/lv{lv}_mAP']:.4f}" for lv in range(tree.num_levels)))
    ok = diff <= 1e-6 and same
    print('values agree' if ok else 'VALUES DIFFER')
    if args.bootstrap:
        ok &= time_bootstrap(HierarchicalDOTAMetric, meta, samples, args.bootstrap, t_ours)
    return 0 if ok else 1


def time_bootstrap(metric_cls, meta, samples, num, t_plain):
    """Bootstrap standard errors as the metric computes them against each resample
    evaluated from scratch (the same resamples); True when they are equal."""
    out, t_all = timed(metric_cls(iou_thrs=THRS, report_thrs=THRS, bootstrap=num), meta,
                       samples)
    ref = metric_cls(iou_thrs=THRS, report_thrs=THRS)
    ref.dataset_meta = meta
    ref.process({}, samples)
    results, n = ref.results, len(ref.results)
    rng = np.random.default_rng(0)   # the metric's default bootstrap_seed
    start = time.perf_counter()
    resampled = [ref._evaluate([results[i] for i in rng.integers(0, n, n)]) for _ in range(num)]
    t_scratch = time.perf_counter() - start
    keys = [k for k in resampled[0]]
    errors = {k: float(np.nanstd([m[k] for m in resampled], ddof=1)) for k in keys}
    equal = all(out[f'dota/{k}_se'] == errors[k] for k in keys)
    t_boot = t_all - t_plain
    print(f'bootstrap, {num} resamples: {t_boot:.2f} s from the matching of the whole set, '
          f'{t_scratch:.2f} s evaluating each from scratch ({t_scratch / t_boot:.1f}x); '
          f'standard errors {"equal" if equal else "DIFFER"} '
          f"(leaf mAP {out['dota/leaf_mAP_se']:.5f})")
    return equal


if __name__ == '__main__':
    sys.exit(main())
