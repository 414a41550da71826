"""Ablation on the synthetic long-tailed dataset: baseline, + decoupling, + HCL, + BHCL.

Generates the synthetic dataset (imbalance 30 between the most and least
frequent leaf, "Other" objects on internal nodes), trains each smoke config
for the same number of epochs with 2 seeds, evaluates on the validation split
and prints every metric averaged over the seeds (leaf mAP, per-level mAP and
tail-class figures as the metric reports them), with the spread and the
training time.

    python benchmarks/synthetic_ablation.py [--epochs 12] [--seeds 0 1]
        [--num-train 48] [--metric HierarchicalDOTAMetric] [--work-dir DIR]

HCL / BHCL train on two views of each image (2 images x 2 views per batch,
the baseline 4 images), so per epoch they see the same images but run twice
the iterations, as in the paper's setting.
"""
import argparse
import os.path as osp
import runpy
import statistics
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

VARIANTS = {
    'baseline': 'orientedformer_r18_1xb4-12e_synthetic.py',
    '+decoupling': 'orientedformer-decoupled_r18_1xb4-12e_synthetic.py',
    '+decoupling+HCL': 'hcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py',
    '+decoupling+BHCL': 'bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py',
}


def train_and_test(config, data_root, work_dir, epochs, seed, metric, class_groups=None):
    """Train ``config`` on ``data_root`` for ``epochs``, return (metrics, seconds)."""
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config.fromfile(config)
    train_ds = cfg.train_dataloader.dataset
    (train_ds.dataset if train_ds.type == 'MultiViewDataset' else train_ds).data_root = data_root
    cfg.test_dataloader.dataset.data_root = data_root
    cfg.test_evaluator = dict(type=metric)
    if metric != 'DOTAMetric':
        cfg.test_evaluator['label_tree'] = cfg.label_tree
        cfg.test_evaluator['class_groups'] = class_groups or {}
    # evaluate once, after training (runner.test below)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.train_cfg.max_epochs = epochs
    cfg.param_scheduler[-1].milestones = [int(epochs * 0.75)]
    cfg.param_scheduler[-1].end = epochs
    cfg.randomness = dict(seed=seed)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=epochs + 1)
    cfg.default_hooks.logger.interval = 50
    cfg.work_dir = work_dir
    runner = Runner.from_cfg(cfg)
    t0 = time.perf_counter()
    runner.train()
    seconds = time.perf_counter() - t0
    return runner.test(), seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--epochs', type=int, default=12)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    parser.add_argument('--num-train', type=int, default=48)
    parser.add_argument('--num-val', type=int, default=16)
    parser.add_argument('--metric', default='HierarchicalDOTAMetric')
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS))
    parser.add_argument('--work-dir', default=None)
    args = parser.parse_args(argv)
    import bhcl  # noqa: F401
    from bhcl.datasets.synthetic import SyntheticConfig, generate_synthetic_dataset
    tree = runpy.run_path(osp.join(ROOT, 'configs', '_base_', 'datasets',
                                   'synthetic_label_tree.py'))['label_tree']
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or tmp
        data_root = osp.join(work, 'data') + '/'
        meta = generate_synthetic_dataset(data_root, tree, SyntheticConfig(
            num_train=args.num_train, num_val=args.num_val, seed=123))
        groups = head_tail_groups(tree, meta['counts']['train'])
        print(f"tail leaves (rarest third in train): {groups['tail']}", flush=True)
        results = {}
        for seed in args.seeds:
            for name in args.variants:
                config = osp.join(ROOT, 'configs', 'synthetic', VARIANTS[name])
                metrics, seconds = train_and_test(config, data_root,
                                                  osp.join(work, f'{name}-{seed}'),
                                                  args.epochs, seed, args.metric, groups)
                results.setdefault(name, []).append((metrics, seconds))
                print(f'[{name} seed {seed}] {seconds:.0f}s {metrics}', flush=True)
    report(results, args)


def head_tail_groups(tree_cfg, train_counts):
    """``{'head': [...], 'tail': [...]}``: the most and least frequent third
    of the leaves by training-object count."""
    from bhcl.structures import LabelTree
    tree = LabelTree.from_config(tree_cfg)
    leaves = sorted((tree.classes[k] for k in tree.leaf_ids),
                    key=lambda n: (train_counts.get(n, 0), n))
    third = max(len(leaves) // 3, 1)
    return dict(tail=leaves[:third], head=leaves[-third:])


def report(results, args):
    keys = sorted({k for runs in results.values() for m, _ in runs for k, v in m.items()
                   if isinstance(v, (int, float))})
    print(f'\nsynthetic ablation: {args.num_train} train / {args.num_val} val images, '
          f'{args.epochs} epochs, seeds {args.seeds}, metric {args.metric}')
    print('mean (min..max over seeds)')
    for name, runs in results.items():
        print(f'{name}  (train {statistics.mean(s for _, s in runs):.0f}s per run)')
        for k in keys:
            vals = [m[k] for m, _ in runs if k in m]
            if vals:
                print(f'    {k:<40} {statistics.mean(vals):.4f} '
                      f'({min(vals):.4f}..{max(vals):.4f})')


if __name__ == '__main__':
    main()
