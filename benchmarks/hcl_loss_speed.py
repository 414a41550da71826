"""Speed and memory of the hierarchical contrastive loss against a per-level baseline.

Forward + backward of the loss maths on P matched queries (unit embeddings of
width 128, projection head excluded: it is the same for both) with the
ShipRSImageNet tree (49 nodes, 4 levels; levels 1-3 used). The baseline is the
straightforward implementation that rebuilds the similarity matrix and its
(P, P) masks for every level, as the published code does. Both are checked
to give equal values before timing.

    python benchmarks/hcl_loss_speed.py [--device cuda] [--sizes 256 1024 4096]

Peak memory is the high-water mark of tensor bytes allocated during one
forward + backward (CUDA: ``max_memory_allocated``; CPU: tracked per tensor
storage with a dispatch mode).
"""
import argparse
import os.path as osp
import runpy
import statistics
import sys
import time
import weakref

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from bhcl.models.losses.functional import (default_level_weights,  # noqa: E402
                                           hierarchical_contrastive_loss,
                                           prototype_level_labels, sample_level_labels)
from bhcl.structures import LabelTree  # noqa: E402

TREE = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                'configs', '_base_', 'datasets', 'shiprs_label_tree.py')


def per_level_baseline(feats, labels, ancestors, levels, weights, tau, balance,
                       prototypes=None, prototype_labels=None):
    """Same loss, one level at a time: similarity, masks and exp rebuilt per level."""
    num_classes = ancestors.shape[0]
    used = torch.zeros(feats.shape[0], dtype=torch.bool, device=feats.device)
    per_level = []
    for j, level in enumerate(levels):
        lab = ancestors[labels, level]
        keep = lab >= 0
        f, y = feats[keep], lab[keep]
        cols, ycols = f, y
        if prototypes is not None:
            shown = prototype_labels[:, j] >= 0
            cols = torch.cat([f, prototypes[shown]])
            ycols = torch.cat([y, prototype_labels[shown, j]])
        not_self = ~torch.eye(f.shape[0], cols.shape[0], dtype=torch.bool, device=f.device)
        logits = f @ cols.T / tau
        row_max = logits.detach().masked_fill(~not_self, float('-inf')).max(1, keepdim=True)[0]
        logits = logits - row_max
        weight = not_self.to(logits.dtype)
        if balance:
            weight = weight / torch.bincount(ycols, minlength=num_classes)[ycols].to(logits.dtype)
        log_prob = logits - (logits.exp() * weight).sum(1, keepdim=True).log()
        pos = (y[:, None] == ycols[None, :]) & not_self
        npos = pos.sum(1)
        anchor = npos > 0
        loss = -(log_prob * pos).sum(1) / npos.clamp_min(1)
        per_level.append(loss[anchor].sum() * weights[j])
        idx = keep.nonzero().squeeze(1)
        used[idx[anchor]] = True
    return torch.stack(per_level) / used.sum().clamp_min(1)


class _LiveTensorBytes(TorchDispatchMode):
    """High-water mark of CPU tensor storage bytes created inside the block."""

    def __init__(self):
        super().__init__()
        self.current = self.peak = 0
        self._seen = weakref.WeakKeyDictionary()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if storage not in self._seen:
                    self._seen[storage] = n = storage.nbytes()
                    self.current += n
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(storage, self._free, n)
        return out

    def _free(self, n):
        self.current -= n


def _step(fn, feats, protos):
    feats.grad = None
    if protos is not None:
        protos.grad = None
    fn().sum().backward()


def _peak_mib(fn, feats, protos, device):
    if device.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        _step(fn, feats, protos)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - start) / 2**20
    with _LiveTensorBytes() as tracker:
        _step(fn, feats, protos)
    return tracker.peak / 2**20


def _time_ms(fn, feats, protos, device, repeats):
    times = []
    for _ in range(repeats + 1):  # the first run warms up
        if device.type == 'cuda':
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        _step(fn, feats, protos)
        if device.type == 'cuda':
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times[1:])


def _case(tree, size, balance, with_protos, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ancestors = torch.as_tensor(tree.ancestors, device=device)
    # long-tailed leaves (frequency ~ 1/rank) plus 5% "Other" samples on internal nodes
    leaf = torch.as_tensor(tree.leaf_mask)
    freq = torch.zeros(tree.num_classes, dtype=torch.float64)
    rank = (torch.randperm(int(leaf.sum()), generator=gen) + 1).double()
    freq[leaf] = 0.95 * (1.0 / rank) / (1.0 / rank).sum()
    freq[~leaf] = 0.05 / int((~leaf).sum())
    labels = torch.multinomial(freq, size, replacement=True, generator=gen).to(device)
    feats = F.normalize(torch.randn(size, 128, generator=gen), dim=1).to(device).requires_grad_()
    levels = list(range(1, tree.num_levels))
    weights = default_level_weights(len(levels)).float().to(device)
    protos = plabels = None
    if with_protos:
        protos = F.normalize(torch.randn(tree.num_classes, 128, generator=gen), dim=1)
        protos = protos.to(device).requires_grad_()
        plabels = prototype_level_labels(ancestors, levels, 'node')
    lab = sample_level_labels(ancestors, labels, levels)

    def ours():
        return hierarchical_contrastive_loss(feats, lab, weights, 0.1, balance, protos, plabels,
                                             tree.num_classes)

    def baseline():
        return per_level_baseline(feats, labels, ancestors, levels, weights, 0.1, balance,
                                  protos, plabels)

    return ours, baseline, feats, protos


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--sizes', type=int, nargs='+', default=[256, 1024, 4096])
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    tree = LabelTree.from_config(runpy.run_path(TREE)['label_tree'])
    print(f'{tree!r}; device {device}; torch {torch.__version__}; '
          f'{torch.get_num_threads()} CPU threads; median of {args.repeats} runs')
    header = (f'{"form":<22}{"P":>6}{"ours ms":>10}{"base ms":>10}{"speed-up":>10}'
              f'{"ours MiB":>10}{"base MiB":>10}{"mem ratio":>10}')
    print(header)
    print('-' * len(header))
    forms = [('HCL (standard)', False, False), ('BHCL (balanced + EMA)', True, True)]
    for name, balance, with_protos in forms:
        for size in args.sizes:
            ours, base, feats, protos = _case(tree, size, balance, with_protos, device)
            with torch.no_grad():
                torch.testing.assert_close(ours(), base(), rtol=1e-4, atol=1e-5)
            t_ours = _time_ms(ours, feats, protos, device, args.repeats)
            t_base = _time_ms(base, feats, protos, device, args.repeats)
            m_ours = _peak_mib(ours, feats, protos, device)
            m_base = _peak_mib(base, feats, protos, device)
            print(f'{name:<22}{size:>6}{t_ours:>10.2f}{t_base:>10.2f}{t_base / t_ours:>9.2f}x'
                  f'{m_ours:>10.1f}{m_base:>10.1f}{m_base / m_ours:>9.2f}x')


if __name__ == '__main__':
    main()
