"""User-facing inference: images (``RotatedDetInferencer``) and whole scenes
(``infer_scene`` -> ``write_scene_outputs``: GeoJSON, DOTA txt, FAIR1M XML).

Not imported by ``import bhcl`` (scene inference needs rasterio and pyproj)."""
from .rotated_det_inferencer import (CheckpointMismatchError, RotatedDetInferencer,
                                     load_state_dict_strict, resolve_config)
from .scene_export import feature_collection, write_scene_outputs
from .scene_inference import SceneResult, cross_window_nms, infer_scene
from .scene_reader import SceneError, SceneReader, window_grid
from .tree_detections import TreeDetections, level_scores

__all__ = [
    'CheckpointMismatchError', 'RotatedDetInferencer', 'SceneError', 'SceneReader',
    'SceneResult', 'TreeDetections', 'cross_window_nms', 'feature_collection', 'infer_scene',
    'level_scores', 'load_state_dict_strict', 'resolve_config', 'window_grid',
    'write_scene_outputs'
]
