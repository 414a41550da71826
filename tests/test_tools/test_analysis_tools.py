"""Everyday tools: slurm launchers, browse_dataset, per-level confusion matrices, the
hierarchical visualiser (tools/test.py --show-dir) and the tracker backends."""
import glob
import json
import os
import os.path as osp
import pickle
import re
import shutil
import stat
import subprocess

import cv2
import numpy as np
import pytest
import torch

from bhcl.evaluation.functional.confusion_matrix import (ConfusionSample,
                                                         level_confusion_matrices, match_image)
from bhcl.structures import LabelTree
from bhcl.structures.geometry import poly_to_rbox
from tests.conftest import (BHCL_SMOKE_CONFIG, CONFIG_DIR, REPO_ROOT, SMOKE_CONFIG, load_script,
                            tree_config)

RUNTIME = osp.join(CONFIG_DIR, '_base_', 'default_runtime.py')
TREE = LabelTree.from_config(tree_config('synthetic'))


def analysis_tool(name):
    return load_script(f'tools/analysis_tools/{name}.py')


def data_options(root):
    return [f'{key}_dataloader.dataset.data_root={root}' for key in ('train', 'val', 'test')]


# ------------------------------------------------------------------------ slurm
# (slurm_train.sh submits a self-requeueing batch job: tests/test_tools/test_slurm_train.py)
@pytest.mark.parametrize('script, args, expected', [
    ('slurm_test.sh', ['gpu', 'job2', 'cfg.py', 'ckpt.pth', '--out', 'p.pkl'],
     ['tools/test.py', 'cfg.py', 'ckpt.pth', '--launcher=slurm', '--out', 'p.pkl']),
])
def test_slurm_scripts_call_srun_like_openmmlab(tmp_path, script, args, expected):
    fake = tmp_path / 'srun'
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$SRUN_LOG"\n'
                    'echo "PYTHONPATH=$PYTHONPATH" >> "$SRUN_LOG"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / 'srun.log'
    env = dict(os.environ, PATH=f'{tmp_path}:{os.environ["PATH"]}', SRUN_LOG=str(log),
               GPUS='16', SRUN_ARGS='--quotatype=auto --exclusive')
    proc = subprocess.run(['bash', osp.join(REPO_ROOT, 'tools', script), *args], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    argv = log.read_text().splitlines()
    assert argv[:8] == ['-p', 'gpu', f'--job-name={args[1]}', '--gres=gpu:8', '--ntasks=16',
                        '--ntasks-per-node=8', '--cpus-per-task=5', '--kill-on-bad-exit=1']
    assert argv[8:10] == ['--quotatype=auto', '--exclusive']
    assert argv[10:12] == ['python', '-u']
    assert argv[12].endswith(expected[0]) and argv[13:-1] == expected[1:]
    assert argv[-1].startswith(f'PYTHONPATH={REPO_ROOT}')
    proc = subprocess.run(['bash', osp.join(REPO_ROOT, 'tools', script), 'gpu'], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and 'usage:' in proc.stderr


# ------------------------------------------------------------------- visualiser
def test_tree_label_texts():
    from bhcl.visualization import tree_label_texts
    texts = dict(zip(TREE.classes, tree_label_texts(TREE)))
    assert texts['Frigate'] == 'Frigate\nVessel/Warship/Frigate'
    assert texts['Warship'] == 'Other -> Warship\nVessel/Warship'
    assert texts['Vessel'] == 'Other -> Vessel'


def drawn_texts(monkeypatch):
    from bhcl.visualization import HierarchicalLocalVisualizer
    texts = []
    original = HierarchicalLocalVisualizer.draw_texts

    def record(self, t, *args, **kwargs):
        texts.extend([t] if isinstance(t, str) else list(t))
        return original(self, t, *args, **kwargs)
    monkeypatch.setattr(HierarchicalLocalVisualizer, 'draw_texts', record)
    return texts


def test_visualiser_labels_leaf_and_path(monkeypatch, tmp_path):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    from mmrotate.structures import RotatedBoxes

    from bhcl.visualization import HierarchicalLocalVisualizer
    texts = drawn_texts(monkeypatch)
    vis = HierarchicalLocalVisualizer(name='vis_test_paths')
    vis.dataset_meta = dict(classes=TREE.classes, label_tree=TREE.to_config())
    sample = DetDataSample()
    sample.pred_instances = InstanceData(
        bboxes=RotatedBoxes(torch.tensor([[30., 30., 20., 10., 0.3], [70., 60., 30., 12., -0.5]])),
        scores=torch.tensor([0.9, 0.8]),
        labels=torch.tensor([TREE.index('Frigate'), TREE.index('Warship')]))
    out = tmp_path / 'drawn.png'
    vis.add_datasample('x', np.zeros((100, 100, 3), np.uint8), sample, draw_gt=False,
                       out_file=str(out))
    assert texts[0].startswith('Frigate\nVessel/Warship/Frigate')
    assert texts[1].startswith('Other -> Warship\nVessel/Warship')
    assert cv2.imread(str(out)) is not None


def test_base_runtime_uses_the_hierarchical_visualiser():
    from mmengine.config import Config
    cfg = Config.fromfile(SMOKE_CONFIG)
    assert cfg.visualizer.type == 'HierarchicalLocalVisualizer'
    assert cfg.visualizer.vis_backends == [dict(type='LocalVisBackend')]


def tracker_lines():
    """The commented tracker backends of the base runtime, uncommented."""
    lines = re.findall(r'^\s*# (dict\(type=\'\w+VisBackend\'.*?\)),', open(RUNTIME).read(), re.M)
    return {eval(line)['type']: eval(line) for line in lines}


def test_commented_trackers_are_registered_backends():
    from mmengine.registry import VISBACKENDS
    backends = tracker_lines()
    assert set(backends) == {'TensorboardVisBackend', 'MLflowVisBackend', 'WandbVisBackend'}
    for name in backends:
        assert VISBACKENDS.get(name) is not None


def test_tensorboard_backend_writes_its_event_file(tmp_path):
    pytest.importorskip('tensorboard', reason='pip install tensorboard (requirements/tests.txt)')
    from mmengine.config import Config
    from mmrotate.registry import VISUALIZERS
    cfg = Config.fromfile(RUNTIME)
    visualizer = cfg.visualizer
    visualizer.update(name='vis_test_tensorboard', save_dir=str(tmp_path),
                      vis_backends=[dict(type='LocalVisBackend'),
                                    tracker_lines()['TensorboardVisBackend']])
    import bhcl  # noqa: F401
    vis = VISUALIZERS.build(visualizer)
    vis.add_scalars({'loss': 1.5, 'dota/leaf_mAP': 0.25}, step=3)
    vis.close()
    events = glob.glob(str(tmp_path / '**' / 'events.out.tfevents.*'), recursive=True)
    assert len(events) == 1 and os.path.getsize(events[0]) > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(osp.dirname(events[0]))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars('loss')] == [(3, 1.5)]


# --------------------------------------------------------------- browse_dataset
def test_browse_dataset_draws_tree_paths_and_other(tiny_synthetic, tmp_path, monkeypatch,
                                                   capsys):
    root = tmp_path / 'data'
    shutil.copytree(tiny_synthetic, root)
    first = sorted((root / 'val' / 'labelTxt').iterdir())[0]
    with open(first, 'a') as f:
        f.write('20 20 60 20 60 40 20 40 Other Warship 0\n')
    texts = drawn_texts(monkeypatch)
    out = tmp_path / 'browse'
    drawn = analysis_tool('browse_dataset').main(
        [SMOKE_CONFIG, '--phase', 'val', '--not-show', '--output-dir', str(out),
         '--cfg-options', *data_options(f'{root}/')])
    files = sorted(os.listdir(out))
    assert len(files) == 4
    # val pipelines keep boxes in the original frame: images are drawn at 128 px, not 256
    assert all(cv2.imread(str(out / f)).shape == (128, 128, 3) for f in files)
    assert sum(drawn.values()) == len(texts) > 0
    leaf_texts = [t for t in texts if not t.startswith('Other')]
    assert all(len(t.split('\n')) == 2 and t.split('\n')[1].endswith(t.split('\n')[0])
               for t in leaf_texts)
    assert drawn[TREE.index('Warship')] >= 1
    assert texts.count('Other -> Warship\nVessel/Warship') == drawn[TREE.index('Warship')]
    printed = capsys.readouterr().out
    assert f'  Vessel/Warship: {drawn[TREE.index("Warship")]} *' in printed
    other = sum(n for k, n in drawn.items() if not TREE.is_leaf(k))
    assert f'total {sum(drawn.values())}, reallocated {other}' in printed


def test_browse_dataset_draws_every_view(tiny_synthetic, tmp_path):
    out = tmp_path / 'views'
    analysis_tool('browse_dataset').main(
        [BHCL_SMOKE_CONFIG, '--not-show', '--output-dir', str(out), '--max-images', '2',
         '--cfg-options', f'train_dataloader.dataset.dataset.data_root={tiny_synthetic}'])
    assert sorted(os.listdir(out)) == ['train_00000_view0.png', 'train_00000_view1.png',
                                       'train_00001_view0.png', 'train_00001_view1.png']


def test_browse_dataset_needs_somewhere_to_draw():
    with pytest.raises(SystemExit):
        analysis_tool('browse_dataset').parse_args([SMOKE_CONFIG, '--not-show'])


# ------------------------------------------------------------- confusion matrix
def rbox(cx, cy, w=20., h=10., t=0.):
    return [cx, cy, w, h, t]


def test_confusion_matching_and_levels():
    frigate, destroyer, warship = (TREE.index(n) for n in ('Frigate', 'Destroyer', 'Warship'))
    twin = TREE.index('Twin Jet')
    sample = ConfusionSample(
        gt_boxes=np.array([rbox(20, 20), rbox(60, 20), rbox(100, 20), rbox(140, 20)]),
        gt_labels=np.array([frigate, frigate, twin, warship]),
        det_boxes=np.array([rbox(20, 20), rbox(61, 20), rbox(200, 200), rbox(100, 20),
                            rbox(21, 20)]),
        det_scores=np.array([0.9, 0.8, 0.7, 0.1, 0.6]),
        det_labels=np.array([frigate, destroyer, twin, twin, frigate]))
    pairs, missed, false_dets = match_image(sample, score_thr=0.3, iou_thr=0.5)
    assert pairs == [(0, 0), (1, 1)]               # det 4 overlaps GT 0, already taken
    assert missed.tolist() == [2, 3] and false_dets.tolist() == [2, 4]
    lv0, lv1, lv2 = level_confusion_matrices([sample], TREE, 0.3, 0.5)
    assert lv0.names == ['Vessel', 'Aircraft', 'background']
    np.testing.assert_array_equal(lv0.counts, [[2, 0, 1], [0, 0, 1], [1, 1, 0]])
    i = {n: k for k, n in enumerate(lv2.names)}
    assert lv2.counts[i['Frigate'], i['Frigate']] == 1
    assert lv2.counts[i['Frigate'], i['Destroyer']] == 1
    assert lv2.counts[i['Twin Jet'], i['background']] == 1
    assert lv2.counts[i['background'], i['Twin Jet']] == 1
    assert lv2.counts[i['background'], i['Frigate']] == 1
    assert lv2.counts.sum() == 5 and lv2.coarser == 1   # the Warship ("Other") object
    assert lv1.coarser == 0 and lv1.counts.sum() == 6
    np.testing.assert_allclose(lv0.normalized()[0], [2 / 3, 0, 1 / 3])


def test_confusion_matrix_tool_writes_pngs(tiny_synthetic, tmp_path):
    from mmengine.config import Config
    from mmrotate.registry import DATASETS
    from mmengine.registry import init_default_scope
    import bhcl  # noqa: F401
    init_default_scope('mmrotate')
    cfg = Config.fromfile(SMOKE_CONFIG)
    cfg.test_dataloader.dataset.data_root = tiny_synthetic
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    preds, num_gt = [], 0
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        polys = np.array([x['bbox'] for x in info['instances']]).reshape(-1, 8)
        labels = np.array([x['bbox_label'] for x in info['instances']], dtype=np.int64)
        num_gt += sum(not x.get('ignore_flag', 0) for x in info['instances'])
        preds.append(dict(img_path=info['img_path'], pred_instances=dict(
            bboxes=torch.from_numpy(poly_to_rbox(polys)).float(),
            scores=torch.full((len(labels),), 0.9), labels=torch.from_numpy(labels))))
    pkl = tmp_path / 'preds.pkl'
    with open(pkl, 'wb') as f:
        pickle.dump(preds, f)
    out = tmp_path / 'cm'
    levels = analysis_tool('confusion_matrix').main(
        [SMOKE_CONFIG, str(pkl), str(out), '--cfg-options', *data_options(tiny_synthetic)])
    assert sorted(os.listdir(out)) == ['confusion_matrices.json', 'confusion_matrix_level0.png',
                                       'confusion_matrix_level1.png',
                                       'confusion_matrix_level2.png']
    for png in glob.glob(str(out / '*.png')):
        assert cv2.imread(png) is not None
    saved = json.load(open(out / 'confusion_matrices.json'))
    for conf, data in zip(levels, saved):
        counts = np.array(data['counts'])
        # perfect predictions: everything on the diagonal, nothing against background
        assert counts.sum() == np.trace(counts) == num_gt - conf.coarser
        assert counts[-1].sum() == counts[:, -1].sum() == 0
    assert saved[0]['coarser'] == 0
    preds[0]['img_path'] = 'elsewhere/unknown.png'
    with open(pkl, 'wb') as f:
        pickle.dump(preds, f)
    with pytest.raises(ValueError, match=r"predictions for 1 images the dataset lacks.*unknown"):
        analysis_tool('confusion_matrix').main(
            [SMOKE_CONFIG, str(pkl), str(out), '--cfg-options', *data_options(tiny_synthetic)])


@pytest.mark.slow
def test_test_tool_show_dir_labels_predictions_with_tree_paths(tiny_synthetic, tmp_path,
                                                                monkeypatch):
    import sys
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmrotate.registry import MODELS
    sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
    import test as test_tool
    init_default_scope('mmrotate')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(SMOKE_CONFIG).model)
    ckpt = tmp_path / 'random.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    texts = drawn_texts(monkeypatch)
    test_tool.main([SMOKE_CONFIG, str(ckpt), '--work-dir', str(tmp_path / 'work'),
                    '--show-dir', 'vis', '--cfg-options', *data_options(tiny_synthetic),
                    'default_hooks.visualization.score_thr=0.0',
                    'visualizer.name=show_dir_visualizer'])  # not an earlier runner's instance
    drawn = glob.glob(str(tmp_path / 'work' / '*' / 'vis' / '*.png'))
    assert len(drawn) == 4
    from bhcl.visualization import tree_label_texts
    preds = [t.rsplit(': ', 1)[0] for t in texts if ': ' in t]   # predictions carry a score
    assert preds and set(preds) <= set(tree_label_texts(TREE))
    assert any('\n' in t for t in preds)                          # a name over its tree path


