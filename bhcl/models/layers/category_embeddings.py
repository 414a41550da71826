"""Category-query initialisation from an embeddings file the user supplies.

The file is a ``torch.save``d dict with ``categories`` (the node names, one
string each) and ``embeddings`` (a (K, D) float tensor, row i for
``categories[i]``): the layout of the CLIP embeddings file CQ-DINO loads
(``v3det_clip_embeddings.pth``). ``tools/misc/category_embeddings.py`` writes
one from the node names with a text encoder. Rows are matched to the tree by
name, so the file's order does not matter; every node needs exactly one row.
"""
import os.path as osp
from typing import Optional, Sequence

import torch
from torch import Tensor


class CategoryEmbeddingsError(ValueError):
    """The embeddings file does not fit the label tree."""


def _names(names: Sequence[str], limit: int = 10) -> str:
    shown = ', '.join(repr(n) for n in list(names)[:limit])
    return shown + (f', ... ({len(names)} in all)' if len(names) > limit else '')


def load_category_embeddings(path: str, node_names: Sequence[str],
                             dims: Optional[int] = None) -> Tensor:
    """(K, D) float32 embeddings of ``node_names`` (the tree's classes, in class
    order) read from ``path``; ``dims`` checks D. Raises
    ``CategoryEmbeddingsError`` naming the file and what does not fit."""
    if not osp.isfile(path):
        raise CategoryEmbeddingsError(
            f'category embeddings file {path} not found; write one with '
            'tools/misc/category_embeddings.py or leave the queries learnt')
    data = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(data, dict) or not {'categories', 'embeddings'} <= set(data):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise CategoryEmbeddingsError(
            f'{path}: expected a dict with keys "categories" (node names) and '
            f'"embeddings" (a (K, D) tensor), got {keys}')
    names = [str(n) for n in data['categories']]
    emb = torch.as_tensor(data['embeddings'])
    if emb.dim() != 2 or emb.shape[0] != len(names):
        raise CategoryEmbeddingsError(
            f'{path}: "embeddings" must be ({len(names)}, D), one row per name in '
            f'"categories", got shape {tuple(emb.shape)}')
    seen = set()
    duplicates = [n for n in names if n in seen or seen.add(n)]
    if duplicates:
        raise CategoryEmbeddingsError(f'{path}: duplicate category names: {_names(duplicates)}')
    wanted = list(node_names)
    missing = [n for n in wanted if n not in seen]
    extra = [n for n in names if n not in set(wanted)]
    if missing or extra:
        parts = ([f'missing nodes of the label tree: {_names(missing)}'] if missing else []) + \
            ([f'names that are not nodes of the tree: {_names(extra)}'] if extra else [])
        raise CategoryEmbeddingsError(
            f'{path} does not match the label tree ({len(wanted)} nodes): '
            + '; '.join(parts) + '. Regenerate it from this tree with '
            'tools/misc/category_embeddings.py')
    if dims is not None and emb.shape[1] != dims:
        raise CategoryEmbeddingsError(
            f'{path}: embeddings have dimension {emb.shape[1]}, the category queries '
            f'{dims}; write the file with a {dims}-d encoder or project the '
            'embeddings to the query width before loading')
    if not torch.isfinite(emb).all():
        raise CategoryEmbeddingsError(f'{path}: embeddings contain NaN or inf')
    index = {n: i for i, n in enumerate(names)}
    return emb[[index[n] for n in wanted]].float()
