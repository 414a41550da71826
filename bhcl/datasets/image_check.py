"""Say why an image cannot be read: missing, empty or not an image.

Shared by the datasets (a load failure in the pipeline), the splitter and the
pre-training tools, so each names the file, the problem and its own fix. No
mm* imports.
"""
from __future__ import annotations

import os.path as osp
from typing import Optional

import cv2


class UnreadableImageError(OSError):
    """An image file is missing, empty, or not an image OpenCV can decode."""
    reason = 'unreadable_image'


def image_problem(path: str) -> Optional[str]:
    """What is wrong with the image file ``path`` (``'is missing'``, ``'is
    empty (0 bytes)'``...), or ``None`` if OpenCV decodes it."""
    if not osp.lexists(path):
        return 'is missing'
    if not osp.exists(path):
        return 'is a broken symbolic link (its target is missing)'
    if osp.isdir(path):
        return 'is a folder'
    size = osp.getsize(path)
    if size == 0:
        return 'is empty (0 bytes)'
    if cv2.imread(path, cv2.IMREAD_UNCHANGED) is None:
        return (f'is not an image OpenCV can decode ({size} bytes: truncated, corrupt or '
                'another format under an image suffix)')
    return None


def unreadable_image_error(path: str, fix: str,
                           problem: Optional[str] = None) -> UnreadableImageError:
    """``UnreadableImageError('<path>: cannot read the image: the file <problem>;
    <fix>')``; the problem is found with ``image_problem`` unless given."""
    problem = problem or image_problem(path) or 'was not decoded by the image loader'
    return UnreadableImageError(f'{path}: cannot read the image: the file {problem}; {fix}')


def read_image_or_raise(path: str, fix: str, flags: int = cv2.IMREAD_COLOR):
    """``cv2.imread(path, flags)``, or ``UnreadableImageError`` saying why it
    failed and giving ``fix`` (what the calling tool's user should do)."""
    img = cv2.imread(path, flags) if osp.isfile(path) else None
    if img is None:
        raise unreadable_image_error(path, fix)
    return img


class ExplainImageErrorsMixin:
    """For an mmengine ``BaseDataset``: an image whose loading fails in the
    pipeline raises ``UnreadableImageError`` naming the file, what is wrong
    with it and the fix, instead of the loader's bare message (mmcv's
    ``AssertionError: failed to load image``).

    A training set with a ``skip_policy`` that skips (``on_invalid='skip'``)
    logs and counts the image and returns ``None``, so that ``BaseDataset``
    fetches another one. An error not caused by a bad image file is re-raised
    unchanged. Subclasses say what else to delete in ``image_companion``.
    """

    image_companion = 'its annotation file'

    def prepare_data(self, idx: int):
        data_info = self.get_data_info(idx)
        try:
            return self.pipeline(data_info)
        except Exception as e:
            path = data_info.get('img_path')
            problem = image_problem(path) if isinstance(path, str) else None
            if problem is None:
                raise
            policy = getattr(self, 'skip_policy', None)
            can_skip = policy is not None and not self.test_mode
            error = unreadable_image_error(path, self._image_fix(can_skip), problem)
            if can_skip and policy.skipping:
                policy.skip(error, unit='image')
                return None
            raise error from e

    def _image_fix(self, can_skip: bool) -> str:
        fix = f'restore it, or delete it and {self.image_companion} from the dataset'
        if can_skip:
            return (f"{fix}, or skip such images in training with on_invalid='skip' in this "
                    "dataset's config")
        if self.test_mode:
            return f'{fix} (a test or validation set evaluates every image: none is skipped)'
        return fix
