"""Cut large images into overlapping patches with DOTA labels (FAIR1M: 1024 / 200).

    python tools/dataset_converters/split_images.py --img-dirs DIR [DIR ...] --out-dir OUT
        [--ann-dir LABELTXT] [--size 1024] [--gap 200] [--iof-thr 0.7]
        [--no-pad] [--out-ext .tif] [--nproc 1]

Writes OUT/images/<stem>__<size>__<x>___<y><ext> and, with --ann-dir,
OUT/labelTxt/<same>.txt in the patch frame. Class names (and file names) with
spaces are kept. Objects cut by a window are kept if at least --iof-thr of
their area is inside, as the minimum-area rectangle of the visible part with
difficulty 2 (truncated). Without --ann-dir only images are cut (test sets).
"""
import argparse

from mmengine.utils import ProgressBar

from bhcl.datasets.split import SplitConfig, find_images, split_images


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--img-dirs', nargs='+', required=True, help='image folder(s)')
    parser.add_argument('--ann-dir', help='DOTA labelTxt folder (omit for unlabelled images)')
    parser.add_argument('--out-dir', required=True, help='output folder (images/, labelTxt/)')
    parser.add_argument('--size', type=int, default=1024, help='patch size (default 1024)')
    parser.add_argument('--gap', type=int, default=200, help='overlap of windows (default 200)')
    parser.add_argument('--iof-thr', type=float, default=0.7,
                        help='keep a cut object if this share of its area is inside (0.7)')
    parser.add_argument('--no-pad', action='store_true',
                        help='keep edge patches of small images smaller than --size')
    parser.add_argument('--out-ext', help='patch image suffix (default: the input suffix)')
    parser.add_argument('--nproc', type=int, default=1, help='worker processes')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = SplitConfig(size=args.size, gap=args.gap, iof_thr=args.iof_thr, pad=not args.no_pad,
                      out_ext=args.out_ext)
    n = len(find_images(args.img_dirs))
    print(f'{n} images -> {args.out_dir} (size {cfg.size}, gap {cfg.gap}, iof_thr {cfg.iof_thr})')
    bar = ProgressBar(n)
    stats = split_images(args.img_dirs, args.ann_dir, args.out_dir, cfg, args.nproc, bar.update)
    print('\n' + ', '.join(f'{k}={v}' for k, v in sorted(stats.items())))


if __name__ == '__main__':
    main()
