"""t-SNE of the classification-query embeddings, one picture per tree level (the BHCL paper's figure).

    python tools/analysis_tools/query_tsne.py CONFIG CHECKPOINT OUT_DIR
        [--phase val|test|train] [--stage -1] [--max-images N] [--max-points 3000]
        [--perplexity 30] [--seed 0] [--cfg-options k=v ...]

Runs the detector on the split's images, Hungarian-matches the queries of one
decoder stage (the last by default) to the ground truth as in training, and
keeps the class features of the matched queries: through the stage's HCL
projection head (unit vectors, the space the contrastive loss shapes) when the
model has one, otherwise the class features themselves, L2-normalised. Writes

* ``OUT_DIR/tsne_level<l>.png`` for every tree level: one 2-D t-SNE
  (scikit-learn) of all points, coloured by each object's level-l ancestor
  (objects above level l, e.g. "Other" objects of a coarser node, are grey);
* ``OUT_DIR/tsne.json``: the silhouette score per level (cosine distance on the
  embeddings, not on the 2-D map), the point counts and the class names.

Images go through the config's training pipeline without its random steps, so
that boxes and image share one frame.
"""
import argparse
import json
import os
import os.path as osp
import sys

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmengine.utils import ProgressBar
from mmrotate.registry import DATASETS, MODELS

import bhcl  # noqa: F401  (registers bhcl modules)
from bhcl.utils.setup_env import load_cfg


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config of the detector')
    parser.add_argument('checkpoint', help='checkpoint to load')
    parser.add_argument('out_dir', help='folder for the PNG images and tsne.json')
    parser.add_argument('--phase', default='val', choices=['train', 'val', 'test'],
                        help='split whose images and annotations are used (val)')
    parser.add_argument('--stage', type=int, default=-1, help='decoder stage (-1: the last)')
    parser.add_argument('--max-images', type=int, default=None, help='use the first N images')
    parser.add_argument('--max-points', type=int, default=3000,
                        help='subsample matched queries to at most this many (3000)')
    parser.add_argument('--perplexity', type=float, default=30.0)
    parser.add_argument('--seed', type=int, default=0, help='t-SNE and subsampling seed')
    parser.add_argument('--space', default='projected', choices=['projected', 'features'],
                        help="'projected': HCL's projection head output when the model has "
                        "one (what the loss shapes); 'features': the class features before "
                        'it, comparable across models with and without HCL')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. val_dataloader.dataset.data_root=x '
                        '(a key the config lacks is an error unless written +key=value)')
    return parser.parse_args(argv)


def deterministic_dataset(cfg, phase: str):
    """The ``phase`` split with the training pipeline minus its random steps."""
    train = cfg.train_dataloader.dataset
    train = train.dataset if train.type == 'MultiViewDataset' else train
    pipeline = [step for step in train.pipeline if 'Random' not in step.type]
    loader = cfg.get(f'{phase}_dataloader')
    if loader is None:
        have = [p for p in ('train', 'val', 'test') if cfg.get(f'{p}_dataloader') is not None]
        raise ValueError(f'the config has no {phase}_dataloader; choose --phase from {have}')
    ds_cfg = loader.dataset
    ds_cfg = ds_cfg.dataset if ds_cfg.type == 'MultiViewDataset' else ds_cfg
    ds_cfg = ds_cfg.copy()
    ds_cfg.pipeline = pipeline
    ds_cfg.pop('test_mode', None)
    return DATASETS.build(ds_cfg)


