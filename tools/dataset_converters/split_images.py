"""Cut large images into overlapping patches with DOTA labels (FAIR1M: 1024 / 200).

    python tools/dataset_converters/split_images.py --img-dirs DIR [DIR ...] --out-dir OUT
        [--ann-dir LABELTXT] [--size 1024] [--gap 200] [--iof-thr 0.7]
        [--no-pad] [--out-ext .tif] [--nproc 1] [--skip-invalid] [--tree CONFIG]

Writes OUT/images/<stem>__<size>__<x>___<y><ext> and, with --ann-dir,
OUT/labelTxt/<same>.txt in the patch frame. Class names (and file names) with
spaces are kept. Objects cut by a window are kept if at least --iof-thr of
their area is inside, as the minimum-area rectangle of the visible part with
difficulty 2 (truncated). Without --ann-dir only images are cut (test sets).
Every label line is written with its difficulty, so names ending in a number
(`Boeing 737`) read back whole; --tree settles such names in the input
(without it, a trailing 0, 1 or 2 is read as the difficulty). Nothing is
written unless the whole split succeeds; --skip-invalid skips bad lines and
images without (readable) labels instead, logging and counting each.
"""
import argparse
import sys

from mmengine.utils import ProgressBar

from bhcl.datasets.convert import staged_output
from bhcl.datasets.skip_policy import SkipPolicy
from bhcl.datasets.split import SplitConfig, find_images, split_images
from bhcl.datasets.xml_annotated import load_label_tree
from bhcl.structures import LabelTree


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
    parser.add_argument('--skip-invalid', action='store_true',
                        help='skip bad label lines, and images whose label file is missing, '
                        'not UTF-8 or whose image is unreadable, instead of stopping')
    parser.add_argument('--tree', help='config defining label_tree: reads class names that '
                        'end in a number (e.g. "Boeing 737") against the tree')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = SplitConfig(size=args.size, gap=args.gap, iof_thr=args.iof_thr, pad=not args.no_pad,
                      out_ext=args.out_ext)
    tree = LabelTree.from_config(load_label_tree(args.tree)) if args.tree else None
    n = len(find_images(args.img_dirs))
    print(f'{n} images -> {args.out_dir} (size {cfg.size}, gap {cfg.gap}, iof_thr {cfg.iof_thr})')
    policy = SkipPolicy('skip' if args.skip_invalid else 'raise')
    bar = ProgressBar(n, file=sys.stdout)
    with staged_output(args.out_dir) as stage:   # all or nothing
        stats = split_images(args.img_dirs, args.ann_dir, stage, cfg, args.nproc, bar.update,
                             policy, tree)
    print('\n' + ', '.join(f'{k}={v}' for k, v in sorted(stats.items())))
    if policy.counts:
        print(policy.summary(args.out_dir))
    return stats


if __name__ == '__main__':
    main()
