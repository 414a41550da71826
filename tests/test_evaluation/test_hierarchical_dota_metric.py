import json
import os.path as osp
import re
import shutil

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip('mmrotate')
from mmdet.structures import DetDataSample  # noqa: E402
from mmengine.evaluator import Evaluator  # noqa: E402
from mmengine.structures import InstanceData  # noqa: E402
from mmrotate.structures.bbox import QuadriBoxes, RotatedBoxes  # noqa: E402

from bhcl.datasets import HierarchicalDOTADataset  # noqa: E402
from bhcl.evaluation import HierarchicalDOTAMetric  # noqa: E402
from bhcl.evaluation.metrics import hierarchical_dota_metric as metric_module  # noqa: E402
from bhcl.structures.geometry import poly_to_rbox  # noqa: E402
from tests.conftest import DATA_DIR  # noqa: E402
from tests.test_evaluation.test_hierarchical_map import TREE, hand_case  # noqa: E402
from tests.test_evaluation.test_rotated_map import _SerialPool, random_dataset  # noqa: E402

SHELL_SAFE = re.compile(r'^[A-Za-z0-9_./-]+$')
META = dict(classes=TREE.classes, label_tree=TREE.to_config(), leaf_ids=TREE.leaf_ids)


def sample(img_id, det_boxes, scores, labels, gt_boxes, gt_labels, ign_boxes=None,
           ign_labels=None, box_type=RotatedBoxes):
    ds = DetDataSample(metainfo=dict(img_id=img_id))
    ds.pred_instances = InstanceData(bboxes=torch.as_tensor(det_boxes, dtype=torch.float32),
                                     scores=torch.as_tensor(scores, dtype=torch.float32),
                                     labels=torch.as_tensor(labels, dtype=torch.long))

    def inst(boxes, lab):
        boxes = np.zeros((0, 5)) if boxes is None else np.asarray(boxes)
        return InstanceData(bboxes=box_type(torch.as_tensor(boxes, dtype=torch.float32)),
                            labels=torch.as_tensor([] if lab is None else lab, dtype=torch.long))

    ds.gt_instances = inst(gt_boxes, gt_labels)
    ds.ignored_instances = inst(ign_boxes, ign_labels)
    return ds


def hand_samples():
    """The hand-checked case of test_hierarchical_map as rotated boxes, in
    image 0, plus an image with an empty prediction set."""
    dets, gts = hand_case()
    rb = lambda polys: poly_to_rbox(polys)  # noqa: E731
    return [
        sample('img0', rb(dets.boxes), dets.scores, dets.labels, rb(gts.boxes), gts.labels),
        sample('img1', np.zeros((0, 5)), [], [], np.zeros((0, 5)), []),
    ]


def run_evaluator(metric, samples, meta=META, batch=1):
    evaluator = Evaluator(metric)
    evaluator.dataset_meta = meta
    for i in range(0, len(samples), batch):
        evaluator.process(data_samples=samples[i:i + batch])
    return evaluator.evaluate(len(samples))


def test_end_to_end_hand_case_keys_and_values():
    metric = HierarchicalDOTAMetric(iou_thrs=[0.5, 0.75], eval_mode='area')
    out = run_evaluator(metric, hand_samples())
    # every IoU is 0 or 1, so AP75 == AP50; values checked by hand in
    # test_hierarchical_map
    want = {'mAP': 0.4, 'leaf_mAP': 0.5, 'lv0_mAP': 0.475, 'lv1_mAP': 0.75, 'lv2_mAP': 1.0}
    expected = {}
    for key, v in want.items():
        group = key[:-len('mAP')]
        expected.update({f'dota/{group}mAP': v, f'dota/{group}AP50': v, f'dota/{group}AP75': v})
    assert set(out) == set(expected)
    for key, v in expected.items():
        assert out[key] == pytest.approx(v, abs=1e-6), key
    assert all(SHELL_SAFE.match(k) for k in out)
    assert all(isinstance(v, float) for v in out.values())


