"""Slow references written straight from the paper's formulas, and small trees.

Nested Python loops in float64 over explicit instance lists, sharing no code
with ``bhcl.models.losses.functional``.
"""
import math

import torch

from bhcl.structures import LabelTree

# 4 levels; "Other" samples sit on the internal nodes A, B, A1; x..w are leaves,
# B1 has a single leaf (w) so w is a singleton class in most batches.
TREE4 = dict(paths=['R', 'R/A', 'R/B', 'R/A/A1', 'R/A/A2', 'R/B/B1',
                    'R/A/A1/x', 'R/A/A1/y', 'R/A/A2/z', 'R/B/B1/w'])
# 3 levels, a forest of two families (as FAIR1M has five); 'X' and 'y1' internal.
TREE3 = dict(paths=['X', 'Y', 'X/x1', 'X/x2', 'Y/y1', 'X/x1/a', 'X/x1/b', 'X/x2/c', 'Y/y1/d'])


def tree(cfg) -> LabelTree:
    return LabelTree.from_config(cfg)


def paper_weights(levels):
    """lambda_l = exp(1/(L+1-l)) / sum, l = 1..L over the used levels."""
    n = len(levels)
    raw = [math.exp(1.0 / (n + 1 - l)) for l in range(1, n + 1)]
    return [r / sum(raw) for r in raw]


def naive_hcl(feats, node_labels, label_tree, levels, weights, tau, balance=False,
              prototypes=None, valid=None, scope='node', drop_singletons=False):
    """Per-level losses (list of floats), L_HCL / L_BHCL of the paper.

    Level l instances: samples whose node is at depth >= l (class = level-l
    ancestor) plus prototypes ('node': M(c) for classes c at level l;
    'subtree': every node k at depth >= l counted in its level-l ancestor).
    """
    anc = label_tree.ancestors
    f = [v.double() for v in feats]
    labels = [int(v) for v in node_labels]
    per_level = [0.0] * len(levels)
    used = set()
    for j, level in enumerate(levels):
        inst = [(f[i], int(anc[labels[i], level]), i) for i in range(len(f))
                if anc[labels[i], level] >= 0]
        if prototypes is not None:
            for k in range(label_tree.num_classes):
                if (valid is not None and not valid[k]) or anc[k, level] < 0:
                    continue
                if scope == 'node' and label_tree.depth[k] != level:
                    continue
                inst.append((prototypes[k].double(), int(anc[k, level]), None))

        def e(a, b):
            return math.exp(float(a @ b) / tau)

        for fi, ci, i in inst:
            if i is None:  # prototypes are never anchors
                continue
            positives = [fa for fa, ca, a in inst if a != i and ca == ci]
            if not positives:
                continue
            if balance:
                den = 0.0
                for c in {x[1] for x in inst}:
                    members = [x for x in inst if x[1] == c]  # I'_c, i included
                    den += sum(e(fi, fa) for fa, _, a in members if a != i) / len(members)
            else:
                def alone(c):  # no two samples of class c at this level
                    return sum(1 for x in inst if x[2] is not None and x[1] == c) <= 1
                den = sum(e(fi, fa) for fa, ca, a in inst
                          if a != i and not (drop_singletons and a is not None and alone(ca)))
            pair = [-math.log(e(fi, fp) / den) for fp in positives]
            per_level[j] += weights[j] * sum(pair) / len(pair)
            used.add(i)
    return [v / max(len(used), 1) for v in per_level]


def naive_ema(prototypes, feats, node_labels, label_tree, epsilon):
    """Bank after one EMA step: row by row, M_c <- (1-r) M_c + r mean_c, r = eps^(L-depth)."""
    out = prototypes.clone().double()
    num_levels = label_tree.num_levels
    for c in range(label_tree.num_classes):
        members = [feats[i].double() for i in range(len(feats))
                   if c in label_tree.path_ids(int(node_labels[i]))]
        if not members:
            continue
        mean = torch.stack(members).mean(0)
        r = epsilon ** (num_levels - label_tree.depth[c])
        row = (1 - r) * out[c] + r * mean
        out[c] = row / row.norm()
    return out
