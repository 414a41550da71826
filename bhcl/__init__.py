"""bhcl: hierarchical fine-grained oriented object detection (OpenMMLab plugin).

``import bhcl`` registers every dataset, transform, model, loss, metric and hook
into the mmengine / mmdet / mmrotate registries (and the hierarchical visualiser).
"""
from .utils.upstream_import import import_without_onedl_notice

# before any bhcl module imports it (through mmrotate): it prints a debug notice twice
import_without_onedl_notice(['mmdet.datasets'])

from . import datasets, engine, evaluation, models, visualization  # noqa: E402, F401
from .version import __version__  # noqa: E402

__all__ = ['__version__']