def test_dict_samples_and_sample_objects_agree():
    m1 = HierarchicalDOTAMetric(iou_thrs=[0.5])
    m2 = HierarchicalDOTAMetric(iou_thrs=[0.5])
    for m in (m1, m2):
        m.dataset_meta = META
    m1.process({}, hand_samples())
    m2.process({}, [s.to_dict() for s in hand_samples()])
    assert m1.compute_metrics(m1.results) == m2.compute_metrics(m2.results)


def test_explicit_label_tree_flat_fallback_and_mismatch():
    samples = hand_samples()
    explicit = run_evaluator(HierarchicalDOTAMetric(label_tree=TREE.to_config()), samples,
                             meta=dict(classes=TREE.classes))
    from_meta = run_evaluator(HierarchicalDOTAMetric(), samples)
    assert explicit == from_meta
    flat = run_evaluator(HierarchicalDOTAMetric(iou_thrs=0.5), samples,
                         meta=dict(classes=TREE.classes))
    assert set(flat) == {'dota/mAP', 'dota/AP50', 'dota/leaf_mAP', 'dota/leaf_AP50'}
    assert flat['dota/mAP'] == flat['dota/leaf_mAP']  # every class is a leaf
    with pytest.raises(ValueError, match='differ'):
        run_evaluator(HierarchicalDOTAMetric(label_tree=dict(parents={'x': None})), samples)


def test_per_class_table_is_logged(record_log):
    logged = record_log(metric_module, 'print_log')
    run_evaluator(HierarchicalDOTAMetric(iou_thrs=[0.5], eval_mode='area'), hand_samples())
    text = '\n'.join(logged)
    assert re.search(r'\| A1b +\| 2 +\| y +\| 1 +\| 2 +\| 1\.0000 +\| 0\.5000 +\| 0\.5000 \|',
                     text), text
    assert 'level 2' in text and re.search(r'\| lv1 +\| 2 +\| 0\.7500', text)


def test_argument_validation():
    for kwargs in (dict(iou_thrs=[]), dict(iou_thrs=[0.5, 1.2]), dict(eval_mode='coco'),
                   dict(iou_type='hbox'), dict(shallow_gt='keep'),
                   dict(iou_thrs=[0.5], report_thrs=[0.75]),
                   dict(iou_thrs=[0.5, 0.501])):
        with pytest.raises(ValueError):
            HierarchicalDOTAMetric(**kwargs)


# ------------------------------------------- real dataset and pipeline
def p0004_samples(tmp_path, diff_thr, convert_to_rbox):
    """Ground truth of the mmrotate 0.x fixture through HierarchicalDOTADataset
    and the mmrotate pipeline, predictions from the fixture's detections."""
    from mmengine.registry import init_default_scope
    init_default_scope('mmrotate')
    src = osp.join(DATA_DIR, 'mmrotate_0x')
    expect = json.load(open(osp.join(src, 'eval_expectations.json')))
    shutil.copytree(osp.join(src, 'labelTxt'), tmp_path / 'labelTxt')
    (tmp_path / 'images').mkdir()
    for stem in ('P0004__1__0___0', 'P0004__1__0___1024'):
        assert cv2.imwrite(str(tmp_path / 'images' / f'{stem}.png'), np.zeros((8, 8, 3), np.uint8))
    pipeline = [dict(type='mmdet.LoadAnnotations', with_bbox=True, box_type='qbox')]
    if convert_to_rbox:
        pipeline.append(dict(type='ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')))
    pipeline.append(dict(type='mmdet.PackDetInputs', meta_keys=('img_id', )))
    ds = HierarchicalDOTADataset(label_tree=dict(parents={'plane': None}), diff_thr=diff_thr,
                                 data_root=str(tmp_path), ann_file='labelTxt/',
                                 data_prefix=dict(img_path='images/'), pipeline=pipeline,
                                 test_mode=True)
    samples = []
    for i in range(len(ds)):
        s = ds[i]['data_samples']
        dets = expect['dets_rbox'] if s.img_id == 'P0004__1__0___0' else np.zeros((0, 5))
        s.pred_instances = InstanceData(
            bboxes=RotatedBoxes(torch.tensor(dets, dtype=torch.float32).reshape(-1, 5)),
            scores=torch.linspace(0.9, 0.7, len(dets)),
            labels=torch.zeros(len(dets), dtype=torch.long))
        samples.append(s)
    return ds, samples, expect


