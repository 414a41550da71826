"""Detect on images or a folder: drawn images (node + tree path labels) and JSON.

    python demo/image_demo.py IMAGE_OR_DIR CONFIG CHECKPOINT --out-dir DIR
        [--device cpu|cuda] [--batch-size 1] [--score-thr 0.3]

CONFIG is a config file or the name of one under configs/. Writes
DIR/vis/<image>.png and DIR/preds/<image>.json (every prediction: rotated box
(cx, cy, w, h, t) le90 in pixels, polygon, score, node, tree path and a score
per level; the drawings show those with score >= --score-thr).
"""
import argparse
import sys

from bhcl.apis import RotatedDetInferencer


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('inputs', help='an image file or a folder of images')
    parser.add_argument('config', help='config file, or the name of a config under configs/')
    parser.add_argument('checkpoint', help='checkpoint file trained with CONFIG')
    parser.add_argument('--out-dir', required=True, help='output folder')
    parser.add_argument('--device', default=None, help='cpu, cuda, cuda:1 (default: cuda if any)')
    parser.add_argument('--batch-size', type=int, default=1, help='images per forward pass')
    parser.add_argument('--score-thr', type=float, default=0.3, help='drawing score threshold')
    parser.add_argument('--no-vis', action='store_true', help='write the JSON only')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    inferencer = RotatedDetInferencer(args.config, args.checkpoint, device=args.device)
    out = inferencer(args.inputs, batch_size=args.batch_size, out_dir=args.out_dir,
                     pred_score_thr=args.score_thr, no_save_vis=args.no_vis)
    preds = out['predictions']
    shown = sum(sum(o['score'] >= args.score_thr for o in p['objects']) for p in preds)
    print(f'{len(preds)} images, {shown} objects with score >= {args.score_thr}; '
          f'results in {args.out_dir}')
    return out


if __name__ == '__main__':
    try:
        main()
    except (FileNotFoundError, OSError, ValueError) as e:
        sys.exit(f'error: {e}')
