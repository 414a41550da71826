"""Import the OpenMMLab (OneDL) packages without their OneDL-datasets notice.

mmdet's ``datasets`` and ``datasets.transforms`` (and mmrotate's, mmpretrain's
``datasets``) look for OneDL's optional dataset classes and, when the ``onedl``
extra is absent, call ``print_log(msg, level=logging.DEBUG)`` without a logger,
which mmengine turns into a plain ``print``: a debug notice meant to stay hidden
comes out on every import, twice for ``import bhcl``. bhcl uses none of those
datasets and nothing in the notice asks the user to act, so it is dropped here;
every other line the imports print still reaches stdout, in order.
"""
import contextlib
import importlib
import io
import sys
from typing import Iterable

ONEDL_NOTICES = ('Could not import OneDL. Skipping OneDL datasets.', 'Could not import OneDL')


def import_without_onedl_notice(modules: Iterable[str]) -> None:
    """Import ``modules`` in order; what they print reaches stdout less the lines
    equal to one of :data:`ONEDL_NOTICES` (also when an import raises)."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            for name in modules:
                importlib.import_module(name)
    finally:
        for line in captured.getvalue().splitlines(keepends=True):
            if line.rstrip('\n') not in ONEDL_NOTICES:
                sys.stdout.write(line)
