"""Hierarchical rotated mAP as an mmengine metric (drop-in for DOTAMetric)."""
from __future__ import annotations

import re

from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmrotate.registry import METRICS

from ...structures.label_tree import LabelTree
from ..functional import (DEFAULT_IOU_THRS, EVAL_MODES, SHALLOW_GT_MODES, Detections,
                          GroundTruth, HierarchicalMapResult, HierarchicalMatches, MapResult,
                          hierarchical_matches)


def _get(obj, key: str):
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None) if key in obj else None


def _numpy(x, dtype, cols: Optional[int] = None) -> np.ndarray:
    if x is None:
        return np.zeros((0, cols) if cols else (0, ), dtype=dtype)
    x = getattr(x, 'tensor', x)  # mmdet BaseBoxes (RotatedBoxes, QuadriBoxes)
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=dtype)
    if cols is not None:
        x = x.reshape(len(x), -1) if x.size else np.zeros((0, cols), dtype=dtype)
    return x


def _thr_name(thr: float) -> str:
    return f'{int(round(thr * 100)):02d}'


def _table(header: List[str], rows: List[List[str]]) -> str:
    cols = list(zip(*([header] + rows)))
    widths = [max(len(c) for c in col) for col in cols]
    line = '+' + '+'.join('-' * (w + 2) for w in widths) + '+'

    def fmt(r):
        return '| ' + ' | '.join(c.ljust(w) for c, w in zip(r, widths)) + ' |'

    return '\n'.join([line, fmt(header), line] + [fmt(r) for r in rows] + [line])


