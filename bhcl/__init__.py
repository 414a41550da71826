"""bhcl: hierarchical fine-grained oriented object detection (OpenMMLab plugin).

``import bhcl`` registers every dataset, transform, model, loss, metric and hook
into the mmengine / mmdet / mmrotate registries.
"""
from . import datasets, evaluation, models  # noqa: F401
from .version import __version__

__all__ = ['__version__']
