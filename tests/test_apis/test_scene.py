"""Scene inference without a network: windows, reads, the merge across windows, outputs.

The detector is a stand-in that finds solid-colour rectangles in each window
(``ColourBoxDetector``), so the expected result is known exactly."""
import json
import os
import os.path as osp

import numpy as np
import pytest
import rasterio
import torch

from bhcl.apis import (SceneError, SceneReader, cross_window_nms, infer_scene, window_grid,
                       write_scene_outputs)
from bhcl.datasets.export import read_dota_task1
from bhcl.structures import LabelTree
from tests.conftest import tree_config
from tests.test_apis import scene_data
from tests.test_apis.scene_data import ColourBoxDetector


W, H, PATCH, OVERLAP = 560, 400, 256, 80   # windows x: 0, 176, 304; y: 0, 144
# objects across inner window borders (x = 176, 256, 304, 432; y = 144, 256), each
# whole in some window; one across a corner, one inside a single window
OBJECTS = np.array([
    [256.0, 60.0, 50.0, 20.0, 0.5],     # across x = 256
    [176.0, 200.0, 48.0, 18.0, -0.3],   # across x = 176 and inside rows 0 and 1
    [100.0, 144.0, 44.0, 20.0, 1.2],    # across y = 144
    [432.0, 256.0, 50.0, 22.0, 0.9],    # across x = 432 and y = 256
    [380.0, 60.0, 40.0, 16.0, 0.0],     # across x = 304 (x 360..400)
    [500.0, 350.0, 30.0, 14.0, -1.0],   # one window only
])
LEAVES = (2, 3, 6, 7, 11, 15)
COLOURS = {2: (255, 0, 0), 3: (0, 255, 0), 6: (0, 0, 255), 7: (255, 255, 0),
           11: (255, 0, 255), 15: (0, 255, 255)}


@pytest.fixture(scope='module')
def tree():
    return LabelTree.from_config(tree_config('synthetic'))


def rotated_iou(a, b):
    from mmcv.ops import box_iou_rotated
    return box_iou_rotated(torch.as_tensor(a).float(), torch.as_tensor(b).float()).numpy()


@pytest.fixture(scope='module')
def straddling_scene(tmp_path_factory):
    rgb = scene_data.background(H, W)
    scene_data.draw(rgb, OBJECTS, [COLOURS[k] for k in LEAVES])
    path = str(tmp_path_factory.mktemp('scene') / 'straddle.tif')
    return scene_data.write_geotiff(path, rgb), rgb


def test_window_grid_covers_the_scene_without_cut_windows():
    wins = window_grid(W, H, PATCH, OVERLAP)
    assert [(w.x, w.y) for w in wins] == [(0, 0), (176, 0), (304, 0), (0, 144), (176, 144),
                                          (304, 144)]
    assert all(w.width == PATCH and w.height == PATCH for w in wins)
    covered = np.zeros((H, W), dtype=bool)
    for w in wins:
        covered[w.y:w.y + w.height, w.x:w.x + w.width] = True
    assert covered.all()
    assert window_grid(100, 50, 256, 80)[0] == type(wins[0])(0, 0, 100, 50)
    with pytest.raises(ValueError, match='overlap'):
        window_grid(100, 100, 256, 256)


def test_reader_gives_bgr_windows_and_the_georeference(straddling_scene):
    path, rgb = straddling_scene
    with SceneReader(path) as reader:
        assert (reader.width, reader.height) == (W, H)
        assert reader.crs.to_epsg() == 32633 and reader.transform == scene_data.transform()
        win = window_grid(W, H, PATCH, OVERLAP)[4]
        np.testing.assert_array_equal(reader.read(win),
                                      rgb[win.y:win.y + PATCH, win.x:win.x + PATCH, ::-1])
        assert 'R, G, B' in reader.band_note


