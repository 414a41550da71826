"""XML -> DOTA ``labelTxt`` conversion for ShipRSImageNet and FAIR1M.

Class names are written as they appear in the XML (spaces kept, ``Other X`` /
``other-x`` kept: reallocation stays a rule of the tree applied when the
dataset is read). Every object is checked against the label tree first, so an
unknown name or degenerate polygon fails here, naming the file and object,
rather than at training time. Names the tree ignores (ShipRSImageNet ``Dock``)
are dropped and counted. No mm* imports.
"""
from __future__ import annotations

import os
import os.path as osp
import shutil
from collections import Counter
from typing import Callable, Iterable, Optional, Sequence

from ..structures.label_tree import LabelTree
from .dota_txt import AnnotationError, format_dota_line
from .formats import IMG_SUFFIXES, RawAnnotation, check_shiprs_levels, resolve_objects


def xml_to_dota_file(xml_path: str, txt_path: str, reader: Callable[[str], RawAnnotation],
                     tree: LabelTree, underscores: bool = False, precision: int = 2,
                     on_invalid: str = 'raise',
                     level_names: Optional[Sequence[Sequence[str]]] = None) -> Counter:
    """Convert one XML file to one DOTA txt file (no header lines).

    Args:
        reader: ``read_shiprs_xml`` or ``read_fair1m_xml``.
        underscores: write ``Small_Car`` instead of ``Small Car``.
        on_invalid: ``'raise'`` or ``'skip'`` (count as ``invalid``) unknown
            classes and degenerate polygons.
        level_names: official per-level class lists; ShipRSImageNet
            ``level_k`` mismatches are counted as ``level_mismatch``.

    Returns counts: ``objects`` written, ``ignored:<name>``, ``invalid``,
    ``level_mismatch``.
    """
    raw = reader(xml_path)
    resolved = resolve_objects(raw, tree, on_invalid)
    stats = Counter(resolved.skipped)
    lines = []
    for obj, label in resolved.objects:
        if level_names and check_shiprs_levels(obj, label, tree, level_names):
            stats['level_mismatch'] += 1
        name = obj.name.replace(' ', '_') if underscores else obj.name
        lines.append(format_dota_line(obj.poly, name, obj.difficulty, precision))
    os.makedirs(osp.dirname(osp.abspath(txt_path)), exist_ok=True)
    with open(txt_path, 'w', encoding='utf-8') as f:
        f.write(''.join(line + '\n' for line in lines))
    stats['objects'] += len(lines)
    stats['files'] += 1
    return stats


def xml_to_dota_dir(xml_dir: str, out_dir: str, reader: Callable[[str], RawAnnotation],
                    tree: LabelTree, stems: Optional[Iterable[str]] = None,
                    progress: Optional[Callable[[], None]] = None, **kwargs) -> Counter:
    """Convert ``xml_dir/<stem>.xml`` to ``out_dir/<stem>.txt`` for every stem.

    ``stems`` defaults to every XML file in ``xml_dir``; a listed stem
    without XML raises (``on_invalid='raise'``) or is counted as
    ``missing_xml``. ``kwargs`` go to ``xml_to_dota_file``.
    """
    if not osp.isdir(xml_dir):
        raise FileNotFoundError(f'XML folder {xml_dir!r} does not exist')
    if stems is None:
        stems = sorted(f[:-4] for f in os.listdir(xml_dir) if f.lower().endswith('.xml'))
        if not stems:
            raise AnnotationError(f'no .xml files in {xml_dir!r}')
    stats = Counter()
    for stem in stems:
        xml_path = osp.join(xml_dir, stem + '.xml')
        if not osp.isfile(xml_path):
            if kwargs.get('on_invalid', 'raise') == 'raise':
                raise FileNotFoundError(
                    f'{xml_path}: no annotation for image {stem!r}; add it, remove the image '
                    'from the list, or skip such images (--skip-invalid).')
            stats['missing_xml'] += 1
        else:
            stats.update(xml_to_dota_file(xml_path, osp.join(out_dir, stem + '.txt'),
                                          reader, tree, **kwargs))
        if progress is not None:
            progress()
    return stats


def place_images(stems: Iterable[str], src_dir: str, dst_dir: str,
                 mode: str = 'symlink') -> Counter:
    """Link (``'symlink'``, absolute targets) or ``'copy'`` the images of ``stems``.

    Each stem must have exactly one image (any common suffix) in ``src_dir``.
    Returns ``images`` placed.
    """
    if mode not in ('symlink', 'copy'):
        raise ValueError(f"mode must be 'symlink' or 'copy', got {mode!r}")
    by_stem = {}
    for name in os.listdir(src_dir):
        stem, ext = osp.splitext(name)
        if ext.lstrip('.').lower() in IMG_SUFFIXES:
            by_stem.setdefault(stem, []).append(name)
    os.makedirs(dst_dir, exist_ok=True)
    stats = Counter()
    for stem in stems:
        names = by_stem.get(stem, [])
        if len(names) != 1:
            raise FileNotFoundError(
                f'image {stem!r}: found {names or "no file"} in {src_dir!r}; expected exactly one '
                f'image with a suffix among {IMG_SUFFIXES}.')
        src, dst = osp.join(src_dir, names[0]), osp.join(dst_dir, names[0])
        if osp.lexists(dst):
            os.remove(dst)
        if mode == 'symlink':
            os.symlink(osp.abspath(src), dst)
        else:
            shutil.copy2(src, dst)
        stats['images'] += 1
    return stats
