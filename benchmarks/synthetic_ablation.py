"""The paper's ablation on the calibrated synthetic long-tailed task, with seeds and intervals.

Rows: baseline, + decoupling, + decoupling with two views of half as many
images and no contrastive loss, + decoupling + HCL, + decoupling + BHCL (EMA
prototype bank), the BHCL prototype variants (no bank, classifier weights,
learnable), BHCL with the category-query classifier instead of the linear one,
mmrotate's rotated RetinaNet (ResNet-18 from scratch) as a reference for
where the detector stands against a standard one, and the RHINO column (RHINO,
+ decoupling, its two-view control, + HCL, + BHCL on the CPU-sized rotated
DINO). One optional row, '+decoupling, SimCLR backbone', fine-tunes that model
from a SimCLR-pre-trained backbone
(``--simclr-backbone FILE``, docs/results.md gives the whole sequence), and
three the MutDet pre-training experiment: '+decoupling, 10% labels' (the first
10% of the training images, same iterations), '+decoupling, MutDet init' and
'+decoupling, MutDet init, 10% labels' (``--mutdet-init FILE``, a converted
pre-training checkpoint; docs/pretraining.md), with '+decoupling, compute-matched scratch'
(``--matched-iters N``: scratch given the pre-training's compute as extra iterations;
benchmarks/pretraining_study.py measures N and runs the three arms). Two optional rows put
CQ-DINO's classifier (``CQDINOClassifier``: fusion, top-K selection, category attention) in
place of the linear one:
'BHCL, CQ-DINO head' (two views, beside 'BHCL, category-query head') and
'+decoupling+BHCL, CQ-DINO head, one view', paired by seed with '+decoupling+BHCL, one view' of
the grid (``--grid --variants ... --reference '+decoupling+BHCL, one view'``).

    python benchmarks/synthetic_ablation.py [--seeds 0 1 2] [--jobs 2]
        [--variants baseline ...] [--iters 800] [--lr 1e-3] [--work-dir DIR]
        [--out-dir DIR] [--reuse RESULTS_JSON] [--task bench|hierarchical]
        [--reference ROW] [--pair ROW REFERENCE ...]

``--pair ROW REFERENCE`` (repeatable) adds a paired table of two of the rows, neither of which
need be ``--reference`` (the pre-training study pairs MutDet init with compute-matched
scratch this way).

The loss study of issue 30 (``--grid``): on the ``hierarchical`` task, views
{1, 2} x loss {none, HCL, BHCL} on the decoupled OrientedFormer, its
non-decoupled one-view baseline, and RHINO's non-decoupled baseline, one-view
none / HCL / BHCL and two-view BHCL rows, 8 seeds; each row is compared seed by seed (paired t) with
the one-view decoupled arm of its detector. Seed s gives the arms of a detector
the same initial weights and, at the same views, the same batches and crops:

    python benchmarks/synthetic_ablation.py --grid --jobs 2 --work-dir work_dirs/grid

The task is ``SyntheticConfig.preset('bench')``: 800 training images of
128 x 128 (long-tailed leaves, head/tail training frequency 47x, "Other"
objects) and 300 validation images whose leaves are drawn uniformly, so that
every class has about the same number of test objects (90 to 110). Head and
tail groups are the most and least frequent third of the leaves in training.

A run is 6 to 24 minutes of one core (two runs at once on two cores; the
two-core step alone is 0.61 s, about 9 minutes a run); the default rows
(15 rows x 3 seeds) take about 5 hours on two cores. Finished runs are
kept in ``--work-dir`` and skipped when the script is started again;
``--reuse`` takes them from an earlier ``results.json`` instead.

Equal budget: every run makes the same number of iterations of 4 training
crops (``--iters``). The single-view rows see 4 images per iteration; the
two-view rows (HCL, BHCL) see 2 images x 2 views, so they run half the epochs
over the same data: the same compute and the same crops seen. (Counting
epochs instead would give the two-view rows twice the iterations.)

For each row the script prints the mean over seeds, the sample standard
deviation and a 95% Student-t interval of the mean, for leaf mAP / AP50,
per-level AP50 and head / tail AP50, plus the bootstrap standard error of one
run's tail AP50 over the validation images (the test-set part of the noise).
Rows are compared with ``--reference`` seed by seed (paired-t 95% intervals of
the differences and the design's minimal detectable effect,
``bhcl/utils/stats.py``), and every pair of rows by Welch's test. It writes
``results.json``, ``results.md`` and ``ablation.png`` to ``--out-dir``.
``--jobs 2`` runs two trainings at once with one thread each.
"""
import argparse
import hashlib
import json
import math
import os
import os.path as osp
import runpy
import statistics
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
CFG_DIR = osp.join(ROOT, 'configs', 'synthetic')

