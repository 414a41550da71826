"""Pseudo-classes of object embeddings: PCA, L2 normalisation, k-means, cosine assignment.

MutDet reduces the backbone embeddings with PCA (2048 -> 256), normalises
them, clusters them with k-means into 256 pseudo-classes, and labels each
object with its nearest centroid by cosine similarity. The fitted PCA and
centroids are one :class:`ClusterModel` saved to one file, so that several
datasets (or a later run) get the same cluster ids.
"""
from __future__ import annotations

import logging
import os
import os.path as osp
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

FORMAT_VERSION = 1


def _log(msg: str, level: int = logging.INFO) -> None:
    from mmengine.logging import print_log
    print_log(msg, logger='current', level=level)


@dataclass
class ClusterModel:
    """A fitted PCA + cluster centroids.

    Attributes:
        mean: (D,) PCA mean of the raw embeddings.
        components: (d, D) PCA axes (rows, orthonormal).
        centroids: (k, d) L2-normalised cluster centres in the projected space.
        meta: what was asked for and what was fitted (dims, counts, seed).
    """
    mean: Tensor
    components: Tensor
    centroids: Tensor
    meta: Dict = field(default_factory=dict)

    @property
    def num_clusters(self) -> int:
        return len(self.centroids)

    def project(self, embeddings: Tensor) -> Tensor:
        """(N, D) raw embeddings -> (N, d) float32 PCA projections, L2-normalised."""
        x = torch.as_tensor(embeddings).float()
        if x.dim() != 2 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(f'expected (N, {self.mean.shape[0]}) embeddings, got '
                             f'{tuple(x.shape)}; embed with the backbone the clusters were '
                             'fitted on')
        return F.normalize((x - self.mean) @ self.components.T, dim=1)

    def assign(self, embeddings: Tensor) -> Tuple[Tensor, Tensor]:
        """(N, D) raw embeddings -> (N,) long labels (nearest centroid by cosine) and
        the (N, d) normalised projections they were computed from."""
        z = self.project(embeddings)
        if not len(z):
            return torch.zeros(0, dtype=torch.long), z
        return (z @ self.centroids.T).argmax(1), z

    def save(self, path: str) -> None:
        """One ``torch.save`` dict: ``mean``, ``components``, ``centroids``, ``meta``."""
        os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
        torch.save(dict(mean=self.mean, components=self.components, centroids=self.centroids,
                        meta=dict(self.meta, format_version=FORMAT_VERSION)), path)

    @classmethod
    def load(cls, path: str) -> 'ClusterModel':
        """The model saved by :meth:`save`; errors name the file and the fix."""
        if not osp.isfile(path):
            raise FileNotFoundError(f'cluster file {path!r} does not exist; fit one with '
                                    'tools/pretraining/cluster_embeddings.py --fit')
        data = torch.load(path, map_location='cpu', weights_only=True)
        missing = {'mean', 'components', 'centroids'} - set(data)
        if missing:
            raise ValueError(f'{path}: not a cluster file (no {sorted(missing)}); pass the '
                             'file written by cluster_embeddings.py --fit')
        return cls(data['mean'], data['components'], data['centroids'], data.get('meta', {}))


def _clip(requested: int, limit: int, what: str, why: str) -> int:
    if requested > limit:
        _log(f'{what}: {requested} requested but {why} allow only {limit}; using {limit}',
             logging.WARNING)
    return min(requested, limit)


