"""Pure-PyTorch rotated IoU: exactness against shapely and mmcv, gradients, degenerate cases."""
import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from shapely.geometry import Polygon

from bhcl.ops.rotated_iou import rotated_box_iou

# Public expected values (mmcv's box_iou_rotated test), see tests/data/README.md.
REFERENCE = Path(__file__).resolve().parents[1] / 'data' / 'reference' / 'public_test_expectations.json'


def corners(box):
    """Independent corner formula: R(t) @ (+-w/2, +-h/2) + (cx, cy), image coordinates."""
    cx, cy, w, h, t = (float(v) for v in box)
    cos, sin = math.cos(t), math.sin(t)
    return [(cx + dx * cos - dy * sin, cy + dx * sin + dy * cos)
            for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))]


def shapely_overlaps(boxes1, boxes2, mode='iou', aligned=False):
    """Exact polygon IoU / IoF in float64, (N, M) or (N,)."""
    polys1 = [Polygon(corners(b)) for b in boxes1]
    polys2 = [Polygon(corners(b)) for b in boxes2]

    def ratio(p, q):
        inter = p.intersection(q).area
        denominator = p.area if mode == 'iof' else p.area + q.area - inter
        return inter / max(denominator, 1e-6)

    if aligned:
        return torch.tensor([ratio(p, q) for p, q in zip(polys1, polys2)], dtype=torch.float64)
    return torch.tensor([[ratio(p, q) for q in polys2] for p in polys1], dtype=torch.float64)


