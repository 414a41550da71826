"""Scene detections to GeoJSON (RFC 7946), DOTA Task1 txt and the FAIR1M submission XML.

GeoJSON coordinates, by what the raster knows:

* georeferenced, default: map coordinates of the raster's CRS (e.g. UTM metres),
  with the CRS named in a ``crs`` member (the GeoJSON 2008 form that QGIS and
  GDAL read; RFC 7946 allows other CRSs by prior arrangement);
* georeferenced, ``wgs84=True``: longitude / latitude (WGS84, RFC 7946's own
  CRS) through pyproj, no ``crs`` member;
* no georeference (plain PNG / JPEG, or a TIFF without one): pixel coordinates
  ``(column, row)``, y down.

The collection's ``coordinate_system`` member says which (``map``, ``wgs84``,
``pixel``); RFC 7946 allows such foreign members (not one named ``coordinates``).

Polygons are the rotated boxes clipped to the raster's extent, rings closed
and counter-clockwise in the output coordinates (RFC 7946 section 3.1.6).
Each feature carries the node name, the tree path (a list, and ``level0``,
``level1``, ... for styling in QGIS), the per-level scores, the score, the box
in pixels, and whether a window border cut it.
"""
from __future__ import annotations

import json
import os.path as osp
from typing import List, Optional, Tuple

import numpy as np

from ..datasets.convert import staged_output
from ..datasets.export import (fair1m_submission_names, write_dota_task1,
                               write_fair1m_submission)
from ..datasets.merge import Detections
from .scene_inference import SceneResult

FORMATS = ('geojson', 'dota', 'fair1m')


def coordinate_mode(result: SceneResult, wgs84: bool) -> Tuple[str, str]:
    """``('map' | 'wgs84' | 'pixel', message)`` for the scene's GeoJSON."""
    if result.transform is None:
        return 'pixel', (f'{result.path} has no georeference: GeoJSON coordinates are pixels '
                         '(column, row; y down)' + (', --wgs84 ignored' if wgs84 else ''))
    if wgs84:
        return 'wgs84', f'GeoJSON coordinates: WGS84 longitude/latitude (from {result.crs})'
    return 'map', f'GeoJSON coordinates: map coordinates of the raster CRS {result.crs}'


def _crs_name(crs) -> str:
    epsg = crs.to_epsg()
    return f'urn:ogc:def:crs:EPSG::{epsg}' if epsg else crs.to_string()


def _transformer(result: SceneResult, mode: str):
    """A function (x, y) pixel arrays -> output coordinates."""
    if mode == 'pixel':
        return lambda x, y: (x, y)
    t = result.transform

    def to_map(x, y):
        return t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f
    if mode == 'map':
        return to_map
    from pyproj import Transformer
    proj = Transformer.from_crs(result.crs, 'EPSG:4326', always_xy=True)
    return lambda x, y: proj.transform(*to_map(x, y))


def feature_collection(result: SceneResult, wgs84: bool = False) -> Tuple[dict, str]:
    """The scene's GeoJSON FeatureCollection and the coordinate message."""
    from shapely.geometry import Polygon, box
    from shapely.geometry.polygon import orient
    mode, message = coordinate_mode(result, wgs84)
    to_out = _transformer(result, mode)
    digits = {'pixel': 2, 'map': 3, 'wgs84': 8}[mode]
    det = result.detections
    tree = det.tree
    extent = box(0, 0, result.width, result.height)
    polys = det.polygons
    features = []
    for i in np.argsort(-det.scores, kind='stable'):
        clipped = Polygon(polys[i].reshape(4, 2)).intersection(extent)
        if clipped.is_empty or clipped.geom_type != 'Polygon':
            continue
        px, py = np.asarray(clipped.exterior.coords).T
        ox, oy = to_out(px, py)
        ring = orient(Polygon(np.c_[ox, oy]), 1.0).exterior.coords
        k = int(det.labels[i])
        path = tree.path(k)
        props = dict(label=tree.classes[k], label_id=k, tree_path=path, path='/'.join(path),
                     level_scores=det.path_scores(i), score=round(float(det.scores[i]), 5))
        props.update({f'level{lv}': name for lv, name in enumerate(path)})
        props.update(rbox_px=[round(float(v), 3) for v in det.rboxes[i]],
                     truncated=bool(det.extra.get('truncated', np.zeros(len(det)))[i]))
        features.append(dict(type='Feature', properties=props, geometry=dict(
            type='Polygon', coordinates=[[[round(float(x), digits), round(float(y), digits)]
                                          for x, y in ring]])))
    fc = dict(type='FeatureCollection', name=result.name, coordinate_system=mode,
              features=features)
    if mode == 'map':
        fc['crs'] = dict(type='name', properties=dict(name=_crs_name(result.crs)))
    return fc, message


def write_scene_outputs(result: SceneResult, out_dir: str, formats=FORMATS,
                        wgs84: bool = False, img_suffix: Optional[str] = None
                        ) -> Tuple[List[str], str]:
    """Write ``out_dir/<scene>.geojson``, ``out_dir/dota/Task1_<class>.txt`` and
    ``out_dir/fair1m/test/<scene>.xml`` (the ``formats`` asked), all or nothing.

    Returns the written paths and the GeoJSON coordinate message.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f'unknown output formats {unknown}; choose from {list(FORMATS)}')
    det = result.detections
    plain = {result.name: Detections(det.rboxes, det.scores, det.labels)}
    message = ''
    written = []
    with staged_output(out_dir) as stage:
        if 'geojson' in formats:
            fc, message = feature_collection(result, wgs84)
            with open(osp.join(stage, result.name + '.geojson'), 'w') as f:
                json.dump(fc, f)
            written.append(osp.join(out_dir, result.name + '.geojson'))
        if 'dota' in formats:
            for p in write_dota_task1(plain, det.tree.classes, osp.join(stage, 'dota')):
                written.append(osp.join(out_dir, osp.relpath(p, stage)))
        if 'fair1m' in formats:
            suffix = img_suffix or osp.splitext(result.path)[1] or '.tif'
            for p in write_fair1m_submission(plain, fair1m_submission_names(det.tree),
                                             osp.join(stage, 'fair1m'), img_suffix=suffix):
                written.append(osp.join(out_dir, osp.relpath(p, stage)))
    return written, message