@METRICS.register_module()
class HierarchicalDOTAMetric(BaseMetric):
    """Rotated mAP of a hierarchical (label-tree) detector, in one pass.

    Same ``process()`` input as mmrotate's ``DOTAMetric``: data samples with
    ``pred_instances`` (``bboxes`` (N, 5) ``(cx, cy, w, h, t)`` le90 or (N, 8)
    polygons, ``scores``, ``labels`` = tree nodes), ``gt_instances`` and
    ``ignored_instances`` (``bboxes``, ``labels``). The rotated IoU of every
    image is computed once and reused for all thresholds, classes and levels;
    no process pool is used.

    Reported keys (``dota/`` prefix by default; no shell characters):

    - ``leaf_mAP``: mean over ``iou_thrs`` of the AP averaged over the leaf
      classes with ground truth (the paper's number with the default
      0.50:0.05:0.95), and ``leaf_AP50``... at each of ``report_thrs``;
    - ``mAP``, ``AP50``...: the same over all tree nodes with ground truth
      (mmrotate's ``DOTAMetric`` average; internal nodes that only exist as
      "Other X" ground truth count with AP 0 when the model predicts leaves
      only);
    - ``lv{l}_mAP``, ``lv{l}_AP50``...: predictions and ground truth
      collapsed to their level-l ancestor, for each of ``levels``.

    A per-class AP table, one table per level and a summary are logged.

    Args:
        iou_thrs: IoU thresholds, each in (0, 1]. Default 0.50:0.05:0.95.
        eval_mode: ``'11points'`` (VOC07, the paper and DOTA devkit) or
            ``'area'`` (VOC2010+ area under the precision envelope).
        strict_iou: a match needs IoU > thr (DOTA devkit) instead of
            IoU >= thr (mmrotate, default).
        iou_type: ``'rbox'`` compares rotated boxes (polygons become their
            minimum-area rectangle; mmcv's ``box_iou_rotated`` when built,
            like mmrotate) or ``'poly'`` compares the polygons exactly (DOTA
            devkit; rotated boxes become their corners).
        ignore_difficult: ``ignored_instances`` (objects above the dataset's
            ``diff_thr``) absorb matches without being positives (True,
            as DOTAMetric and the devkit), or count as ordinary ground truth
            (False).
        label_tree: ``dict(paths=...)`` / ``dict(parents=...)`` or a
            ``LabelTree``. Default: ``dataset_meta['label_tree']``, else a
            flat tree over ``dataset_meta['classes']``.
        levels: tree levels to report (default: all levels of a tree with
            more than one level; none for a flat class list).
        shallow_gt: ground truth shallower than a level: ``'ignore'``
            (ignored for the level-l classes below it) or ``'drop'``.
            Shallower predictions are always left out of that level.
        merge_duplicates: at a level, merge detections of one image with an
            identical box and the same collapsed class, keeping the highest
            score.
        report_thrs: thresholds (from ``iou_thrs``) with their own
            ``AP{t}`` key per group (default: 0.5 and 0.75 where present,
            else every threshold); the log shows every threshold.
        iou_backend: ``'auto'``, ``'mmcv'`` or ``'numpy'`` for rotated-box IoU.
        class_groups: extra ``{group: [class names]}`` averages over tree
            nodes with ground truth, reported as ``{group}_mAP`` and
            ``{group}_AP50``... (e.g. ``dict(tail=[...])`` for the rare
            classes). Group names: letters, digits and ``_``.
        bootstrap: number of bootstrap resamples of the evaluated images
            (0: none). Each resample draws as many images as were evaluated,
            with replacement, and is evaluated like the real set; every key
            then also gets a ``{key}_se`` standard error (the standard
            deviation over resamples): the uncertainty that comes from the
            finite test set, for one trained model.
        bootstrap_seed: seed of the resampling (deterministic by default).
        collect_device, prefix: see ``mmengine.evaluator.BaseMetric``.
    """

    default_prefix: Optional[str] = 'dota'

    def __init__(self,
                 iou_thrs: Union[float, Sequence[float]] = DEFAULT_IOU_THRS,
                 eval_mode: str = '11points',
                 strict_iou: bool = False,
                 iou_type: str = 'rbox',
                 ignore_difficult: bool = True,
                 label_tree: Optional[Union[dict, LabelTree]] = None,
                 levels: Optional[Sequence[int]] = None,
                 shallow_gt: str = 'ignore',
                 merge_duplicates: bool = True,
                 report_thrs: Optional[Sequence[float]] = None,
                 iou_backend: str = 'auto',
                 class_groups: Optional[Dict[str, Sequence[str]]] = None,
                 bootstrap: int = 0,
                 bootstrap_seed: int = 0,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        thrs = [float(iou_thrs)] if np.isscalar(iou_thrs) else [float(t) for t in iou_thrs]
        if not thrs or any(not 0 < t <= 1 for t in thrs):
            raise ValueError(f'iou_thrs must be non-empty and in (0, 1], got {thrs}')
        if eval_mode not in EVAL_MODES:
            raise ValueError(f'eval_mode must be one of {EVAL_MODES}, got {eval_mode!r}')
        if iou_type not in ('rbox', 'poly'):
            raise ValueError(f"iou_type must be 'rbox' or 'poly', got {iou_type!r}")
        if shallow_gt not in SHALLOW_GT_MODES:
            raise ValueError(f'shallow_gt must be one of {SHALLOW_GT_MODES}, got {shallow_gt!r}')
        names = {_thr_name(t) for t in thrs}
        if len(names) != len(thrs):
            raise ValueError(f'iou_thrs must differ at 2 decimals, got {thrs}')
        if report_thrs is None:
            report_thrs = [t for t in thrs if _thr_name(t) in ('50', '75')] or thrs
        missing = [t for t in report_thrs if _thr_name(t) not in names]
        if missing:
            raise ValueError(f'report_thrs {missing} are not among iou_thrs {thrs}')
        self.iou_thrs = thrs
        self.eval_mode = eval_mode
        self.strict_iou = strict_iou
        self.iou_type = iou_type
        self.ignore_difficult = ignore_difficult
        self.label_tree = None if label_tree is None else LabelTree.from_config(label_tree)
        self.levels = None if levels is None else [int(lv) for lv in levels]
        self.shallow_gt = shallow_gt
        self.merge_duplicates = merge_duplicates
        self.report_thrs = [float(t) for t in report_thrs]
        self.iou_backend = iou_backend
        self.class_groups = {str(k): list(v) for k, v in (class_groups or {}).items()}
        bad = [k for k in self.class_groups
               if not re.fullmatch(r'[A-Za-z0-9_]+', k) or k in ('leaf', 'all') or
               re.fullmatch(r'lv\d+', k)]
        if bad:
            raise ValueError(f'class_groups names {bad} must use letters, digits and _ '
                             "and differ from 'leaf', 'all' and 'lv<l>'")
        if int(bootstrap) < 0 or int(bootstrap) == 1:
            raise ValueError(f'bootstrap must be 0 (off) or at least 2 resamples, got {bootstrap}')
        self.bootstrap = int(bootstrap)
        self.bootstrap_seed = int(bootstrap_seed)

    # ------------------------------------------------------------- collect
    def process(self, data_batch, data_samples: Sequence) -> None:
        """Store boxes, scores and labels of each sample as numpy arrays."""
        for sample in data_samples:
            pred, gt = _get(sample, 'pred_instances'), _get(sample, 'gt_instances')
            ign = _get(sample, 'ignored_instances')
            self.results.append(dict(
                img_id=_get(sample, 'img_id'),
                det_boxes=_numpy(_get(pred, 'bboxes'), np.float32, 5),
                det_scores=_numpy(_get(pred, 'scores'), np.float32),
                det_labels=_numpy(_get(pred, 'labels'), np.int64),
                gt_boxes=_numpy(_get(gt, 'bboxes'), np.float32, 5),
                gt_labels=_numpy(_get(gt, 'labels'), np.int64),
                ign_boxes=_numpy(_get(ign, 'bboxes'), np.float32, 5),
                ign_labels=_numpy(_get(ign, 'labels'), np.int64)))

    # ------------------------------------------------------------- compute
    def _tree(self) -> LabelTree:
        meta = self.dataset_meta or {}
        tree = self.label_tree
        if tree is None and meta.get('label_tree') is not None:
            tree = LabelTree.from_config(meta['label_tree'])
        if tree is None:
            if not meta.get('classes'):
                raise ValueError(f'{type(self).__name__} needs label_tree= or a dataset_meta with '
                                 "'label_tree' or 'classes'")
            tree = LabelTree(meta['classes'], [None] * len(meta['classes']))
        if meta.get('classes') and tuple(meta['classes']) != tree.classes:
            raise ValueError(f'{type(self).__name__}: label tree classes {tree.classes} differ '
                             f"from dataset_meta['classes'] {tuple(meta['classes'])}")
        return tree

    @staticmethod
    def _flatten(results: List[dict]):
        """Per-image results -> flat ``Detections`` and ``GroundTruth``
        (ordinary objects of an image first, then its ignored ones)."""
        det, gt = {k: [] for k in 'ibsl'}, {k: [] for k in 'ibln'}
        for i, r in enumerate(results):
            if len(r['det_labels']):
                det['i'].append(np.full(len(r['det_labels']), i))
                det['b'].append(r['det_boxes'])
                det['s'].append(r['det_scores'])
                det['l'].append(r['det_labels'])
            for key, ignored in (('gt', False), ('ign', True)):
                if len(r[f'{key}_labels']):
                    gt['i'].append(np.full(len(r[f'{key}_labels']), i))
                    gt['b'].append(r[f'{key}_boxes'])
                    gt['l'].append(r[f'{key}_labels'])
                    gt['n'].append(np.full(len(r[f'{key}_labels']), ignored))

        def cat(parts, empty):
            return np.concatenate(parts) if parts else empty

        box_dim = (det['b'] or gt['b'] or [np.zeros((0, 5))])[0].shape[1]
        no_box = np.zeros((0, box_dim), dtype=np.float32)
        no_int = np.zeros(0, dtype=np.int64)
        dets = Detections(cat(det['i'], no_int), cat(det['b'], no_box),
                          cat(det['s'], np.zeros(0, dtype=np.float32)), cat(det['l'], no_int))
        gts = GroundTruth(cat(gt['i'], no_int), cat(gt['b'], no_box), cat(gt['l'], no_int),
                          cat(gt['n'], np.zeros(0, dtype=bool)))
        return dets, gts

    def compute_metrics(self, results: list) -> Dict[str, float]:
        if not results:
            raise ValueError(f'{type(self).__name__}: no results to evaluate')
        tree = self._tree()
        matches = self._matches(results, tree)
        res = matches.result()
        self._log_tables(res)
        metrics = self._summarise(res, tree)
        if self.bootstrap:
            # a resample of the images is scored from the matching of the whole set:
            # the same numbers as evaluating the resampled list, without its IoU
            rng = np.random.default_rng(self.bootstrap_seed)
            samples = [self._summarise(matches.resample(rng.integers(0, len(results),
                                                                     len(results))), tree)
                       for _ in range(self.bootstrap)]
            for key in list(metrics):
                metrics[f"{key}_se"] = float(np.nanstd([m[key] for m in samples], ddof=1))
        return metrics

    def _matches(self, results: list, tree: LabelTree) -> HierarchicalMatches:
        """IoU and matching of per-image ``results`` (image i is ``results[i]``)."""
        dets, gts = self._flatten(results)
        return hierarchical_matches(
            dets, gts, tree, self.iou_thrs, eval_mode=self.eval_mode,
            strict_iou=self.strict_iou, iou_type=self.iou_type,
            ignore_difficult=self.ignore_difficult, levels=self.levels,
            shallow_gt=self.shallow_gt, merge_duplicates=self.merge_duplicates,
            backend=self.iou_backend)

    def _evaluate(self, results: list) -> Dict[str, float]:
        """Metrics of per-image ``results`` (a repeated image counts as a new one)."""
        tree = self._tree()
        return self._summarise(self._matches(results, tree).result(), tree)

    def _summarise(self, res: HierarchicalMapResult, tree: LabelTree) -> Dict[str, float]:
        means = res.mean_aps()
        for group, names in self.class_groups.items():
            means[group] = res.nodes.mean_ap([tree.index(n) for n in names])
        metrics: Dict[str, float] = {}
        for group, mean in means.items():
            name = '' if group == 'all' else f'{group}_'
            metrics[f'{name}mAP'] = float(mean.mean())
            for thr in self.report_thrs:
                t = [_thr_name(x) for x in self.iou_thrs].index(_thr_name(thr))
                metrics[f'{name}AP{_thr_name(thr)}'] = float(mean[t])
        return metrics

    # ------------------------------------------------------------- logging
    def _class_rows(self, tree: LabelTree, res: MapResult, classes) -> List[List[str]]:
        rows = []
        for k in classes:
            if res.num_gts[k] == 0 and res.num_dets[k] == 0:
                continue
            has_gt = res.num_gts[k] > 0
            aps = [f'{res.ap[t, k]:.4f}' if has_gt else '-' for t in range(len(self.iou_thrs))]
            rows.append([tree.classes[k], str(tree.depth[k]), 'y' if tree.is_leaf(k) else '',
                         str(res.num_gts[k]), str(res.num_dets[k]),
                         f'{res.recall[0, k]:.4f}' if has_gt else '-', *aps,
                         f'{res.ap[:, k].mean():.4f}' if has_gt else '-'])
        return rows

    def _log_tables(self, res: HierarchicalMapResult) -> None:
        tree = res.tree
        thr_cols = [f'AP{_thr_name(t)}' for t in self.iou_thrs]
        header = ['class', 'level', 'leaf', 'gts', 'dets', f'recall{_thr_name(self.iou_thrs[0])}',
                  *thr_cols, 'mAP']
        print_log('\nper-class AP (tree nodes):\n'
                  + _table(header, self._class_rows(tree, res.nodes, range(tree.num_classes))),
                  logger='current')
        for level, lres in res.levels.items():
            rows = self._class_rows(tree, lres, tree.nodes_at_level(level))
            print_log(f'\nper-class AP at level {level} (collapsed to level-{level} ancestors):\n'
                      + _table(header, rows), logger='current')
        summary = []
        for group, mean in res.mean_aps().items():
            result = res.nodes if group in ('all', 'leaf') else res.levels[int(group[2:])]
            pool = (tree.leaf_ids if group == 'leaf' else range(tree.num_classes)
                    if group == 'all' else tree.nodes_at_level(int(group[2:])))
            n = int(sum(result.num_gts[k] > 0 for k in pool))
            summary.append([group, str(n), *[f'{m:.4f}' for m in mean], f'{mean.mean():.4f}'])
        print_log('\nmean AP over classes with ground truth:\n'
                  + _table(['group', 'classes', *thr_cols, 'mAP'], summary), logger='current')