def random_boxes(n, generator, dtype=torch.float64, extent=10.0):
    """Boxes in a small field so that about a third of the pairs overlap."""
    centre = torch.rand(n, 2, generator=generator, dtype=torch.float64) * extent
    size = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 5.5 + 0.5
    angle = (torch.rand(n, 1, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi
    return torch.cat([centre, size, angle], dim=1).to(dtype)


# (name, box1, box2, expected IoU or None when only shapely knows it)
DEGENERATE_PAIRS = [
    ('identical', (5.0, 5.0, 4.0, 2.0, 0.3), (5.0, 5.0, 4.0, 2.0, 0.3), 1.0),
    ('identical_axis_aligned', (0.0, 0.0, 2.0, 2.0, 0.0), (0.0, 0.0, 2.0, 2.0, 0.0), 1.0),
    ('same_box_other_parametrisation', (1.0, 2.0, 4.0, 2.0, 0.0), (1.0, 2.0, 2.0, 4.0, math.pi / 2),
     1.0),
    ('same_box_turned_by_pi', (1.0, 2.0, 4.0, 2.0, 0.4), (1.0, 2.0, 4.0, 2.0, 0.4 + math.pi), 1.0),
    ('nested', (5.0, 5.0, 6.0, 4.0, 0.2), (5.2, 5.1, 2.0, 1.0, 0.7), 2.0 / 24.0),
    ('nested_sharing_edges', (4.0, 0.0, 3.0, 1.0, 0.3), (4.0, 0.0, 3.0, 4.0, 0.3), 0.25),
    ('cross', (5.0, 5.0, 4.0, 2.0, 0.0), (5.0, 5.0, 4.0, 2.0, math.pi / 2), 4.0 / 12.0),
    ('collinear_edges', (0.0, 0.0, 2.0, 2.0, 0.0), (1.0, 0.0, 2.0, 2.0, 0.0), 2.0 / 6.0),
    ('collinear_edges_rotated', (0.0, 0.0, 2.0, 2.0, 0.6), (math.cos(0.6), math.sin(0.6), 2.0, 2.0,
                                                            0.6), 2.0 / 6.0),
    ('touching_edge', (0.0, 0.0, 2.0, 2.0, 0.0), (2.0, 0.0, 2.0, 2.0, 0.0), 0.0),
    ('touching_corner', (0.0, 0.0, 2.0, 2.0, 0.0), (2.0, 2.0, 2.0, 2.0, 0.0), 0.0),
    ('vertex_on_edge', (0.0, 0.0, 2.0, 2.0, 0.0), (1.0 + math.sqrt(2.0), 0.0, 2.0, 2.0,
                                                   math.pi / 4), 0.0),
    ('far_apart', (0.0, 0.0, 2.0, 2.0, 0.3), (50.0, 40.0, 3.0, 1.0, -1.0), 0.0),
    ('zero_size', (0.0, 0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 2.0, 2.0, 0.0), 0.0),
    ('zero_width', (0.0, 0.0, 0.0, 2.0, 0.0), (0.0, 0.0, 2.0, 2.0, 0.3), 0.0),
    ('both_zero_size', (1.0, 1.0, 0.0, 0.0, 0.5), (1.0, 1.0, 0.0, 0.0, 0.5), 0.0),
    ('tiny_in_huge', (512.0, 512.0, 1024.0, 1024.0, 0.0), (100.3, 200.7, 0.01, 0.02, 0.5),
     2e-4 / 1024.0**2),
    ('large_coordinates', (1000.5, 990.25, 40.0, 12.0, 0.3), (1003.0, 992.0, 38.0, 14.0, 0.35),
     None),
    ('one_pixel_shift_along_width', (1020.0, 1020.0, 30.0, 8.0, -1.2),
     (1020.0 + math.cos(-1.2), 1020.0 + math.sin(-1.2), 30.0, 8.0, -1.2), 29.0 / 31.0),
]


def test_matches_shapely_pairwise_and_aligned():
    generator = torch.Generator().manual_seed(0)
    boxes1, boxes2 = random_boxes(40, generator), random_boxes(30, generator)
    expected = shapely_overlaps(boxes1, boxes2)
    assert 0.2 < (expected > 0).double().mean() < 0.8  # the draw exercises both cases
    torch.testing.assert_close(rotated_box_iou(boxes1, boxes2), expected, rtol=0, atol=1e-9)
    torch.testing.assert_close(rotated_box_iou(boxes1, boxes2, mode='iof'),
                               shapely_overlaps(boxes1, boxes2, mode='iof'),
                               rtol=0,
                               atol=1e-9)
    pairs1, pairs2 = random_boxes(300, generator), random_boxes(300, generator)
    torch.testing.assert_close(rotated_box_iou(pairs1, pairs2, aligned=True),
                               shapely_overlaps(pairs1, pairs2, aligned=True),
                               rtol=0,
                               atol=1e-9)


def test_float32_and_large_coordinates_match_shapely():
    generator = torch.Generator().manual_seed(1)
    boxes1, boxes2 = random_boxes(30, generator), random_boxes(30, generator)
    for shift in (0.0, 1000.0):
        b1 = (boxes1 + torch.tensor([shift, shift, 0, 0, 0], dtype=torch.float64)).float()
        b2 = (boxes2 + torch.tensor([shift, shift, 0, 0, 0], dtype=torch.float64)).float()
        ours = rotated_box_iou(b1, b2)
        assert ours.dtype == torch.float32
        # Reference on the float32-rounded boxes: only the op's own rounding is measured.
        expected = shapely_overlaps(b1.double(), b2.double()).float()
        torch.testing.assert_close(ours, expected, rtol=0, atol=2e-6)


@pytest.mark.parametrize('name,box1,box2,expected',
                         DEGENERATE_PAIRS,
                         ids=[p[0] for p in DEGENERATE_PAIRS])
def test_degenerate_pairs_value_and_finite_gradient(name, box1, box2, expected):
    b1 = torch.tensor([box1], dtype=torch.float64, requires_grad=True)
    b2 = torch.tensor([box2], dtype=torch.float64, requires_grad=True)
    iou = rotated_box_iou(b1, b2, aligned=True)
    reference = shapely_overlaps(b1.detach(), b2.detach(), aligned=True)
    torch.testing.assert_close(iou.detach(), reference, rtol=0, atol=1e-9)
    if expected is not None:
        torch.testing.assert_close(iou.detach(),
                                   torch.tensor([expected], dtype=torch.float64),
                                   rtol=0,
                                   atol=1e-9)
    iou.sum().backward()
    assert torch.isfinite(b1.grad).all() and torch.isfinite(b2.grad).all(), name
    for dtype, atol in ((torch.float32, 3e-6), (torch.float64,
                                                1e-9)):  # loss form: log of clamped IoU
        c1 = torch.tensor([box1], dtype=dtype, requires_grad=True)
        c2 = torch.tensor([box2], dtype=dtype)
        iou = rotated_box_iou(c1, c2, aligned=True)
        reference = shapely_overlaps(c1.detach().double(), c2.double(), aligned=True).to(dtype)
        torch.testing.assert_close(iou.detach(), reference, rtol=0, atol=atol)
        loss = -iou.clamp(min=1e-6).log()
        loss.sum().backward()
        assert torch.isfinite(loss).all() and torch.isfinite(c1.grad).all(), (name, dtype)


def test_lattice_boxes_with_shared_edges_and_vertices():
    # Integer centres and sizes, angles from a small set: many collinear edges,
    # coincident vertices and zero-size boxes, in both precisions and far from the origin.
    generator = torch.Generator().manual_seed(6)
    angles = torch.tensor([0.0, math.pi / 2, math.pi / 4, -math.pi / 4, math.pi, 0.3],
                          dtype=torch.float64)

    def lattice(n):
        centre = torch.randint(0, 5, (n, 2), generator=generator).double()
        size = torch.randint(0, 5, (n, 2), generator=generator).double()
        angle = angles[torch.randint(0, len(angles), (n, ), generator=generator)]
        return torch.cat([centre, size, angle[:, None]], dim=1)

    boxes1, boxes2 = lattice(300), lattice(300)
    expected = shapely_overlaps(boxes1, boxes2, aligned=True)
    offset = torch.tensor([1000.0, 1000.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    for dtype, atol in ((torch.float64, 1e-9), (torch.float32, 1e-6)):
        for shift in (0.0, 1.0):
            b1 = (boxes1 + shift * offset).to(dtype).requires_grad_()
            b2 = (boxes2 + shift * offset).to(dtype).requires_grad_()
            iou = rotated_box_iou(b1, b2, aligned=True)
            torch.testing.assert_close(iou.detach().double(), expected, rtol=0, atol=atol)
            iou.sum().backward()
            assert torch.isfinite(b1.grad).all() and torch.isfinite(b2.grad).all()


def test_gradcheck_generic_configurations():
    generator = torch.Generator().manual_seed(2)
    boxes1 = random_boxes(4, generator, extent=3.0).requires_grad_()
    boxes2 = random_boxes(5, generator, extent=3.0).requires_grad_()
    assert (rotated_box_iou(boxes1, boxes2) > 0).sum() >= 10  # mostly overlapping pairs
    assert torch.autograd.gradcheck(lambda a, b: rotated_box_iou(a, b), (boxes1, boxes2),
                                    eps=1e-6,
                                    atol=1e-6)
    assert torch.autograd.gradcheck(lambda a, b: rotated_box_iou(a, b, mode='iof'),
                                    (boxes1, boxes2),
                                    eps=1e-6,
                                    atol=1e-6)
    pairs1 = random_boxes(6, generator, extent=2.0).requires_grad_()
    pairs2 = random_boxes(6, generator, extent=2.0).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: rotated_box_iou(a, b, aligned=True),
                                    (pairs1, pairs2),
                                    eps=1e-6,
                                    atol=1e-6)


def test_gradient_of_nested_boxes_is_analytic():
    # Inner box fully inside: IoU = w_in h_in / (W H), so d/dw_in = h_in / (W H)
    # and neither position nor angle matters.
    outer = torch.tensor([[0.0, 0.0, 10.0, 8.0, 0.1]], dtype=torch.float64, requires_grad=True)
    inner = torch.tensor([[1.0, -0.5, 3.0, 2.0, 0.9]], dtype=torch.float64, requires_grad=True)
    rotated_box_iou(inner, outer, aligned=True).sum().backward()
    torch.testing.assert_close(inner.grad,
                               torch.tensor([[0.0, 0.0, 2.0 / 80, 3.0 / 80, 0.0]],
                                            dtype=torch.float64),
                               rtol=0,
                               atol=1e-12)
    torch.testing.assert_close(outer.grad,
                               torch.tensor([[0.0, 0.0, -6.0 * 8 / 80**2, -6.0 * 10 / 80**2, 0.0]],
                                            dtype=torch.float64),
                               rtol=0,
                               atol=1e-12)


def test_mmcv_public_expectations():
    data = json.loads(REFERENCE.read_text())['mmcv_box_iou_rotated']
    boxes1 = torch.tensor(data['boxes1'], dtype=torch.float32)
    boxes2 = torch.tensor(data['boxes2'], dtype=torch.float32)
    atol = data['atol']
    for mode in ('iou', 'iof'):
        torch.testing.assert_close(rotated_box_iou(boxes1, boxes2, mode=mode),
                                   torch.tensor(data[f'expected_{mode}']),
                                   rtol=0,
                                   atol=atol)
        torch.testing.assert_close(rotated_box_iou(boxes1, boxes2, aligned=True, mode=mode),
                                   torch.tensor(data[f'expected_{mode}_aligned']),
                                   rtol=0,
                                   atol=atol)


def test_public_expectations_inline():
    # The same mmcv test values, inline so the convention is pinned without the shared file.
    boxes1 = torch.tensor([[1.0, 1.0, 3.0, 4.0, 0.5], [2.0, 2.0, 3.0, 4.0, 0.6],
                           [7.0, 7.0, 8.0, 8.0, 0.4]])
    boxes2 = torch.tensor([[0.0, 2.0, 2.0, 5.0, 0.3], [2.0, 1.0, 3.0, 3.0, 0.5],
                           [5.0, 5.0, 6.0, 7.0, 0.4]])
    expected = torch.tensor([[0.3708, 0.4351, 0.0], [0.1104, 0.4487, 0.0424], [0.0, 0.0, 0.3622]])
    torch.testing.assert_close(rotated_box_iou(boxes1, boxes2), expected, rtol=0, atol=1e-4)
    # The clockwise sign matters: flipping every angle changes the off-diagonal overlaps.
    flipped = boxes2 * torch.tensor([1.0, 1.0, 1.0, 1.0, -1.0])
    assert (rotated_box_iou(boxes1, flipped) - expected).abs().max() > 1e-2


def test_matches_mmcv_box_iou_rotated_on_cpu():
    mmcv_ops = pytest.importorskip('mmcv.ops')
    generator = torch.Generator().manual_seed(3)
    boxes1 = random_boxes(80, generator, dtype=torch.float32)
    boxes2 = random_boxes(60, generator, dtype=torch.float32)
    for mode in ('iou', 'iof'):
        torch.testing.assert_close(rotated_box_iou(boxes1, boxes2, mode=mode),
                                   mmcv_ops.box_iou_rotated(boxes1, boxes2, mode=mode),
                                   rtol=0,
                                   atol=2e-6)
        torch.testing.assert_close(rotated_box_iou(boxes1[:60], boxes2, mode=mode, aligned=True),
                                   mmcv_ops.box_iou_rotated(boxes1[:60],
                                                            boxes2,
                                                            mode=mode,
                                                            aligned=True),
                                   rtol=0,
                                   atol=2e-6)


def test_chunking_dtype_shapes_and_inputs_untouched():
    generator = torch.Generator().manual_seed(4)
    boxes1, boxes2 = random_boxes(23, generator), random_boxes(7, generator)
    before1, before2 = boxes1.clone(), boxes2.clone()
    full = rotated_box_iou(boxes1, boxes2)
    torch.testing.assert_close(rotated_box_iou(boxes1, boxes2, chunk_size=5), full, rtol=0, atol=0)
    torch.testing.assert_close(rotated_box_iou(boxes1, boxes2, chunk_size=1), full, rtol=0, atol=0)
    torch.testing.assert_close(boxes1, before1, rtol=0, atol=0)
    torch.testing.assert_close(boxes2, before2, rtol=0, atol=0)
    half = rotated_box_iou(boxes1.half(), boxes2.half())
    assert half.dtype == torch.float16 and half.shape == (23, 7)
    torch.testing.assert_close(half.double(), full, rtol=0, atol=5e-3)
    assert rotated_box_iou(boxes1[:0], boxes2).shape == (0, 7)
    assert rotated_box_iou(boxes1, boxes2[:0]).shape == (23, 0)
    empty = rotated_box_iou(boxes1[:0].requires_grad_(), boxes2[:0], aligned=True)
    assert empty.shape == (0, ) and empty.requires_grad
    with pytest.raises(ValueError):
        rotated_box_iou(boxes1, boxes2, aligned=True)
    with pytest.raises(ValueError):
        rotated_box_iou(boxes1, boxes2, mode='giou')


def test_op_module_has_no_openmmlab_import():
    source = (Path(__file__).resolve().parents[2] / 'bhcl' / 'ops' / 'rotated_iou.py').read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or '')
    assert not [name for name in imported if name.startswith('mm')], imported


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_matches_mmcv_kernels_on_cuda():
    mmcv_ops = pytest.importorskip('mmcv.ops')
    generator = torch.Generator().manual_seed(5)
    boxes1 = random_boxes(200, generator, dtype=torch.float32).cuda()
    boxes2 = random_boxes(200, generator, dtype=torch.float32).cuda()
    torch.testing.assert_close(rotated_box_iou(boxes1, boxes2),
                               mmcv_ops.box_iou_rotated(boxes1, boxes2),
                               rtol=0,
                               atol=1e-5)
    ours_in = boxes1.clone().requires_grad_()
    theirs_in = boxes1.clone().requires_grad_()
    ours = rotated_box_iou(ours_in, boxes2, aligned=True)
    theirs = mmcv_ops.diff_iou_rotated_2d(theirs_in[None], boxes2[None])[0]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    ours.sum().backward()
    theirs.sum().backward()
    overlapping = theirs.detach() > 0.05  # away from the kinks where both are one-sided
    torch.testing.assert_close(ours_in.grad[overlapping],
                               theirs_in.grad[overlapping],
                               rtol=1e-3,
                               atol=1e-3)
