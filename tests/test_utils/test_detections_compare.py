"""The noise-tolerant detection comparison accepts noise and near-tie swaps, and fails on bugs."""
import math

import numpy as np
import pytest
import torch

from tests.detections import (BOX_ATOL, SCORE_ATOL, assert_same_detections, corner_distance,
                              detection_differences)


def detections(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    boxes = torch.cat([torch.rand(n, 2, generator=g) * 100 + 10,
                       torch.rand(n, 2, generator=g) * 30 + 5,
                       (torch.rand(n, 1, generator=g) - 0.5) * math.pi], dim=1)
    scores = torch.rand(n, generator=g).sort(descending=True).values
    labels = torch.randint(0, 6, (n,), generator=g)
    return dict(bboxes=boxes, scores=scores, labels=labels)


def perturbed(det, scale=1e-6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return dict(bboxes=det['bboxes'] + scale * torch.randn(det['bboxes'].shape, generator=g),
                scores=det['scores'] + scale * torch.randn(det['scores'].shape, generator=g),
                labels=det['labels'].clone())


def take(det, idx):
    return {k: v[idx] for k, v in det.items()}


def test_noise_and_near_tie_swaps_are_equal():
    det = detections()
    noisy = perturbed(det)
    assert detection_differences(noisy, det) == []
    # two near-tied detections swap ranks (what 1 vs 2 processes did on one image)
    det['scores'][5] = det['scores'][4] + 1e-7
    order = torch.argsort(det['scores'], descending=True)
    assert detection_differences(take(det, order), perturbed(det)) == []


def test_box_spellings_and_angle_wrap_are_the_same_box():
    box = np.array([50., 40., 30., 10., math.pi / 2 - 1e-7])
    others = np.array([[50., 40., 30., 10., -math.pi / 2 + 1e-7],
                       [50., 40., 10., 30., 1e-7],
                       [50., 40., 30., 10., math.pi / 2 - 1e-7 + math.pi]])
    assert corner_distance(box, others).max() < 1e-4


def test_detection_at_the_cut_may_be_missing():
    det = detections(10)
    ties = dict(det)
    # the 10th score ties an 11th detection that only the other launch kept
    extra = take(detections(11, seed=3), [10])
    extra['scores'] = det['scores'][-1:] + 5e-6
    ties = {k: torch.cat([det[k][:9], extra[k]]) for k in det}
    assert detection_differences(ties, det, max_per_img=10) == []
    # not when the list was not full (nothing was cut there)
    assert detection_differences(ties, det, max_per_img=100) != []


@pytest.mark.parametrize('corrupt', ['shift', 'label', 'score', 'drop', 'small_shift'])
def test_real_differences_fail(corrupt):
    det = detections()
    bad = perturbed(det)
    if corrupt == 'shift':
        bad['bboxes'][3, 0] += 1.0
    elif corrupt == 'small_shift':
        bad['bboxes'][7, 1] += 10 * BOX_ATOL
    elif corrupt == 'label':
        bad['labels'][2] = (bad['labels'][2] + 1) % 6
    elif corrupt == 'score':
        bad['scores'][0] -= 10 * SCORE_ATOL
    else:
        bad = take(bad, [i for i in range(20) if i != 1])
    assert detection_differences(bad, det, max_per_img=20) != []
    with pytest.raises(AssertionError):
        assert_same_detections({'a.png': bad}, {'a.png': det}, max_per_img=20)


def test_missing_image_fails():
    det = detections()
    with pytest.raises(AssertionError, match='only in want'):
        assert_same_detections({'a.png': det}, {'a.png': det, 'b.png': det})