@torch.no_grad()
def collect_embeddings(model, dataset, stage: int, max_images=None, batch_size: int = 4,
                       space: str = 'projected'):
    """(n, D) unit embeddings of the matched queries and their (n,) node labels;
    ``space`` 'projected' passes the class features through HCL's projection head
    when the model has one, 'features' keeps them."""
    from mmengine.dataset import pseudo_collate
    model.eval()
    n_img = len(dataset) if max_images is None else min(max_images, len(dataset))
    feats, labels = [], []
    bar = ProgressBar(n_img, file=sys.stdout)
    for start in range(0, n_img, batch_size):
        batch = pseudo_collate([dataset[i] for i in range(start, min(start + batch_size, n_img))])
        data = model.data_preprocessor(batch, False)
        samples = data['data_samples']
        gts = [model._gt_instances(s) for s in samples]
        _, stages = model.forward_stages(data['inputs'], [g.labels for g in gts])
        out = stages[stage]
        pos_b, pos_q, _, lab = model.match(out, gts, [s.metainfo for s in samples])
        x = out.cls_feats[pos_b, pos_q]
        if model.hierarchy.loss_hcl is not None and space == 'projected':
            x = model.hierarchy.loss_hcl[stage].embed(x)
        feats.append(F.normalize(x.float(), dim=1))
        labels.append(lab.view(len(samples), -1)[pos_b, pos_q])
        for _ in samples:
            bar.update()
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def level_silhouettes(emb: np.ndarray, labels: np.ndarray, tree) -> dict:
    """Per level: silhouette (cosine) of the objects labelled at that level or below,
    grouped by their level-l ancestor; None where fewer than 2 groups."""
    from sklearn.metrics import silhouette_score
    out = {}
    for level in range(tree.num_levels):
        anc = tree.ancestor_at(labels, level)
        keep = anc >= 0
        groups = np.unique(anc[keep])
        ok = 2 <= len(groups) < keep.sum()
        out[level] = dict(
            silhouette=float(silhouette_score(emb[keep], anc[keep], metric='cosine'))
            if ok else None,
            points=int(keep.sum()), groups=[tree.classes[g] for g in groups])
    return out


def plot_level(xy: np.ndarray, labels: np.ndarray, tree, level: int, path: str, title: str):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    anc = tree.ancestor_at(labels, level)
    fig, ax = plt.subplots(figsize=(7, 6))
    above = anc < 0
    if above.any():
        ax.scatter(xy[above, 0], xy[above, 1], s=6, c='lightgrey', label='above this level')
    cmap = plt.get_cmap('tab20')
    for i, g in enumerate(np.unique(anc[~above])):
        sel = anc == g
        ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color=cmap(i % 20), label=tree.classes[g])
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=2, loc='best')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    from sklearn.manifold import TSNE
    cfg = load_cfg(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmrotate'))
    model = MODELS.build(cfg.model)
    load_checkpoint(model, args.checkpoint, map_location='cpu')
    dataset = deterministic_dataset(cfg, args.phase)
    emb, labels = collect_embeddings(model, dataset, args.stage, args.max_images,
                                     space=args.space)
    if len(labels) < 3:
        raise SystemExit(f'only {len(labels)} matched queries on the {args.phase} split; '
                         'need at least 3 (more images: --max-images)')
    rng = np.random.default_rng(args.seed)
    if len(labels) > args.max_points:
        idx = np.sort(rng.choice(len(labels), args.max_points, replace=False))
        emb, labels = emb[idx], labels[idx]
    tree = model.label_tree
    sil = level_silhouettes(emb, labels, tree)
    xy = TSNE(n_components=2, perplexity=min(args.perplexity, (len(labels) - 1) / 3),
              init='pca', random_state=args.seed, metric='cosine').fit_transform(emb)
    os.makedirs(args.out_dir, exist_ok=True)
    name = osp.splitext(osp.basename(args.config))[0]
    for level, info in sil.items():
        s = info['silhouette']
        plot_level(xy, labels, tree, level, osp.join(args.out_dir, f'tsne_level{level}.png'),
                   f'{name}\nlevel {level}: silhouette '
                   f"{'n/a' if s is None else f'{s:.3f}'} ({info['points']} queries)")
        print(f"level {level}: silhouette {'n/a' if s is None else f'{s:.4f}'} over "
              f"{info['points']} matched queries, {len(info['groups'])} groups")
    with open(osp.join(args.out_dir, 'tsne.json'), 'w') as f:
        json.dump(dict(config=args.config, checkpoint=args.checkpoint, phase=args.phase,
                       stage=args.stage, space=args.space, dims=int(emb.shape[1]),
                       points=len(labels), levels=sil), f, indent=1)
    print(f'written: tsne_level*.png and tsne.json in {args.out_dir}')


if __name__ == '__main__':
    main()
