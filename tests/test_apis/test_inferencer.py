"""RotatedDetInferencer on the smoke model (random weights saved as a checkpoint),
the demos, and scene inference with the real network."""
import json
import os
import os.path as osp
import sys

import cv2
import numpy as np
import pytest
import torch

from bhcl.apis import (CheckpointMismatchError, RotatedDetInferencer, TreeDetections,
                       infer_scene, level_scores, resolve_config)
from bhcl.apis.scene_inference import inside_area
from bhcl.apis.scene_reader import Window
from bhcl.apis.tree_detections import subtree_matrix
from bhcl.structures import LabelTree
from bhcl.utils.class_order import CLASS_ORDER_KEY
from tests.conftest import REPO_ROOT, SMOKE_CONFIG, tree_config
from tests.test_apis import scene_data

sys.path.insert(0, osp.join(REPO_ROOT, 'demo'))
import image_demo  # noqa: E402
import scene_demo  # noqa: E402


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
    """(config, checkpoint, inferencer): the smoke model, seeded random weights."""
    torch.manual_seed(0)
    inferencer = RotatedDetInferencer(SMOKE_CONFIG, None, device='cpu')
    ckpt = str(tmp_path_factory.mktemp('ckpt') / 'smoke.pth')
    torch.save(dict(state_dict=inferencer.model.state_dict(), meta={}), ckpt)
    return SMOKE_CONFIG, ckpt, RotatedDetInferencer(SMOKE_CONFIG, ckpt, device='cpu')


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp('images')
    for i, (h, w) in enumerate([(200, 256), (256, 256)]):
        cv2.imwrite(str(folder / f'img{i}.png'), scene_data.background(h, w, seed=i))
    return str(folder)


def test_level_scores_match_a_loop_over_the_tree():
    tree = LabelTree.from_config(tree_config('synthetic'))
    rng = np.random.default_rng(0)
    labels = np.array([2, 15, 0, 5, 9])            # leaves and internal nodes
    node = rng.random((len(labels), tree.num_classes))
    scores = node[np.arange(len(labels)), labels]
    got = level_scores(tree, labels, scores, node)
    for i, k in enumerate(labels):
        path = tree.path_ids(k)
        for lv in range(tree.num_levels):
            if lv >= len(path):
                assert np.isnan(got[i, lv])
                continue
            below = [j for j in range(tree.num_classes) if path[lv] in tree.path_ids(j)]
            want = scores[i] if lv == len(path) - 1 else max(node[i, j] for j in below)
            assert got[i, lv] == want
        assert np.all(np.diff(got[i, :len(path)]) <= 0)      # never increases down the path
    assert subtree_matrix(tree)[0].sum() == 9      # Vessel, 2 ships, 6 kinds of ship
    nan_above = level_scores(tree, labels, scores, None)
    assert np.isnan(nan_above[1, :2]).all() and nan_above[1, 2] == scores[1]


def test_config_names_resolve():
    assert resolve_config('orientedformer_r18_1xb4-12e_synthetic') == SMOKE_CONFIG
    with pytest.raises(FileNotFoundError, match='did you mean'):
        resolve_config('orientedformer_r18_1xb4-12e_synthetik')


def test_predictions_carry_tree_paths_and_per_level_scores(smoke, images):
    _, _, inferencer = smoke
    dets = inferencer.predict(images, batch_size=2)
    assert len(dets) == 2 and dets[0].img_shape == (200, 256)
    tree = inferencer.tree
    for det in dets:
        assert len(det) == 100 and det.rboxes.shape == (100, 5)
        assert (det.rboxes[:, 2] >= det.rboxes[:, 3]).all()                # le90
        assert ((det.rboxes[:, 4] >= -np.pi / 2) & (det.rboxes[:, 4] < np.pi / 2)).all()
        for i in range(len(det)):
            path = det.paths[i]
            assert path == tree.path(int(det.labels[i])) and tree.is_leaf(int(det.labels[i]))
            lv = det.path_scores(i)
            assert len(lv) == len(path) and lv[-1] == pytest.approx(det.scores[i])
            assert all(a >= b for a, b in zip(lv, lv[1:]))
    # the same scores as the model's own output, and the node scores behind the levels
    data = inferencer.pipeline(dict(img=cv2.imread(osp.join(images, 'img1.png')), img_id=0))
    from mmengine.dataset import pseudo_collate
    with torch.no_grad():
        pred = inferencer.model.test_step(pseudo_collate([data]))[0].pred_instances
    torch.testing.assert_close(torch.as_tensor(dets[1].scores, dtype=torch.float32),
                               pred.scores)
    rows = torch.arange(len(pred.labels))
    torch.testing.assert_close(pred.node_scores[rows, pred.labels], pred.scores)
    # a path, an array and a batch give the same result
    again = inferencer.predict([cv2.imread(osp.join(images, 'img1.png'))])[0]
    np.testing.assert_allclose(again.rboxes, dets[1].rboxes, rtol=1e-5, atol=1e-4)


