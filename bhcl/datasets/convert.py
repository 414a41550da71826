"""XML -> DOTA ``labelTxt`` conversion for ShipRSImageNet and FAIR1M.

Class names are written as they appear in the XML (spaces kept, ``Other X`` /
``other-x`` kept: reallocation stays a rule of the tree applied when the
dataset is read). Every object is checked against the label tree first, so an
unknown name or degenerate polygon fails here, naming the file and object,
rather than at training time. Names the tree ignores (ShipRSImageNet ``Dock``)
are dropped and counted. Invalid files and objects follow the datasets' skip
policy (``skip_policy.SkipPolicy``), and ``staged_output`` makes a conversion
all-or-nothing. No mm* imports.
"""
from __future__ import annotations

import os
import os.path as osp
import shutil
import tempfile
from collections import Counter
from contextlib import contextmanager
from typing import (Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence,
                    Union)

from ..structures.label_tree import LabelTree
from .dota_txt import AnnotationError, format_dota_line
from .formats import IMG_SUFFIXES, RawAnnotation, check_shiprs_levels, resolve_objects
from .skip_policy import SkipPolicy


def xml_to_dota_file(xml_path: str, txt_path: str, reader: Callable[..., RawAnnotation],
                     tree: LabelTree, underscores: bool = False, precision: int = 2,
                     on_invalid: Union[str, SkipPolicy] = 'raise',
                     level_names: Optional[Sequence[Sequence[str]]] = None) -> Counter:
    """Convert one XML file to one DOTA txt file (no header lines).

    Args:
        reader: ``read_shiprs_xml`` or ``read_fair1m_xml``.
        underscores: write ``Small_Car`` instead of ``Small Car``.
        on_invalid: ``'raise'``, ``'skip'`` or a ``SkipPolicy``: a bad object
            (unknown class, degenerate polygon, no points) raises or is
            skipped alone, as the datasets do. A bad file (malformed XML, not
            UTF-8) always raises and nothing is written.
        level_names: official per-level class lists; ShipRSImageNet
            ``level_k`` mismatches are counted as ``level_mismatch``.

    Returns counts: ``objects`` written, ``ignored:<name>``, ``invalid``,
    ``level_mismatch``.
    """
    raw = reader(xml_path, on_invalid)
    resolved = resolve_objects(raw, tree, on_invalid)
    stats = Counter(raw.skipped) + Counter(resolved.skipped)
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


def xml_to_dota_dir(xml_dir: str, out_dir: str, reader: Callable[..., RawAnnotation],
                    tree: LabelTree, stems: Optional[Iterable[str]] = None,
                    progress: Optional[Callable[[], None]] = None,
                    on_invalid: Union[str, SkipPolicy] = 'raise',
                    images: Optional[Mapping[str, Sequence[str]]] = None,
                    **kwargs) -> Counter:
    """Convert ``xml_dir/<stem>.xml`` to ``out_dir/<stem>.txt`` for every stem.

    ``stems`` defaults to every XML file in ``xml_dir``. The skip policy is
    the datasets' (``bhcl.datasets.skip_policy``): a listed stem without XML,
    a malformed or non-UTF-8 file, or (when ``images`` maps stems to their
    image files) a stem without exactly one image raises, or with
    ``on_invalid='skip'`` skips that image (no txt written; counted as
    ``skipped_<reason>``); bad objects are skipped alone. ``kwargs`` go to
    ``xml_to_dota_file``. Writes as it goes: wrap the call in
    ``staged_output`` to leave nothing behind when it stops.
    """
    if not osp.isdir(xml_dir):
        raise FileNotFoundError(f'XML folder {xml_dir!r} does not exist')
    if stems is None:
        stems = sorted(f[:-4] for f in os.listdir(xml_dir) if f.lower().endswith('.xml'))
        if not stems:
            raise AnnotationError(f'no .xml files in {xml_dir!r}')
    policy = SkipPolicy.of(on_invalid)
    before = Counter(policy.counts)
    stats = Counter()
    for stem in stems:
        xml_path = osp.join(xml_dir, stem + '.xml')
        try:
            _check_sources(xml_path, stem, images)
            stats.update(xml_to_dota_file(xml_path, osp.join(out_dir, stem + '.txt'),
                                          reader, tree, on_invalid=policy, **kwargs))
        except (AnnotationError, MissingSourceError) as e:   # the whole image
            policy.skip(e, unit='image')
        if progress is not None:
            progress()
    stats.pop('invalid', None)   # counted by the policy, with the file-level skips
    stats.update({f'skipped_{r}': n for r, n in (policy.counts - before).items()})
    return stats


class MissingSourceError(FileNotFoundError):
    """A listed image without its annotation file or image file."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _check_sources(xml_path: str, stem: str,
                   images: Optional[Mapping[str, Sequence[str]]]) -> None:
    if not osp.isfile(xml_path):
        raise MissingSourceError(
            f'{xml_path}: no annotation for image {stem!r}; add it, remove the image from '
            'the list, or skip such images (--skip-invalid).', 'missing_xml')
    if images is None:
        return
    found = images.get(stem, [])
    if len(found) != 1:
        raise MissingSourceError(
            f'{xml_path}: image {stem!r}: found {found or "no file"}; expected exactly one '
            f'image with a suffix among {IMG_SUFFIXES}. Add or remove images, or skip such '
            'images (--skip-invalid).', 'missing_image' if not found else 'ambiguous_image')


def images_by_stem(img_dir: str) -> Dict[str, List[str]]:
    """``{stem: [file names]}`` of the images (any common suffix) in ``img_dir``."""
    if not osp.isdir(img_dir):
        raise FileNotFoundError(f'image folder {img_dir!r} does not exist')
    by_stem: Dict[str, List[str]] = {}
    for name in sorted(os.listdir(img_dir)):
        stem, ext = osp.splitext(name)
        if ext.lstrip('.').lower() in IMG_SUFFIXES:
            by_stem.setdefault(stem, []).append(name)
    return by_stem


@contextmanager
def staged_output(out_dir: str) -> Iterator[str]:
    """Write into a hidden staging folder next to ``out_dir``; move it in on success.

    Yields the staging folder. If the block raises (or is interrupted), the
    staging folder is removed and ``out_dir`` is left as it was, so a
    converter that stops leaves no partial outputs. On success every file
    (links included) is moved to the same relative path under ``out_dir``,
    replacing a file of that name.
    """
    out_dir = osp.abspath(out_dir)
    parent = osp.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=f'.{osp.basename(out_dir)}.partial-', dir=parent)
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    for root, dirs, files in os.walk(stage):
        rel = osp.relpath(root, stage)
        dst_root = osp.normpath(osp.join(out_dir, rel))
        os.makedirs(dst_root, exist_ok=True)
        for name in files + [d for d in dirs if osp.islink(osp.join(root, d))]:
            os.replace(osp.join(root, name), osp.join(dst_root, name))
    shutil.rmtree(stage)


def place_images(stems: Iterable[str], src_dir: str, dst_dir: str,
                 mode: str = 'symlink') -> Counter:
    """Link (``'symlink'``, absolute targets) or ``'copy'`` the images of ``stems``.

    Each stem must have exactly one image (any common suffix) in ``src_dir``
    (``xml_to_dota_dir(images=...)`` checks that first, under the skip
    policy). Returns ``images`` placed.
    """
    if mode not in ('symlink', 'copy'):
        raise ValueError(f"mode must be 'symlink' or 'copy', got {mode!r}")
    by_stem = images_by_stem(src_dir)
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
