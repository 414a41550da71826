"""Readers and writers for the XML annotation formats of ShipRSImageNet and FAIR1M.

* ShipRSImageNet (official VOC release): one XML per image, objects with
  ``<name>`` (the level-3 class), ``<difficult>``, ``<truncted>`` (sic),
  ``<polygon><x1>..<y4>`` and ``<level_0>..<level_3>`` (1-based indices into
  the official class list of each level).
* FAIR1M v1.0 / v2.0: one XML per image, objects with
  ``<possibleresult><name>`` (and ``<probability>`` in submissions) and
  ``<points>`` holding 5 ``<point>x,y</point>`` (4 corners + the first
  repeated); no difficulty.

Also a tree-free reader of DOTA ``labelTxt`` files (for tools that must keep
every name, such as the image splitter) and the mapping of raw objects onto a
label tree shared by the datasets and the converters. No mm* imports.
"""
from __future__ import annotations

import math
import re
import os.path as osp
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..structures.geometry import poly_area, untangle_quad
from ..structures.label_tree import LabelTree, UnknownClassError
from .dota_txt import (AnnotationError, MalformedFileError, parse_dota_fields, read_dota_lines,
                       read_text)
from .skip_policy import SkipPolicy

IMG_SUFFIXES = ('bmp', 'png', 'jpg', 'jpeg', 'tif', 'tiff')
SHIPRS_POLY_TAGS = ('x1', 'y1', 'x2', 'y2', 'x3', 'y3', 'x4', 'y4')
SHIPRS_LEVEL_TAGS = ('level_0', 'level_1', 'level_2', 'level_3')


@dataclass
class RawObject:
    """One annotated (or predicted) object before it meets a label tree."""
    poly: List[float]                  # 8 floats, x1 y1 ... x4 y4
    name: str                          # class name as written in the file
    index: int = 0                     # 0-based object index in the file
    difficulty: int = 0
    truncated: int = 0
    levels: Tuple[Optional[int], ...] = ()   # ShipRSImageNet level_0..level_3
    score: Optional[float] = None      # FAIR1M submission <probability>
    line: int = 0                      # 1-based line number (text formats)

    def where(self, path: str) -> str:
        if self.line:
            return f'{path}:{self.line}'
        return f'{path}: object #{self.index} ({self.name!r})'


@dataclass
class RawAnnotation:
    """The objects of one image and what the file says about the image."""
    path: str
    filename: str = ''
    width: Optional[int] = None
    height: Optional[int] = None
    objects: List[RawObject] = field(default_factory=list)
    header_lines: int = 0
    skipped: Counter = field(default_factory=Counter)   # reason -> objects skipped
    problems: List[str] = field(default_factory=list)   # messages of skipped objects


# ------------------------------------------------------------------ helpers
def _parse_xml(path: str) -> ET.Element:
    """The root of an XML file; ``MalformedFileError`` / ``FileEncodingError`` naming it."""
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as e:
        _check_xml_encoding(path)
        raise MalformedFileError(
            f'{path}: malformed XML ({e}); re-download or repair the file, or delete it '
            'together with its image.') from None
    except FileNotFoundError:
        raise FileNotFoundError(f'{path}: annotation file not found') from None


def _check_xml_encoding(path: str) -> None:
    """Raise ``FileEncodingError`` if an XML file that failed to parse claims
    (or defaults to) UTF-8 but is not UTF-8 text (the usual cause)."""
    with open(path, 'rb') as f:
        head = f.read(200)
    declared = re.match(rb'\s*<\?xml[^>]*encoding=["\']([\w.-]+)', head.lstrip(b'\xef\xbb\xbf'))
    if declared and declared.group(1).lower().replace(b'-', b'') != b'utf8':
        return
    read_text(path)


def _read_objects(ann: RawAnnotation, elems: Iterable[ET.Element],
                  parse_one: Callable[[int, ET.Element], RawObject],
                  policy: SkipPolicy) -> RawAnnotation:
    """Append ``parse_one(index, element)`` of every object to ``ann``; a bad
    object raises or is skipped alone (counted in ``ann.skipped``)."""
    for i, elem in enumerate(elems):
        try:
            ann.objects.append(parse_one(i, elem))
        except AnnotationError as e:
            policy.skip(e)
            ann.skipped[e.reason] += 1
            ann.problems.append(str(e))
    return ann