def test_object_cut_by_window_borders_is_reported_once_at_full_extent(straddling_scene, tree):
    path, _ = straddling_scene
    # reference: the stand-in detector on the whole scene in one window
    whole = infer_scene(ColourBoxDetector(tree, COLOURS), path, patch_size=max(W, H),
                        score_thr=0.0).detections
    assert len(whole) == len(OBJECTS) and rotated_iou(whole.rboxes, OBJECTS).max(1).min() > 0.8
    det = ColourBoxDetector(tree, COLOURS)
    result = infer_scene(det, path, patch_size=PATCH, patch_overlap=OVERLAP, batch_size=4,
                         score_thr=0.0)
    assert result.windows_total == result.windows_run == len(det.calls) == 6
    out = result.detections
    assert len(out) == len(OBJECTS), out.rboxes
    iou = rotated_iou(out.rboxes, whole.rboxes)
    best = iou.argmax(1)
    assert sorted(best.tolist()) == list(range(len(OBJECTS)))     # one box per object
    assert iou.max(1).min() > 0.999                               # at full extent
    np.testing.assert_array_equal(out.labels, whole.labels[best])
    assert not out.extra['truncated'].any()
    # the test can fail: 15 pieces and views in all, and the cut pieces score higher,
    # so a merge by score alone keeps pieces
    parts = _raw_window_detections(det, path, tree)
    assert len(parts) == 15 and parts.extra['truncated'].sum() == 7
    by_score = cross_window_nms(parts.rboxes, parts.scores, parts.extra['window'],
                                np.zeros(len(parts), dtype=bool))
    assert rotated_iou(parts.rboxes[by_score], whole.rboxes).max(1).min() < 0.8


def _raw_window_detections(det, path, tree):
    """Every window's detections in scene pixels, unmerged."""
    from bhcl.apis.scene_inference import _run_batch
    from bhcl.apis.tree_detections import TreeDetections
    with SceneReader(path) as reader:
        wins = window_grid(W, H, PATCH, OVERLAP)
        batch = [(i, w, reader.read(w)) for i, w in enumerate(wins)]
        parts = _run_batch(det, batch, reader, 0.0, 4.0)
    return TreeDetections.concat(parts, tree)


def test_cross_window_nms_keeps_the_boxes_of_one_window():
    boxes = np.array([[50, 50, 40, 20, 0.0], [52, 50, 40, 20, 0.0], [51, 50, 40, 20, 0.0]])
    scores = np.array([0.9, 0.8, 0.7])
    keep = cross_window_nms(boxes, scores, np.array([0, 0, 1]), np.zeros(3, dtype=bool))
    assert keep.tolist() == [0, 1]      # window 1's box goes; window 0's two stay
    keep = cross_window_nms(boxes, scores, np.array([0, 1, 1]),
                            np.array([True, False, False]))
    assert keep.tolist() == [1, 2]      # whole boxes first: the truncated box 0 goes
    # a small piece inside a kept box of another window is the same object
    piece = np.array([[50, 50, 40, 20, 0.0], [40, 50, 10, 20, 0.0]])
    assert cross_window_nms(piece, np.array([0.5, 0.9]), np.array([0, 1]),
                            np.array([False, True]), iou_thr=0.5).tolist() == [0]
    labels = np.array([1, 2])
    assert cross_window_nms(piece, np.array([0.5, 0.9]), np.array([0, 1]),
                            np.array([False, True]), labels, iou_thr=0.5).tolist() == [0, 1]


def read_geojson(path):
    with open(path) as f:
        return json.load(f)


def check_geometry(fc, bounds):
    """Valid closed counter-clockwise rings inside ``bounds`` (left, bottom, right, top)."""
    from shapely.geometry import Polygon, shape
    left, bottom, right, top = bounds
    eps = 1e-6 * max(abs(v) for v in bounds) + 1e-9
    for feat in fc['features']:
        geom = shape(feat['geometry'])
        ring = feat['geometry']['coordinates'][0]
        assert geom.is_valid and geom.area > 0 and ring[0] == ring[-1]
        assert Polygon(ring).exterior.is_ccw
        xs, ys = np.array(ring).T
        assert xs.min() >= left - eps and xs.max() <= right + eps
        assert ys.min() >= bottom - eps and ys.max() <= top + eps


