"""Multi-label linear probe of frozen backbones: which tree nodes does an image contain?

    python tools/analysis_tools/linear_probe.py CONFIG OUT_DIR
        [--encoder NAME=WEIGHTS ...] [--depth 18] [--size 128] [--epochs 100]
        [--lr 1e-2] [--seed 0] [--max-images N] [--cfg-options k=v ...]

Each image of the config's training and validation splits is labelled with
every tree node its objects belong to, at every level (a Destroyer makes the
image positive for Destroyer, Warship and Ship; an "Other Warship" object for
Warship and Ship). An encoder (mmdet ResNet, frozen, global-average-pooled
last stage) embeds every image once; one linear layer is trained on the
training split with binary cross-entropy (Adam, full batch) and evaluated on
the validation split.

Encoders (``--encoder NAME=WEIGHTS``, repeatable; default ``random=none``):
``none`` is a randomly initialised ResNet (seeded), otherwise a checkpoint
file: a backbone export (``tools/model_converters/simclr_to_backbone.py``) or
a whole detector / SimCLR checkpoint, whose ``backbone.*`` weights are used.

Reports, per encoder: mAP over the nodes with validation positives (and per
level), micro and macro F1 at probability 0.5, and the per-node AP; writes
``OUT_DIR/linear_probe.json`` and ``OUT_DIR/linear_probe.md``.
"""
import argparse
import json
import os
import os.path as osp
import sys

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import DictAction
from mmengine.registry import init_default_scope
from mmengine.utils import ProgressBar
from mmrotate.registry import DATASETS, MODELS

import bhcl  # noqa: F401  (registers bhcl modules)
from bhcl.datasets.image_check import read_image_or_raise
from bhcl.structures import LabelTree
from bhcl.utils.setup_env import load_cfg

MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='a bhcl config: its train and val datasets are used')
    parser.add_argument('out_dir', help='folder for linear_probe.json and linear_probe.md')
    parser.add_argument('--encoder', action='append', default=None, metavar='NAME=WEIGHTS',
                        help="encoder to probe; WEIGHTS is 'none' (random) or a checkpoint")
    parser.add_argument('--depth', type=int, default=18, help='ResNet depth (18)')
    parser.add_argument('--size', type=int, default=128, help='images resized to SIZE x SIZE')
    parser.add_argument('--epochs', type=int, default=100, help='full-batch Adam steps (100)')
    parser.add_argument('--lr', type=float, default=1e-2)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--max-images', type=int, default=None, help='first N images per split')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. train_dataloader.dataset.data_root=x '
                        '(a key the config lacks is an error unless written +key=value)')
    return parser.parse_args(argv)


def image_targets(dataset, tree: LabelTree, max_images=None):
    """Image paths and (n_images, K) 0/1 presence of every node (ancestors included)."""
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    paths, targets = [], np.zeros((n, tree.num_classes), dtype=np.float32)
    for i in range(n):
        info = dataset.get_data_info(i)
        paths.append(info['img_path'])
        for inst in info['instances']:
            if inst.get('ignore_flag', 0):
                continue
            targets[i, [a for a in tree.ancestors[inst['bbox_label']] if a >= 0]] = 1.0
    return paths, targets


def build_encoder(depth: int, weights: str, seed: int):
    """Frozen mmdet ResNet; ``weights`` 'none' or a checkpoint (backbone export or full)."""
    torch.manual_seed(seed)
    encoder = MODELS.build(dict(type='mmdet.ResNet', depth=depth, out_indices=(3,),
                                norm_eval=True, init_cfg=None))
    encoder.init_weights()
    if weights != 'none':
        ckpt = torch.load(weights, map_location='cpu', weights_only=False)
        state = ckpt.get('state_dict', ckpt)
        if any(k.startswith('backbone.') for k in state):
            state = {k[len('backbone.'):]: v for k, v in state.items()
                     if k.startswith('backbone.')}
        missing, unexpected = encoder.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f'{weights}: {len(missing)} encoder weights missing '
                             f'(e.g. {missing[:3]}); is it a ResNet-{depth} backbone?')
        if unexpected:
            print(f'{weights}: ignored {len(unexpected)} unexpected keys (e.g. {unexpected[:3]})')
    encoder.eval()  # mmdet's ResNet.train() returns None: no chaining
    return encoder