def _text(elem: Optional[ET.Element]) -> Optional[str]:
    if elem is None or elem.text is None or not elem.text.strip():
        return None
    return elem.text.strip()


def _number(text: Optional[str], what: str, where: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise AnnotationError(f'{where}: {what} must be a number, got {text!r}; '
                              'fix the value in the file.') from None
    if not math.isfinite(value):
        raise AnnotationError(f'{where}: {what} is not finite ({text!r}).')
    return value


def _optional_int(elem: ET.Element, tag: str, where: str, default: int = 0) -> int:
    text = _text(elem.find(tag))
    return default if text is None else int(_number(text, f'<{tag}>', where))


def _image_size(root: ET.Element) -> Tuple[Optional[int], Optional[int]]:
    size = root.find('size')
    if size is None:
        return None, None
    out = []
    for tag in ('width', 'height'):
        text = _text(size.find(tag))
        try:
            out.append(int(float(text)) if text is not None else None)
        except ValueError:
            out.append(None)
    return out[0], out[1]


# ------------------------------------------------------------ ShipRSImageNet
def read_shiprs_xml(path: str, on_invalid: Union[str, SkipPolicy] = 'raise') -> RawAnnotation:
    """Read one ShipRSImageNet VOC XML file.

    Raises ``AnnotationError`` naming the file and object index for a
    missing ``<name>`` or ``<polygon>`` corner or a non-numeric value; with
    ``on_invalid='skip'`` (or a skip policy) such an object is skipped alone.
    A malformed or non-UTF-8 file always raises.
    """
    root = _parse_xml(path)
    width, height = _image_size(root)
    ann = RawAnnotation(path=path, filename=_text(root.find('filename')) or '',
                        width=width, height=height)
    return _read_objects(ann, root.iter('object'), partial(_shiprs_object, path=path),
                         SkipPolicy.of(on_invalid))


def _shiprs_object(i: int, obj: ET.Element, path: str) -> RawObject:
    name = _text(obj.find('name'))
    where = f'{path}: object #{i}' + (f' ({name!r})' if name else '')
    if name is None:
        raise AnnotationError(f'{where}: no <name>; every <object> needs its class name.')
    polygon = obj.find('polygon')
    if polygon is None:
        raise AnnotationError(
            f'{where}: no <polygon> with <x1>..<y4>; the oriented box is required '
            '(the horizontal <bndbox> alone is not enough).')
    missing = [t for t in SHIPRS_POLY_TAGS if _text(polygon.find(t)) is None]
    if missing:
        raise AnnotationError(f'{where}: <polygon> lacks {", ".join(missing)}; '
                              'give all four corners x1 y1 .. x4 y4.')
    poly = [_number(_text(polygon.find(t)), f'<{t}>', where) for t in SHIPRS_POLY_TAGS]
    levels = tuple(None if _text(obj.find(t)) is None
                   else int(_number(_text(obj.find(t)), f'<{t}>', where))
                   for t in SHIPRS_LEVEL_TAGS)
    return RawObject(poly=untangle_quad(poly), name=name, index=i,
                     difficulty=_optional_int(obj, 'difficult', where),
                     truncated=_optional_int(obj, 'truncted', where), levels=levels)


def check_shiprs_levels(obj: RawObject, label: int, tree: LabelTree,
                        level_names: Sequence[Sequence[str]]) -> Optional[str]:
    """Check an object's ``level_k`` indices against its class; ``None`` if consistent.

    ``level_names[k]`` is the official class list of level ``k`` and
    ``level_k`` a 1-based index into it. The deepest level must name the
    object's own class (``<name>``); a shallower level name must resolve
    through the tree to the object's node or one of its ancestors (``Other
    Warship`` is node ``Warship``, ``Auxiliary Ships`` an alias). Official
    names the tree lacks (``Cruiser``) cannot be checked and are passed.
    Returns a message describing the first mismatch.
    """
    allowed = set(tree.path_ids(label))
    deepest = len(level_names) - 1
    for k, idx in enumerate(obj.levels[:len(level_names)]):
        if idx is None:
            continue
        names = level_names[k]
        if not 1 <= idx <= len(names):
            return f'level_{k}={idx} is outside 1..{len(names)}'
        level_name = names[idx - 1]
        if k == deepest:
            if level_name != obj.name:
                return f'level_{k}={idx} means {level_name!r}, not {obj.name!r}'
            continue
        try:
            node = tree.resolve(level_name)
        except UnknownClassError:
            continue
        if node not in allowed:
            return (f'level_{k}={idx} means {level_name!r}, which is not {obj.name!r} '
                    'or one of its ancestors')
    return None


# --------------------------------------------------------------------- FAIR1M
def _parse_point(text: Optional[str], where: str) -> Tuple[float, float]:
    parts = (text or '').replace(' ', '').split(',')
    if len(parts) != 2:
        raise AnnotationError(f'{where}: a <point> must read "x,y", got {text!r}.')
    return _number(parts[0], 'point x', where), _number(parts[1], 'point y', where)


def read_fair1m_xml(path: str, on_invalid: Union[str, SkipPolicy] = 'raise') -> RawAnnotation:
    """Read one FAIR1M XML file (ground truth or a submission).

    The first 4 of the ``<point>`` elements are the corners (the 5th closes
    the ring). Their order is not documented: it is kept as written unless
    it crosses itself, then ``untangle_quad`` fixes it (a crossed order would
    otherwise look like a degenerate polygon). ``<probability>``, when
    present, becomes ``score``. Raises ``AnnotationError`` naming the file and
    object index for a missing ``<name>``, fewer than 4 points or bad numbers;
    with ``on_invalid='skip'`` (or a skip policy) such an object is skipped
    alone, the image keeps its valid objects. A malformed or non-UTF-8 file
    always raises.
    """
    root = _parse_xml(path)
    width, height = _image_size(root)
    ann = RawAnnotation(path=path, filename=_text(root.find('source/filename')) or '',
                        width=width, height=height)
    objects = root.find('objects')
    return _read_objects(ann, objects.iter('object') if objects is not None else (),
                         partial(_fair1m_object, path=path), SkipPolicy.of(on_invalid))


def _fair1m_object(i: int, obj: ET.Element, path: str) -> RawObject:
    result = obj.find('possibleresult')
    name = _text(result.find('name')) if result is not None else None
    where = f'{path}: object #{i}' + (f' ({name!r})' if name else '')
    if name is None:
        raise AnnotationError(f'{where}: no <possibleresult><name>; every <object> '
                              'needs its class name.')
    points = [_parse_point(_text(p), where) for p in obj.iter('point')]
    if len(points) < 4:
        raise AnnotationError(f'{where}: {len(points)} <point> elements, need the 4 '
                              'corners (plus the first repeated) as "x,y".')
    prob = _text(result.find('probability'))
    return RawObject(poly=untangle_quad([v for p in points[:4] for v in p]), name=name, index=i,
                     score=None if prob is None else _number(prob, '<probability>', where))


def _indent(elem: ET.Element, level: int = 0) -> None:
    pad = '\n' + '    ' * level
    if len(elem):
        elem.text = pad + '    '
        for child in elem:
            _indent(child, level + 1)
        child.tail = pad
    if level and not elem.tail:
        elem.tail = pad


def fair1m_xml_string(filename: str, objects: Iterable[RawObject],
                      width: Optional[int] = None, height: Optional[int] = None,
                      precision: int = 2, origin: str = 'GF2/GF3') -> str:
    """A FAIR1M XML document for one image.

    Objects with a ``score`` get ``<probability>`` (the submission layout);
    corners are written as ``"x,y"`` with ``precision`` decimals, 4 corners
    and the first repeated.
    """
    root = ET.Element('annotation')
    source = ET.SubElement(root, 'source')
    ET.SubElement(source, 'filename').text = filename
    ET.SubElement(source, 'origin').text = origin
    research = ET.SubElement(root, 'research')
    for tag, text in (('version', '1.0'), ('provider', 'bhcl'), ('author', 'bhcl'),
                      ('pluginname', 'FAIR1M'), ('pluginclass', 'object detection'),
                      ('time', '')):
        ET.SubElement(research, tag).text = text
    if width is not None and height is not None:
        size = ET.SubElement(root, 'size')
        for tag, value in (('width', width), ('height', height), ('depth', 3)):
            ET.SubElement(size, tag).text = str(int(value))
    objs = ET.SubElement(root, 'objects')
    for obj in objects:
        node = ET.SubElement(objs, 'object')
        for tag, text in (('coordinate', 'pixel'), ('type', 'rectangle'),
                          ('description', 'None')):
            ET.SubElement(node, tag).text = text
        result = ET.SubElement(node, 'possibleresult')
        ET.SubElement(result, 'name').text = obj.name
        if obj.score is not None:
            ET.SubElement(result, 'probability').text = f'{float(obj.score):.6f}'
        points = ET.SubElement(node, 'points')
        corners = list(zip(obj.poly[0::2], obj.poly[1::2]))
        for x, y in corners + corners[:1]:
            ET.SubElement(points, 'point').text = f'{x:.{precision}f},{y:.{precision}f}'
    _indent(root)
    return ('<?xml version="1.0" encoding="utf-8"?>\n'
            + ET.tostring(root, encoding='unicode', short_empty_elements=False) + '\n')


def read_image_set(path: str) -> List[str]:
    """Image stems of an image-set list (``ImageSets/train.txt``: ``xxx.bmp`` or ``xxx``).

    The whole line is the name, so names with spaces survive.
    """
    stems = []
    for line in read_text(path).splitlines():
        name = line.strip()
        if name:
            stem, ext = osp.splitext(name)
            stems.append(stem if ext.lstrip('.').lower() in IMG_SUFFIXES else name)
    if not stems:
        raise AnnotationError(f'{path}: the image-set list is empty')
    return stems


# ------------------------------------------------------------ DOTA, tree-free
def read_dota_objects(path: str, tree: Optional[LabelTree] = None,
                      on_invalid: Union[str, SkipPolicy] = 'raise') -> RawAnnotation:
    """Read a DOTA ``labelTxt`` file keeping every class name as written.

    Unlike ``parse_dota_txt`` names are not mapped onto a tree. ``tree``, if
    given, only settles whether a trailing number belongs to the name (see
    ``dota_txt.split_name_difficulty``: without a tree, a trailing 0, 1 or 2
    is the difficulty and any other number part of the name). A malformed
    line raises, or is skipped (``on_invalid``). Header lines are counted in
    ``header_lines``; a non-UTF-8 file raises ``FileEncodingError``.
    """
    policy = SkipPolicy.of(on_invalid)
    ann = RawAnnotation(path=path)
    lines, ann.header_lines = read_dota_lines(path)
    for lineno, text in lines:
        try:
            poly, name, difficulty = parse_dota_fields(text, f'{path}:{lineno}', tree)
        except AnnotationError as e:
            policy.skip(e)
            ann.skipped[e.reason] += 1
            ann.problems.append(str(e))
            continue
        ann.objects.append(RawObject(poly=poly, name=name, index=len(ann.objects),
                                     difficulty=difficulty, line=lineno))
    return ann


# ------------------------------------------------------------ objects -> tree
@dataclass
class ResolvedObjects:
    """Objects of one file mapped onto a tree: ``(object, node index)`` pairs."""
    objects: List[Tuple[RawObject, int]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)   # reason -> count
    problems: List[str] = field(default_factory=list)   # messages of skipped objects


def resolve_objects(ann: RawAnnotation, tree: LabelTree,
                    on_invalid: Union[str, SkipPolicy] = 'raise',
                    min_box_area: float = 1e-6) -> ResolvedObjects:
    """Map the objects of ``ann`` onto ``tree``.

    Names the tree ignores (``Dock``) are dropped and counted as
    ``ignored:<name>``. Unknown names and degenerate polygons (area below
    ``min_box_area``) raise ``AnnotationError`` naming the file and object, or
    with ``on_invalid='skip'`` (or a skip policy, which logs them) are counted
    as ``invalid`` and described in ``problems``.
    """
    policy = SkipPolicy.of(on_invalid)
    out = ResolvedObjects()
    for obj in ann.objects:
        try:
            label = _resolve_one(obj, ann.path, tree, min_box_area)
        except AnnotationError as e:
            policy.skip(e)
            out.skipped[e.reason] += 1
            out.problems.append(str(e))
            continue
        if label is None:
            out.skipped[f'ignored:{obj.name}'] += 1
            continue
        out.objects.append((obj, label))
    return out


def _resolve_one(obj: RawObject, path: str, tree: LabelTree,
                 min_box_area: float) -> Optional[int]:
    try:
        label = tree.resolve(obj.name)
    except UnknownClassError as e:
        raise AnnotationError(f'{obj.where(path)}: {e}') from None
    if label is None:
        return None
    area = float(poly_area(np.asarray(obj.poly))[0])
    if area < min_box_area:
        raise AnnotationError(
            f'{obj.where(path)}: degenerate polygon (area {area:.3g} < {min_box_area}); '
            'fix its corners or delete the object.')
    return label
