"""All collectives used by bhcl live here (plain torch, no mm* import).

Every helper degrades to a no-op when ``torch.distributed`` is unavailable,
not initialised, or has a single rank, so callers never branch on DDP.

Gradient scale of :func:`all_gather_cat`
----------------------------------------
A loss computed on the gathered batch has the same value L on every rank
(the loss of the concatenated batch). Backward on rank r reaches only r's
own slice x_r and gives it the exact partial derivative dL/dx_r. Summed over
the W ranks, these are the gradients of the single-process loss on the
concatenated batch; DistributedDataParallel *averages* parameter gradients,
so a parameter receives ``(1/W) * dL/dtheta``. Inputs shared by every rank
(learnable or classifier prototypes) get the full dL/dM on each rank; scale
them with ``scale_grad(x, 1 / get_world_size())`` to keep the same 1/W
convention for every parameter.
"""
from typing import List, Tuple

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a process group with more than one rank is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _ScaleGrad(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.scale, None


def scale_grad(x: Tensor, scale: float) -> Tensor:
    """Identity in forward; multiplies the incoming gradient by ``scale``."""
    if scale == 1.0 or not x.requires_grad:
        return x
    return _ScaleGrad.apply(x, scale)


def all_gather_cat(*tensors: Tensor) -> Tuple[Tensor, ...]:
    """Concatenate each tensor over all ranks along dim 0, in rank order.

    All ``tensors`` share their leading size n_r on a rank; n_r may differ
    between ranks (0 included). Other ranks' slices arrive as constants; the
    local slice is the input itself, so autograd flows into it only (see the
    module docstring for the gradient scale this implies). Returns the inputs
    unchanged when not distributed.
    """
    if not tensors:
        return ()
    if not is_distributed():
        return tuple(tensors)
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ValueError(f'tensors disagree on their leading size: {[t.shape[0] for t in tensors]}')
    sizes = _gather_sizes(n, tensors[0].device)
    return tuple(_gather_padded(t, sizes) for t in tensors)


def _gather_sizes(n: int, device: torch.device) -> List[int]:
    world = dist.get_world_size()
    local = torch.tensor([n], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(local) for _ in range(world)]
    dist.all_gather(sizes, local)
    return [int(s) for s in sizes]


def _gather_padded(tensor: Tensor, sizes: List[int]) -> Tensor:
    # all_gather needs equal shapes: pad to the largest count, then trim
    longest = max(sizes)
    padded = tensor.detach().new_zeros((longest, ) + tuple(tensor.shape[1:]))
    padded[:tensor.shape[0]] = tensor.detach()
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    parts = [p[:s] for p, s in zip(parts, sizes)]
    parts[dist.get_rank()] = tensor
    return torch.cat(parts)


@torch.no_grad()
def broadcast_(tensor: Tensor, src: int = 0) -> Tensor:
    """Overwrite ``tensor`` in place with rank ``src``'s copy; returns it."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor


def _collective_device() -> torch.device:
    # NCCL moves CUDA tensors only; gloo moves CPU tensors
    if dist.get_backend() == 'nccl':
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def any_rank(flag: bool) -> bool:
    """``flag`` or'ed over all ranks (the same answer on every rank)."""
    if not is_distributed():
        return bool(flag)
    value = torch.tensor([int(bool(flag))], device=_collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def all_gather_object(obj) -> list:
    """A picklable object from every rank, in rank order (``[obj]`` alone)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s copy of a picklable object, on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait for every rank (a no-op without a process group)."""
    if is_distributed():
        dist.barrier()