def test_geojson_in_map_coordinates_and_wgs84(straddling_scene, tree, tmp_path):
    path, _ = straddling_scene
    result = infer_scene(ColourBoxDetector(tree, COLOURS), path, patch_size=PATCH,
                         patch_overlap=OVERLAP, score_thr=0.0)
    written, message = write_scene_outputs(result, str(tmp_path / 'map'))
    assert 'EPSG:32633' in message
    fc = read_geojson(tmp_path / 'map' / 'straddle.geojson')
    assert fc['type'] == 'FeatureCollection' and fc['coordinate_system'] == 'map'
    assert fc['crs']['properties']['name'] == 'urn:ogc:def:crs:EPSG::32633'
    with rasterio.open(path) as ds:
        bounds = tuple(ds.bounds)
        check_geometry(fc, bounds)
        # each polygon sits where its object is on the map
        from shapely.geometry import shape
        for feat in fc['features']:
            cx, cy = feat['properties']['rbox_px'][:2]
            mx, my = ds.transform @ (cx, cy)
            c = shape(feat['geometry']).centroid
            assert abs(c.x - mx) < 1.0 and abs(c.y - my) < 1.0
    props = fc['features'][0]['properties']
    k = props['label_id']
    assert props['tree_path'] == tree.path(k) and props['label'] == tree.classes[k]
    assert len(props['level_scores']) == len(props['tree_path'])
    assert props['level0'] == tree.path(k)[0]
    assert len(fc['features']) == len(OBJECTS)
    dota = read_dota_task1(str(tmp_path / 'map' / 'dota'), tree.classes)
    assert len(dota['straddle']) == len(OBJECTS)
    assert osp.isfile(tmp_path / 'map' / 'fair1m' / 'test' / 'straddle.xml')
    assert not [f for f in os.listdir(tmp_path) if f.startswith('.')]   # no staging left

    write_scene_outputs(result, str(tmp_path / 'wgs'), formats=['geojson'], wgs84=True)
    fc = read_geojson(tmp_path / 'wgs' / 'straddle.geojson')
    assert fc['coordinate_system'] == 'wgs84' and 'crs' not in fc
    from rasterio.warp import transform_bounds
    check_geometry(fc, transform_bounds(scene_data.CRS, 'EPSG:4326', *bounds, densify_pts=21))
    lon, lat = np.array(fc['features'][0]['geometry']['coordinates'][0]).T
    assert 14.9 < lon.mean() < 15.1 and 40.5 < lat.mean() < 40.7   # UTM 33N, 4500 km north


def test_scene_without_georeference_uses_pixels(tree, tmp_path):
    import cv2
    rgb = scene_data.background(H, W)
    scene_data.draw(rgb, OBJECTS, [COLOURS[k] for k in LEAVES])
    png = str(tmp_path / 'plain.png')
    cv2.imwrite(png, rgb[..., ::-1])
    result = infer_scene(ColourBoxDetector(tree, COLOURS), png, patch_size=PATCH,
                         patch_overlap=OVERLAP, score_thr=0.0)
    assert result.crs is None and len(result.detections) == len(OBJECTS)
    _, message = write_scene_outputs(result, str(tmp_path / 'out'), formats=['geojson'],
                                     wgs84=True)
    assert 'no georeference' in message and 'pixels' in message
    fc = read_geojson(tmp_path / 'out' / 'plain.geojson')
    assert fc['coordinate_system'] == 'pixel' and 'crs' not in fc
    check_geometry(fc, (0, 0, W, H))


def test_nodata_windows_are_skipped_and_an_empty_scene_gives_empty_geojson(tree, tmp_path):
    rgb = scene_data.background(H, W)
    rgb[:, 300:] = 0                                        # right part: nodata
    path = scene_data.write_geotiff(str(tmp_path / 'half.tif'), rgb, nodata=0)
    det = ColourBoxDetector(tree, COLOURS)
    result = infer_scene(det, path, patch_size=PATCH, patch_overlap=OVERLAP, score_thr=0.0)
    assert result.windows_total == 6 and result.windows_run == 4   # x = 304 windows skipped
    assert len(det.calls) == 4

    empty = scene_data.write_geotiff(str(tmp_path / 'empty.tif'), np.zeros((H, W, 3), np.uint8),
                                     nodata=0)
    det = ColourBoxDetector(tree, COLOURS)
    result = infer_scene(det, empty, patch_size=PATCH, patch_overlap=OVERLAP)
    assert result.windows_run == 0 and not det.calls and len(result.detections) == 0
    assert '0 objects' in result.summary()
    write_scene_outputs(result, str(tmp_path / 'out'))
    fc = read_geojson(tmp_path / 'out' / 'empty.geojson')
    assert fc['type'] == 'FeatureCollection' and fc['features'] == []