BASELINE = 'orientedformer_r18_1xb4-12e_synthetic.py'
DECOUPLED = 'orientedformer-decoupled_r18_1xb4-12e_synthetic.py'
HCL = 'hcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py'
BHCL = 'bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py'
CQDINO = 'cqdino-bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py'
SIMCLR_PLACEHOLDER = '<--simclr-backbone>'
MUTDET_PLACEHOLDER = '<--mutdet-init>'
# placeholder in a row's settings -> the command-line option (argparse dest) giving the file
FILE_OPTIONS = {SIMCLR_PLACEHOLDER: 'simclr_backbone', MUTDET_PLACEHOLDER: 'mutdet_init'}
# name -> (config, model overrides[, run options: 'load_from', 'train_fraction',
# 'views', 'published_switches', 'matched_compute' (the row trains --matched-iters),
# 'topk_share' (a CQ-DINO selection keeps the config's share of the run's tree)])
VARIANTS = {
    'baseline': (BASELINE, {}),
    '+decoupling': (DECOUPLED, {}),
    # the two-view wrapper without the contrastive loss: separates the effect of
    # sampling two views of half as many images from that of HCL / BHCL
    '+decoupling, two views': (HCL, {'loss_hcl': None}),
    '+decoupling+HCL': (HCL, {}),
    '+decoupling+BHCL': (BHCL, {}),
    'BHCL, no prototype bank': (BHCL, {'loss_hcl.prototype_bank': None}),
    'BHCL, classifier-weight bank': (
        BHCL, {'loss_hcl.prototype_bank': dict(type='ClassifierPrototypeBank')}),
    'BHCL, learnable bank': (
        BHCL, {'loss_hcl.prototype_bank': dict(type='LearnablePrototypeBank')}),
    'BHCL, category-query head': ('cq-bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py',
                                  {}),
    # CQ-DINO (issue 29): its classifier in place of the linear one, paired with the
    # linear rows of the same views
    'BHCL, CQ-DINO head': (CQDINO, {}),
    # On the grid's 45-node tree the config's top 8 (half of the 16 bench nodes) would be
    # fewer than the nodes one image annotates (ancestors included: 11 on average, up to
    # 18), so the selection keeps the config's share of the run's tree, half: 22 of 45 on
    # the grid, 8 of 16 on the bench task (the authors pick K per vocabulary: 100 of
    # V3Det's 13,204 nodes, 30 of COCO's 80 classes).
    '+decoupling+BHCL, CQ-DINO head, one view': (
        CQDINO, {}, dict(views=1, published_switches=True, topk_share=True)),
    'rotated RetinaNet (reference)': ('rotated-retinanet_r18_fpn_1xb4-12e_synthetic.py', {}),
    # the paper's second column: RHINO (rotated DINO) and its three ablation rows
    'RHINO': ('rhino_r18_1xb4-12e_synthetic.py', {}),
    'RHINO +decoupling': ('rhino-decoupled_r18_1xb4-12e_synthetic.py', {}),
    'RHINO +decoupling, two views': ('hcl-rhino-decoupled_r18_1xb2-12e_synthetic.py',
                                     {'loss_hcl': None}),
    'RHINO +decoupling+HCL': ('hcl-rhino-decoupled_r18_1xb2-12e_synthetic.py', {}),
    'RHINO +decoupling+BHCL': ('bhcl-rhino-decoupled_r18_1xb2-12e_synthetic.py', {}),
    # one view per image, as the published code trains, with its switches (a class
    # met once at a level left out of the plain-form denominators; BHCL: subtree
    # prototypes, bank rows used before their class is seen): 4 images per step
    '+decoupling+HCL, one view': (HCL, {}, dict(views=1, published_switches=True)),
    '+decoupling+BHCL, one view': (BHCL, {}, dict(views=1, published_switches=True)),
    'RHINO +decoupling+HCL, one view': ('hcl-rhino-decoupled_r18_1xb2-12e_synthetic.py', {},
                                        dict(views=1, published_switches=True)),
    'RHINO +decoupling+BHCL, one view': ('bhcl-rhino-decoupled_r18_1xb2-12e_synthetic.py', {},
                                         dict(views=1, published_switches=True)),
    # '+decoupling' fine-tuned from a SimCLR backbone (--simclr-backbone, the
    # output of tools/model_converters/simclr_to_backbone.py): same budget
    '+decoupling, SimCLR backbone': (DECOUPLED, {'backbone.init_cfg': dict(
        type='Pretrained', checkpoint=SIMCLR_PLACEHOLDER)}),
    # MutDet pre-training (docs/pretraining.md) against training from scratch, with all
    # and with 10% of the labelled training images, at the same fine-tuning budget
    '+decoupling, MutDet init': (DECOUPLED, {}, dict(load_from=MUTDET_PLACEHOLDER)),
    '+decoupling, 10% labels': (DECOUPLED, {}, dict(train_fraction=0.1)),
    '+decoupling, MutDet init, 10% labels': (
        DECOUPLED, {}, dict(load_from=MUTDET_PLACEHOLDER, train_fraction=0.1)),
    # scratch given the pre-training's compute as extra supervised iterations
    # (--matched-iters, measured by benchmarks/pretraining_study.py)
    '+decoupling, compute-matched scratch': (DECOUPLED, {}, dict(matched_compute=True)),
}
# The loss study (--grid, issue 30) on the 'hierarchical' task: views {1, 2} x loss
# {none, HCL, BHCL} on the decoupled OrientedFormer, the non-decoupled one-view
# baseline, and RHINO's non-decoupled baseline, one-view none / HCL / BHCL and two-view
# BHCL rows; every row is compared seed by seed with the one-view decoupled arm of its
# detector.
GRID = ('baseline', '+decoupling', '+decoupling+HCL, one view', '+decoupling+BHCL, one view',
        '+decoupling, two views', '+decoupling+HCL', '+decoupling+BHCL',
        'RHINO', 'RHINO +decoupling', 'RHINO +decoupling+HCL, one view',
        'RHINO +decoupling+BHCL, one view', 'RHINO +decoupling+BHCL')
RHINO_REFERENCE = 'RHINO +decoupling'


def detector(variant):
    """The detector a row trains: the RHINO rows are named 'RHINO ...'."""
    return 'RHINO' if variant.startswith('RHINO') else 'OrientedFormer'


TASKS = {'bench': 'synthetic_label_tree.py', 'hierarchical': 'synthetic_hierarchical_label_tree.py'}
# rows not run unless asked for with --variants (or --grid)
OPTIONAL = ('+decoupling, SimCLR backbone', '+decoupling, MutDet init',
            '+decoupling, 10% labels', '+decoupling, MutDet init, 10% labels',
            '+decoupling+HCL, one view', '+decoupling+BHCL, one view',
            'RHINO +decoupling+HCL, one view', 'RHINO +decoupling+BHCL, one view',
            'BHCL, CQ-DINO head', '+decoupling+BHCL, CQ-DINO head, one view',
            '+decoupling, compute-matched scratch')
COLUMNS = [('leaf_mAP', 'leaf mAP'), ('leaf_AP50', 'leaf AP50'), ('lv0_AP50', 'lv0 AP50'),
           ('lv1_AP50', 'lv1 AP50'), ('lv2_AP50', 'lv2 AP50'), ('head_AP50', 'head AP50'),
           ('tail_AP50', 'tail AP50')]


