"""Object embeddings of rotated proposals from a frozen backbone (crop-then-encode).

As in MutDet (and DETReg), each proposal is enlarged (default 1.5x), cut out
of the image along its own axes and warped to ``out_size x out_size``
(default 224), then encoded by a frozen ImageNet backbone whose last stage is
global-average-pooled (2048-d for ResNet-50). The crop is a rotated RoI-align
written in plain PyTorch (``affine_grid`` + ``grid_sample``), so it runs on
any device without compiled ops.

Boxes are ``(cx, cy, w, h, t)`` in pixels (continuous coordinates: pixel
``i`` covers ``[i, i + 1)``), ``t`` in radians, clockwise-positive on screen
(``bhcl.structures.geometry``); the crop's x axis runs along ``w``.
"""
from __future__ import annotations

import copy
import logging
import os
import os.path as osp
from collections import Counter
from typing import Callable, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .proposals import list_images, read_image, read_proposals

# ImageNet statistics of torchvision / mmdet ResNets, RGB order, 0..255 scale.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

DEFAULT_BACKBONE = dict(
    type='mmdet.ResNet', depth=50, num_stages=4, out_indices=(3,), norm_eval=True,
    style='pytorch', init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50'))


def _log(msg: str, level: int = logging.INFO) -> None:
    from mmengine.logging import print_log
    print_log(msg, logger='current', level=level)


def rotated_crop_theta(boxes: Tensor, img_hw: Sequence[int], scale: float = 1.0) -> Tensor:
    """(N, 5) boxes -> (N, 2, 3) ``affine_grid`` matrices (``align_corners=False``).

    The matrix maps the output's normalised coordinates ``(u, v)`` in
    ``[-1, 1]`` to the image's: the output spans the box enlarged ``scale``
    times about its centre, ``u`` along its width and ``v`` along its height.
    """
    height, width = img_hw
    cx, cy, w, h, t = boxes.unbind(-1)
    cos, sin = torch.cos(t), torch.sin(t)
    half_w, half_h = w * scale / 2, h * scale / 2
    row_x = torch.stack([half_w * cos, -half_h * sin, cx], -1) * (2 / width)
    row_y = torch.stack([half_w * sin, half_h * cos, cy], -1) * (2 / height)
    row_x[:, 2] -= 1
    row_y[:, 2] -= 1
    return torch.stack([row_x, row_y], 1)


def crop_rotated(img: Tensor, boxes: Tensor, out_size: int = 224, scale: float = 1.0) -> Tensor:
    """Rotated RoI-align: (C, H, W) image, (N, 5) boxes -> (N, C, out_size, out_size).

    Bilinear sampling at the centres of the output pixels; outside the image
    it reads zeros (the mean colour once the image is normalised). The image
    is sampled once for all boxes, never copied per box.
    """
    if img.dim() != 3 or boxes.dim() != 2 or boxes.shape[1] != 5:
        raise ValueError(f'expected a (C, H, W) image and (N, 5) boxes, got '
                         f'{tuple(img.shape)} and {tuple(boxes.shape)}')
    num, channels = len(boxes), img.shape[0]
    theta = rotated_crop_theta(boxes.to(img), img.shape[1:], scale)
    grid = F.affine_grid(theta, (num, channels, out_size, out_size), align_corners=False)
    # All crops as one tall grid over the single image: (1, N * S, S, 2).
    out = F.grid_sample(img[None], grid.reshape(1, num * out_size, out_size, 2),
                        mode='bilinear', padding_mode='zeros', align_corners=False)
    return out.reshape(channels, num, out_size, out_size).transpose(0, 1)


def image_to_tensor(img: np.ndarray, device: Union[str, torch.device] = 'cpu') -> Tensor:
    """(H, W, 3) uint8 BGR image -> (3, H, W) float32 RGB tensor, ImageNet-normalised."""
    x = torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1])).to(device).float()
    mean, std = x.new_tensor(IMAGENET_MEAN), x.new_tensor(IMAGENET_STD)
    return ((x - mean) / std).permute(2, 0, 1).contiguous()


