"""Generate the synthetic hierarchical oriented dataset (DOTA format).

    python tools/generate_synthetic_dataset.py [--out data/synthetic]
        [--preset small|medium|large|bench|hierarchical] [--seed 0] [--num-train N] [--num-val N]
        [--tree configs/_base_/datasets/synthetic_label_tree.py]

Deterministic by seed; an existing dataset made with the same settings is kept.
``--preset hierarchical`` (node-specific cues, exact long-tailed leaf counts) uses
``configs/_base_/datasets/synthetic_hierarchical_label_tree.py`` unless ``--tree`` is given.
"""
import argparse
import os.path as osp

from mmengine.config import Config

from bhcl.datasets.synthetic import SyntheticConfig, generate_synthetic_dataset

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TREES = {'hierarchical': 'synthetic_hierarchical_label_tree.py'}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--out', default='data/synthetic', help='output folder')
    parser.add_argument('--preset', default='small',
                        choices=['small', 'medium', 'large', 'bench', 'hierarchical'],
                        help='dataset size (small: seconds per CPU epoch; bench: the '
                             'benchmarks/synthetic_ablation.py task; hierarchical: node-specific '
                             'cues, 4 levels, head/tail 100x)')
    parser.add_argument('--tree', default=None,
                        help='config file defining label_tree (default: '
                             'synthetic_hierarchical_label_tree.py for --preset hierarchical, '
                             'synthetic_label_tree.py otherwise)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-train', type=int)
    parser.add_argument('--num-val', type=int)
    parser.add_argument('--img-size', type=int)
    parser.add_argument('--overwrite', action='store_true')
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in dict(num_train=args.num_train, num_val=args.num_val,
                                       img_size=args.img_size).items() if v is not None}
    cfg = SyntheticConfig.preset(args.preset, seed=args.seed, **overrides)
    tree_file = args.tree or osp.join(ROOT, 'configs', '_base_', 'datasets', TREES.get(
        args.preset, 'synthetic_label_tree.py'))
    tree = Config.fromfile(tree_file).label_tree
    meta = generate_synthetic_dataset(args.out, tree, cfg, overwrite=args.overwrite)
    for split, counts in meta['counts'].items():
        total = sum(counts.values())
        head, tail = max(counts.values()), min(counts.values())
        print(f'{split}: {total} objects in {cfg.num_train if split == "train" else cfg.num_val} '
              f'images, {len(counts)} annotation names, most/least frequent {head}/{tail}')
    print(f'dataset at {args.out}')


if __name__ == '__main__':
    main()
