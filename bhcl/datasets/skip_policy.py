"""One policy for invalid annotations, shared by the datasets and the converters.

``on_invalid='raise'`` (the default everywhere) stops at the first problem
with an error that names the file, the line or object, and a fix.
``on_invalid='skip'`` (datasets) or ``--skip-invalid`` (converters, splitter)
leaves out the smallest unit that holds the problem and goes on:

* a bad object (malformed line, unknown class, degenerate polygon, a FAIR1M
  object without points) skips that object, not its image;
* a bad file (malformed XML, not UTF-8, missing image or annotation, an
  unreadable image) skips that image with all its objects: an image kept
  with its objects missing would teach the model they are background.

Every skip is counted under its reason and logged as its own warning (file,
line or object, and why); ``summary()`` gives the totals at the end. No mm*
imports (the log function defaults to mmengine's ``print_log``, imported
when first used).
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Callable, List, Optional, Union

ON_INVALID = ('raise', 'skip')


def _warn(msg: str) -> None:
    from mmengine.logging import print_log
    print_log(msg, logger='current', level=logging.WARNING)


class SkipPolicy:
    """Raise, or skip + count + log, each invalid file or object.

    Args:
        on_invalid: ``'raise'`` or ``'skip'``.
        log: called with each skip message (default: a warning through
            mmengine's ``print_log``).

    Attributes:
        counts: ``{reason: number skipped}``, e.g. ``invalid``, ``not_utf8``.
        units: ``{'object' | 'image': number skipped}``.
        messages: every skip message, in order.
    """

    def __init__(self, on_invalid: str = 'raise',
                 log: Optional[Callable[[str], None]] = None) -> None:
        if on_invalid not in ON_INVALID:
            raise ValueError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
        self.on_invalid = on_invalid
        self.log = log or _warn
        self.counts: Counter = Counter()
        self.units: Counter = Counter()
        self.messages: List[str] = []

    @classmethod
    def of(cls, on_invalid: Union[str, 'SkipPolicy']) -> 'SkipPolicy':
        """``on_invalid`` itself if it is a policy, else a new one."""
        return on_invalid if isinstance(on_invalid, SkipPolicy) else cls(on_invalid)

    @property
    def skipping(self) -> bool:
        return self.on_invalid == 'skip'

    def skip(self, error: Exception, reason: Optional[str] = None,
             unit: str = 'object') -> None:
        """Raise ``error``, or record it as one skipped ``unit`` under ``reason``.

        ``reason`` defaults to the error's ``reason`` attribute (see
        ``AnnotationError``), else ``'invalid'``.
        """
        if not self.skipping:
            raise error
        reason = reason or getattr(error, 'reason', 'invalid')
        self.counts[reason] += 1
        self.units[unit] += 1
        message = f'{error} Skipped this {unit}.'
        self.messages.append(message)
        self.log(message)

    def summary(self, what: str = '') -> str:
        """One line with the totals, e.g. ``'skipped 2 objects and 1 image
        (invalid=2, not_utf8=1); each is logged above'``; ``''`` if nothing was skipped."""
        if not self.counts:
            return ''
        units = ' and '.join(f'{n} {u}{"s" if n > 1 else ""}'
                             for u, n in sorted(self.units.items()))
        reasons = ', '.join(f'{r}={n}' for r, n in sorted(self.counts.items()))
        return (f'{what + ": " if what else ""}skipped {units} ({reasons}); '
                'each is logged above with its file and reason')
