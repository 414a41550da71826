"""Reading and writing DOTA-format ``labelTxt`` files with a label tree.

A DOTA line is ``x1 y1 x2 y2 x3 y3 x4 y4 <class name> [difficulty]``. Class
names may contain spaces (``Arleigh Burke DD``), the difficulty may be
missing (treated as 0), and original DOTA files start with ``imagesource:`` /
``gsd:`` header lines. No mm* imports: converters and the metric use it too.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from ..structures.geometry import poly_area
from ..structures.label_tree import LabelTree, UnknownClassError

HEADER_PREFIXES = ('imagesource:', 'gsd:')


class AnnotationError(ValueError):
    """A malformed annotation; the message names the file, the line and a fix."""


@dataclass
class DOTAObject:
    poly: List[float]          # 8 floats, x1 y1 ... x4 y4
    label: Optional[int]       # node index in the label tree; None if ignored
    name: str                  # class name as written in the file
    difficulty: int = 0
    line: int = 0              # 1-based line number in the file


@dataclass
class ParseResult:
    objects: List[DOTAObject] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)   # reason -> count


def _split_name_difficulty(tokens: List[str], tree: LabelTree):
    """Class-name tokens and difficulty from the tokens after the 8 coords.

    The last token is a difficulty when it is an integer and the name
    without it is a class name; a class name may itself end in a number.
    """
    if len(tokens) > 1 and tokens[-1].lstrip('-').isdigit():
        name = ' '.join(tokens[:-1])
        full = ' '.join(tokens)
        if _known(tree, name) or not _known(tree, full):
            return name, int(tokens[-1])
        return full, 0
    return ' '.join(tokens), 0


def _known(tree: LabelTree, name: str) -> bool:
    try:
        tree.resolve(name)
    except UnknownClassError:
        return False
    return True


def parse_dota_line(line: str, tree: LabelTree, where: str,
                    min_box_area: float = 1e-6) -> DOTAObject:
    """Parse one object line (``label`` is ``None`` for names the tree ignores).

    Raises ``AnnotationError`` (malformed line, unknown class, degenerate
    box) with ``where`` (``file:line``) in the message.
    """
    tokens = line.split()
    if len(tokens) < 9:
        raise AnnotationError(
            f'{where}: expected "x1 y1 x2 y2 x3 y3 x4 y4 <class name> [difficulty]", '
            f'got {len(tokens)} fields: {line.strip()!r}. Fix or delete this line.')
    try:
        poly = [float(t) for t in tokens[:8]]
    except ValueError:
        raise AnnotationError(
            f'{where}: the first 8 fields must be numbers (polygon corners), '
            f'got {line.strip()!r}. Fix or delete this line.') from None
    if not all(math.isfinite(v) for v in poly):
        raise AnnotationError(f'{where}: non-finite coordinate in {line.strip()!r}.')
    name, difficulty = _split_name_difficulty(tokens[8:], tree)
    try:
        label = tree.resolve(name)
    except UnknownClassError as e:
        raise AnnotationError(f'{where}: {e}') from None
    if label is None:
        return DOTAObject(poly=poly, label=None, name=name, difficulty=difficulty)
    area = float(poly_area(np.array(poly))[0])
    if area < min_box_area:
        raise AnnotationError(
            f'{where}: degenerate box (polygon area {area:.3g} < {min_box_area}) '
            f'for {name!r}. Fix the corners or delete this line.')
    return DOTAObject(poly=poly, label=label, name=name, difficulty=difficulty)


def read_dota_lines(path: str) -> Tuple[List[Tuple[int, str]], int]:
    """Object lines of a ``labelTxt`` file as ``(line number, text)`` pairs
    (1-based, stripped; blank lines left out) and the number of header lines."""
    with open(path, encoding='utf-8-sig') as f:
        lines = [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]
    objects = [(n, t) for n, t in lines if not t.lower().startswith(HEADER_PREFIXES)]
    return objects, len(lines) - len(objects)


def parse_dota_txt(path: str, tree: LabelTree, on_invalid: str = 'raise',
                   min_box_area: float = 1e-6) -> ParseResult:
    """Parse a DOTA ``labelTxt`` file into objects labelled by tree node.

    Args:
        on_invalid: ``'raise'`` (default) stops at the first malformed line,
            unknown class or degenerate box; ``'skip'`` counts it under
            ``skipped`` (reason ``invalid``) and goes on.

    Header lines and blank lines are skipped and counted; names the tree
    ignores (e.g. ``Dock``) are counted as ``ignored:<name>``.
    """
    if on_invalid not in ('raise', 'skip'):
        raise ValueError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
    result = ParseResult()
    lines, headers = read_dota_lines(path)
    if headers:
        result.skipped['header'] = headers
    for lineno, line in lines:
        try:
            obj = parse_dota_line(line, tree, f'{path}:{lineno}', min_box_area)
        except AnnotationError:
            if on_invalid == 'raise':
                raise
            result.skipped['invalid'] += 1
            continue
        if obj.label is None:
            result.skipped[f'ignored:{obj.name}'] += 1
            continue
        obj.line = lineno
        result.objects.append(obj)
    return result


def format_dota_line(poly, name: str, difficulty: Optional[int] = 0,
                     precision: int = 1) -> str:
    """One DOTA line; ``difficulty=None`` omits the field."""
    coords = ' '.join(f'{v:.{precision}f}' for v in poly)
    return f'{coords} {name}' + ('' if difficulty is None else f' {int(difficulty)}')
