"""Time per training iteration and peak memory: baseline, + decoupling, + decoupling + BHCL.

The three synthetic smoke models (ResNet-18, 64 channels, 30 queries, 2
stages) run forward + backward + AdamW step on the same batch of 4 synthetic
images (256 px), generated on the fly. Prints median milliseconds per
iteration, peak memory and the ratios to the baseline (target: decoupling +
BHCL <= 1.25x the baseline's time).

    python benchmarks/train_step.py [--device cuda] [--iters 20] [--batch 4]
    python benchmarks/train_step.py --paper [--size 1024] [--iters 3]
    python benchmarks/train_step.py --mutdet [--iters 20] [--objects 24]
    python benchmarks/train_step.py --rhino [--paper --size 1024 --iters 3]
    python benchmarks/train_step.py --grid-rows '+decoupling+BHCL, one view' \
        '+decoupling+BHCL, CQ-DINO head, one view' [--data-root work_dirs/grid/data-hierarchical/]

``--rhino`` times the RHINO rows instead (RHINO, + decoupling, + decoupling + BHCL),
as ratios to RHINO (target: <= 1.3x); with ``--paper`` the R50 configs.

``--mutdet`` times a MutDet pre-training step (plain and enhanced passes,
alignment losses; configs/mutdet synthetic config, trainable backbone) against
the plain training step of the same decoupled model, on the same images with
``--objects`` pseudo-boxes each (the classical proposal generator finds about
24 per image on the synthetic data) and random 256-d object embeddings.

``--grid-rows`` times rows of ``benchmarks/synthetic_ablation.py`` as its grid trains them
(the row's config and overrides on the hierarchical task's tree, 128 px, 4 crops per step)
on the first ``--batch`` training images of that task (``--data-root``: the grid's
generated task; without it the task is generated into a temporary directory), as ratios to
the first row: e.g. CQ-DINO's classifier against the linear one.

``--paper`` times the paper's models instead (ResNet-50, 300 queries, 2 stages,
oriented attention 64 x 32, ShipRSImageNet tree) on 2 random images of
``--size`` px with 8 random ground-truth boxes each.

Peak memory is the high-water mark of tensor bytes allocated during one
iteration (CUDA: ``max_memory_allocated``; CPU: tracked per tensor storage).
"""
import argparse
import copy
import os.path as osp
import statistics
import sys
import tempfile
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'benchmarks'))
from hcl_loss_speed import _LiveTensorBytes  # noqa: E402

MUTDET = 'mutdet-pretrain_orientedformer-r18_1xb4-12e_synthetic.py'
RHINO_VARIANTS = {
    'RHINO': 'rhino_r18_1xb4-12e_synthetic.py',
    '+decoupling': 'rhino-decoupled_r18_1xb4-12e_synthetic.py',
    '+decoupling+BHCL': 'bhcl-rhino-decoupled_r18_1xb2-12e_synthetic.py',
}
RHINO_PAPER_VARIANTS = {
    'RHINO': 'configs/rhino/rhino_r50_4xb2-36e_shiprs.py',
    '+decoupling': 'configs/rhino/rhino-decoupled_r50_4xb2-36e_shiprs.py',
    '+decoupling+BHCL': 'configs/rhino/bhcl-rhino-decoupled_r50_4xb2-36e_shiprs.py',
}
PAPER_VARIANTS = {
    'baseline': 'configs/orientedformer/orientedformer_r50_4xb2-72e_shiprs.py',
    '+decoupling': 'configs/orientedformer/orientedformer-decoupled_r50_4xb2-72e_shiprs.py',
    '+decoupling+BHCL': 'configs/bhcl/bhcl-decoupled_orientedformer-r50_4xb2-72e_shiprs.py',
}
VARIANTS = {
    'baseline': 'orientedformer_r18_1xb4-12e_synthetic.py',
    '+decoupling': 'orientedformer-decoupled_r18_1xb4-12e_synthetic.py',
    '+decoupling+BHCL': 'bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py',
}


