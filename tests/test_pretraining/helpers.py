"""Tiny real inputs for the pre-training tools: bright rotated rectangles on a dark image."""
import os.path as osp

import cv2
import numpy as np

# (cx, cy, w, h, t) in le90, well apart from each other and the border.
DRAWN_BOXES = np.array([
    [40.0, 38.0, 44.0, 18.0, 0.35],
    [118.0, 40.0, 40.0, 22.0, -0.8],
    [42.0, 100.0, 36.0, 14.0, 1.2],
    [116.0, 104.0, 30.0, 24.0, 0.0],
])


def draw_boxes(boxes=DRAWN_BOXES, size=(140, 160), seed=0) -> np.ndarray:
    """(H, W, 3) uint8 BGR image: dark noisy background, one bright filled polygon per box."""
    rng = np.random.default_rng(seed)
    img = rng.integers(10, 30, size=(*size, 3)).astype(np.uint8)
    ys, xs = np.mgrid[:size[0], :size[1]] + 0.5   # pixel centres
    for i, (cx, cy, w, h, t) in enumerate(boxes):
        # a pixel belongs to the box when its centre does (box axes: w along t)
        along = (xs - cx) * np.cos(t) + (ys - cy) * np.sin(t)
        across = -(xs - cx) * np.sin(t) + (ys - cy) * np.cos(t)
        img[(np.abs(along) < w / 2) & (np.abs(across) < h / 2)] = (200 + 10 * i, 210, 190 + 5 * i)
    return img


def write_image_folder(folder, num=3):
    """``num`` images with shifted copies of DRAWN_BOXES; returns {stem: boxes}."""
    out = {}
    for i in range(num):
        boxes = DRAWN_BOXES.copy()
        boxes[:, :2] += (2 * i, i)
        cv2.imwrite(osp.join(str(folder), f'img_{i}.png'), draw_boxes(boxes, seed=i))
        out[f'img_{i}'] = boxes
    return out