def bench_dataset(work_dir, task='bench'):
    """Generate (or reuse) the task (``SyntheticConfig.preset(task)`` on its tree);
    return (data_root, label tree config, head/tail groups, meta)."""
    import bhcl  # noqa: F401
    from bhcl.datasets.synthetic import SyntheticConfig, generate_synthetic_dataset
    tree = task_tree(task)
    data_root = osp.join(work_dir, 'data' if task == 'bench' else f'data-{task}') + '/'
    meta = generate_synthetic_dataset(data_root, tree, SyntheticConfig.preset(task))
    return data_root, tree, head_tail_groups(tree, meta['counts']['train']), meta


def data_digest(data_root):
    """sha256 of the task's files (relative path and bytes, in sorted order). Runs
    that record the same digest trained and were tested on the same images and labels,
    whichever machine generated them."""
    digest = hashlib.sha256()
    for split in ('train', 'val'):
        base = osp.join(data_root, split)
        names = sorted(osp.relpath(osp.join(d, f), data_root).replace(os.sep, '/')
                       for d, _, files in os.walk(base) for f in files)
        for name in names:
            digest.update(name.encode() + b'\0')
            with open(osp.join(data_root, name), 'rb') as f:
                digest.update(f.read())
    return digest.hexdigest()


def same_data(res, digest):
    """Whether a finished run trained on the data of ``digest`` (a run recorded before
    the digest was, or an unknown ``digest``, is taken as such)."""
    return digest is None or res.get('data_sha256', digest) == digest


def task_tree(task):
    """The ``label_tree`` config dict of a task."""
    path = osp.join(ROOT, 'configs', '_base_', 'datasets', TASKS[task])
    return runpy.run_path(path)['label_tree']