def first_samples(ds_cfg, batch):
    """The first ``batch`` samples of the dataset ``ds_cfg``, collated (seeded transforms)."""
    from mmengine.dataset import pseudo_collate
    from mmrotate.registry import DATASETS
    dataset = DATASETS.build(ds_cfg)
    torch.manual_seed(0)
    return pseudo_collate([dataset[i] for i in range(batch)])


def smoke_batch(data_root, batch):
    """The first ``batch`` training samples of the baseline smoke config (one view each)."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'synthetic', VARIANTS['baseline']))
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.data_root = data_root
    return first_samples(ds_cfg, batch)


def build_model(config, device):
    """The model of ``config`` (a config file, or a loaded config)."""
    from mmengine.config import Config
    from mmrotate.registry import MODELS
    torch.manual_seed(0)
    cfg = copy.deepcopy((Config.fromfile(config) if isinstance(config, str) else config).model)
    cfg.backbone.init_cfg = None
    model = MODELS.build(cfg).to(device)
    model.init_weights()
    if hasattr(model, 'set_epoch'):
        model.set_epoch(100)  # BHCL past its warm-up: balanced loss with prototypes
    model.train()
    return model


def pseudo_labelled(data, num_objects, num_classes, dim=256, seed=0):
    """(inputs, samples) with ``num_objects`` random rotated boxes per image, random
    pseudo-classes and unit object embeddings (what the pre-training loader packs)."""
    from mmengine.structures import InstanceData
    from mmrotate.structures.bbox import RotatedBoxes
    g = torch.Generator().manual_seed(seed)
    samples = copy.deepcopy(data['data_samples'])
    for s in samples:
        h, w = s.metainfo['img_shape'][:2]
        n = num_objects
        boxes = torch.stack([torch.rand(n, generator=g) * w, torch.rand(n, generator=g) * h,
                             8 + torch.rand(n, generator=g) * w / 4,
                             8 + torch.rand(n, generator=g) * h / 4,
                             (torch.rand(n, generator=g) - 0.5) * 3.14], dim=1)
        dev = data['inputs'].device
        s.gt_instances = InstanceData(
            bboxes=RotatedBoxes(boxes.to(dev)),
            labels=torch.randint(0, num_classes, (n, ), generator=g).to(dev),
            embeddings=torch.nn.functional.normalize(torch.randn(n, dim, generator=g),
                                                     dim=1).to(dev))
    return data['inputs'], samples


def grid_rows(rows, data_root, batch):
    """``{row: config}`` of ablation rows as the grid prepares them (hierarchical tree and
    task) and a batch of the first ``batch`` training images of the task at ``data_root``."""
    import bhcl.datasets  # noqa: F401
    from mmengine.registry import init_default_scope

    from bhcl.datasets.synthetic import SyntheticConfig
    import synthetic_ablation as abl
    init_default_scope('mmrotate')
    tree = abl.task_tree('hierarchical')
    task = SyntheticConfig.preset('hierarchical')   # the grid's images: count and size
    cfgs = {}
    with tempfile.TemporaryDirectory() as work:
        for name in rows:
            config, overrides, options = abl.row(name)
            if abl.files_used(name):
                raise ValueError(f'--grid-rows: row {name!r} reads a file '
                                 f'({", ".join(abl.files_used(name))}); time rows without one')
            cfg, _ = abl.prepare_config(osp.join(abl.CFG_DIR, config), overrides, data_root,
                                        work, 0, dict(head=[], tail=[]), 800,
                                        task.num_train, 0, task.img_size, options=options,
                                        label_tree=tree)
            if cfg.train_dataloader.dataset.type == 'MultiViewDataset':
                raise ValueError(f'--grid-rows: row {name!r} samples two views per image; '
                                 'time the one-view rows (the same crops per step)')
            cfgs[name] = cfg
    ds_cfg = copy.deepcopy(next(iter(cfgs.values())).train_dataloader.dataset)
    return cfgs, first_samples(ds_cfg, batch)


def run_variant(config, data_batch, device, iters):
    model = build_model(config, device)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if isinstance(data_batch, tuple):  # already (inputs, data_samples)
        data = dict(inputs=data_batch[0], data_samples=data_batch[1])
    else:
        data = model.data_preprocessor(data_batch, training=True)

    def step():
        losses = model.loss(data['inputs'], copy.deepcopy(data['data_samples']))
        optim.zero_grad()
        sum(v for k, v in losses.items() if 'loss' in k).backward()
        optim.step()

    times = []
    warm = 1 if iters < 5 else 2
    for _ in range(iters + warm):  # warm-up iterations
        if device.type == 'cuda':
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - start) / 2**20
    else:
        with _LiveTensorBytes() as tracker:
            step()
        peak = tracker.peak / 2**20
    return statistics.median(times[warm:]), peak


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--paper', action='store_true', help="the paper's R50 models")
    parser.add_argument('--size', type=int, default=1024, help='image size with --paper')
    parser.add_argument('--rhino', action='store_true', help='the RHINO rows')
    parser.add_argument('--mutdet', action='store_true',
                        help='MutDet pre-training step against a plain training step')
    parser.add_argument('--grid-rows', nargs='+', default=None, metavar='ROW',
                        help='rows of benchmarks/synthetic_ablation.py, as its grid trains them '
                        '(ratios to the first)')
    parser.add_argument('--data-root', default=None,
                        help="with --grid-rows: the grid's hierarchical task (default: "
                        'generated into a temporary directory)')
    parser.add_argument('--objects', type=int, default=24,
                        help='pseudo-boxes per image with --mutdet')
    args = parser.parse_args(argv)
    import bhcl  # noqa: F401
    import bhcl.models.detectors  # noqa: F401
    import bhcl.models.losses  # noqa: F401
    from mmengine.registry import init_default_scope

    from bhcl.datasets.synthetic import SyntheticConfig, generate_synthetic_dataset
    init_default_scope('mmrotate')
    device = torch.device(args.device)
    rows = {}
    if args.grid_rows:
        with tempfile.TemporaryDirectory() as tmp:
            data_root = args.data_root
            if data_root is None:
                import synthetic_ablation as abl
                data_root = abl.bench_dataset(tmp, 'hierarchical')[0]
            cfgs, data_batch = grid_rows(args.grid_rows, data_root, args.batch)
        size = SyntheticConfig.preset('hierarchical').img_size
        print(f'device {device}, grid rows on the hierarchical task, batch {args.batch} images '
              f'of {size} px, {args.iters} iterations, torch threads {torch.get_num_threads()}')
        for name, cfg in cfgs.items():
            rows[name] = run_variant(cfg, data_batch, device, args.iters)
    elif args.rhino:
        if args.paper:
            from published_speed import make_batch
            from mmengine.config import Config

            from bhcl.structures import LabelTree
            tree = Config.fromfile(osp.join(ROOT, RHINO_PAPER_VARIANTS['RHINO'])).model.label_tree
            data = make_batch(args.size, list(LabelTree.from_config(tree).leaf_ids), device)
            variants = {k: osp.join(ROOT, v) for k, v in RHINO_PAPER_VARIANTS.items()}
            print(f'device {device}, RHINO R50 models, 2 images of {args.size} px')
        else:
            tree = osp.join(ROOT, 'configs', '_base_', 'datasets', 'synthetic_label_tree.py')
            import runpy
            with tempfile.TemporaryDirectory() as tmp:
                generate_synthetic_dataset(tmp, runpy.run_path(tree)['label_tree'],
                                           SyntheticConfig(num_train=args.batch, num_val=1,
                                                           seed=0))
                data = smoke_batch(tmp + '/', args.batch)
            variants = {k: osp.join(ROOT, 'configs', 'synthetic', v)
                        for k, v in RHINO_VARIANTS.items()}
            print(f'device {device}, RHINO smoke models, batch {args.batch} images of 256 px')
        print(f'{args.iters} iterations, torch threads {torch.get_num_threads()}')
        for name, cfg in variants.items():
            rows[name] = run_variant(cfg, data, device, args.iters)
    elif args.paper:
        from published_speed import make_batch
        from mmengine.config import Config
        tree = Config.fromfile(osp.join(ROOT, PAPER_VARIANTS['baseline'])).model.label_tree
        from bhcl.structures import LabelTree
        data = make_batch(args.size, list(LabelTree.from_config(tree).leaf_ids), device)
        print(f'device {device}, paper models, 2 images of {args.size} px, {args.iters} '
              f'iterations, torch threads {torch.get_num_threads()}')
        for name, cfg in PAPER_VARIANTS.items():
            rows[name] = run_variant(osp.join(ROOT, cfg), data, device, args.iters)
    elif args.mutdet:
        tree = osp.join(ROOT, 'configs', '_base_', 'datasets', 'synthetic_label_tree.py')
        import runpy
        with tempfile.TemporaryDirectory() as tmp:
            generate_synthetic_dataset(tmp, runpy.run_path(tree)['label_tree'],
                                       SyntheticConfig(num_train=args.batch, num_val=1, seed=0))
            data_batch = smoke_batch(tmp + '/', args.batch)
        pre_cfg = osp.join(ROOT, 'configs', 'mutdet', MUTDET)
        from mmengine.config import Config
        k = len(Config.fromfile(pre_cfg).model.label_tree['paths'])
        data = build_model(pre_cfg, device).data_preprocessor(data_batch, training=True)
        data = pseudo_labelled(data, args.objects, k)
        print(f'device {device}, batch {args.batch} images of 256 px, {args.objects} '
              f'pseudo-boxes each, {args.iters} iterations, torch threads '
              f'{torch.get_num_threads()}')
        rows['plain training step'] = run_variant(
            osp.join(ROOT, 'configs', 'synthetic', VARIANTS['+decoupling']), data, device,
            args.iters)
        rows['MutDet pre-training step'] = run_variant(pre_cfg, data, device, args.iters)
    else:
        tree = osp.join(ROOT, 'configs', '_base_', 'datasets', 'synthetic_label_tree.py')
        import runpy
        with tempfile.TemporaryDirectory() as tmp:
            generate_synthetic_dataset(tmp, runpy.run_path(tree)['label_tree'],
                                       SyntheticConfig(num_train=args.batch, num_val=1, seed=0))
            data_batch = smoke_batch(tmp + '/', args.batch)
        print(f'device {device}, batch {args.batch} images of 256 px, {args.iters} iterations, '
              f'torch threads {torch.get_num_threads()}')
        for name, cfg in VARIANTS.items():
            rows[name] = run_variant(osp.join(ROOT, 'configs', 'synthetic', cfg), data_batch,
                                     device, args.iters)
    base_t, base_m = next(iter(rows.values()))
    width = max(len(n) for n in rows) + 1
    print(f'{"variant":<{width}} {"ms/iter":>9} {"x time":>7} {"peak MiB":>9} {"x mem":>6}')
    for name, (t, m) in rows.items():
        print(f'{name:<{width}} {t:9.1f} {t / base_t:7.2f} {m:9.1f} {m / base_m:6.2f}')
    if '+decoupling+BHCL' in rows:
        overhead = rows['+decoupling+BHCL'][0] / base_t - 1
        target = 30 if args.rhino else 25
        print(f'decoupling + BHCL time overhead: {overhead:+.1%} (target <= +{target}%)')


if __name__ == '__main__':
    main()
