"""Class-agnostic rotated proposals for every image of a folder (DOTA txt).

    python tools/pretraining/generate_proposals.py IMG_DIR OUT_DIR
        [--methods mser threshold] [--min-size 4] [--max-size-ratio 0.8]
        [--max-aspect 10] [--nms-iou 0.7] [--max-num 300] [--class-name object]
        [--gt-dir LABELTXT_DIR [--no-generate]]

Writes OUT_DIR/<stem>.txt per image: one DOTA line per box (corners, class
name, difficulty 0), best boxes first. Boxes come from MSER regions and/or
Otsu-threshold components (their minimum-area rectangles), filtered by size,
aspect ratio and count, de-duplicated with rotated NMS. Proposals from any
other source (e.g. SAM masks -> minimum-area rectangles) written in the same
format can replace them. Next step: tools/pretraining/extract_embeddings.py.

``--gt-dir`` (a labelled split's labelTxt folder) then prints how well the
proposals in OUT_DIR cover its objects: recall at IoU 0.5 and 0.7 and the
median best IoU (class-agnostic, polygon IoU); with ``--no-generate`` it only
measures OUT_DIR, e.g. proposals from SAM written there.
"""
import argparse
import sys

from mmengine.utils import ProgressBar

from bhcl.pretraining import (ProposalConfig, generate_proposal_files, list_images,
                              proposal_recall)
from bhcl.pretraining.proposals import METHODS


def parse_args(argv=None):
    defaults = ProposalConfig()
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('img_dir', help='folder of images')
    parser.add_argument('out_dir', help='folder for the <stem>.txt proposal files')
    parser.add_argument('--methods', nargs='+', choices=METHODS, default=list(defaults.methods),
                        help='region finders to combine (default: both)')
    parser.add_argument('--min-size', type=float, default=defaults.min_size,
                        help='smallest shorter side in pixels (%(default)s)')
    parser.add_argument('--max-size-ratio', type=float, default=defaults.max_size_ratio,
                        help="largest longer side, share of the image's longer side (%(default)s)")
    parser.add_argument('--max-aspect', type=float, default=defaults.max_aspect,
                        help='largest longer / shorter side (%(default)s)')
    parser.add_argument('--nms-iou', type=float, default=defaults.nms_iou,
                        help='rotated NMS IoU threshold, 0 to disable (%(default)s)')
    parser.add_argument('--max-num', type=int, default=defaults.max_num,
                        help='boxes kept per image (%(default)s)')
    parser.add_argument('--class-name', default='object', help='class name written per box')
    parser.add_argument('--gt-dir', default=None,
                        help='labelTxt folder of these images: print the proposals\' recall')
    parser.add_argument('--no-generate', action='store_true',
                        help='only measure the proposals already in OUT_DIR (needs --gt-dir)')
    args = parser.parse_args(argv)
    if args.no_generate and not args.gt_dir:
        parser.error('--no-generate only measures proposals: give --gt-dir LABELTXT_DIR')
    return args


def main(argv=None):
    args = parse_args(argv)
    cfg = ProposalConfig(methods=tuple(args.methods), min_size=args.min_size,
                         max_size_ratio=args.max_size_ratio, max_aspect=args.max_aspect,
                         nms_iou=args.nms_iou or None, max_num=args.max_num)
    stats = {}
    if not args.no_generate:
        bar = ProgressBar(len(list_images(args.img_dir)), file=sys.stdout)
        stats = generate_proposal_files(args.img_dir, args.out_dir, cfg, args.class_name,
                                        progress=bar.update)
        print(f'\n{args.out_dir}: ' + ', '.join(f'{k}={v}' for k, v in sorted(stats.items())))
    if args.gt_dir:
        recall = proposal_recall(args.out_dir, args.gt_dir)
        print(f'{args.out_dir} against {args.gt_dir}: ' + ', '.join(
            f'{k}={v:.3f}' if isinstance(v, float) else f'{k}={v}' for k, v in recall.items()))
        stats = dict(stats, **recall)
    return stats


if __name__ == '__main__':
    main()