def test_mmrotate_fixture_through_dataset_and_pipeline(tmp_path):
    ds, samples, expect = p0004_samples(tmp_path / 'a', diff_thr=100, convert_to_rbox=True)
    out = run_evaluator(HierarchicalDOTAMetric(iou_thrs=[0.5], report_thrs=[0.5]),
                        [s.to_dict() for s in samples], meta=ds.metainfo)
    assert out['dota/AP50'] == pytest.approx(expect['mmrotate_difficult_counted']['AP_11points'],
                                             abs=1e-6)
    # devkit semantics: difficult ignored (diff_thr=0), quads kept, polygon IoU, IoU > thr
    ds, samples, expect = p0004_samples(tmp_path / 'b', diff_thr=0, convert_to_rbox=False)
    assert isinstance(samples[0].gt_instances.bboxes, QuadriBoxes)
    metric = HierarchicalDOTAMetric(iou_thrs=[0.5], report_thrs=[0.5], iou_type='poly',
                                    strict_iou=True)
    out = run_evaluator(metric, [s.to_dict() for s in samples], meta=ds.metainfo)
    assert out['dota/AP50'] == pytest.approx(expect['devkit_semantics']['AP_11points'], abs=1e-6)


# ------------------------------------------------ equality with DOTAMetric
def test_equals_mmrotate_dota_metric(monkeypatch):
    pytest.importorskip('mmcv.ops')
    from mmrotate.evaluation import DOTAMetric
    from mmrotate.evaluation.functional import mean_ap

    class Context:
        Pool = _SerialPool

    monkeypatch.setattr(mean_ap, 'get_context', lambda method: Context())
    classes = ('a', 'b', 'c')
    det_results, annotations = random_dataset(np.random.default_rng(7), n_img=6, n_cls=3,
                                              as_mmrotate=True)
    samples = []
    for i, (per_class, ann) in enumerate(zip(det_results, annotations)):
        dets = np.concatenate(per_class)
        labels = np.concatenate([np.full(len(d), k) for k, d in enumerate(per_class)])
        samples.append(sample(f'{i}', dets[:, :5], dets[:, 5], labels, ann['bboxes'],
                              ann['labels'], ann['bboxes_ignore'], ann['labels_ignore'])
                       .to_dict())
    thrs = [0.5, 0.6, 0.75, 0.9]
    ref = run_evaluator(DOTAMetric(iou_thrs=thrs), samples, meta=dict(classes=classes))
    mine = run_evaluator(HierarchicalDOTAMetric(iou_thrs=thrs, report_thrs=thrs), samples,
                         meta=dict(classes=classes))
    assert mine['dota/mAP'] == pytest.approx(ref['dota/mAP'], abs=1e-6)
    for thr in thrs:  # DOTAMetric rounds its per-threshold values to 3 decimals
        key = f'dota/AP{int(round(thr * 100))}'
        assert round(mine[key], 3) == pytest.approx(ref[key], abs=1e-9)
    assert 0.1 < ref['dota/mAP'] < 0.9  # a discriminative case, not all-or-nothing


def test_quadri_boxes_and_ignored_instances():
    """Polygon ground truth with rotated predictions; ignored objects absorb."""
    quads = np.array([[0, 0, 10, 0, 10, 10, 0, 10], [40, 0, 50, 0, 50, 10, 40, 10.]])
    s = sample('q', [[5, 5, 10, 10, 0], [45, 5, 10, 10, 0]], [0.9, 0.8], [0, 0],
               quads[:1], [0], quads[1:], [0], box_type=QuadriBoxes)
    meta = dict(classes=('plane', ))
    for kwargs, want in ((dict(), 1.0), (dict(ignore_difficult=False), 1.0)):
        out = run_evaluator(HierarchicalDOTAMetric(iou_thrs=[0.5], **kwargs), [s], meta=meta)
        assert out['dota/mAP'] == pytest.approx(want)
    # with the ignored object counted but not found, recall halves
    s.pred_instances = s.pred_instances[:1]
    out = run_evaluator(HierarchicalDOTAMetric(iou_thrs=[0.5], eval_mode='area',
                                               ignore_difficult=False), [s], meta=meta)
    assert out['dota/mAP'] == pytest.approx(0.5)
    out = run_evaluator(HierarchicalDOTAMetric(iou_thrs=[0.5], eval_mode='area'), [s], meta=meta)
    assert out['dota/mAP'] == pytest.approx(1.0)