# ------------------------------------------------------------------------ t-SNE
def test_level_silhouettes_match_a_hand_computed_cosine_silhouette():
    tsne = analysis_tool('query_tsne')
    tree = LabelTree.from_paths(['A', 'A/a1', 'A/a2', 'B', 'B/b1'])
    emb = np.array([[1., 0.], [0.9, 0.1], [0.8, 0.3], [0., 1.], [0.1, 0.9]])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.array([1, 1, 2, 4, 3])  # a1, a1, a2, b1, B ("Other B")

    def silhouette(x, g):
        d = 1 - x @ x.T
        s = []
        for i in range(len(x)):
            same = (g == g[i]) & (np.arange(len(x)) != i)
            if not same.any():
                s.append(0.0)
                continue
            a = d[i, same].mean()
            b = min(d[i, g == h].mean() for h in set(g.tolist()) - {g[i]})
            s.append((b - a) / max(a, b))
        return float(np.mean(s))

    out = tsne.level_silhouettes(emb, labels, tree)
    assert out[0]['silhouette'] == pytest.approx(silhouette(emb, np.array([0, 0, 0, 3, 3])))
    # level 1: the "Other B" object has no level-1 ancestor and is left out
    keep = [0, 1, 2, 3]
    assert out[1]['points'] == 4 and out[1]['groups'] == ['a1', 'a2', 'b1']
    assert out[1]['silhouette'] == pytest.approx(
        silhouette(emb[keep], np.array([1, 1, 2, 4])))


