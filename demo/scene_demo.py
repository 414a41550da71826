"""Detect on a whole scene (GeoTIFF, PNG, JPEG) by sliding windows; write GeoJSON.

    python demo/scene_demo.py SCENE CONFIG CHECKPOINT --out-dir DIR
        [--patch-size N] [--patch-overlap N] [--batch-size 4] [--score-thr 0.3]
        [--wgs84] [--bands R G B] [--formats geojson dota fair1m] [--device cpu]

Writes DIR/<scene>.geojson (polygons in the raster's map coordinates and CRS;
longitude/latitude with --wgs84; pixels when the raster has no georeference),
DIR/dota/Task1_<class>.txt and DIR/fair1m/test/<scene>.xml. Every feature has the
node name, the tree path (node names from the top of the tree) and a score per
level. The scene is read window by window (never whole); windows without valid
pixels are skipped; an object cut by a window border is reported once. On an
error nothing is written. Patch size and overlap default to the config's
(scene_split, else the test resize scale with a 200/1024 overlap).
"""
import argparse
import sys

from mmengine.utils import ProgressBar

from bhcl.apis import RotatedDetInferencer, SceneReader, write_scene_outputs
from bhcl.apis.scene_export import FORMATS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('scene', help='GeoTIFF, PNG or JPEG scene')
    parser.add_argument('config', help='config file, or the name of a config under configs/')
    parser.add_argument('checkpoint', help='checkpoint file trained with CONFIG')
    parser.add_argument('--out-dir', required=True, help='output folder')
    parser.add_argument('--patch-size', type=int, help='window size in px (config default)')
    parser.add_argument('--patch-overlap', type=int, help='window overlap in px (config default)')
    parser.add_argument('--batch-size', type=int, default=4, help='windows per forward pass')
    parser.add_argument('--score-thr', type=float, default=0.3, help='keep scores >= this')
    parser.add_argument('--iou-thr', type=float, default=0.1,
                        help='rotated IoU that makes two windows\' boxes one object')
    parser.add_argument('--wgs84', action='store_true',
                        help='GeoJSON in WGS84 longitude/latitude instead of the raster CRS')
    parser.add_argument('--bands', type=int, nargs=3, metavar=('R', 'G', 'B'),
                        help='1-based band numbers read as R, G, B')
    parser.add_argument('--formats', nargs='+', default=list(FORMATS), choices=FORMATS)
    parser.add_argument('--device', default=None, help='cpu, cuda, cuda:1 (default: cuda if any)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with SceneReader(args.scene, bands=args.bands) as reader:   # fail before loading the model
        print(f'{args.scene}: {reader.width} x {reader.height} px; {reader.band_note}; '
              + (f'CRS {reader.crs}' if reader.crs else 'no georeference'))
    inferencer = RotatedDetInferencer(args.config, args.checkpoint, device=args.device)
    result = inferencer.predict_scene(
        args.scene, patch_size=args.patch_size, patch_overlap=args.patch_overlap,
        batch_size=args.batch_size, score_thr=args.score_thr, bands=args.bands,
        iou_thr=args.iou_thr, progress=ProgressBar)
    print()
    written, message = write_scene_outputs(result, args.out_dir, args.formats, wgs84=args.wgs84)
    if message:
        print(message)
    print(result.summary())
    for path in written[:3]:
        print(f'wrote {path}')
    if len(written) > 3:
        print(f'... and {len(written) - 3} more files under {args.out_dir}')
    return result, written


if __name__ == '__main__':
    try:
        main()
    except (FileNotFoundError, OSError, ValueError) as e:
        sys.exit(f'error: {e}')
