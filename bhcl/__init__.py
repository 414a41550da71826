"""bhcl: hierarchical fine-grained oriented object detection (OpenMMLab plugin).

``import bhcl`` registers every dataset, transform, model, loss, metric and hook
into the mmengine / mmdet / mmrotate registries (and the hierarchical visualiser).
"""
from . import datasets, engine, evaluation, models, visualization  # noqa: F401
from .version import __version__

__all__ = ['__version__']