@pytest.mark.slow
def test_query_tsne_tool_writes_one_picture_per_level(tiny_synthetic, tmp_path):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmrotate.registry import MODELS
    tsne = analysis_tool('query_tsne')
    init_default_scope('mmrotate')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(BHCL_SMOKE_CONFIG).model)
    ckpt = tmp_path / 'bhcl.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    out = tmp_path / 'tsne'
    opts = data_options(tiny_synthetic)
    opts[0] = f'train_dataloader.dataset.dataset.data_root={tiny_synthetic}'  # two-view wrapper
    tsne.main([BHCL_SMOKE_CONFIG, str(ckpt), str(out), '--phase', 'val', '--cfg-options', *opts])
    result = json.loads((out / 'tsne.json').read_text())
    # every annotated object of the 4 validation images is matched by one query
    cfg = Config.fromfile(BHCL_SMOKE_CONFIG)
    cfg.merge_from_dict({o.split('=')[0]: o.split('=')[1] for o in opts})
    dataset = tsne.deterministic_dataset(cfg, 'val')
    num_objects = sum(len(dataset[i]['data_samples'].gt_instances) for i in range(len(dataset)))
    assert result['points'] == num_objects > 3
    assert sorted(result['levels']) == ['0', '1', '2']
    assert result['levels']['0']['silhouette'] is not None
    for level in range(3):
        assert (out / f'tsne_level{level}.png').stat().st_size > 1000
    # the class features before HCL's projection head: the model width
    out2 = tmp_path / 'tsne_features'
    tsne.main([BHCL_SMOKE_CONFIG, str(ckpt), str(out2), '--phase', 'val', '--space', 'features',
               '--cfg-options', *opts])
    feats = json.loads((out2 / 'tsne.json').read_text())
    assert result['space'] == 'projected' and feats['space'] == 'features'
    assert feats['dims'] == model.layers[0].embed_dims != result['dims']
    assert feats['points'] == result['points']


