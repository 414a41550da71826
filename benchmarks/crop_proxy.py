"""Crop-classifier proxy: does HCL / BHCL help the tail when localisation is given?

A small CNN classifies rotated crops of the ground-truth boxes of the synthetic
``hierarchical`` task (``SyntheticConfig.preset('hierarchical')``: 4 levels,
node-specific cues, leaf training counts 500 .. 5) into the 45 tree nodes.
Three arms share everything but the loss:

* ``CE``: cross-entropy on the node label;
* ``CE+HCL``: + the ``loss_hcl`` of
  ``configs/synthetic/hcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py``;
* ``CE+BHCL``: + the ``loss_hcl`` of
  ``configs/synthetic/bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py``.

The contrastive losses are the detectors' own modules, built from those configs
(``HierarchicalContrastiveLoss`` with its projection head; BHCL with the EMA
prototype bank and its warm-up rescaled from 12 epochs to ``--epochs``), fed the
64-d crop feature that the linear classifier reads, as the detectors feed their
classification-query features. Common random numbers: seed s gives every arm
the same initial backbone and classifier weights, the same batches in the same
order and the same flips, so the arms are compared seed by seed (paired t,
``bhcl/utils/stats.py``).

    python benchmarks/crop_proxy.py [--seeds 0-49 | --num-seeds 50] [--jobs 2]
        [--epochs 8] [--loss-weight W] [--work-dir work_dirs/crop_proxy]
        [--reuse RESULTS_JSON]

Writes ``results.json`` (every run), ``results.md`` (means, paired differences
HCL - CE, BHCL - CE, BHCL - HCL with 95% paired-t intervals and p, the minimal
detectable effect of the design) and ``paired.png`` to ``--work-dir``.
Finished (arm, seed) runs of ``--reuse`` with the same settings are not run again;
results.json is rewritten after every seed, so an interrupted study resumes
with ``--reuse WORK_DIR/results.json``. ``--loss-weight`` replaces the configs'
``loss_weight`` (0.6) of HCL and BHCL; the CE arm does not depend on it, so a
``--reuse`` file that differs only in the weight gives its CE runs.
"""
import argparse
import json
import math
import multiprocessing as mp
import os
import os.path as osp
import runpy
import sys
import time

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

ARMS = ('CE', 'CE+HCL', 'CE+BHCL')
ARM_CONFIGS = {'CE+HCL': 'hcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py',
               'CE+BHCL': 'bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py'}
PAIRS = (('CE+HCL', 'CE'), ('CE+BHCL', 'CE'), ('CE+BHCL', 'CE+HCL'))
METRICS = (('acc_lv0', 'level 0'), ('acc_lv1', 'level 1'), ('acc_lv2', 'level 2'),
           ('acc_lv3', 'leaf'), ('head', 'head leaves'), ('middle', 'middle leaves'),
           ('tail', 'tail leaves'), ('tail_lv2', 'tail, level 2'))
CROP_HW = (16, 32)   # crops are resized to 16 x 32 px, the box's long side along x
MARGIN = 1.15        # context around the box


def tree_config():
    return runpy.run_path(osp.join(ROOT, 'configs', '_base_', 'datasets',
                                   'synthetic_hierarchical_label_tree.py'))['label_tree']