def head_tail_groups(tree_cfg, train_counts):
    """``{'head': [...], 'tail': [...]}``: the most and least frequent third
    of the leaves by training-object count."""
    from bhcl.structures import LabelTree
    tree = LabelTree.from_config(tree_cfg)
    leaves = sorted((tree.classes[k] for k in tree.leaf_ids),
                    key=lambda n: (train_counts.get(n, 0), n))
    third = max(len(leaves) // 3, 1)
    return dict(tail=leaves[:third], head=leaves[-third:])


def _set(cfg_dict, dotted, value):
    keys = dotted.split('.')
    for k in keys[:-1]:
        cfg_dict = cfg_dict[k]
    cfg_dict[keys[-1]] = value


def set_image_scale(cfg, img_size):
    """Resize to the task's own image size (the configs' 256 px would upsample)."""
    ds = cfg.train_dataloader.dataset
    ds = ds.dataset if ds.type == 'MultiViewDataset' else ds
    for pipeline in (ds.pipeline, cfg.test_dataloader.dataset.pipeline):
        for step in pipeline:
            if step.type.endswith('Resize'):
                step.scale = (img_size, img_size)


def row(variant):
    """(config, model overrides, run options) of a row."""
    config, overrides, *options = VARIANTS[variant]
    return config, overrides, (options[0] if options else {})


def files_used(variant):
    """Argparse names of the file options a row needs (``simclr_backbone`` ...)."""
    text = json.dumps(row(variant)[1:])
    return [dest for ph, dest in FILE_OPTIONS.items() if ph in text]


def uses_simclr(variant):
    return 'simclr_backbone' in files_used(variant)


def _fill(value, files):
    """``value`` with every placeholder replaced by its file."""
    text = json.dumps(value)
    for ph, dest in FILE_OPTIONS.items():
        if ph in text:
            text = text.replace(ph, files[dest])
    return json.loads(text)


def train_and_test(config, overrides, data_root, work_dir, seed, groups, iters, num_train,
                   bootstrap, img_size, lr=None, files=None, options=None, label_tree=None):
    """Train ``config`` for ``iters`` iterations of 4 crops and evaluate; return metrics."""
    from mmengine.runner import Runner
    cfg, done_iters = prepare_config(config, overrides, data_root, work_dir, seed, groups,
                                     iters, num_train, bootstrap, img_size, lr, files, options,
                                     label_tree)
    runner = Runner.from_cfg(cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    runner.train()
    train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    metrics = runner.test()
    return dict(metrics={k.split('/')[-1]: v for k, v in metrics.items()},
                train_s=train_s, train_cpu_s=train_cpu_s, total_s=time.perf_counter() - t0,
                epochs=cfg.train_cfg.max_epochs, iters=done_iters)


def prepare_config(config, overrides, data_root, work_dir, seed, groups, iters, num_train,
                   bootstrap, img_size, lr=None, files=None, options=None, label_tree=None):
    """The run's config (overrides, data, tree, schedule, seed) and its iteration count."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    for key, value in overrides.items():
        _set(cfg.model, key, _fill(value, files or {}))
    options = _fill(options or {}, files or {})
    if options.get('load_from'):
        cfg.load_from = options['load_from']
    loader = cfg.train_dataloader
    ds = loader.dataset.dataset if loader.dataset.type == 'MultiViewDataset' else loader.dataset
    if options.get('views') == 1 and loader.dataset.type == 'MultiViewDataset':
        # the same crops per step from one view of twice as many images
        loader.batch_size *= loader.dataset.num_views
        loader.dataset = ds
        loader.pop('collate_fn', None)
    if options.get('published_switches'):
        published_switches(cfg.model)
    views = loader.dataset.get('num_views', 1)
    ds.data_root = cfg.test_dataloader.dataset.data_root = data_root
    if label_tree is not None:
        if options.get('topk_share'):
            keep_topk_share(cfg, label_tree)
        set_label_tree(cfg, label_tree)
    if options.get('train_fraction'):  # the first images of the (shuffled) training set
        num_train = max(1, round(num_train * options['train_fraction']))
        ds.indices = num_train
    set_image_scale(cfg, img_size)
    crops = loader.batch_size * views
    if crops != 4:
        raise ValueError(f'{config}: {crops} crops per iteration; the ablation compares '
                         'configs with 4 (batch_size x num_views)')
    cfg.test_evaluator = dict(type='HierarchicalDOTAMetric', label_tree=cfg.label_tree,
                              class_groups=groups, bootstrap=bootstrap)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    done_iters = scale_schedule(cfg, iters, num_train)
    if lr is not None:
        cfg.optim_wrapper.optimizer.lr = lr
    cfg.randomness = dict(seed=seed)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=10 ** 6)
    cfg.default_hooks.logger.interval = 50
    cfg.visualizer.name = f'ablation-{os.getpid()}'
    cfg.work_dir = work_dir
    return cfg, done_iters


def loss_hcl_cfgs(model_cfg):
    """Every ``loss_hcl`` config in a model config (``model.loss_hcl`` for both
    detectors; the walk also finds one nested deeper)."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == 'loss_hcl' and isinstance(value, dict):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)
    walk(model_cfg)
    return found


def published_switches(model_cfg):
    """The published code's loss behaviour (configs/bhcl): a class met once at a
    level leaves the plain-form denominators; BHCL counts a node's subtree
    prototypes as its instances and uses bank rows before their class is seen."""
    for loss in loss_hcl_cfgs(model_cfg):
        loss['singleton_negatives'] = False
        if loss.get('balance'):
            loss['prototype_scope'] = 'subtree'
            bank = loss.get('prototype_bank')
            if bank and bank.get('type') == 'EMAPrototypeBank':
                bank['hide_unseen'] = False


def keep_topk_share(cfg, label_tree):
    """Scale a category selection's ``topk`` from the config's tree to ``label_tree``,
    keeping its share of the nodes (rounded down, at least 1)."""
    from bhcl.structures import LabelTree
    classifier = cfg.model.get('classifier') or {}
    if 'topk' not in classifier:
        raise ValueError('topk_share: this row\'s model has no classifier.topk to scale')
    old, new = len(LabelTree.from_config(cfg.label_tree)), len(LabelTree.from_config(label_tree))
    classifier.topk = max(1, new * classifier.topk // old)


def set_label_tree(cfg, label_tree):
    """Train and test on another task's tree (model, datasets, evaluator)."""
    cfg.label_tree = label_tree
    if 'label_tree' not in cfg.model:
        raise ValueError('this row\'s model takes no label_tree (rotated RetinaNet); it runs on '
                         'the bench task only')
    cfg.model.label_tree = label_tree
    for loader in (cfg.train_dataloader, cfg.test_dataloader):
        ds = loader.dataset
        ds = ds.dataset if ds.type == 'MultiViewDataset' else ds
        ds.label_tree = label_tree


def scale_schedule(cfg, iters, num_train):
    """Turn ``iters`` iterations into whole epochs of this config's loader;
    the learning-rate steps move to the same fraction of the run, in
    iterations (so one-view and two-view rows decay at the same iteration),
    and an HCL warm-up keeps its share of the schedule. Returns the iterations run."""
    batches = math.ceil(num_train / cfg.train_dataloader.batch_size)
    if iters % batches:
        raise ValueError(f'--iters {iters} is not a whole number of epochs of {batches} '
                         'iterations; use a multiple of every row\'s epoch (400 on the bench '
                         'task) so that all rows run the same iterations')
    epochs = iters // batches
    ratio = epochs / cfg.train_cfg.max_epochs
    total = epochs * batches
    for sched in cfg.param_scheduler:
        if sched.get('by_epoch', True):
            old_end = sched.get('end', cfg.train_cfg.max_epochs)
            sched.update(by_epoch=False, begin=sched.get('begin', 0) * batches,
                         end=round(old_end / cfg.train_cfg.max_epochs * total))
            if 'milestones' in sched:
                sched.milestones = [round(m / cfg.train_cfg.max_epochs * total)
                                    for m in sched.milestones]
    for hcl in loss_hcl_cfgs(cfg.model):   # both detectors, wherever the loss lives
        if hcl.get('warmup_epochs'):
            hcl['warmup_epochs'] = round(hcl['warmup_epochs'] * ratio)
    cfg.train_cfg.max_epochs = epochs
    cfg.train_cfg.val_interval = epochs
    return total


def row_iters(args, variant, required=True):
    """The iterations a row trains: ``--matched-iters`` for the compute-matched
    row, ``--iters`` for every other (None for the former without
    ``--matched-iters`` unless ``required``)."""
    if not row(variant)[2].get('matched_compute'):
        return args.iters
    if not getattr(args, 'matched_iters', None):
        if not required:
            return None
        raise ValueError(f'{variant!r} trains --matched-iters N iterations (--iters plus the '
                         'pre-training\'s compute in training iterations, measured by '
                         'benchmarks/pretraining_study.py); it was not given')
    return args.matched_iters


def run_one(args):
    from bhcl.utils.machine import machine_record
    config, overrides, options = row(args.variant)
    files = {dest: osp.abspath(getattr(args, dest)) for dest in files_used(args.variant)}
    result = train_and_test(osp.join(CFG_DIR, config), overrides, args.data_root, args.run_dir,
                            args.seed, json.loads(args.groups), row_iters(args, args.variant),
                            args.num_train,
                            args.bootstrap, args.img_size, args.lr,
                            files, options,
                            None if args.task == 'bench' else task_tree(args.task))
    result['settings'] = run_settings(args, args.variant)
    result['machine'] = machine_record()   # numerics repeat on one kind of CPU only
    result['data_sha256'] = data_digest(args.data_root)
    with open(osp.join(args.run_dir, 'result.json'), 'w') as f:
        json.dump(result, f)


def run_settings(args, variant):
    """What a finished run must share with this invocation to be reused
    (the bootstrap only adds a standard error, it changes no metric)."""
    settings = dict(iters=row_iters(args, variant, required=False), lr=args.lr)
    if getattr(args, 'task', 'bench') != 'bench':
        settings['task'] = args.task
    for dest in files_used(variant):  # a file the row reads, by name and size
        path = getattr(args, dest)
        if path is not None:  # (only a --report goes without it)
            settings[dest] = [osp.basename(path), osp.getsize(path)]  # as JSON stores it
    return settings


def launch(variant, seed, data_root, groups, num_train, args, threads, reuse, digest=None):
    run_dir = run_path(args.work_dir, variant, seed)
    os.makedirs(run_dir, exist_ok=True)
    done = osp.join(run_dir, 'result.json')
    earlier = reuse.get(variant, {}).get(str(seed))
    if not args.rerun and not osp.exists(done) and earlier is not None:
        with open(done, 'w') as f:  # a run of an earlier invocation (--reuse)
            json.dump(earlier, f)
    if osp.exists(done) and not args.rerun:
        with open(done) as f:
            res = json.load(f)
        settings, expected = res.get('settings'), run_settings(args, variant)
        if settings == expected and same_data(res, digest):
            return None, run_dir
        if settings != expected:
            print(f'[{variant} seed {seed}] finished run has settings {settings}, not '
                  f'{expected}: running again', flush=True)
        else:
            print(f"[{variant} seed {seed}] finished run trained on other data (sha256 "
                  f"{res['data_sha256']}, here {digest}): running again", flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, osp.abspath(__file__), '--one', variant, '--seed', str(seed),
           '--data-root', data_root, '--run-dir', run_dir, '--groups', json.dumps(groups),
           '--iters', str(args.iters), '--num-train', str(num_train),
           '--bootstrap', str(args.bootstrap), '--img-size', str(args.img_size),
           '--task', args.task] + (
               ['--lr', str(args.lr)] if args.lr is not None else []) + (
               ['--simclr-backbone', args.simclr_backbone] if args.simclr_backbone else []) + (
               ['--mutdet-init', args.mutdet_init] if args.mutdet_init else []) + (
               ['--matched-iters', str(args.matched_iters)] if args.matched_iters else [])
    log = open(osp.join(run_dir, 'stdout.log'), 'w')
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), run_dir


VARIANTS_SLUG = {name: ''.join(c if c.isalnum() else '_' for c in name).strip('_').lower()
                 for name in VARIANTS}


def run_path(work_dir, variant, seed):
    """The folder of one run (its config, log and ``result.json``)."""
    return osp.join(work_dir, 'runs', f'{VARIANTS_SLUG[variant]}-seed{seed}')


def report_settings_match(settings, args, variant):
    """Whether a finished run belongs in a ``--report`` of this invocation: the same
    settings, where a file option left out of the report (``--simclr-backbone`` ...)
    matches any file (the run's record keeps the file's name and size)."""
    if not settings:
        return False
    expected = run_settings(args, variant)
    left_out = {dest for dest in files_used(variant) if dest not in expected}
    if expected['iters'] is None:  # a report without --matched-iters takes any
        left_out.add('iters')
    return ({k: v for k, v in settings.items() if k not in left_out}
            == {k: v for k, v in expected.items() if k not in left_out})


def load_reuse(args):
    """``runs`` of the ``--reuse`` results.json (empty without it)."""
    if not args.reuse:
        return {}
    with open(args.reuse) as f:
        return json.load(f)['runs']


def finished_runs(args, digest=None):
    """Results of the finished runs with this invocation's settings (and, given the
    data's ``digest``, on this data): those in ``--work-dir``, then those of ``--reuse``
    for the seeds ``--work-dir`` lacks."""
    reuse = load_reuse(args)
    results = {}
    for variant in args.variants:
        for seed in args.seeds:
            path = osp.join(run_path(args.work_dir, variant, seed), 'result.json')
            res = reuse.get(variant, {}).get(str(seed))
            if osp.exists(path):
                with open(path) as f:
                    res = json.load(f)
            if res is None or not report_settings_match(res.get('settings'), args, variant):
                continue
            if not same_data(res, digest):
                print(f'[{variant} seed {seed}] left out: trained on other data (sha256 '
                      f"{res['data_sha256']}, here {digest})", flush=True)
                continue
            results.setdefault(variant, {})[seed] = res
    return results


def run_all(args, data_root, groups, num_train, digest=None):
    reuse = load_reuse(args)
    queue = [(v, s) for s in args.seeds for v in args.variants]
    threads = args.threads or max(1, (os.cpu_count() or 2) // args.jobs)
    running, results = [], {}
    while queue or running:
        while queue and len(running) < args.jobs:
            variant, seed = queue.pop(0)
            proc, run_dir = launch(variant, seed, data_root, groups, num_train, args, threads,
                                   reuse, digest)
            running.append((proc, variant, seed, run_dir))
        for item in list(running):
            proc, variant, seed, run_dir = item
            if proc is not None and proc.poll() is None:
                continue
            running.remove(item)
            if proc is not None and proc.returncode != 0:
                raise RuntimeError(f'{variant} seed {seed} failed (exit {proc.returncode}); '
                                   f"see {osp.join(run_dir, 'stdout.log')}")
            with open(osp.join(run_dir, 'result.json')) as f:
                res = json.load(f)
            results.setdefault(variant, {})[seed] = res
            m = res['metrics']
            print(f"[{variant} seed {seed}] {res['total_s']:.0f} s, leaf mAP "
                  f"{m['leaf_mAP']:.4f}, lv0 AP50 {m['lv0_AP50']:.4f}, tail AP50 "
                  f"{m['tail_AP50']:.4f}", flush=True)
        time.sleep(1)
    return results


def summarise(values):
    """(mean, sample sd, half-width of the 95% t interval) of a list."""
    from bhcl.utils.stats import t_interval
    out = t_interval(values)
    return out['mean'], out['sd'], out['half']


def table(results, args, meta, groups):
    task = getattr(args, 'task', 'bench')
    lines = [f"Synthetic ablation ('{task}' task: {meta['settings']['num_train']} train / "
             f"{meta['settings']['num_val']} balanced val images, "
             f"{meta['settings']['img_size']} px), {args.iters} iterations x 4 crops, "
             f"lr {args.lr}, seeds {args.seeds}. Mean over seeds +- 95% t interval half-width "
             f'(sample sd in brackets).', '',
             '| variant | seeds | ' + ' | '.join(c for _, c in COLUMNS) +
             ' | tail AP50 test-set SE | train s/run |',
             '|---' * (len(COLUMNS) + 4) + '|']
    summary = {}
    for variant in args.variants:
        runs = results.get(variant, {})
        if not runs:
            continue
        row, summary[variant] = [], {}
        for key, _ in COLUMNS:
            mean, sd, half = summarise([r['metrics'][key] for r in runs.values()])
            summary[variant][key] = dict(mean=mean, sd=sd, ci95=half)
            row.append(f'{mean:.3f} +- {half:.3f} ({sd:.3f})')
        ses = [r['metrics']['tail_AP50_se'] for r in runs.values()
               if 'tail_AP50_se' in r['metrics']]
        se = statistics.fmean(ses) if ses else float('nan')
        secs = statistics.fmean(r['train_s'] for r in runs.values())
        summary[variant].update(tail_AP50_test_se=se, train_s=secs, n=len(runs))
        lines.append(f'| {variant} | {len(runs)} | ' + ' | '.join(row) +
                     f' | {se:.3f} | {secs:.0f} |')
    lines += ['', f"head leaves: {', '.join(groups['head'])}; tail leaves: "
              f"{', '.join(groups['tail'])}", '']
    reference = getattr(args, 'reference', None)
    rhino = {v: r for v, r in results.items() if detector(v) == 'RHINO'}
    if reference in results:
        lines += paired_lines({v: r for v, r in results.items() if v not in rhino}, reference)
    if RHINO_REFERENCE in rhino:   # RHINO rows against RHINO's one-view decoupled arm
        lines += paired_lines(rhino, RHINO_REFERENCE)
    for variant, other in getattr(args, 'pair', None) or ():   # --pair ROW REFERENCE
        if results.get(variant) and results.get(other):
            lines += paired_lines({variant: results[variant], other: results[other]}, other)
    shown = {v: results[v] for v in args.variants if results.get(v)}
    lines += seed_lines(shown) + seed_lines(shown, 'tail_AP50')
    lines += cost_lines(shown)
    lines += machine_lines(results)
    lines += ["Pairs of rows of the same detector that differ by Welch's unequal-variance t "
              'test (two-sided p < 0.05, runs taken as independent; no correction for the many '
              'pairs):', '']
    lines += welch_pairs(results) or ['(none)']
    return '\n'.join(lines), summary


def seed_lines(results, key='leaf_mAP'):
    """``key`` of every run, a row per variant and a column per seed (the values the
    means and the paired differences above are made of; '-' where a seed has not run)."""
    seeds = sorted({int(s) for runs in results.values() for s in runs})
    if not seeds:
        return []
    name = dict(COLUMNS).get(key, key)
    lines = [f'{name} by seed:', '', '| variant | ' + ' | '.join(f'seed {s}' for s in seeds)
             + ' |', '|---' * (len(seeds) + 1) + '|']
    for variant, runs in results.items():
        by_seed = {int(s): r for s, r in runs.items()}
        lines.append(f'| {variant} | ' + ' | '.join(
            f"{by_seed[s]['metrics'][key]:.4f}" if s in by_seed else '-' for s in seeds) + ' |')
    return lines + ['']


def cost_lines(results):
    """What the reported runs cost, per detector and in all: the runs' own time (training
    and evaluation, ``total_s``; each run trains with the threads it was given, one in the
    grid) and, where recorded, the CPU seconds of training."""
    cost = {}
    for variant, runs in results.items():
        c = cost.setdefault(detector(variant), dict(n=0, total=0.0, cpu=0.0, n_cpu=0))
        for res in runs.values():
            c['n'] += 1
            c['total'] += res.get('total_s', 0.0)
            if res.get('train_cpu_s'):
                c['cpu'] += res['train_cpu_s']
                c['n_cpu'] += 1
    if not cost:
        return []
    parts = [f"{det}: {c['n']} runs, {c['total'] / 3600:.1f} h" + (
        f" (training CPU {c['cpu'] / 3600:.1f} h over the {c['n_cpu']} runs that recorded it)"
        if c['n_cpu'] else '') for det, c in sorted(cost.items())]
    total = sum(c['total'] for c in cost.values())
    return [f"Run time of the reported runs (training and evaluation, each run's own clock): "
            + '; '.join(parts) + f'; in all {total / 3600:.1f} h.', '']


def machine_lines(results):
    """Which CPUs the runs ran on, and the seeds whose runs did not all run on one kind.
    Training repeats bit for bit on one kind of CPU only: the runs of such a seed share
    their data, crops and initial weights but not their arithmetic, so they pair less
    tightly (the paired differences stay unbiased)."""
    kinds, by_seed, unknown = {}, {}, 0
    for variant, runs in results.items():
        for seed, res in runs.items():
            cpu = (res.get('machine') or {}).get('cpu')
            if cpu is None:
                unknown += 1
                continue
            kinds[cpu] = kinds.get(cpu, 0) + 1
            by_seed.setdefault((detector(variant), seed), set()).add(cpu)
    if not kinds:
        return []
    counts = '; '.join(f'{cpu}: {n}' for cpu, n in sorted(kinds.items()))
    lines = [f'Runs by CPU: {counts}' + (f'; not recorded (runs from before the record): '
                                         f'{unknown}' if unknown else '') + '.']
    mixed = [f'{det} seed {seed}' for (det, seed), cpus in
             sorted(by_seed.items(), key=lambda kv: (kv[0][0], int(kv[0][1])))
             if len(cpus) > 1]
    if mixed:
        lines.append('Seeds whose recorded runs ran on more than one kind of CPU (same data '
                     'and initial weights, different arithmetic: looser pairs): '
                     + ', '.join(mixed) + '.')
    return lines + ['']


def _column(runs, key, seeds=None):
    seeds = sorted(runs) if seeds is None else seeds
    return [runs[s]['metrics'][key] for s in seeds]


def paired_lines(results, reference, alpha=0.05):
    """Per-seed paired differences of every row against ``reference`` (the seeds both
    ran): mean difference with its paired-t 95% interval, the two-sided p-value, and
    the minimal detectable effect of the design (alpha 0.05, power 0.8) from the sd
    of the differences. Bold: p below ``alpha`` divided by the number of tests in
    the table (Bonferroni)."""
    from bhcl.utils.stats import paired_difference, paired_mde
    ref = results[reference]
    rows = []
    for variant, runs in results.items():
        seeds = sorted(set(runs) & set(ref))
        if variant == reference or len(seeds) < 2:
            continue
        cells = []
        for key, _ in COLUMNS:
            d = paired_difference(_column(runs, key, seeds), _column(ref, key, seeds))
            d['mde'] = paired_mde(len(seeds), d['sd']) if d['sd'] > 0 else 0.0
            cells.append(d)
        rows.append((variant, len(seeds), cells))
    if not rows:   # no row shares 2 seeds with the reference yet
        return [f'Paired differences against {reference!r}: no row shares 2 seeds with it '
                'yet.', '']
    tests = sum(len(cells) for *_, cells in rows)
    lines = [f'Paired differences against {reference!r} (row - reference, by seed; '
             'mean [95% paired-t interval] (two-sided p, MDE = minimal detectable effect at '
             f'alpha 0.05, power 0.8); bold: p < {alpha} / {tests} tests in this table '
             '(Bonferroni)):', '',
             '| row | seeds | ' + ' | '.join(c for _, c in COLUMNS) + ' |',
             '|---' * (len(COLUMNS) + 2) + '|']
    for variant, n, cells in rows:
        text = []
        for d in cells:
            cell = f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
            if tests and d['p'] < alpha / tests:
                cell = f'**{cell}**'
            text.append(f"{cell} (p {d['p']:.2g}, MDE {d['mde']:.3f})")
        lines.append(f'| {variant} | {n} | ' + ' | '.join(text) + ' |')
    return lines + ['']


def welch_pairs(results, alpha=0.05):
    """One line per pair of rows of the same detector (RHINO rows with RHINO rows,
    the others with the others) with the columns where Welch's test rejects equal
    means at ``alpha`` (rows with fewer than 2 seeds are skipped)."""
    from bhcl.utils.stats import welch_test
    out = []
    names = [v for v in results if len(results[v]) > 1]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if detector(a) != detector(b):
                continue
            cols = []
            for key, label in COLUMNS:
                xa, xb = _column(results[a], key), _column(results[b], key)
                if statistics.pvariance(xa) + statistics.pvariance(xb) == 0:
                    continue
                w = welch_test(xa, xb)
                if w['p'] < alpha:
                    cols.append(f"{label} {'>' if w['diff'] > 0 else '<'} (p = {w['p']:.2g})")
            if cols:
                out.append(f'- {a} vs {b}: ' + ', '.join(cols))
    return out


def plot(summary, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    keys = ['leaf_mAP', 'leaf_AP50', 'lv0_AP50', 'head_AP50', 'tail_AP50']
    variants = list(summary)
    fig, ax = plt.subplots(figsize=(14, 4.5))
    width = 0.8 / len(variants)
    colours = plt.get_cmap('tab20').colors  # one colour per row up to 20 rows
    for i, v in enumerate(variants):
        xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(keys))]
        ax.bar(xs, [summary[v][k]['mean'] for k in keys], width,
               yerr=[summary[v][k]['ci95'] for k in keys], capsize=1, label=v,
               color=colours[i % len(colours)], error_kw=dict(lw=0.8))
    ax.set_xticks(range(len(keys)), keys)
    ax.set_ylabel('value (mean over seeds, 95% interval)')
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0))
    ax.set_title('Synthetic ablation')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def apply_defaults(args):
    """Fill the options whose default depends on ``--grid``."""
    if args.variants is None:
        args.variants = list(GRID) if args.grid else [v for v in VARIANTS if v not in OPTIONAL]
    if args.seeds is None:
        args.seeds = list(range(8)) if args.grid else [0, 1, 2]
    if args.task is None:
        args.task = 'hierarchical' if args.grid else 'bench'


