from .label_tree import (DEFAULT_OTHER_PATTERNS, LabelTree, LabelTreeError,
                         UnknownClassError)

__all__ = ['LabelTree', 'LabelTreeError', 'UnknownClassError', 'DEFAULT_OTHER_PATTERNS']
