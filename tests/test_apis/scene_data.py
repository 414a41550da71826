"""Scenes the API tests write: GeoTIFFs with a known transform and CRS, solid-colour
rotated objects, and a stand-in detector that finds those objects in each window."""
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from bhcl.apis import TreeDetections, level_scores
from bhcl.structures.geometry import poly_to_rbox, rbox_to_poly

CRS = 'EPSG:32633'              # UTM 33N
ORIGIN = (500000.0, 4500000.0)  # map x, y of the top-left corner
PIXEL = 0.5                     # metres


def transform():
    from affine import Affine
    return Affine(PIXEL, 0.0, ORIGIN[0], 0.0, -PIXEL, ORIGIN[1])


def background(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 RGB noise in 0..99 (never an object colour)."""
    return np.random.default_rng(seed).integers(0, 100, (height, width, 3), dtype=np.uint8)


def draw(rgb: np.ndarray, rboxes: np.ndarray, colours: Sequence[Tuple[int, int, int]]) -> None:
    """Fill each le90 box with its RGB colour (sub-pixel corners)."""
    for poly, colour in zip(rbox_to_poly(rboxes), colours):
        pts = np.round(poly.reshape(4, 2) * 16).astype(np.int32)
        cv2.fillPoly(rgb, [pts], tuple(int(c) for c in colour), lineType=cv2.LINE_8, shift=4)


def write_geotiff(path: str, rgb: np.ndarray, crs: Optional[str] = CRS, georef: bool = True,
                  nodata: Optional[float] = None, extra_bands: Sequence[np.ndarray] = (),
                  colorinterp=None, dtype: str = 'uint8', tiled: bool = True) -> str:
    """Write (H, W, C) pixels as a GeoTIFF (bands in C order, plus ``extra_bands``)."""
    import rasterio
    bands = [rgb[..., i] for i in range(rgb.shape[2])] + list(extra_bands)
    profile = dict(driver='GTiff', width=rgb.shape[1], height=rgb.shape[0], count=len(bands),
                   dtype=dtype, nodata=nodata)
    if tiled:
        profile.update(tiled=True, blockxsize=64, blockysize=64)
    if georef:
        profile.update(crs=crs, transform=transform())
    with rasterio.open(path, 'w', **profile) as ds:
        for i, band in enumerate(bands, 1):
            ds.write(band.astype(dtype), i)
        if colorinterp is not None:
            ds.colorinterp = colorinterp
    return path


class ColourBoxDetector:
    """Stand-in for ``RotatedDetInferencer`` in scene tests: each solid colour is a
    class; every connected blob of it becomes a box (the rectangle around its
    pixels), so a window that cuts an object sees only its visible part. Cut
    boxes (touching the window's edge) score ``cut_score``, higher than whole
    ones, so a merge that only followed the scores would keep the pieces."""

    def __init__(self, tree, colours: Dict[int, Tuple[int, int, int]],
                 whole_score: float = 0.6, cut_score: float = 0.9) -> None:
        self.tree = tree
        self.colours = colours       # label -> RGB
        self.cfg = {}
        self.input_scale = None
        self.whole_score, self.cut_score = whole_score, cut_score
        self.calls: List[Tuple[int, int]] = []

    def predict_arrays(self, imgs, paths=None) -> List[TreeDetections]:
        return [self._detect(img) for img in imgs]

    def _detect(self, bgr: np.ndarray) -> TreeDetections:
        self.calls.append(bgr.shape[:2])
        boxes, scores, labels = [], [], []
        for label, rgb in self.colours.items():
            mask = np.all(bgr == np.array(rgb[::-1], dtype=np.uint8), axis=-1).astype(np.uint8)
            n, comp = cv2.connectedComponents(mask)
            for c in range(1, n):
                ys, xs = np.nonzero(comp == c)
                if len(xs) < 4:
                    continue
                pts = np.c_[xs, ys].astype(np.float32) + 0.5   # pixel centres
                rbox = poly_to_rbox(cv2.boxPoints(cv2.minAreaRect(pts)).reshape(1, 8))[0]
                rbox[2:4] += 1.0                                # centres -> pixel extent
                edge = (xs.min() == 0 or ys.min() == 0 or xs.max() == bgr.shape[1] - 1
                        or ys.max() == bgr.shape[0] - 1)
                boxes.append(rbox)
                scores.append(self.cut_score if edge else self.whole_score)
                labels.append(label)
        labels = np.asarray(labels, dtype=np.int64)
        scores = np.asarray(scores)
        return TreeDetections(np.asarray(boxes).reshape(-1, 5), scores, labels,
                              level_scores(self.tree, labels, scores, None), self.tree,
                              img_shape=bgr.shape[:2])