@torch.no_grad()
def embed(encoder, paths, size: int, batch: int = 16) -> torch.Tensor:
    feats = []
    bar = ProgressBar(len(paths), file=sys.stdout)
    for start in range(0, len(paths), batch):
        imgs = []
        for p in paths[start:start + batch]:
            img = read_image_or_raise(p, 'restore it, or delete it and its annotation file '
                                      'from the dataset')
            img = cv2.resize(img, (size, size))[:, :, ::-1].astype(np.float32)
            imgs.append(torch.from_numpy((img - MEAN) / STD).permute(2, 0, 1))
            bar.update()
        feats.append(encoder(torch.stack(imgs))[-1].mean((2, 3)))
    return torch.cat(feats)


def train_probe(x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, seed: int):
    torch.manual_seed(seed)
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    layer = torch.nn.Linear(x.shape[1], y.shape[1])
    opt = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=1e-4)
    xn = (x - mean) / std
    for _ in range(epochs):
        loss = F.binary_cross_entropy_with_logits(layer(xn), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return lambda z: torch.sigmoid(layer((z - mean) / std)).detach()


def probe_metrics(prob: np.ndarray, target: np.ndarray, tree: LabelTree) -> dict:
    """mAP (nodes with positives; and per level), micro / macro F1 at 0.5, per-node AP."""
    from sklearn.metrics import average_precision_score, f1_score
    per_node = {}
    for k in range(tree.num_classes):
        if target[:, k].any():
            per_node[tree.classes[k]] = float(average_precision_score(target[:, k], prob[:, k]))
    level_map = {}
    for level in range(tree.num_levels):
        aps = [per_node[tree.classes[k]] for k in tree.nodes_at_level(level)
               if tree.classes[k] in per_node]
        level_map[f'lv{level}_mAP'] = float(np.mean(aps)) if aps else None
    has = target.any(0)
    pred = prob >= 0.5
    return dict(mAP=float(np.mean(list(per_node.values()))) if per_node else None,
                **level_map,
                micro_F1=float(f1_score(target[:, has], pred[:, has], average='micro',
                                        zero_division=0)),
                macro_F1=float(f1_score(target[:, has], pred[:, has], average='macro',
                                        zero_division=0)),
                per_node_AP=per_node)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_cfg(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmrotate'))
    splits = {}
    for phase in ('train', 'val'):
        ds_cfg = cfg[f'{phase}_dataloader'].dataset
        ds_cfg = ds_cfg.dataset if ds_cfg.type == 'MultiViewDataset' else ds_cfg
        splits[phase] = DATASETS.build(ds_cfg)
    tree = LabelTree.from_config(splits['train'].metainfo['label_tree'])
    data = {p: image_targets(ds, tree, args.max_images) for p, ds in splits.items()}
    encoders = [e.split('=', 1) for e in (args.encoder or ['random=none'])]
    results = {}
    for name, weights in encoders:
        encoder = build_encoder(args.depth, weights, args.seed)
        x = {p: embed(encoder, data[p][0], args.size) for p in data}
        predict = train_probe(x['train'], torch.from_numpy(data['train'][1]), args.epochs,
                              args.lr, args.seed)
        results[name] = dict(weights=weights, **probe_metrics(
            predict(x['val']).numpy(), data['val'][1], tree))
    os.makedirs(args.out_dir, exist_ok=True)
    keys = ['mAP'] + [f'lv{lv}_mAP' for lv in range(tree.num_levels)] + ['micro_F1', 'macro_F1']
    lines = [f"Linear probe, {len(data['train'][0])} train / {len(data['val'][0])} val images, "
             f'ResNet-{args.depth}, {args.size} px', '',
             '| encoder | ' + ' | '.join(keys) + ' |', '|---' * (len(keys) + 1) + '|']
    for name, res in results.items():
        lines.append(f'| {name} | ' + ' | '.join(
            'n/a' if res[k] is None else f'{res[k]:.4f}' for k in keys) + ' |')
    text = '\n'.join(lines)
    print(text)
    with open(osp.join(args.out_dir, 'linear_probe.md'), 'w') as f:
        f.write(text + '\n')
    with open(osp.join(args.out_dir, 'linear_probe.json'), 'w') as f:
        json.dump(dict(config=args.config, depth=args.depth, size=args.size,
                       results=results), f, indent=1)
    return results


if __name__ == '__main__':
    main()
