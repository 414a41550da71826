"""Box coding (bhcl.structures.box_coding) against written-out references: mmrotate's
le90 rule, shapely polygons, and explicit per-box loops of the documented formulas."""
import math

import numpy as np
import pytest
import torch
from mmrotate.structures.bbox import RotatedBoxes
from shapely.affinity import rotate
from shapely.geometry import Polygon, box
from torch.testing import assert_close

from bhcl.structures.box_coding import (box_tensor, boxes_to_xyzrt, denormalize_rboxes,
                                        norm_angle_le90, normalize_gt_rboxes, normalize_rboxes,
                                        rbox_corners, refine_xyzrt, regularize_le90,
                                        regularize_long_edge, xyzrt_to_boxes)
from bhcl.structures.geometry import rbox_to_poly, regularize_rboxes


def random_boxes(n, seed=0, squares=0):
    """(n, 5) float64 boxes in pixels, any angle in (-7, 7) rad; the first ``squares`` square."""
    rng = np.random.default_rng(seed)
    boxes = np.column_stack([rng.uniform(0, 100, (n, 2)), rng.uniform(1, 50, (n, 2)),
                             rng.uniform(-7, 7, n)])
    boxes[:squares, 3] = boxes[:squares, 2]
    return torch.from_numpy(boxes)


def shapely_box(b):
    """The rectangle of box ``b`` built by shapely: axis-aligned, turned by t about its centre
    (shapely turns counter-clockwise with y up, i.e. clockwise on screen with y down)."""
    cx, cy, w, h, t = (float(v) for v in b)
    return rotate(box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), t, origin=(cx, cy),
                  use_radians=True)


def same_rectangle(a, b, tol=1e-6):
    return shapely_box(a).symmetric_difference(shapely_box(b)).area < tol * shapely_box(a).area


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
    np.testing.assert_allclose(regularize_rboxes(BOXES), EXPECTED, atol=1e-12)


