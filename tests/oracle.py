"""Helpers shared by the tests that compare bhcl with a published model's own numbers."""
from typing import Optional, Sequence

import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData
from mmrotate.structures.bbox import RotatedBoxes

from tests.detections import match_detections

# float32 outputs: |bhcl - oracle| <= ATOL + RTOL * |oracle| elementwise. The published
# code itself, re-run on another CPU, differs from its oracle by up to 2.2e-4 in the
# stage logits and 4e-4 px in the boxes (rounding amplified through the stages): a
# pure absolute 1e-4 is met by the first layers only.
ATOL = 1e-4
RTOL = 1e-4


def assert_close(actual, expected, what, rtol=RTOL, atol=ATOL):
    assert actual.shape == expected.shape, f'{what}: shape {actual.shape} vs {expected.shape}'
    if not expected.numel():
        return
    diff = (actual.double() - expected.double()).abs()
    bound = atol + rtol * expected.double().abs()
    worst = int((diff - bound).argmax())
    assert torch.all(diff <= bound), (
        f'{what}: |difference| {diff.flatten()[worst]:.3g} > {bound.flatten()[worst]:.3g} at '
        f'value {expected.flatten()[worst]:.5g} (max abs difference {diff.max():.3g})')


def image_samples(images: torch.Tensor, gts: Optional[Sequence[dict]] = None):
    """Data samples of an unpadded, unscaled batch ``images`` (B, 3, H, W); with ``gts``
    (per image ``dict(bboxes=(n, 5), labels=(n,))``) their ground truth, copied."""
    h, w = images.shape[-2:]
    out = []
    for i in range(len(images)):
        s = DetDataSample(metainfo=dict(img_shape=(h, w), pad_shape=(h, w), ori_shape=(h, w),
                                        scale_factor=(1.0, 1.0), batch_input_shape=(h, w)))
        if gts is not None:
            s.gt_instances = InstanceData(bboxes=RotatedBoxes(gts[i]['bboxes'].clone()),
                                          labels=gts[i]['labels'].clone())
        out.append(s)
    return out


def assert_same_detections_as_oracle(pred, theirs: dict, what: str):
    """Every detection of the oracle is ours within ATOL/RTOL, paired by label and box.

    Pairing instead of sorting: on another CPU two near-tied scores may come out in the
    other order, or swap across the top-k cut (then only that tied detection may differ).
    """
    ours = dict(bboxes=pred.bboxes, scores=pred.scores, labels=pred.labels)
    pairs, extra, missing = match_detections(ours, theirs, score_atol=1e-3, box_atol=0.5)
    cut = float(theirs['scores'].min())
    for idx, scores in ((extra, pred.scores), (missing, theirs['scores'])):
        assert all(scores[j] <= cut + ATOL + RTOL * cut for j in idx), (
            f'{what}: {len(extra)} detections only in ours, {len(missing)} only in the '
            f'oracle, above the cut {cut:.6f}')
    mine, other = torch.as_tensor(pairs[:, 0]), torch.as_tensor(pairs[:, 1])
    boxes = pred.bboxes.tensor if hasattr(pred.bboxes, 'tensor') else pred.bboxes
    assert_close(pred.scores[mine], theirs['scores'][other], f'{what} scores')
    assert_close(boxes[mine], theirs['bboxes'][other], f'{what} boxes')