# ------------------------------------------------------------------ data
def crop_object(img: np.ndarray, poly, size=CROP_HW, margin=MARGIN) -> np.ndarray:
    """(H, W, 3) crop of the rotated box ``poly`` (8 numbers), resized to ``size``
    with the box's long side horizontal."""
    import cv2
    from bhcl.structures.geometry import poly_to_rbox
    cx, cy, w, h, t = poly_to_rbox(np.asarray(poly, dtype=np.float64)[None])[0]
    if h > w:
        w, h, t = h, w, t + math.pi / 2
    out_h, out_w = size
    sx, sy = w * margin / out_w, h * margin / out_h
    c, s = math.cos(t), math.sin(t)
    a = np.array([[c * sx, -s * sy], [s * sx, c * sy]])
    b = np.array([cx, cy]) - a @ np.array([(out_w - 1) / 2, (out_h - 1) / 2])
    m = np.concatenate([a, b[:, None]], 1)
    return cv2.warpAffine(img, m, (out_w, out_h), flags=cv2.INTER_AREA | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def load_crops(data_root: str, split: str, tree):
    """(N, 3, H, W) uint8 crops and (N,) node labels of every object of ``split``."""
    import cv2
    from bhcl.datasets.dota_txt import parse_dota_txt
    ann_dir, img_dir = osp.join(data_root, split, 'labelTxt'), osp.join(data_root, split, 'images')
    crops, labels = [], []
    for name in sorted(os.listdir(ann_dir)):
        objs = parse_dota_txt(osp.join(ann_dir, name), tree).objects
        img = cv2.imread(osp.join(img_dir, name[:-4] + '.png'))[..., ::-1]
        for o in objs:
            crops.append(crop_object(img, o.poly).transpose(2, 0, 1))
            labels.append(o.label)
    return np.stack(crops), np.asarray(labels, dtype=np.int64)


def prepare_data(work_dir: str, **overrides):
    """Generate (or reuse) the task (the ``hierarchical`` preset with ``overrides``
    of ``SyntheticConfig``) and cache its crops; returns the data dict."""
    from bhcl.datasets.synthetic import SyntheticConfig, generate_synthetic_dataset
    from bhcl.structures import LabelTree
    cfg = SyntheticConfig.preset('hierarchical', **{k: v for k, v in overrides.items()
                                                    if v is not None})
    tree_cfg = tree_config()
    data_root = osp.join(work_dir, 'data')
    meta = generate_synthetic_dataset(data_root, tree_cfg, cfg)
    cache = osp.join(work_dir, 'crops.npz')
    key = json.dumps(dict(meta['settings'], crop=CROP_HW, margin=MARGIN), sort_keys=True)
    if osp.exists(cache):
        with np.load(cache) as z:
            if str(z['key']) == key:
                return dict(z.items(), settings=meta['settings'])
    tree = LabelTree.from_config(tree_cfg)
    xtr, ytr = load_crops(data_root, 'train', tree)
    xva, yva = load_crops(data_root, 'val', tree)
    data = dict(x_train=xtr, y_train=ytr, x_val=xva, y_val=yva, key=np.array(key))
    np.savez(cache, **data)
    return dict(data, settings=meta['settings'])


def leaf_groups(tree, y_train: np.ndarray):
    """``{'head'|'middle'|'tail': [leaf ids]}``: thirds of the leaves by training count."""
    counts = np.bincount(y_train, minlength=tree.num_classes)
    leaves = sorted(tree.leaf_ids, key=lambda k: (counts[k], tree.classes[k]))
    third = max(len(leaves) // 3, 1)
    return dict(tail=leaves[:third], middle=leaves[third:-third], head=leaves[-third:])


# ----------------------------------------------------------------- model
def build_net(num_classes: int, feat_channels: int = 64):
    """Backbone (3 conv blocks -> 64-d feature) and a linear classifier."""
    from torch import nn

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True)]
    backbone = nn.Sequential(*block(3, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2),
                             *block(32, 64), nn.AdaptiveAvgPool2d((2, 4)), nn.Flatten(),
                             nn.Linear(512, feat_channels), nn.LayerNorm(feat_channels))
    return backbone, nn.Linear(feat_channels, num_classes)


def build_loss(arm: str, epochs: int, loss_weight=None):
    """The detector config's ``loss_hcl`` for ``arm`` (None for CE); the BHCL warm-up
    keeps its share of the config's schedule; ``loss_weight`` replaces the config's."""
    if arm == 'CE':
        return None
    from mmengine.config import Config
    from mmrotate.registry import MODELS
    import bhcl  # noqa: F401
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'synthetic', ARM_CONFIGS[arm]))
    loss_cfg = cfg.model.loss_hcl.to_dict()
    if loss_cfg.get('warmup_epochs'):
        loss_cfg['warmup_epochs'] = round(loss_cfg['warmup_epochs'] * epochs
                                          / cfg.train_cfg.max_epochs)
    if loss_weight is not None:
        loss_cfg['loss_weight'] = loss_weight
    loss_cfg.update(label_tree=tree_config(), _scope_='mmrotate')
    return MODELS.build(loss_cfg)


