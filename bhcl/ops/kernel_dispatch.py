"""The one rule for choosing between mmcv's compiled kernels and bhcl's PyTorch ops.

Every place in bhcl that can run either asks :func:`use_mmcv_kernel`. With
``backend='auto'`` mmcv's kernel is used when all three hold:

1. bhcl prefers it on the tensor's device type (``KERNEL_DEVICES``): exact
   compiled kernels where they exist, except rotated NMS on the CPU, where
   :func:`bhcl.ops.nms_rotated.batched_nms_rotated_exact` keeps the same boxes
   without the kernel's O(kept x n) pairs;
2. the kernel has the tensor's dtype (``UNSUPPORTED_DTYPES``);
3. it runs there: probed once per op and device type on tiny inputs
   (:func:`mmcv_kernel_runs`), which also catches an mmcv built without ops or
   without the CUDA sources of that op.

Otherwise the pure-PyTorch op runs. ``'mmcv'`` / ``'torch'`` force one side
(configs and tests). mmcv is imported lazily, only to probe.
"""
from __future__ import annotations

import functools
import logging

import torch
from torch import Tensor

BACKENDS = ('auto', 'mmcv', 'torch')

# op -> device types where bhcl prefers mmcv's kernel (when it runs there)
KERNEL_DEVICES = {
    'box_iou_rotated': ('cpu', 'cuda'),         # costs, NMS pairs, the metric
    'diff_iou_rotated_2d': ('cuda',),           # its vertex sort exists only for CUDA
    'nms_rotated': ('cuda',),
    'multi_scale_deform_attn': ('cuda',),       # mmcv has no CPU kernel
}
UNSUPPORTED_DTYPES = {'multi_scale_deform_attn': (torch.bfloat16, )}

# A rotated box that overlaps itself: enough to make a kernel run end to end.
_PROBE_BOXES = ((4.0, 4.0, 4.0, 2.0, 0.3), (4.5, 4.0, 3.0, 2.0, -0.2))


def check_backend(backend: str) -> str:
    """``backend`` if it is one of ``BACKENDS``, else ValueError."""
    if backend not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
    return backend


def use_mmcv_kernel(op: str, tensor: Tensor, backend: str = 'auto') -> bool:
    """Whether ``op`` on ``tensor`` (its device and dtype) runs mmcv's kernel; see the
    module docstring. ``op`` is a key of ``KERNEL_DEVICES``."""
    if op not in KERNEL_DEVICES:
        raise ValueError(f'unknown op {op!r}: bhcl dispatches {sorted(KERNEL_DEVICES)}')
    if check_backend(backend) != 'auto':
        return backend == 'mmcv'
    device_type = tensor.device.type
    use = (device_type in KERNEL_DEVICES[op]
           and tensor.dtype not in UNSUPPORTED_DTYPES.get(op, ())
           and mmcv_kernel_runs(op, device_type))
    _log_choice_once(op, device_type, str(tensor.dtype), use)
    return use


def _probe(op: str, device_type: str) -> None:
    """Run mmcv's ``op`` once on tiny inputs on ``device_type`` (raises if it cannot)."""
    import mmcv.ops
    boxes = torch.tensor(_PROBE_BOXES, device=device_type)
    if op == 'box_iou_rotated':
        mmcv.ops.box_iou_rotated(boxes, boxes)
    elif op == 'diff_iou_rotated_2d':
        mmcv.ops.diff_iou_rotated_2d(boxes[None, :1], boxes[None, 1:])
    elif op == 'nms_rotated':
        mmcv.ops.nms_rotated(boxes, boxes.new_tensor([0.9, 0.8]), 0.5)
    elif op == 'multi_scale_deform_attn':
        from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction
        value = torch.ones(1, 4, 1, 2, device=device_type)         # one 2 x 2 level
        shapes = torch.tensor([[2, 2]], device=device_type)
        MultiScaleDeformableAttnFunction.apply(
            value, shapes, shapes.new_zeros(1), torch.full((1, 1, 1, 1, 1, 2), 0.5,
                                                           device=device_type),
            torch.ones(1, 1, 1, 1, 1, device=device_type), 64)
    else:
        raise ValueError(f'no probe for {op!r}')


@functools.lru_cache(maxsize=None)
def mmcv_kernel_runs(op: str, device_type: str) -> bool:
    """Whether mmcv's ``op`` runs on ``device_type``; probed once per (op, device type)."""
    try:
        _probe(op, device_type)
    except Exception as error:  # any failure means "use the PyTorch op"
        from mmengine.logging import print_log
        print_log(f'mmcv op {op} unavailable on {device_type} ({type(error).__name__}: {error})',
                  logger='current', level=logging.DEBUG)
        return False
    return True


@functools.lru_cache(maxsize=None)
def _log_choice_once(op: str, device_type: str, dtype: str, use_mmcv: bool) -> None:
    from mmengine.logging import print_log
    choice = 'mmcv kernel' if use_mmcv else 'bhcl / PyTorch op'
    print_log(f'{op} on {device_type} ({dtype}): {choice}', logger='current',
              level=logging.DEBUG)