def test_band_mapping(tree, tmp_path):
    from rasterio.enums import ColorInterp
    grey = scene_data.background(64, 80)[..., :1]
    with SceneReader(scene_data.write_geotiff(str(tmp_path / 'grey.tif'), grey)) as r:
        img = r.read(window_grid(80, 64, 256, 80)[0])
        assert 'grey' in r.band_note
        np.testing.assert_array_equal(img, np.repeat(grey, 3, axis=2))
    rgb = scene_data.background(64, 80)
    alpha = np.zeros((64, 80), np.uint8)
    path = scene_data.write_geotiff(
        str(tmp_path / 'rgba.tif'), rgb, extra_bands=[alpha],
        colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha])
    with SceneReader(path) as r:
        assert 'alpha' in r.band_note
        assert r.read(window_grid(80, 64, 256, 80)[0]) is None     # fully transparent
    path = scene_data.write_geotiff(   # e.g. near-infrared as the fourth band
        str(tmp_path / 'rgbn.tif'), rgb, extra_bands=[alpha], colorinterp=[
            ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined])
    with SceneReader(path) as r:
        assert 'ignored' in r.band_note
        np.testing.assert_array_equal(r.read(window_grid(80, 64, 256, 80)[0]), rgb[..., ::-1])
    with SceneReader(path, bands=(3, 2, 1)) as r:                 # chosen bands
        np.testing.assert_array_equal(r.read(window_grid(80, 64, 256, 80)[0]), rgb)
    two = scene_data.write_geotiff(str(tmp_path / 'two.tif'), rgb[..., :2])
    with pytest.raises(SceneError, match=r'two.tif: 2 bands.*1 band is read as grey.*--bands'):
        SceneReader(two).__enter__()
    wide = scene_data.write_geotiff(str(tmp_path / 'u16.tif'), rgb, dtype='uint16')
    with pytest.raises(SceneError, match=r'u16.tif: pixels are uint16.*gdal_translate'):
        SceneReader(wide).__enter__()


def test_unreadable_and_truncated_rasters_write_nothing(tree, tmp_path, straddling_scene):
    bad = tmp_path / 'noise.tif'
    bad.write_bytes(np.random.default_rng(0).bytes(5000))
    det = ColourBoxDetector(tree, COLOURS)
    with pytest.raises(SceneError, match=r'noise.tif: cannot be read as a raster'):
        infer_scene(det, str(bad), patch_size=PATCH)
    with pytest.raises(SceneError, match='no such file'):
        infer_scene(det, str(tmp_path / 'missing.tif'), patch_size=PATCH)
    rgb = scene_data.background(H, W)
    full = scene_data.write_geotiff(str(tmp_path / 'full.tif'), rgb)
    data = open(full, 'rb').read()
    cut = tmp_path / 'cut.tif'
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(SceneError, match=r'cut.tif: the window at .* truncated or corrupt'):
        infer_scene(det, str(cut), patch_size=PATCH, patch_overlap=OVERLAP)


def test_generate_synthetic_scene_tool(tmp_path, tree):
    import sys
    from tests.conftest import REPO_ROOT
    sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
    import generate_synthetic_scene
    out = str(tmp_path / 'scene.tif')
    generate_synthetic_scene.main([out, '--size', '512', '--density', '4'])
    with SceneReader(out) as reader:
        assert (reader.width, reader.height) == (512, 512)
        assert reader.crs.to_epsg() == 32633 and reader.transform.a == 0.5
        assert reader.read(window_grid(512, 512, 256, 80)[0]) is not None
    lines = open(str(tmp_path / 'scene.txt')).read().splitlines()
    assert len(lines) == 16
    for line in lines:      # every object is a node of the tree
        name = line.split(' ', 8)[8].rsplit(' ', 1)[0]
        assert tree.resolve(name) is not None
