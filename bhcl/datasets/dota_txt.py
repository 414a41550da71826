"""Reading and writing DOTA-format ``labelTxt`` files with a label tree.

A DOTA line is ``x1 y1 x2 y2 x3 y3 x4 y4 <class name> [difficulty]``. Class
names may contain spaces (``Arleigh Burke DD``) and end in a number
(``Boeing 737``), the difficulty may be missing (treated as 0; see
``split_name_difficulty`` for how a trailing number is read), corners may be
listed in a crossed order (untangled), and original DOTA files start with
``imagesource:`` / ``gsd:`` header lines. Files must be UTF-8. No mm*
imports: converters and the metric use it too.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ..structures.geometry import poly_area, untangle_quad
from ..structures.label_tree import LabelTree, UnknownClassError
from .skip_policy import SkipPolicy

HEADER_PREFIXES = ('imagesource:', 'gsd:')


class AnnotationError(ValueError):
    """A malformed annotation; the message names the file, the line and a fix.

    ``reason`` is the key under which a skip policy counts it.
    """
    reason = 'invalid'


class FileEncodingError(AnnotationError):
    """An annotation file that is not UTF-8 text."""
    reason = 'not_utf8'


class MalformedFileError(AnnotationError):
    """An annotation file that cannot be read as a whole (malformed XML, ...)."""
    reason = 'malformed_file'


# DOTA difficulty values: 0 / 1 in DOTA, 2 for objects cut by a patch border
# (mmrotate's splitter and ours). Only these end a name in the tree-free rule.
DIFFICULTY_VALUES = (0, 1, 2)


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
    problems: List[str] = field(default_factory=list)   # messages of skipped lines


def read_text(path: str) -> str:
    """The text of an annotation file (UTF-8, a BOM allowed).

    Raises ``FileEncodingError`` naming the file, the first bad byte and a fix
    when the file is not UTF-8 (e.g. Latin-1 or GBK from an old tool).
    """
    with open(path, 'rb') as f:
        data = f.read()
    try:
        return data.decode('utf-8-sig')
    except UnicodeDecodeError as e:
        raise FileEncodingError(
            f'{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); '
            'annotation files must be UTF-8. Re-encode it, e.g. '
            f'`iconv -f <its encoding, e.g. latin1 or gbk> -t utf-8 {path!r}`.') from None


def split_name_difficulty(tokens: Sequence[str], tree: Optional[LabelTree] = None
                          ) -> Tuple[str, int]:
    """Class name and difficulty from the tokens after the 8 coordinates.

    The difficulty field is optional and a class name may end in a number
    (``Boeing 737``, ``Type 45``), so a trailing integer is read as:

    * part of the name unless it is a difficulty value (``DIFFICULTY_VALUES``:
      0, 1 or 2): ``Boeing 737`` -> (``Boeing 737``, 0);
    * otherwise, without a tree, the difficulty: ``Boeing 737 1`` ->
      (``Boeing 737``, 1), ``Type 1`` -> (``Type``, 1);
    * otherwise, with a tree, the difficulty unless only the whole text is a
      class of the tree: ``Type 1`` -> (``Type 1``, 0) when the tree has
      ``Type 1`` but no ``Type``. When it has both, the complete DOTA line
      (name + difficulty) wins, so write the difficulty field (``Type 1 0``),
      as bhcl's converters and splitter always do.
    """
    full = ' '.join(tokens)
    last = tokens[-1] if len(tokens) > 1 else ''
    if not last.isdigit() or int(last) not in DIFFICULTY_VALUES:
        return full, 0
    name, value = ' '.join(tokens[:-1]), int(last)
    if tree is not None and not _known(tree, name) and _known(tree, full):
        return full, 0
    return name, value


def _known(tree: LabelTree, name: str) -> bool:
    try:
        tree.resolve(name)
    except UnknownClassError:
        return False
    return True


def parse_dota_fields(line: str, where: str, tree: Optional[LabelTree] = None
                      ) -> Tuple[List[float], str, int]:
    """``(polygon, class name as written, difficulty)`` of one object line.

    A crossed (bow-tie) corner order is untangled (``untangle_quad``). Raises
    ``AnnotationError`` with ``where`` (``file:line``) for too few fields,
    non-numeric or non-finite coordinates. See ``split_name_difficulty`` for
    the name rule (``tree`` may be ``None``).
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
        raise AnnotationError(f'{where}: non-finite coordinate in {line.strip()!r}. '
                              'Fix or delete this line.')
    name, difficulty = split_name_difficulty(tokens[8:], tree)
    return untangle_quad(poly), name, difficulty


def parse_dota_line(line: str, tree: LabelTree, where: str,
                    min_box_area: float = 1e-6) -> DOTAObject:
    """Parse one object line (``label`` is ``None`` for names the tree ignores).

    Raises ``AnnotationError`` (malformed line, unknown class, degenerate
    box) with ``where`` (``file:line``) in the message.
    """
    poly, name, difficulty = parse_dota_fields(line, where, tree)
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
    (1-based, stripped; blank lines left out) and the number of header lines.

    Raises ``FileEncodingError`` for a file that is not UTF-8."""
    lines = [(n, line.strip()) for n, line in enumerate(read_text(path).splitlines(), 1)
             if line.strip()]
    objects = [(n, t) for n, t in lines if not t.lower().startswith(HEADER_PREFIXES)]
    return objects, len(lines) - len(objects)


def parse_dota_txt(path: str, tree: LabelTree, on_invalid: Union[str, SkipPolicy] = 'raise',
                   min_box_area: float = 1e-6) -> ParseResult:
    """Parse a DOTA ``labelTxt`` file into objects labelled by tree node.

    Args:
        on_invalid: ``'raise'``, ``'skip'`` or a ``SkipPolicy``. A malformed
            line, unknown class or degenerate box raises, or is skipped:
            counted under ``skipped['invalid']``, described in ``problems``
            and logged by the policy with file, line and reason.

    A file that cannot be read at all (not UTF-8) always raises
    (``FileEncodingError``): the caller decides whether its image is skipped.
    Header lines are counted as ``header``; names the tree ignores (e.g.
    ``Dock``) as ``ignored:<name>``.
    """
    policy = SkipPolicy.of(on_invalid)
    result = ParseResult()
    lines, headers = read_dota_lines(path)
    if headers:
        result.skipped['header'] = headers
    for lineno, line in lines:
        try:
            obj = parse_dota_line(line, tree, f'{path}:{lineno}', min_box_area)
        except AnnotationError as e:
            policy.skip(e)
            result.skipped[e.reason] += 1
            result.problems.append(str(e))
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