def plot_paired(results, reference, path):
    """Paired differences (row - reference, by seed) with 95% paired-t intervals, one
    series per row; returns False when no row shares 2 seeds with the reference."""
    from bhcl.utils.stats import paired_difference
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    ref = results[reference]
    rows = [v for v in results if v != reference and len(set(results[v]) & set(ref)) > 1]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(12, 4.5))
    width = 0.8 / len(rows)
    for i, v in enumerate(rows):
        seeds = sorted(set(results[v]) & set(ref))
        ds = [paired_difference(_column(results[v], k, seeds), _column(ref, k, seeds))
              for k, _ in COLUMNS]
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(COLUMNS))]
        ax.errorbar(xs, [d['mean'] for d in ds], fmt='o', capsize=2, label=f'{v} ({len(seeds)})',
                    yerr=[[d['mean'] - d['low'] for d in ds], [d['high'] - d['mean'] for d in ds]])
    ax.axhline(0, color='k', lw=0.8)
    ax.set_xticks(range(len(COLUMNS)), [label for _, label in COLUMNS])
    ax.set_ylabel(f'row - {reference} (95% paired-t interval)')
    ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=None,
                        help='default: 0 1 2 (--grid: 0 .. 7)')
    parser.add_argument('--task', choices=sorted(TASKS), default=None,
                        help="synthetic preset trained and tested on (default: 'bench'; "
                        "--grid: 'hierarchical')")
    parser.add_argument('--grid', action='store_true',
                        help='the loss study: views {1, 2} x loss {none, HCL, BHCL} and the '
                        'one-view baseline, RHINO one-view rows and two-view BHCL, 8 seeds, '
                        'on the hierarchical task (every default but --variants overridable)')
    parser.add_argument('--variants', nargs='+', default=None,
                        choices=list(VARIANTS), metavar='ROW',
                        help='default: every row but ' +
                        ', '.join(map(repr, OPTIONAL)).replace('%', '%%'))
    parser.add_argument('--simclr-backbone', default=None,
                        help="backbone weights for 'baseline, SimCLR backbone' (from "
                             'tools/model_converters/simclr_to_backbone.py)')
    parser.add_argument('--mutdet-init', default=None,
                        help="fine-tuning initialisation for the 'MutDet init' rows (from "
                             'tools/model_converters/mutdet_to_finetune.py)')
    parser.add_argument('--iters', type=int, default=800,
                        help='training iterations of 4 crops per run (all rows)')
    parser.add_argument('--matched-iters', type=int, default=None,
                        help="iterations of the '+decoupling, compute-matched scratch' row "
                        '(--iters plus the pre-training compute; benchmarks/pretraining_study.py '
                        'measures it)')
    parser.add_argument('--lr', type=float, default=1e-3,
                        help='AdamW learning rate of every row (calibrated on the baseline; '
                        'the smoke configs use 2e-4 for their longer, larger-image schedule)')
    parser.add_argument('--jobs', type=int, default=2, help='trainings run at once')
    parser.add_argument('--threads', type=int, default=None,
                        help='threads per training (default: CPU cores / --jobs)')
    parser.add_argument('--bootstrap', type=int, default=200,
                        help='bootstrap resamples of the validation images per run')
    parser.add_argument('--work-dir', default='work_dirs/synthetic_ablation')
    parser.add_argument('--out-dir', default=None, help='default: --work-dir')
    parser.add_argument('--rerun', action='store_true', help='ignore finished runs')
    parser.add_argument('--report', action='store_true',
                        help='summarise the finished runs only (launch nothing)')
    parser.add_argument('--reference', default='+decoupling',
                        help='row the others are compared with, seed by seed (paired t)')
    parser.add_argument('--pair', nargs=2, action='append', metavar=('ROW', 'REFERENCE'),
                        help='also a paired table of ROW against REFERENCE (repeatable), for '
                        'a pair of rows neither of which is --reference')
    parser.add_argument('--reuse', default=None,
                        help='results.json of an earlier invocation: its runs with the same '
                        'settings are not run again (continue an ablation on another day)')
    parser.add_argument('--one', dest='variant', help=argparse.SUPPRESS)
    parser.add_argument('--seed', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--data-root', help=argparse.SUPPRESS)
    parser.add_argument('--run-dir', help=argparse.SUPPRESS)
    parser.add_argument('--groups', help=argparse.SUPPRESS)
    parser.add_argument('--num-train', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--img-size', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    apply_defaults(args)
    if args.variant:
        return run_one(args)
    for pair in args.pair or ():
        stray = [v for v in pair if v not in args.variants]
        if stray:
            parser.error(f'--pair {pair[0]!r} {pair[1]!r}: {stray} not among --variants '
                         '(a pair compares two of the rows this invocation runs or reports)')
    lv3 = ('lv3_AP50', 'lv3 AP50')
    if args.task == 'hierarchical' and lv3 not in COLUMNS:   # its tree has a 4th level
        COLUMNS.insert(COLUMNS.index(('lv2_AP50', 'lv2 AP50')) + 1, lv3)
    for dest, what in (('simclr_backbone', 'a backbone exported by '
                        'tools/model_converters/simclr_to_backbone.py'),
                       ('mutdet_init', 'a MutDet checkpoint converted by '
                        'tools/model_converters/mutdet_to_finetune.py')):
        needs = [v for v in args.variants if dest in files_used(v)]
        path = getattr(args, dest)
        if args.report and path is None:
            continue  # a report takes the rows' finished runs, whichever file they used
        if needs and not (path and osp.isfile(path)):
            option = '--' + dest.replace('_', '-')
            parser.error(f'{needs} need {option} FILE ({what}); got {path!r}')
    matched = [v for v in args.variants if row(v)[2].get('matched_compute')]
    if matched and not args.report and not args.matched_iters:
        parser.error(f'{matched} need --matched-iters N (the iterations that match '
                     '--iters plus the pre-training compute; benchmarks/pretraining_study.py '
                     'measures and passes it)')
    os.makedirs(args.work_dir, exist_ok=True)
    out_dir = args.out_dir or args.work_dir
    os.makedirs(out_dir, exist_ok=True)
    data_root, _, groups, meta = bench_dataset(args.work_dir, args.task)
    args.img_size = meta['settings']['img_size']
    print(f"tail leaves: {groups['tail']}; head leaves: {groups['head']}", flush=True)
    digest = data_digest(data_root)
    print(f'data sha256 {digest}', flush=True)
    t0 = time.perf_counter()
    results = (finished_runs(args, digest) if args.report
               else run_all(args, data_root, groups, meta['settings']['num_train'], digest))
    text, summary = table(results, args, meta, groups)
    print(text)
    print(f'wall time {time.perf_counter() - t0:.0f} s for {sum(map(len, results.values()))} '
          f'runs, {args.jobs} at once')
    with open(osp.join(out_dir, 'results.json'), 'w') as f:
        json.dump(dict(args=vars(args), groups=groups, data_sha256=digest, runs=results,
                       summary=summary), f, indent=1)
    with open(osp.join(out_dir, 'results.md'), 'w') as f:
        f.write(text + '\n')
    if summary:
        plot(summary, osp.join(out_dir, 'ablation.png'))
    written = ['results.json', 'results.md'] + (['ablation.png'] if summary else [])
    for reference in (args.reference, RHINO_REFERENCE):
        rows = {v: r for v, r in results.items()
                if detector(v) == detector(reference)}
        if reference in rows and len(rows) > 1:
            name = f"paired-{VARIANTS_SLUG.get(reference, 'reference')}.png"
            if plot_paired(rows, reference, osp.join(out_dir, name)):
                written.append(name)
    print(f"written: {', '.join(written)} in {out_dir}")


if __name__ == '__main__':
    main()
