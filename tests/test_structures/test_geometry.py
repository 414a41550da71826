"""Polygons <-> rotated boxes and the untangling of crossed quadrilaterals
(the le90 rule itself: tests/test_structures/test_box_coding.py)."""
import numpy as np
import pytest

from bhcl.structures.geometry import poly_area, poly_to_rbox, untangle_quad


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