def test_registered():
    from mmrotate.registry import METRICS
    assert METRICS.get('HierarchicalDOTAMetric') is HierarchicalDOTAMetric
    metric = METRICS.build(dict(type='HierarchicalDOTAMetric', iou_thrs=[0.5, 0.75]))
    assert metric.prefix == 'dota'
    assert metric.iou_thrs == [0.5, 0.75]


def test_class_groups_average_named_classes():
    leaves = [TREE.classes[k] for k in TREE.leaf_ids]
    metric = HierarchicalDOTAMetric(iou_thrs=[0.5, 0.75], eval_mode='area',
                                    class_groups=dict(tail=leaves, every=list(TREE.classes)))
    out = run_evaluator(metric, hand_samples())
    # the same classes as the leaf and all-node averages give the same values
    assert out['dota/tail_mAP'] == pytest.approx(out['dota/leaf_mAP'], abs=1e-9)
    assert out['dota/every_AP50'] == pytest.approx(out['dota/mAP'], abs=1e-9)
    one = HierarchicalDOTAMetric(iou_thrs=[0.5], class_groups=dict(one=[leaves[0]]))
    res = run_evaluator(one, hand_samples())
    assert 0.0 <= res['dota/one_mAP'] <= 1.0 and 'dota/one_AP50' in res
    for bad in ('tail classes', 'leaf', 'lv1'):
        with pytest.raises(ValueError, match='class_groups names'):
            HierarchicalDOTAMetric(class_groups={bad: leaves})
    with pytest.raises(KeyError, match='unknown class name'):
        run_evaluator(HierarchicalDOTAMetric(class_groups=dict(x=['nope'])), hand_samples())


def test_bootstrap_standard_error_matches_binomial_formula():
    """One object per image, found (score 1) in a fraction p of the images:
    area-mode AP is the recall p, and its standard error over resampled
    image sets is the binomial sqrt(p (1 - p) / n)."""
    leaf = TREE.leaf_ids[0]
    box = [[50.0, 50.0, 30.0, 10.0, 0.3]]
    n, found = 240, 96
    samples = [sample(f'img{i}', box if i < found else np.zeros((0, 5)),
                      [1.0] if i < found else [], [leaf] if i < found else [], box, [leaf])
               for i in range(n)]
    metric = HierarchicalDOTAMetric(iou_thrs=[0.5], eval_mode='area', levels=[], bootstrap=300)
    out = run_evaluator(metric, samples, batch=16)
    p = found / n
    assert out['dota/leaf_AP50'] == pytest.approx(p, abs=1e-6)
    assert out['dota/leaf_AP50_se'] == pytest.approx(np.sqrt(p * (1 - p) / n), rel=0.15)
    assert set(out) == {k for k in out if not k.endswith('_se')} | {
        f'{k}_se' for k in out if not k.endswith('_se')}
    # identical images: no uncertainty; the same seed gives the same errors
    same = [sample(f'img{i}', box, [1.0], [leaf], box, [leaf]) for i in range(20)]
    assert run_evaluator(HierarchicalDOTAMetric(bootstrap=5), same)['dota/leaf_mAP_se'] == 0.0
    again = run_evaluator(HierarchicalDOTAMetric(iou_thrs=[0.5], eval_mode='area', levels=[],
                                                 bootstrap=300), samples, batch=16)
    assert again == out
    with pytest.raises(ValueError, match='bootstrap'):
        HierarchicalDOTAMetric(bootstrap=1)
