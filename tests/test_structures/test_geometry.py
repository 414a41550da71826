"""The one le90 rule (numpy and torch) and the untangling of crossed quadrilaterals."""
import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from bhcl.models.layers.rbox_ops import regularize_le90 as rbox_ops_regularize
from bhcl.structures.geometry import (poly_area, poly_to_rbox, rbox_to_poly, regularize_le90,
                                      regularize_rboxes, untangle_quad)

BOXES = [[0., 0., 2., 4., 0.],                 # h > w: swap, turn by pi/2
         [1., 1., 4., 2., math.pi * 0.75],     # w > h: only wrap the angle
         [2., 2., 3., 3., -math.pi / 2],       # square: swapped like mmrotate (t + pi/2)
         [3., 3., 3., 3., 0.],                 # square at t = 0 -> -pi/2
         [4., 4., 5., 1., math.pi / 2]]        # t = pi/2 wraps to -pi/2
EXPECTED = [[0., 0., 4., 2., -math.pi / 2],
            [1., 1., 4., 2., -math.pi * 0.25],
            [2., 2., 3., 3., 0.],
            [3., 3., 3., 3., -math.pi / 2],
            [4., 4., 5., 1., -math.pi / 2]]


def mmrotate_le90(boxes: torch.Tensor) -> torch.Tensor:
    """mmrotate 1.x ``RotatedBoxes.regularize_boxes('le90')`` written out (the reference)."""
    x, y, w, h, t = boxes.unbind(-1)
    w_, h_ = torch.where(w > h, w, h), torch.where(w > h, h, w)
    t = torch.where(w > h, t, t + np.pi / 2)
    t = ((t + np.pi / 2) % np.pi) - np.pi / 2
    return torch.stack([x, y, w_, h_, t], dim=-1)


def test_numpy_and_torch_share_one_rule_with_the_mmrotate_tie():
    out_np = regularize_le90(np.array(BOXES))
    out_t = regularize_le90(torch.tensor(BOXES, dtype=torch.float64))
    np.testing.assert_allclose(out_np, EXPECTED, atol=1e-12)
    assert_close(out_t, torch.tensor(EXPECTED, dtype=torch.float64))
    assert_close(out_t, mmrotate_le90(torch.tensor(BOXES, dtype=torch.float64)))
    assert rbox_ops_regularize is regularize_le90          # the detector's import path
    np.testing.assert_allclose(regularize_rboxes(BOXES), EXPECTED, atol=1e-12)


def test_tie_gives_the_same_box():
    """w == h swaps; the polygon is the same square either way."""
    for box in np.array(BOXES)[2:4]:
        out = regularize_le90(box[None])
        np.testing.assert_allclose(np.sort(rbox_to_poly(out).reshape(4, 2), axis=0),
                                   np.sort(rbox_to_poly(box[None]).reshape(4, 2), axis=0),
                                   atol=1e-9)


def test_random_boxes_keep_their_polygon_and_land_in_range():
    rng = np.random.default_rng(0)
    boxes = np.column_stack([rng.uniform(0, 100, (200, 2)), rng.uniform(1, 50, (200, 2)),
                             rng.uniform(-7, 7, 200)])
    boxes[:20, 3] = boxes[:20, 2]                         # some squares
    out = regularize_le90(boxes)
    assert (out[:, 2] >= out[:, 3]).all()
    assert ((out[:, 4] >= -np.pi / 2) & (out[:, 4] < np.pi / 2)).all()
    for a, b in zip(rbox_to_poly(boxes), rbox_to_poly(out)):
        np.testing.assert_allclose(np.sort(a.reshape(4, 2), axis=0),
                                   np.sort(b.reshape(4, 2), axis=0), atol=1e-6)
    assert_close(regularize_le90(torch.from_numpy(boxes)), torch.from_numpy(out))


def test_torch_keeps_shape_dtype_and_gradient():
    boxes = torch.tensor(BOXES, dtype=torch.float32).reshape(1, 5, 5).requires_grad_()
    out = regularize_le90(boxes)
    assert out.shape == (1, 5, 5) and out.dtype == torch.float32
    out.sum().backward()
    assert torch.isfinite(boxes.grad).all() and boxes.grad.abs().sum() > 0


def test_poly_to_rbox_of_a_square_is_le90():
    out = poly_to_rbox([0, 0, 10, 0, 10, 10, 0, 10])[0]
    assert out[2] == pytest.approx(10) and out[3] == pytest.approx(10)
    assert -np.pi / 2 <= out[4] < np.pi / 2


@pytest.mark.parametrize('crossed, simple', [
    ([0, 0, 10, 10, 10, 0, 0, 10], [0, 0, 10, 0, 10, 10, 0, 10]),
    ([10, 0, 0, 10, 0, 0, 10, 10], [10, 0, 10, 10, 0, 10, 0, 0]),
    ([0, 0, 30, 10, 30, 0, 0, 10], [0, 0, 30, 0, 30, 10, 0, 10]),
])
def test_untangle_quad(crossed, simple):
    assert poly_area(np.array(crossed))[0] < poly_area(np.array(simple))[0]
    assert untangle_quad(crossed) == simple
    assert untangle_quad(simple) == simple                # a simple order is kept