def test_checkpoint_that_does_not_match_lists_the_keys(smoke, tmp_path):
    config, ckpt, _ = smoke
    state = torch.load(ckpt, map_location='cpu', weights_only=False)['state_dict']
    state.pop('cls_branches.0.3.bias')
    state['extra.weight'] = torch.zeros(1)
    state['reg_branches.1.3.weight'] = torch.zeros(7, 64)
    bad = str(tmp_path / 'bad.pth')
    torch.save(dict(state_dict=state), bad)
    with pytest.raises(CheckpointMismatchError) as err:
        RotatedDetInferencer(config, bad, device='cpu')
    msg = str(err.value)
    assert 'bad.pth does not match' in msg
    assert '1 key in the model, not in the checkpoint:\n    cls_branches.0.3.bias' in msg
    assert '1 key in the checkpoint, not in the model:\n    extra.weight' in msg
    assert 'reg_branches.1.3.weight: (7, 64) in the checkpoint, (5, 64) in the model' in msg
    # a checkpoint written before checkpoints recorded their class order still loads
    state = torch.load(ckpt, weights_only=False)['state_dict']
    assert state.pop(CLASS_ORDER_KEY, None) is not None
    old = str(tmp_path / 'old.pth')
    torch.save(dict(state_dict=state), old)
    RotatedDetInferencer(config, old, device='cpu')
    junk = tmp_path / 'junk.pth'
    junk.write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointMismatchError, match='junk.pth: cannot be read'):
        RotatedDetInferencer(config, str(junk), device='cpu')
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        RotatedDetInferencer(config, str(tmp_path / 'nope.pth'), device='cpu')


def test_scene_in_one_window_equals_whole_image_inference(smoke, tmp_path):
    _, _, inferencer = smoke
    rgb = scene_data.background(256, 256, seed=3)
    tif = scene_data.write_geotiff(str(tmp_path / 'one.tif'), rgb)
    png = str(tmp_path / 'one.png')
    cv2.imwrite(png, rgb[..., ::-1])
    scene = infer_scene(inferencer, tif, batch_size=2, score_thr=0.0)
    assert (scene.patch_size, scene.patch_overlap) == (256, 80)     # the config's scene_split
    assert scene.windows_total == 1
    image = inferencer.predict(png)[0]
    whole = Window(0, 0, 256, 256)
    image = image.select(inside_area(image.polygons, whole, 256, 256) > 0)
    assert len(image) >= 90           # boxes wholly outside the image are dropped
    order_s, order_i = np.argsort(-scene.detections.scores), np.argsort(-image.scores)
    assert len(order_s) == len(order_i)
    np.testing.assert_array_equal(scene.detections.labels[order_s], image.labels[order_i])
    np.testing.assert_allclose(scene.detections.scores[order_s], image.scores[order_i])
    np.testing.assert_allclose(scene.detections.rboxes[order_s], image.rboxes[order_i])
    np.testing.assert_allclose(scene.detections.level_scores[order_s],
                               image.level_scores[order_i])