# ----------------------------------------------------------------- linear probe
def test_probe_targets_mark_every_ancestor(tiny_synthetic):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmrotate.registry import DATASETS
    probe = analysis_tool('linear_probe')
    init_default_scope('mmrotate')
    ds_cfg = Config.fromfile(SMOKE_CONFIG).val_dataloader.dataset
    ds_cfg.data_root = tiny_synthetic
    dataset = DATASETS.build(ds_cfg)
    paths, targets = probe.image_targets(dataset, TREE)
    assert len(paths) == len(dataset) == targets.shape[0]
    for i in range(len(dataset)):
        expected = set()
        for inst in dataset.get_data_info(i)['instances']:
            if not inst.get('ignore_flag', 0):
                expected |= set(TREE.path_ids(inst['bbox_label']))
        assert set(np.flatnonzero(targets[i]).tolist()) == expected


def test_probe_metrics_on_a_hand_computed_case():
    probe = analysis_tool('linear_probe')
    tree = LabelTree.from_paths(['A', 'A/a1', 'B'])
    target = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1], [1, 1, 1]], dtype=np.float32)
    prob = np.array([[.9, .8, .1], [.7, .6, .2], [.2, .1, .9], [.6, .3, .4]])
    out = probe.probe_metrics(prob, target, tree)
    # A: positives ranked 1, 2, 3 -> AP 1; a1: scores .8 (+), .6 (-), .3 (+) -> (1 + 2/3) / 2
    # B: .9 (+), .4 (+) ranked 1 and 2 -> AP 1
    assert out['per_node_AP'] == pytest.approx({'A': 1.0, 'a1': (1 + 2 / 3) / 2, 'B': 1.0})
    assert out['lv0_mAP'] == pytest.approx(1.0) and out['lv1_mAP'] == pytest.approx(5 / 6)
    # at 0.5: TP A 3, a1 2 (.8, .6 -> one FP), B 1 (.9; .4 missed); FP 1; FN 1 + 1
    tp, fp, fn = 3 + 1 + 1, 1, 1 + 1
    assert out['micro_F1'] == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_linear_probe_tool_compares_encoders(tiny_synthetic, tmp_path):
    from mmengine.registry import init_default_scope
    from mmrotate.registry import MODELS
    probe = analysis_tool('linear_probe')
    init_default_scope('mmrotate')
    torch.manual_seed(1)
    other = MODELS.build(dict(type='mmdet.ResNet', depth=18, out_indices=(3,)))
    ckpt = tmp_path / 'detector_like.pth'
    torch.save(dict(state_dict={f'backbone.{k}': v for k, v in other.state_dict().items()}),
               ckpt)
    results = probe.main([SMOKE_CONFIG, str(tmp_path / 'probe'), '--encoder', 'random=none',
                          '--encoder', f'other={ckpt}', '--epochs', '20',
                          '--cfg-options', *data_options(tiny_synthetic)])
    assert set(results) == {'random', 'other'}
    for res in results.values():
        assert 0 <= res['mAP'] <= 1 and 0 <= res['micro_F1'] <= 1
    assert results['random']['per_node_AP'] != results['other']['per_node_AP']
    saved = json.loads((tmp_path / 'probe' / 'linear_probe.json').read_text())
    assert saved['results']['other']['weights'] == str(ckpt)
    assert (tmp_path / 'probe' / 'linear_probe.md').read_text().count('\n| ') == 3