def fit_cluster_model(embeddings: Tensor, dim: int = 256, num_clusters: int = 256,
                      seed: int = 0, n_init: int = 3, max_iter: int = 300) -> ClusterModel:
    """Fit PCA to ``dim`` and k-means with ``num_clusters`` on (N, D) raw embeddings.

    ``dim`` is clipped to ``min(N, D)`` and ``num_clusters`` to the number of
    distinct projected samples, each with a logged warning (``meta`` keeps
    both the requested and the fitted values). Centroids are L2-normalised:
    labels are by cosine similarity.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    x = torch.as_tensor(embeddings).float().numpy()
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f'need (N, D) embeddings with N > 0, got shape {x.shape}; '
                         'are the embedding folders empty?')
    if not np.isfinite(x).all():
        raise ValueError('embeddings contain NaN or inf; re-extract them')
    fit_dim = _clip(dim, min(x.shape), 'PCA dimension', f'{len(x)} samples of {x.shape[1]}-d')
    pca = PCA(n_components=fit_dim, random_state=seed).fit(x)
    model = ClusterModel(torch.from_numpy(pca.mean_).float(),
                         torch.from_numpy(pca.components_).float(), torch.zeros(0, fit_dim))
    z = model.project(torch.from_numpy(x)).numpy()
    distinct = len(np.unique(z, axis=0))
    k = _clip(num_clusters, distinct, 'number of clusters', f'{distinct} distinct samples')
    kmeans = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=seed).fit(z)
    model.centroids = F.normalize(torch.from_numpy(kmeans.cluster_centers_).float(), dim=1)
    model.meta = dict(dim=fit_dim, requested_dim=dim, num_clusters=k,
                      requested_num_clusters=num_clusters, num_samples=len(x),
                      input_dim=x.shape[1], seed=seed)
    return model


def list_embedding_files(emb_dir: str) -> List[str]:
    """Sorted ``*.pth`` files of ``emb_dir``; errors name the folder and the fix."""
    if not osp.isdir(emb_dir):
        raise FileNotFoundError(f'embedding folder {emb_dir!r} does not exist; run '
                                'tools/pretraining/extract_embeddings.py first')
    files = sorted(osp.join(emb_dir, n) for n in os.listdir(emb_dir) if n.endswith('.pth'))
    if not files:
        raise ValueError(f'{emb_dir}: no embedding files (*.pth); run '
                         'tools/pretraining/extract_embeddings.py or check the path')
    return files


def load_embedding_file(path: str) -> dict:
    """An ``extract_embedding_files`` record, checked: ``boxes`` (N, 5) and
    ``embeddings`` (N, D) must exist and have as many rows."""
    data = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(data, dict) or 'boxes' not in data or 'embeddings' not in data:
        raise ValueError(f'{path}: not an embedding file (needs boxes and embeddings); '
                         'write it with tools/pretraining/extract_embeddings.py')
    if len(data['boxes']) != len(data['embeddings']):
        raise ValueError(f'{path}: {len(data["boxes"])} boxes but {len(data["embeddings"])} '
                         'embeddings; the file is corrupt, extract it again')
    return data


def collect_embeddings(emb_dirs: Sequence[str], max_per_image: Optional[int] = None,
                       seed: int = 0, progress: Optional[Callable[[], None]] = None) -> Tensor:
    """(N, D) float32 embeddings of every file in ``emb_dirs`` (to fit on).

    ``max_per_image`` keeps a seeded random subset of each image's objects,
    to bound memory on large datasets.
    """
    rng = np.random.default_rng(seed)
    chunks = []
    for emb_dir in emb_dirs:
        for path in list_embedding_files(emb_dir):
            emb = load_embedding_file(path)['embeddings'].float()
            if max_per_image is not None and len(emb) > max_per_image:
                emb = emb[torch.from_numpy(np.sort(rng.choice(len(emb), max_per_image,
                                                              replace=False)))]
            chunks.append(emb)
            if progress is not None:
                progress()
    return torch.cat(chunks)


def assign_embedding_files(model: ClusterModel, emb_dir: str, out_dir: str,
                           progress: Optional[Callable[[], None]] = None) -> Counter:
    """Pseudo-label every ``emb_dir/<stem>.pth``; write ``out_dir/<stem>.pth``.

    Each output is ``dict(image=..., boxes=(N, 5) float32, labels=(N,) long,
    embeddings=(N, d) float32 normalised projections)``, rows in the input's
    order. Returns counts: ``images``, ``boxes``, ``clusters_used``.
    """
    os.makedirs(out_dir, exist_ok=True)
    stats: Counter = Counter()
    used = torch.zeros(model.num_clusters, dtype=torch.bool)
    for path in list_embedding_files(emb_dir):
        data = load_embedding_file(path)
        try:
            labels, z = model.assign(data['embeddings'])
        except ValueError as e:
            raise ValueError(f'{path}: {e}') from None
        used[labels] = True
        torch.save(dict(image=data.get('image'), boxes=data['boxes'].float(), labels=labels,
                        embeddings=z), osp.join(out_dir, osp.basename(path)))
        stats['images'] += 1
        stats['boxes'] += len(labels)
        if progress is not None:
            progress()
    stats['clusters_used'] = int(used.sum())
    return stats