def evaluate(logits: np.ndarray, y: np.ndarray, tree, groups) -> dict:
    """Per-level accuracy (objects whose node is at least that deep; a prediction
    shallower than the level is wrong) and leaf accuracy per frequency group."""
    pred = logits.argmax(1)
    anc = np.asarray(tree.ancestors)
    out = {}
    for level in range(tree.num_levels):
        keep = anc[y, level] >= 0
        out[f'acc_lv{level}'] = float(np.mean(anc[pred[keep], level] == anc[y[keep], level]))
    for name, leaves in groups.items():
        keep = np.isin(y, leaves)
        out[name] = float(np.mean(pred[keep] == y[keep]))
        if name == 'tail':
            out['tail_lv2'] = float(np.mean(anc[pred[keep], 2] == anc[y[keep], 2]))
            out['tail_n'] = int(keep.sum())
    return out


def train_arm(arm: str, seed: int, data: dict, args, tree, groups) -> dict:
    """Train one arm with seed ``seed``; return its validation metrics and CPU time."""
    import torch
    import torch.nn.functional as F
    t0 = time.process_time()
    torch.manual_seed(seed)   # the same initial backbone and classifier in every arm
    backbone, classifier = build_net(tree.num_classes)
    torch.manual_seed(10 ** 6 + seed)
    loss_hcl = build_loss(arm, args.epochs, getattr(args, 'loss_weight', None))
    params = list(backbone.parameters()) + list(classifier.parameters()) + (
        list(loss_hcl.parameters()) if loss_hcl is not None else [])
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    x = torch.from_numpy(data['x_train'])
    y = torch.from_numpy(data['y_train'])
    order = torch.Generator().manual_seed(seed)   # batches and flips: the same in every arm
    modules = [backbone, classifier] + ([loss_hcl] if loss_hcl is not None else [])
    for epoch in range(args.epochs):
        for m in modules:
            m.train()
        if loss_hcl is not None:
            loss_hcl.set_epoch(epoch)
        perm = torch.randperm(len(y), generator=order)
        flips = torch.rand(len(y), generator=order) < 0.5
        for i in range(0, len(y), args.batch_size):
            idx = perm[i:i + args.batch_size]
            xb = x[idx].float() / 127.5 - 1.0
            xb = torch.where(flips[idx, None, None, None], xb.flip(2), xb)  # across the length
            feats = backbone(xb)
            loss = F.cross_entropy(classifier(feats), y[idx])
            if loss_hcl is not None:
                loss = loss + sum(loss_hcl(feats, y[idx]).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
    for m in modules:
        m.eval()
    with torch.no_grad():
        xv = torch.from_numpy(data['x_val'])
        logits = torch.cat([classifier(backbone(xv[i:i + 512].float() / 127.5 - 1.0))
                            for i in range(0, len(xv), 512)]).numpy()
    metrics = evaluate(logits, data['y_val'], tree, groups)
    from bhcl.utils.machine import machine_record   # numerics repeat on one kind of CPU
    return dict(metrics=metrics, cpu_s=time.process_time() - t0, machine=machine_record())


# ------------------------------------------------------------- the study
_DATA = {}


def _run_seed(job):
    """Worker: the arms of ``job['arms']`` for one seed (single-threaded)."""
    import torch
    torch.set_num_threads(1)
    from bhcl.structures import LabelTree
    tree = LabelTree.from_config(tree_config())
    data, args = _DATA['data'], _DATA['args']
    groups = leaf_groups(tree, data['y_train'])
    return job['seed'], {arm: train_arm(arm, job['seed'], data, args, tree, groups)
                         for arm in job['arms']}


def run_settings(args, data_settings) -> dict:
    """What a finished run must share with this invocation to be reused (the loss
    weight only when it is not the configs')."""
    settings = dict(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                    crop=list(CROP_HW), margin=MARGIN, data=data_settings)
    if getattr(args, 'loss_weight', None) is not None:
        settings['loss_weight'] = args.loss_weight
    return settings


def load_reuse(path, settings) -> dict:
    """``{arm: {seed: run}}`` of the ``--reuse`` file when its settings match; only its
    CE runs when the settings differ in the loss weight alone."""
    if not path:
        return {}
    with open(path) as f:
        earlier = json.load(f)
    wanted = json.loads(json.dumps(settings))
    arms = list(earlier['runs'])
    if earlier.get('settings') != wanted:
        def without_weight(d):
            return {k: v for k, v in (d or {}).items() if k != 'loss_weight'}
        if without_weight(earlier.get('settings')) != without_weight(wanted):
            print(f'{path}: other settings, nothing reused', flush=True)
            return {}
        arms = [a for a in arms if a == 'CE']
        print(f'{path}: another loss weight, its CE runs reused', flush=True)
    return {arm: {int(s): r for s, r in earlier['runs'][arm].items()} for arm in arms}


def run_study(args) -> dict:
    os.makedirs(args.work_dir, exist_ok=True)
    data = prepare_data(args.work_dir, num_train=args.num_train, num_val=args.num_val,
                        leaf_counts=args.leaf_counts)
    settings = run_settings(args, data['settings'])
    runs = load_reuse(args.reuse, settings)
    jobs = [dict(seed=s, arms=[a for a in ARMS if s not in runs.get(a, {})]) for s in args.seeds]
    jobs = [j for j in jobs if j['arms']]
    print(f"{len(data['y_train'])} training / {len(data['y_val'])} validation crops; "
          f'{len(jobs)} seeds to run, {args.jobs} at once', flush=True)
    _DATA.update(data=data, args=args)
    out = osp.join(args.work_dir, 'results.json')
    t0 = time.perf_counter()
    ctx = mp.get_context('fork')
    with ctx.Pool(args.jobs) if args.jobs > 1 else _Serial() as pool:
        for seed, res in pool.imap_unordered(_run_seed, jobs):
            for arm, r in res.items():
                runs.setdefault(arm, {})[seed] = r
            print(f'[seed {seed}] ' + ', '.join(
                f"{arm} leaf {r['metrics']['acc_lv3']:.3f} tail {r['metrics']['tail']:.3f}"
                for arm, r in res.items()), flush=True)
            _write(out, settings, runs, args)
    wall = time.perf_counter() - t0
    _write(out, settings, runs, args, wall_s=wall)
    return dict(settings=settings, runs=runs, wall_s=wall)


class _Serial:
    """``Pool`` stand-in for ``--jobs 1`` (runs in this process)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def imap_unordered(fn, items):
        return map(fn, items)


def _write(path, settings, runs, args, wall_s=None):
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(dict(settings=settings, seeds=args.seeds,
                       runs={a: {str(s): r for s, r in sorted(v.items())}
                             for a, v in runs.items()}, wall_s=wall_s), f, indent=1)
    os.replace(tmp, path)


# ------------------------------------------------------------ the report
def summarise(runs: dict, seeds) -> dict:
    """Means with t intervals per arm, and paired differences with MDE per pair."""
    from bhcl.utils.stats import paired_difference, paired_mde, t_interval
    out = dict(arms={}, pairs={})
    for arm in ARMS:
        got = [s for s in seeds if s in runs.get(arm, {})]
        if got:
            out['arms'][arm] = {k: t_interval([runs[arm][s]['metrics'][k] for s in got])
                                for k, _ in METRICS}
    for a, b in PAIRS:
        common = [s for s in seeds if s in runs.get(a, {}) and s in runs.get(b, {})]
        if len(common) < 2:
            continue
        pair = {}
        for k, _ in METRICS:
            d = paired_difference([runs[a][s]['metrics'][k] for s in common],
                                  [runs[b][s]['metrics'][k] for s in common])
            d['mde'] = paired_mde(len(common), d['sd']) if d['sd'] > 0 else 0.0
            pair[k] = d
        out['pairs'][f'{a} - {b}'] = dict(n=len(common), metrics=pair)
    return out


def report(summary: dict, runs: dict, seeds, wall_s=None, loss_weight=None) -> str:
    cpu = sum(r['cpu_s'] for arm in runs.values() for s, r in arm.items() if s in seeds)
    weight = ('the configs\' loss weight (0.6)' if loss_weight is None
              else f'HCL / BHCL loss weight {loss_weight}')
    lines = [f'Crop proxy: {len(seeds)} seeds, {weight}, CPU time of the runs '
             f'{cpu / 60:.1f} min' + (f', wall {wall_s / 60:.1f} min' if wall_s else '')
             + '.', '',
             '| arm | ' + ' | '.join(label for _, label in METRICS) + ' |',
             '|---' * (len(METRICS) + 1) + '|']
    for arm, m in summary['arms'].items():
        lines.append(f'| {arm} | ' + ' | '.join(
            f"{m[k]['mean']:.3f} +- {m[k]['half']:.3f}" for k, _ in METRICS) + ' |')
    lines += ['', 'Paired differences (seed by seed): mean [95% paired-t interval], p; '
              'MDE = minimal detectable effect (alpha 0.05, power 0.8):', '',
              '| pair | seeds | ' + ' | '.join(label for _, label in METRICS) + ' |',
              '|---' * (len(METRICS) + 2) + '|']
    for name, pair in summary['pairs'].items():
        lines.append(f"| {name} | {pair['n']} | " + ' | '.join(
            f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}], p {d['p']:.3f}, "
            f"MDE {d['mde']:.4f}" for d in (pair['metrics'][k] for k, _ in METRICS)) + ' |')
    tail_n = next(iter(next(iter(runs.values())).values()))['metrics']['tail_n']
    acc = summary['arms'].get('CE', {}).get('tail', {}).get('mean', 0.5)
    lines += ['', f'Validation: {tail_n} tail-leaf objects; binomial standard error of one '
              f'run\'s tail accuracy {math.sqrt(acc * (1 - acc) / tail_n):.4f}.']
    return '\n'.join(lines)


def plot(summary: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(10, 4))
    names = list(summary['pairs'])
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        ms = summary['pairs'][name]['metrics']
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(METRICS))]
        mean = [ms[k]['mean'] for k, _ in METRICS]
        err = [[ms[k]['mean'] - ms[k]['low'] for k, _ in METRICS],
               [ms[k]['high'] - ms[k]['mean'] for k, _ in METRICS]]
        ax.errorbar(xs, mean, yerr=err, fmt='o', capsize=3, label=name)
    ax.axhline(0, color='k', lw=0.8)
    ax.set_xticks(range(len(METRICS)), [label for _, label in METRICS], fontsize=8)
    ax.set_ylabel('accuracy difference (95% paired-t interval)')
    ax.set_title('Crop proxy: paired differences over seeds')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=None)
    parser.add_argument('--num-seeds', type=int, default=50, help='seeds 0 .. N-1')
    parser.add_argument('--jobs', type=int, default=2, help='seeds run at once')
    parser.add_argument('--epochs', type=int, default=8)
    parser.add_argument('--lr', type=float, default=2e-3)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--num-train', type=int, default=None,
                        help="training images (default: the preset's)")
    parser.add_argument('--num-val', type=int, default=None,
                        help="validation images (default: the preset's)")
    parser.add_argument('--leaf-counts', type=int, nargs=2, default=None, metavar=('MOST', 'LEAST'),
                        help="training objects of the most / least frequent leaf (default: "
                        "the preset's 500 5)")
    parser.add_argument('--loss-weight', type=float, default=None,
                        help="HCL / BHCL loss_weight (default: the configs', 0.6)")
    parser.add_argument('--work-dir', default='work_dirs/crop_proxy')
    parser.add_argument('--reuse', default=None,
                        help='results.json of an earlier invocation: its runs with the same '
                        'settings are not run again')
    args = parser.parse_args(argv)
    args.seeds = args.seeds if args.seeds is not None else list(range(args.num_seeds))
    result = run_study(args)
    summary = summarise(result['runs'], args.seeds)
    text = report(summary, result['runs'], args.seeds, result['wall_s'], args.loss_weight)
    print(text)
    with open(osp.join(args.work_dir, 'results.md'), 'w') as f:
        f.write(text + '\n')
    with open(osp.join(args.work_dir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    if summary['pairs']:
        plot(summary, osp.join(args.work_dir, 'paired.png'))
    return summary


if __name__ == '__main__':
    main()
