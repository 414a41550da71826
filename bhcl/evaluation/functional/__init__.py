"""Framework-light rotated mAP (numpy, LabelTree; mmcv's rotated IoU op if built)."""
from .average_precision import EVAL_MODES, VOC07_RECALL_POINTS, average_precision
from .hierarchical_map import (SHALLOW_GT_MODES, HierarchicalMapResult, HierarchicalMatches,
                               eval_hierarchical_map, hierarchical_matches, merge_identical_boxes)
from .rotated_iou import (pair_iou, pairwise_iou, poly_iou_aligned, prepare_boxes,
                          rbox_iou_aligned)
from .rotated_map import (DEFAULT_IOU_THRS, Detections, GroundTruth, MapResult, Overlaps,
                          compute_overlaps, eval_rotated_map, flatten_mmrotate_results,
                          match_and_score, match_detections, score_detections)

__all__ = [
    'EVAL_MODES', 'VOC07_RECALL_POINTS', 'average_precision', 'SHALLOW_GT_MODES',
    'HierarchicalMapResult', 'HierarchicalMatches', 'eval_hierarchical_map',
    'hierarchical_matches', 'merge_identical_boxes', 'pair_iou',
    'pairwise_iou', 'poly_iou_aligned', 'prepare_boxes', 'rbox_iou_aligned', 'DEFAULT_IOU_THRS',
    'Detections', 'GroundTruth', 'MapResult', 'Overlaps', 'compute_overlaps', 'eval_rotated_map',
    'flatten_mmrotate_results', 'match_and_score', 'match_detections', 'score_detections'
]
