"""Classification-head cost per training step as the label tree grows: category queries vs linear.

For trees of 49, 1,000 and 10,000 nodes (4 levels, built with a fixed fan-out),
times forward + backward of the classification part of one decoder stage and
measures its peak memory, for

* the linear head: Linear(C, K) on the object queries + sigmoid focal loss over K;
* the category-query head (``CategoryQueries``, tree update, top-K selection,
  presence loss): cross-attention of the K queries to a 32 x 32 feature map,
  projection, logits over K with the unselected categories weighted 0;
* the full CQ-DINO path (``CQDINOClassifier``): the same, with the asymmetric
  ancestor-masked presence loss, the top-K selection fused with the map's tokens
  by 6 fusion layers (one per encoder layer; width 1024, 4 heads, as the
  authors), the proposals ranked over the selected categories (``select_queries``
  on 1,024 proposals' K logits; the 300 chosen ones get RHINO's encoder
  classification loss over the selection), 6 decoder-layer ``CategoryCrossAttention`` s of
  the object queries to the selected categories, and the logits against the
  fused embeddings. The fused image tokens enter the loss through a small
  stand-in term (the encoder and detection losses that would read them are
  not timed); the encoder's self-attention and deformable layers are not timed.

The paper-model sizes: 2 images, 300 object queries, C = 256, a stride-32 map of
a 1024 px image. Prints milliseconds, peak MiB and the ratios to the linear
head measured in the same run.

    python benchmarks/category_query_scaling.py [--nodes 49 1000 10000] [--iters 5]
        [--topk 100] [--device cpu|cuda]
"""
import argparse
import os.path as osp
import statistics
import sys
import time

import torch
import torch.nn.functional as F

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'benchmarks'))
from hcl_loss_speed import _LiveTensorBytes  # noqa: E402


def tree_paths(num_nodes, levels=4):
    """Paths of a ``levels``-deep tree with about ``num_nodes`` nodes (fixed fan-out)."""
    fan = 2
    while sum(fan ** (lv + 1) for lv in range(levels)) < num_nodes:
        fan += 1
    paths, frontier = [], ['']
    for _ in range(levels):
        nxt = []
        for parent in frontier:
            for i in range(fan):
                if len(paths) == num_nodes:
                    return paths
                p = f'{parent}/n{len(paths)}' if parent else f'n{len(paths)}'
                paths.append(p)
                nxt.append(p)
        frontier = nxt
    return paths


def focal(logits, target, weight=None):
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction='none')
    p_t = p * target + (1 - p) * (1 - target)
    loss = (0.25 * target + 0.75 * (1 - target)) * (1 - p_t) ** 2 * ce
    return (loss if weight is None else loss * weight).sum() / max(float(target.sum()), 1.0)


def make_steps(num_nodes, args, device):
    import bhcl  # noqa: F401
    from bhcl.models.layers import CategoryCrossAttention, CQDINOClassifier
    from bhcl.models.layers.category_queries import CategoryQueries
    from bhcl.models.layers.category_selection import gather_categories, scatter_categories
    from bhcl.models.layers.hierarchical_classification import (ClassContext,
                                                                 HierarchicalClassification)
    from bhcl.structures import LabelTree
    tree = LabelTree.from_paths(tree_paths(num_nodes))
    k = tree.num_classes
    b, n, c = 2, 300, 256
    g = torch.Generator().manual_seed(0)
    obj = torch.randn(b, n, c, generator=g).to(device).requires_grad_()
    feat = torch.randn(b, c, 32, 32, generator=g).to(device).requires_grad_()
    gt = [torch.randint(0, k, (8,), generator=g).to(device) for _ in range(b)]
    target = torch.zeros(b, n, k, device=device)
    for i in range(b):
        target[i, torch.arange(8), gt[i]] = 1.0
    enc_logits = torch.randn(b, 32 * 32, k, generator=g).to(device).requires_grad_()
    linear = torch.nn.Linear(c, k).to(device)
    cq = CategoryQueries(tree.to_config(), c, topk=args.topk, num_heads=8).to(device).train()
    proj = torch.nn.Linear(c, c).to(device)

    topk = min(args.topk, k)
    cqdino = CQDINOClassifier(tree.to_config(), c, topk=topk, num_heads=8,
                              num_fusion_layers=6).to(device).train()
    category_attn = torch.nn.ModuleList(CategoryCrossAttention(c, 8) for _ in range(6)
                                        ).to(device).train()
    hierarchy = HierarchicalClassification  # its static CQ-DINO helpers

    def linear_step():
        return focal(linear(obj), target)

    def cqdino_step():
        categories = cqdino.category_embeddings()
        emb, presence, keep = cqdino(feat, gt, categories=categories)
        selection = cqdino.ordered_selection(presence, gt)
        tokens = feat.flatten(2).transpose(1, 2)
        cats, valid = gather_categories(emb, selection), selection.valid
        for i in range(len(cqdino.fusion)):
            tokens, cats = cqdino.fuse(i, tokens, cats, None, valid)
        emb = scatter_categories(emb, cats, selection)
        context = ClassContext(categories, emb, presence, keep, selection)
        chosen = hierarchy.select_proposals(enc_logits, context, n)
        enc_scores = enc_logits.gather(1, chosen[..., None].expand(-1, -1, k))
        queries = obj
        for attn in category_attn:
            queries = attn(queries, cats, category_valid=valid)
        logits = cqdino.logits(proj(queries), emb)
        weight = keep[:, None, :].float()
        return (focal(logits, target, weight) + focal(enc_scores, target, weight) +
                cqdino.loss_presence(presence, gt) + 1e-3 * tokens.pow(2).mean())

    def cq_step():
        emb, presence, keep = cq(feat, gt)
        logits = cq.logits(proj(obj), emb)
        return focal(logits, target, keep[:, None, :].float()) + cq.presence_loss(
            presence, cq.presence_targets(gt, b, device))

    return (dict(linear=linear_step, category_queries=cq_step, cqdino=cqdino_step),
            (obj, feat, enc_logits))


def measure(fn, inputs, iters, device):
    times = []
    for i in range(iters + 1):
        for x in inputs:
            x.grad = None
        if device.type == 'cuda':
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn().backward()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        if i:  # the first call warms up
            times.append(time.perf_counter() - t)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        fn().backward()
        peak = (torch.cuda.max_memory_allocated() - start) / 2 ** 20
    else:
        with _LiveTensorBytes() as tracker:
            fn().backward()
        peak = tracker.peak / 2 ** 20
    return statistics.median(times) * 1e3, peak


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--nodes', type=int, nargs='+', default=[49, 1000, 10000])
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--topk', type=int, default=100)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print(f'threads {torch.get_num_threads()}, device {device}, topk {args.topk}; '
          '2 images x 300 queries x 256 channels, 32 x 32 map')
    print('| nodes | linear ms | CQ ms | CQ-DINO ms | CQ-DINO / linear time | '
          'linear peak MiB | CQ peak MiB | CQ-DINO peak MiB | CQ-DINO / linear memory |')
    print('|---|---|---|---|---|---|---|---|---|')
    for k in args.nodes:
        steps, inputs = make_steps(k, args, device)
        (lt, lm), (ct, cm), (dt, dm) = (
            measure(steps[name], inputs, args.iters, device)
            for name in ('linear', 'category_queries', 'cqdino'))
        print(f'| {k} | {lt:.1f} | {ct:.1f} | {dt:.1f} | {dt / lt:.2f}x | {lm:.1f} | '
              f'{cm:.1f} | {dm:.1f} | {dm / lm:.2f}x |', flush=True)


if __name__ == '__main__':
    main()