def test_image_demo_writes_drawings_and_json(smoke, images, tmp_path):
    config, ckpt, _ = smoke
    out = str(tmp_path / 'out')
    image_demo.main([images, config, ckpt, '--out-dir', out, '--device', 'cpu',
                     '--batch-size', '2', '--score-thr', '0'])
    assert sorted(os.listdir(osp.join(out, 'vis'))) == ['img0.png', 'img1.png']
    drawn = cv2.imread(osp.join(out, 'vis', 'img0.png'))
    assert drawn.shape == (200, 256, 3)
    with open(osp.join(out, 'preds', 'img1.json')) as f:
        pred = json.load(f)
    obj = pred['objects'][0]
    assert set(obj) >= {'label', 'tree_path', 'level_scores', 'score', 'rbox', 'polygon'}
    assert obj['tree_path'][-1] == obj['label'] and len(obj['polygon']) == 8


def test_scene_demo_multi_window_outputs(smoke, tmp_path, capsys):
    config, ckpt, _ = smoke
    rgb = scene_data.background(300, 420, seed=4)
    tif = scene_data.write_geotiff(str(tmp_path / 'scene.tif'), rgb)
    out = str(tmp_path / 'out')
    result, written = scene_demo.main([tif, config, ckpt, '--out-dir', out, '--device', 'cpu',
                                       '--score-thr', '0.05', '--batch-size', '3', '--wgs84'])
    assert result.windows_total == result.windows_run == 4
    assert osp.join(out, 'scene.geojson') in written
    with open(osp.join(out, 'scene.geojson')) as f:
        fc = json.load(f)
    assert fc['coordinate_system'] == 'wgs84' and len(fc['features']) == len(result.detections) > 0
    printed = capsys.readouterr().out
    assert 'WGS84' in printed and 'windows/s' in printed and 'bands 1, 2, 3' in printed
    # a corrupt scene: an error naming the file, nothing written
    bad = tmp_path / 'bad.tif'
    bad.write_bytes(b'II*\x00' + bytes(200))
    with pytest.raises(ValueError, match='bad.tif'):
        scene_demo.main([str(bad), config, ckpt, '--out-dir', str(tmp_path / 'none')])
    assert not osp.exists(tmp_path / 'none')


def test_visualisation_labels_boxes_with_tree_paths(smoke):
    _, _, inferencer = smoke
    tree = inferencer.tree
    img = scene_data.background(128, 128)
    det = TreeDetections(np.array([[64, 64, 60, 30, 0.3]]), np.array([0.9]), np.array([7]),
                         np.array([[0.95, 0.92, 0.9]]), tree)
    drawn = inferencer.visualize(img, det)
    assert drawn.shape == (128, 128, 3) and not np.array_equal(drawn, img[..., ::-1])
    texts = inferencer.visualizer.dataset_meta['label_tree']
    assert LabelTree.from_config(texts) == tree


def test_rhino_returns_every_node_score():
    torch.manual_seed(0)
    inferencer = RotatedDetInferencer('bhcl-rhino-decoupled_r18_1xb2-12e_synthetic', None,
                                      device='cpu')
    data = inferencer.pipeline(dict(img=scene_data.background(128, 128), img_id=0))
    from mmengine.dataset import pseudo_collate
    with torch.no_grad():
        pred = inferencer.model.test_step(pseudo_collate([data]))[0].pred_instances
    assert pred.node_scores.shape == (len(pred.scores), inferencer.tree.num_classes)
    rows = torch.arange(len(pred.labels))
    torch.testing.assert_close(pred.node_scores[rows, pred.labels], pred.scores)
    det = inferencer.predict(scene_data.background(128, 128))[0]
    assert not np.isnan(det.level_scores).any()     # every synthetic leaf is at level 2


def test_detector_without_node_scores_gives_nan_above_the_node():
    torch.manual_seed(0)
    inferencer = RotatedDetInferencer('rotated-retinanet_r18_fpn_1xb4-12e_synthetic', None,
                                      device='cpu')
    assert inferencer.tree == LabelTree.from_config(tree_config('synthetic'))  # config's tree
    det = inferencer.predict(scene_data.background(128, 128))[0]
    depth = np.array([inferencer.tree.depth[k] for k in det.labels])
    for i in range(len(det)):
        assert np.isnan(det.level_scores[i, :depth[i]]).all()
        assert det.level_scores[i, depth[i]] == det.scores[i]
        assert det.path_scores(i)[:-1] == [None] * int(depth[i])
