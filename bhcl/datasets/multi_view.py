"""Two-view (multi-view) sampling for contrastive training.

``MultiViewDataset`` runs the wrapped dataset's pipeline ``num_views`` times
on the same image, giving independently augmented views; the registered
collate function ``multiview_collate`` flattens them into the batch. The true
images per GPU are therefore ``batch_size * num_views``, visible in the config:

    train_dataloader = dict(
        batch_size=2,
        collate_fn=dict(type='multiview_collate'),
        dataset=dict(type='MultiViewDataset', num_views=2, dataset=dict(...)))
"""
from __future__ import annotations

import copy
from typing import Any, List, Sequence, Union

from mmengine.dataset import BaseDataset, pseudo_collate
from mmengine.registry import FUNCTIONS
from mmrotate.registry import DATASETS


@DATASETS.register_module()
class MultiViewDataset:
    """Wraps a dataset; item ``i`` is a list of ``num_views`` views of image ``i``.

    Each view is the wrapped pipeline applied to a fresh copy of the same
    annotation, so random transforms (flip, translation, ...) differ per view.
    """

    def __init__(self, dataset: Union[dict, BaseDataset], num_views: int = 2,
                 lazy_init: bool = False, max_refetch: int = 1000) -> None:
        if num_views < 1:
            raise ValueError(f'MultiViewDataset: num_views must be >= 1, got {num_views}')
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset
        self.num_views = num_views
        self.max_refetch = max_refetch
        self._fully_initialized = False
        if not lazy_init:
            self.full_init()

    @property
    def metainfo(self) -> dict:
        return copy.deepcopy(self.dataset.metainfo)

    def full_init(self) -> None:
        if not self._fully_initialized:
            self.dataset.full_init()
            self._fully_initialized = True

    def get_data_info(self, idx: int) -> dict:
        return self.dataset.get_data_info(idx)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> List[Any]:
        for _ in range(self.max_refetch + 1):
            views = [self.dataset.prepare_data(idx) for _ in range(self.num_views)]
            if all(v is not None for v in views):
                return views
            # a view was rejected by the pipeline (e.g. no box left): like
            # BaseDataset, fetch another image instead
            idx = self.dataset._rand_another()
        raise RuntimeError(f'MultiViewDataset: the pipeline rejected {self.max_refetch + 1} '
                           'images in a row; check the pipeline and filter_cfg.')


@FUNCTIONS.register_module()
def multiview_collate(data_batch: Sequence[Any]) -> Any:
    """Flatten lists of views into one batch, then ``pseudo_collate``."""
    flat = []
    for item in data_batch:
        flat.extend(item if isinstance(item, (list, tuple)) else [item])
    return pseudo_collate(flat)
