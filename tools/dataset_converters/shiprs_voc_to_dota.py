"""Convert the official ShipRSImageNet VOC release to BHCL's DOTA-format layout.

    python tools/dataset_converters/shiprs_voc_to_dota.py VOC_ROOT OUT_ROOT
        [--splits train val] [--images symlink|copy] [--skip-invalid] [--precision 2]
        [--tree configs/_base_/datasets/shiprs_label_tree.py]
        [--levels configs/_base_/datasets/shiprs_official_levels.py | --levels none]

VOC_ROOT holds JPEGImages/*.bmp, Annotations/*.xml and ImageSets/<split>.txt.
For each split it writes OUT_ROOT/<split>/labelTxt/<stem>.txt (class names with
spaces, no header) and OUT_ROOT/<split>/images/<stem>.bmp (links or copies).
Dock objects (not in the tree) are dropped and counted; level_k indices that
disagree with <name> are counted. Nothing is written unless every split
converts (OUT_ROOT is filled from a staging folder at the end).
"""
import argparse
import os.path as osp
import sys

from mmengine.config import Config
from mmengine.utils import ProgressBar

from bhcl.datasets.convert import images_by_stem, place_images, staged_output, xml_to_dota_dir
from bhcl.datasets.formats import read_image_set, read_shiprs_xml
from bhcl.datasets.skip_policy import SkipPolicy
from bhcl.datasets.xml_annotated import TREE_CONFIG_DIR, load_label_tree
from bhcl.structures import LabelTree


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('voc_root', help='folder with JPEGImages/, Annotations/, ImageSets/')
    parser.add_argument('out_root', help='output folder (one subfolder per split)')
    parser.add_argument('--splits', nargs='+', default=['train', 'val'],
                        help='image-set names in ImageSets/ (default: train val)')
    parser.add_argument('--images', default='symlink', choices=['symlink', 'copy'],
                        help='how to place the images (default: symlink)')
    parser.add_argument('--tree', default=osp.join(TREE_CONFIG_DIR, 'shiprs_label_tree.py'),
                        help='config file defining label_tree')
    parser.add_argument('--levels', default=osp.join(TREE_CONFIG_DIR, 'shiprs_official_levels.py'),
                        help="config defining shiprs_level_names, or 'none' to skip the check")
    parser.add_argument('--skip-invalid', action='store_true',
                        help='skip bad objects (unknown class, degenerate polygon) and bad '
                        'images (XML missing, malformed or not UTF-8; image missing) instead '
                        'of stopping; each is logged and counted, as the datasets do with '
                        'on_invalid=skip')
    parser.add_argument('--precision', type=int, default=2, help='decimals of coordinates')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    tree = LabelTree.from_config(load_label_tree(args.tree))
    levels = None if args.levels == 'none' else Config.fromfile(args.levels)['shiprs_level_names']
    policy = SkipPolicy('skip' if args.skip_invalid else 'raise')
    images = images_by_stem(osp.join(args.voc_root, 'JPEGImages'))
    with staged_output(args.out_root) as stage:   # all splits or nothing
        for split in args.splits:
            stems = read_image_set(osp.join(args.voc_root, 'ImageSets', f'{split}.txt'))
            out = osp.join(stage, split)
            print(f'{split}: {len(stems)} images -> {osp.join(args.out_root, split)}')
            bar = ProgressBar(len(stems), file=sys.stdout)
            stats = xml_to_dota_dir(
                osp.join(args.voc_root, 'Annotations'), osp.join(out, 'labelTxt'),
                read_shiprs_xml, tree, stems=stems, progress=bar.update, on_invalid=policy,
                images=images, precision=args.precision, level_names=levels)
            converted = [s for s in stems if osp.isfile(osp.join(out, 'labelTxt', s + '.txt'))]
            stats.update(place_images(converted, osp.join(args.voc_root, 'JPEGImages'),
                                      osp.join(out, 'images'), args.images))
            print(f'\n{split}: ' + ', '.join(f'{k}={v}' for k, v in sorted(stats.items())))
    if policy.counts:
        print(policy.summary(args.out_root))


if __name__ == '__main__':
    main()