def load_backbone_weights(model: nn.Module, checkpoint: str) -> None:
    """Load a backbone from a checkpoint (local path, ``torchvision://``, URL).

    Accepts a bare backbone state dict, ``{'state_dict': ...}``, or a whole
    detector / self-supervised checkpoint (its ``backbone.*`` weights).
    Missing backbone weights raise; unexpected keys (a classifier's ``fc``)
    are logged.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
    state = ckpt.get('state_dict', ckpt)
    if any(k.startswith('backbone.') for k in state):
        state = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:   # shape mismatches
        raise ValueError(f'{checkpoint}: does not fit the configured backbone ({e}); pass '
                         'a checkpoint of the same architecture and depth') from None
    if missing:
        raise ValueError(f'{checkpoint}: {len(missing)} backbone weights missing (e.g. '
                         f'{missing[:3]}); pass a checkpoint of the configured backbone')
    if unexpected:
        _log(f'{checkpoint}: ignored {len(unexpected)} keys the backbone does not use '
             f'(e.g. {unexpected[:3]})')


def build_frozen_backbone(cfg: Optional[dict] = None, checkpoint: Optional[str] = None,
                          device: Union[str, torch.device] = 'cpu') -> nn.Module:
    """A backbone from the mmdet registry, in eval mode, without gradients.

    Args:
        cfg: backbone config (default ``DEFAULT_BACKBONE``: ImageNet ResNet-50
            through ``init_cfg=dict(type='Pretrained', ...)``).
        checkpoint: weights to load instead of ``cfg``'s ``init_cfg``;
            ``None`` keeps ``init_cfg`` (random weights when it is ``None``).
    The pooled embedding is the last output of ``forward``; configure
    ``out_indices`` so that the last one is the stage wanted (C5).
    """
    import mmdet.models  # noqa: F401  (registers mmdet's backbones)
    from mmdet.registry import MODELS
    cfg = copy.deepcopy(DEFAULT_BACKBONE if cfg is None else cfg)
    if checkpoint is not None:
        cfg['init_cfg'] = None
    model = MODELS.build(cfg)
    if checkpoint is None:
        model.init_weights()
    else:   # every weight is replaced (missing ones raise): no init needed
        load_backbone_weights(model, checkpoint)
    model.requires_grad_(False)
    model.eval()  # mmdet's ResNet.train() returns None: no chaining
    return model.to(device)


@torch.no_grad()
def embed_boxes(backbone: nn.Module, img: np.ndarray, boxes: np.ndarray, scale: float = 1.5,
                out_size: int = 224, batch_size: int = 64,
                device: Union[str, torch.device] = 'cpu') -> Tensor:
    """Embeddings of the rotated boxes of one image, in box order.

    Args:
        backbone: frozen encoder on ``device`` (:func:`build_frozen_backbone`).
        img: (H, W, 3) uint8 BGR image.
        boxes: (N, 5) boxes ``(cx, cy, w, h, t)``.
        scale: enlargement of each box before cropping (MutDet: 1.5).
    Returns:
        (N, C) float32 CPU tensor: last backbone output, global-average-pooled.
    """
    image = image_to_tensor(img, device)
    boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 5).to(device)
    feats = []
    for start in range(0, len(boxes), batch_size):
        crops = crop_rotated(image, boxes[start:start + batch_size], out_size, scale)
        feats.append(backbone(crops)[-1].mean((2, 3)).float().cpu())
    if not feats:  # no boxes: the width of the embedding needs one forward
        probe = backbone(image.new_zeros(1, 3, out_size, out_size))[-1]
        return torch.zeros(0, probe.shape[1])
    return torch.cat(feats)


def inside_image(boxes: np.ndarray, img_shape: Sequence[int]) -> np.ndarray:
    """(N,) bool: box centres inside the image (others would crop mostly padding)."""
    height, width = img_shape[:2]
    cx, cy = boxes[:, 0], boxes[:, 1]
    return (cx >= 0) & (cx <= width) & (cy >= 0) & (cy <= height)


def list_proposal_files(proposal_dir: str) -> List[str]:
    """Sorted ``*.txt`` paths of ``proposal_dir``; errors name the folder and the fix."""
    if not osp.isdir(proposal_dir):
        raise FileNotFoundError(f'proposal folder {proposal_dir!r} does not exist; run '
                                'tools/pretraining/generate_proposals.py first')
    files = sorted(osp.join(proposal_dir, n) for n in os.listdir(proposal_dir)
                   if n.endswith('.txt'))
    if not files:
        raise ValueError(f'{proposal_dir}: no proposal files (*.txt); run '
                         'tools/pretraining/generate_proposals.py or check the path')
    return files


def extract_embedding_files(img_dir: str, proposal_dir: str, out_dir: str, backbone: nn.Module,
                            scale: float = 1.5, out_size: int = 224, batch_size: int = 64,
                            device: Union[str, torch.device] = 'cpu',
                            dtype: torch.dtype = torch.float32,
                            progress: Optional[Callable[[], None]] = None) -> Counter:
    """Embed the proposals of every ``proposal_dir/<stem>.txt``; write ``out_dir/<stem>.pth``.

    Each output is ``dict(image=<file name>, boxes=(N, 5) float32,
    embeddings=(N, C) dtype)``, row i of both describing the same object.
    Degenerate boxes and boxes centred outside the image are dropped before
    encoding, so both arrays stay aligned; images left without boxes get no
    file. Every drop is counted and logged. A proposal file without its
    image raises ``FileNotFoundError`` naming both.

    Returns counts: ``images``, ``boxes``, ``degenerate_boxes``,
    ``boxes_outside_image``, ``images_without_proposals``.
    """
    images = list_images(img_dir)
    stats: Counter = Counter()
    os.makedirs(out_dir, exist_ok=True)
    for path in list_proposal_files(proposal_dir):
        stem = osp.splitext(osp.basename(path))[0]
        if stem not in images:
            raise FileNotFoundError(f'{path}: no image named {stem}.* in {img_dir}; add the '
                                    'image or delete this proposal file')
        img = read_image(images[stem], f'restore it, or delete its proposal file {path} to '
                         'leave the image out')
        boxes, dropped = read_proposals(path)
        inside = inside_image(boxes, img.shape)
        if not inside.all():
            _log(f'{path}: dropped {int((~inside).sum())} box(es) centred outside the '
                 f'{img.shape[1]}x{img.shape[0]} image', logging.WARNING)
        boxes = boxes[inside]
        stats['degenerate_boxes'] += dropped
        stats['boxes_outside_image'] += int((~inside).sum())
        if not len(boxes):
            stats['images_without_proposals'] += 1
            _log(f'{path}: no usable proposal; image skipped', logging.WARNING)
        else:
            emb = embed_boxes(backbone, img, boxes, scale, out_size, batch_size, device)
            torch.save(dict(image=osp.basename(images[stem]), boxes=torch.from_numpy(boxes),
                            embeddings=emb.to(dtype)), osp.join(out_dir, stem + '.pth'))
            stats['images'] += 1
            stats['boxes'] += len(boxes)
        if progress is not None:
            progress()
    return stats
