"""Convert FAIR1M XML annotations (v1.0 / v2.0) to DOTA labelTxt files.

    python tools/dataset_converters/fair1m_xml_to_dota.py XML_DIR [XML_DIR ...] --out-dir DIR
        [--underscores] [--skip-invalid] [--precision 2]
        [--tree configs/_base_/datasets/fair1m_label_tree.py]

Writes DIR/<stem>.txt per XML file: the first 4 points as the corners, the
class name as written (spaces kept, or 'Small_Car' with --underscores),
difficulty 0 (FAIR1M has none), no header. Every name is checked against the
tree. Nothing is written unless the whole conversion succeeds. Split the
images with split_images.py afterwards.
"""
import argparse
import os
import os.path as osp
import sys
from collections import Counter

from mmengine.utils import ProgressBar

from bhcl.datasets.convert import staged_output, xml_to_dota_dir
from bhcl.datasets.formats import read_fair1m_xml
from bhcl.datasets.skip_policy import SkipPolicy
from bhcl.datasets.xml_annotated import TREE_CONFIG_DIR, load_label_tree
from bhcl.structures import LabelTree


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('xml_dirs', nargs='+', help='labelXml folder(s)')
    parser.add_argument('--out-dir', required=True, help='output labelTxt folder')
    parser.add_argument('--underscores', action='store_true',
                        help="write 'Small_Car' (JDet/LSKNet style) instead of 'Small Car'")
    parser.add_argument('--tree', default=osp.join(TREE_CONFIG_DIR, 'fair1m_label_tree.py'),
                        help='config file defining label_tree')
    parser.add_argument('--skip-invalid', action='store_true',
                        help='skip bad objects (unknown class, degenerate polygon, no points) '
                        'and bad files (malformed XML, not UTF-8) instead of stopping; each '
                        'is logged and counted, as the datasets do with on_invalid=skip')
    parser.add_argument('--precision', type=int, default=2, help='decimals of coordinates')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    tree = LabelTree.from_config(load_label_tree(args.tree))
    jobs, seen = [], {}
    for d in args.xml_dirs:
        stems = sorted(f[:-4] for f in os.listdir(d) if f.lower().endswith('.xml'))
        for s in stems:
            if s in seen:
                raise SystemExit(f'{s}.xml is in both {seen[s]} and {d}; the outputs would collide')
            seen[s] = d
        jobs.append((d, stems))
    print(f'{len(seen)} XML files -> {args.out_dir}')
    policy = SkipPolicy('skip' if args.skip_invalid else 'raise')
    bar = ProgressBar(len(seen), file=sys.stdout)
    stats = Counter()
    with staged_output(args.out_dir) as stage:   # all or nothing
        for d, stems in jobs:
            stats.update(xml_to_dota_dir(
                d, stage, read_fair1m_xml, tree, stems=stems, progress=bar.update,
                underscores=args.underscores, precision=args.precision, on_invalid=policy))
    print('\n' + ', '.join(f'{k}={v}' for k, v in sorted(stats.items())))
    if policy.counts:
        print(policy.summary(args.out_dir))
    return stats


if __name__ == '__main__':
    main()
