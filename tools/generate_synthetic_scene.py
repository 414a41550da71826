"""Write a georeferenced synthetic scene (GeoTIFF) and its ground truth, to try scene inference.

    python tools/generate_synthetic_scene.py OUT.tif [--size 2048] [--density 5] [--seed 0]
        [--tree configs/_base_/datasets/synthetic_label_tree.py] [--epsg 32633]

The scene is one large image drawn like the synthetic dataset (same classes,
styles and object sizes; about --density objects per 256 x 256 px, placed
anywhere, so many lie across the windows of scene inference), georeferenced in
UTM 33N (EPSG:32633, 0.5 m pixels, top-left corner at 500000 E, 4500000 N) unless
--epsg says otherwise. The ground truth goes to OUT.txt in DOTA format (the
dataset's labelTxt). The scene is held in memory while drawn: keep it below
about 8000 px a side (scene inference itself reads any size by windows).
"""
import argparse
import os
import os.path as osp

import numpy as np

from bhcl.datasets.dota_txt import format_dota_line
from bhcl.datasets.synthetic import (SyntheticConfig, _annotation_name, class_styles,
                                     leaf_frequencies, render_image)
from bhcl.datasets.xml_annotated import TREE_CONFIG_DIR, load_label_tree
from bhcl.structures import LabelTree


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out', help='output GeoTIFF (.tif)')
    parser.add_argument('--size', type=int, default=2048, help='scene side in px (2048)')
    parser.add_argument('--density', type=float, default=5.0,
                        help='objects per 256 x 256 px (5)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--tree', default=osp.join(TREE_CONFIG_DIR, 'synthetic_label_tree.py'),
                        help='config defining label_tree (the synthetic tree)')
    parser.add_argument('--epsg', type=int, default=32633, help='CRS of the scene (32633)')
    parser.add_argument('--pixel-size', type=float, default=0.5, help='metres per pixel (0.5)')
    return parser.parse_args(argv)


def main(argv=None):
    import rasterio
    from affine import Affine
    args = parse_args(argv)
    if not 256 <= args.size <= 16384:
        raise SystemExit(f'--size must be in 256..16384, got {args.size}')
    tree = LabelTree.from_config(load_label_tree(args.tree))
    n = max(1, int(round(args.density * (args.size / 256) ** 2)))
    cfg = SyntheticConfig(img_size=args.size, min_objects=n, max_objects=n, border_ratio=0.0,
                          seed=args.seed)
    rng = np.random.default_rng([args.seed, 2])
    img, objects, _ = render_image(tree, class_styles(tree),
                                   leaf_frequencies(tree, cfg.imbalance, cfg.seed), cfg, rng)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    transform = Affine(args.pixel_size, 0, 500000.0, 0, -args.pixel_size, 4500000.0)
    with rasterio.open(args.out, 'w', driver='GTiff', width=args.size, height=args.size,
                       count=3, dtype='uint8', crs=f'EPSG:{args.epsg}', transform=transform,
                       tiled=True, blockxsize=256, blockysize=256, compress='deflate') as ds:
        ds.write(np.ascontiguousarray(img.transpose(2, 0, 1)))
    label_path = osp.splitext(args.out)[0] + '.txt'
    with open(label_path, 'w') as f:
        for poly, k, truncated in objects:
            f.write(format_dota_line(poly, _annotation_name(tree, k), int(truncated)) + '\n')
    print(f'wrote {args.out} ({args.size} x {args.size} px, EPSG:{args.epsg}, '
          f'{args.pixel_size} m/px) and {label_path} ({len(objects)} objects)')


if __name__ == '__main__':
    main()