def test_tie_gives_the_same_box():
    """w == h swaps; the polygon is the same square either way."""
    for square in np.array(BOXES)[2:4]:
        out = regularize_le90(square[None])
        np.testing.assert_allclose(np.sort(rbox_to_poly(out).reshape(4, 2), axis=0),
                                   np.sort(rbox_to_poly(square[None]).reshape(4, 2), axis=0),
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


def test_regularize_le90_worked_examples():
    boxes = torch.tensor([[0., 0., 2., 4., 0.3], [0., 0., 4., 2., 1.8], [0., 0., 3., 3., 0.2]])
    # a square is swapped and turned by pi/2, as mmrotate and the published decoder do
    assert_close(regularize_le90(boxes), torch.tensor([[0., 0., 4., 2., 0.3 + math.pi / 2 - math.pi],
                                                       [0., 0., 4., 2., 1.8 - math.pi],
                                                       [0., 0., 3., 3., 0.2 + math.pi / 2 - math.pi]]))


def test_long_edge_keeps_the_rectangle_and_lands_in_range():
    boxes = random_boxes(200, seed=1, squares=20)
    out = regularize_long_edge(boxes)
    assert (out[:, 2] >= out[:, 3]).all()
    assert ((out[:, 4] >= 0) & (out[:, 4] < math.pi)).all()
    assert all(same_rectangle(a, b) for a, b in zip(boxes, out))
    assert_close(out[:, :2], boxes[:, :2], rtol=0, atol=0)
    np.testing.assert_allclose(regularize_long_edge(boxes.numpy()), out.numpy(), rtol=0, atol=0)


def test_norm_angle_le90_is_the_angle_of_regularize_le90():
    boxes = random_boxes(100, seed=2)
    boxes[:, 2] = boxes[:, 3] + 1                                    # w > h: no swap
    assert_close(norm_angle_le90(boxes[:, 4]), regularize_le90(boxes)[:, 4], rtol=0, atol=0)
    t = norm_angle_le90(torch.tensor([-math.pi / 2, math.pi / 2, 3 * math.pi / 2, 0.25]))
    assert_close(t, torch.tensor([-math.pi / 2, -math.pi / 2, -math.pi / 2, 0.25]))


def test_corners_are_the_shapely_rectangle_in_polygon_order():
    boxes = random_boxes(50, seed=3)
    corners = rbox_corners(boxes)
    assert corners.shape == (50, 4, 2)
    for b, c in zip(boxes, corners):
        cx, cy, w, h, t = b.tolist()
        expected = []                                   # written out: rotate each offset
        for sx, sy in ((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)):
            dx, dy = sx * w, sy * h
            expected.append([cx + dx * math.cos(t) - dy * math.sin(t),
                             cy + dx * math.sin(t) + dy * math.cos(t)])
        assert_close(c, torch.tensor(expected, dtype=torch.float64))
        poly = Polygon(c.tolist())
        assert poly.is_valid and poly.symmetric_difference(shapely_box(b)).area < 1e-9 * w * h
    # the numpy polygons of the data tools are the same corners
    np.testing.assert_allclose(rbox_to_poly(boxes.numpy()), corners.flatten(1).numpy(),
                               rtol=0, atol=1e-12)
    assert rbox_corners(boxes.view(5, 10, 5)).shape == (5, 10, 4, 2)


@pytest.mark.parametrize('angle_version, offset, span', [
    (None, 0.0, 1.0), ('le90', math.pi / 2, math.pi), ('le135', math.pi / 4, math.pi),
    ('oc', math.pi / 2, math.pi / 2)])
def test_normalize_rboxes_matches_a_loop(angle_version, offset, span):
    boxes = random_boxes(12, seed=4)
    h, w = 300, 500
    out = normalize_rboxes(boxes, (h, w), angle_version)
    for b, o in zip(boxes.tolist(), out):
        cx, cy, bw, bh, t = b
        assert_close(o, torch.tensor([cx / w, cy / h, bw / w, bh / h, (t + offset) / span],
                                     dtype=torch.float64))
    # one (H, W) per box gives the same numbers
    per_box = torch.tensor([[h, w]]).expand(12, 2)
    assert_close(normalize_rboxes(boxes, per_box, angle_version), out)
    with pytest.raises(ValueError, match='angle_version'):
        normalize_rboxes(boxes, (h, w), 'le45')


def test_rhino_normalisation_matches_a_loop_and_round_trips():
    boxes = random_boxes(40, seed=5, squares=5)
    h, w = 200, 600
    out = normalize_gt_rboxes(boxes, (h, w))
    for b, o in zip(boxes.tolist(), out):
        cx, cy, bw, bh, t = b
        if bw <= bh:                                     # long edge first, angle in [0, pi)
            bw, bh, t = bh, bw, t + math.pi / 2
        t = t % math.pi
        assert_close(o, torch.tensor([cx / w, cy / h, bw / w, bh / h, t / math.pi],
                                     dtype=torch.float64))
    back = denormalize_rboxes(out, (h, w))
    assert_close(back, regularize_long_edge(boxes))
    assert all(same_rectangle(a, b) for a, b in zip(boxes, back))
    assert denormalize_rboxes(out.view(4, 10, 5), (h, w)).shape == (4, 10, 5)


def test_xyzrt_matches_the_formulas():
    boxes = regularize_le90(random_boxes(20, seed=6))
    xyzrt = boxes_to_xyzrt(boxes)
    for b, q in zip(boxes.tolist(), xyzrt.tolist()):
        cx, cy, w, h, t = b
        assert q == pytest.approx([cx, cy, math.log2(math.sqrt(w * h)), math.log2(h / w), t])
        z, r = q[2], q[3]
        w2, h2 = 2 ** (z - r / 2), 2 ** (z + r / 2)
        assert (w2, h2) == pytest.approx((w, h))


def test_xyzrt_round_trip_and_refinement():
    boxes = regularize_le90(random_boxes(20))
    xyzrt = boxes_to_xyzrt(boxes)
    assert_close(xyzrt[:, 2], torch.log2((boxes[:, 2] * boxes[:, 3]).sqrt()))
    assert_close(xyzrt_to_boxes(xyzrt), boxes)
    delta = torch.tensor([0.5, -0.25, 1.0, 0.0, 0.1], dtype=torch.float64)
    new = refine_xyzrt(xyzrt, delta.expand(20, 5))
    size = (boxes[:, 2] * boxes[:, 3]).sqrt()
    assert_close(new[:, 0], boxes[:, 0] + 0.5 * size)           # moves in units of 2^z
    assert_close(xyzrt_to_boxes(new)[:, 2:4], 2 * boxes[:, 2:4])  # dz = 1 doubles both sides
    assert ((new[:, 4] >= -math.pi / 2) & (new[:, 4] < math.pi / 2)).all()


def test_box_tensor_unwraps_mmrotate_boxes():
    boxes = random_boxes(3).float()
    assert_close(box_tensor(RotatedBoxes(boxes)), boxes)
    assert box_tensor(boxes) is boxes
