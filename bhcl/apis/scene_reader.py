"""Windowed reads of a scene (GeoTIFF, or any raster GDAL reads: PNG, JPEG) with rasterio.

A scene is never loaded whole: each window is read on its own, and GDAL's block
cache is capped (``cache_mb``) so that memory does not grow with the scene.
Pixels come out as the training pipeline reads images: (h, w, 3) uint8 BGR.

Bands: 3 bands are R, G, B; 1 band is grey, copied to R, G and B; 4 bands are
R, G, B plus a fourth that is the validity mask when GDAL marks it as alpha and
is ignored otherwise (e.g. near-infrared). Other counts, or other bands, need
``bands=(r, g, b)`` (1-based band numbers).
"""
from __future__ import annotations

import os.path as osp
import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np


class SceneError(ValueError):
    """A scene cannot be used: unreadable, corrupt, unsupported bands or pixel type."""


@dataclass(frozen=True)
class Window:
    """A window of the scene: top-left corner ``(x, y)`` and size, in pixels."""
    x: int
    y: int
    width: int
    height: int


def window_starts(length: int, size: int, step: int) -> List[int]:
    """Starts of windows of ``size`` every ``step`` px covering ``[0, length)``; the last
    window ends at the border (it overlaps its neighbour more), so no window is cut
    and none needs padding. One window when ``length <= size``."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, step))
    return starts + [length - size]


def window_grid(width: int, height: int, size: int, overlap: int) -> List[Window]:
    """Row-major windows of ``size`` x ``size`` px overlapping by ``overlap`` px
    (clipped to the scene when it is smaller than a window)."""
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError(f'need patch size > 0 and 0 <= overlap < size, got size={size}, '
                         f'overlap={overlap}')
    step = size - overlap
    return [Window(x, y, min(size, width), min(size, height))
            for y in window_starts(height, size, step)
            for x in window_starts(width, size, step)]


def band_mapping(path: str, count: int, alpha_band: Optional[int],
                 bands: Optional[Sequence[int]]) -> Tuple[Tuple[int, int, int], str]:
    """The (R, G, B) band numbers to read and a sentence saying how they were chosen."""
    if bands is not None:
        bands = tuple(int(b) for b in bands)
        if len(bands) != 3 or not all(1 <= b <= count for b in bands):
            raise SceneError(f'{path}: bands={list(bands)} must be three band numbers in '
                             f'1..{count}')
        return bands, f'bands {bands[0]}, {bands[1]}, {bands[2]} read as R, G, B'
    if count == 3:
        return (1, 2, 3), 'bands 1, 2, 3 read as R, G, B'
    if count == 1:
        return (1, 1, 1), '1 band: read as grey (copied to R, G and B)'
    if count == 4:
        fourth = ('alpha: used as the validity mask' if alpha_band == 4
                  else 'ignored (not marked as alpha; e.g. near-infrared)')
        return (1, 2, 3), f'4 bands: 1, 2, 3 read as R, G, B; band 4 {fourth}'
    raise SceneError(
        f'{path}: {count} bands; the model takes 3 (R, G, B). 1 band is read as grey, 3 as '
        'R, G, B, 4 as R, G, B plus alpha or an ignored fourth band; for other files choose '
        'three bands with --bands R G B (1-based, e.g. --bands 4 3 2).')


class SceneReader:
    """Open a raster for windowed reads (a context manager).

    Args:
        path: GeoTIFF, PNG, JPEG or any raster GDAL opens.
        bands: three 1-based band numbers read as R, G, B (default: see the module doc).
        cache_mb: GDAL block cache in MB (bounds memory on any scene size).

    Attributes: ``width``, ``height``, ``crs`` (a ``rasterio.crs.CRS`` or None),
    ``transform`` (pixel -> map ``affine.Affine``, None without a georeference),
    ``band_note`` (how bands were mapped).
    """

    def __init__(self, path: str, bands: Optional[Sequence[int]] = None,
                 cache_mb: int = 128) -> None:
        self.path = path
        self.bands_arg = bands
        self.cache_mb = int(cache_mb)
        self._env = self._ds = None

    def __enter__(self) -> 'SceneReader':
        import rasterio
        from rasterio.enums import ColorInterp, MaskFlags
        from rasterio.errors import NotGeoreferencedWarning
        if not osp.isfile(self.path):
            raise SceneError(f'{self.path}: no such file')
        self._env = rasterio.Env(GDAL_CACHEMAX=self.cache_mb)
        self._env.__enter__()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', NotGeoreferencedWarning)
                self._ds = rasterio.open(self.path)
        except Exception as e:  # GDAL raises several error types for bad files
            self._env.__exit__(None, None, None)
            raise SceneError(f'{self.path}: cannot be read as a raster (GeoTIFF, PNG, JPEG, '
                             f'...): {e}') from e
        ds = self._ds
        try:
            self._check(ds, ColorInterp, MaskFlags)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _check(self, ds, ColorInterp, MaskFlags) -> None:
        if ds.width < 1 or ds.height < 1 or ds.count < 1:
            raise SceneError(f'{self.path}: empty raster ({ds.width} x {ds.height} px, '
                             f'{ds.count} bands)')
        interp = list(ds.colorinterp)
        alpha = next((i + 1 for i, c in enumerate(interp) if c == ColorInterp.alpha), None)
        self.bands, self.band_note = band_mapping(self.path, ds.count, alpha, self.bands_arg)
        dtypes = {ds.dtypes[b - 1] for b in self.bands}
        if dtypes != {'uint8'}:
            raise SceneError(
                f'{self.path}: pixels are {", ".join(sorted(dtypes))}; the model was trained on '
                f'8-bit images. Convert the scene first, e.g. gdal_translate -ot Byte -scale '
                f'{osp.basename(self.path)} scene_8bit.tif')
        self.width, self.height = ds.width, ds.height
        georef = ds.crs is not None and not ds.transform.is_identity
        self.crs = ds.crs if georef else None
        self.transform = ds.transform if georef else None
        # a mask to read: nodata values, an alpha band or an internal mask
        self._masked = any(MaskFlags.all_valid not in flags for flags in ds.mask_flag_enums)

    def __exit__(self, *exc) -> None:
        if self._ds is not None:
            self._ds.close()
            self._ds = None
        if self._env is not None:
            self._env.__exit__(*exc)
            self._env = None

    def read(self, win: Window) -> Optional[np.ndarray]:
        """(h, w, 3) uint8 BGR pixels of ``win``; None when the window holds no valid
        pixel (nodata / masked) or is one flat colour (nothing to detect)."""
        from rasterio.windows import Window as RioWindow
        rw = RioWindow(win.x, win.y, win.width, win.height)
        try:
            if self._masked and not self._ds.dataset_mask(window=rw).any():
                return None
            unique = sorted(set(self.bands))
            data = self._ds.read(unique, window=rw)
        except Exception as e:  # GDAL reports truncated / corrupt blocks as several types
            raise SceneError(f'{self.path}: the window at x={win.x}, y={win.y} '
                             f'({win.width} x {win.height} px) cannot be read, the file is '
                             f'truncated or corrupt: {e}') from e
        pos = {b: i for i, b in enumerate(unique)}
        r, g, b = (data[pos[k]] for k in self.bands)
        img = np.stack([b, g, r], axis=-1)
        if img.min() == img.max():
            return None
        return img
