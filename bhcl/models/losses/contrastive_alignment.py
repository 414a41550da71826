"""MutDet contrastive alignment: symmetric InfoNCE between predicted and object embeddings.

Row i of the predictions (the embedding predicted by the i-th
Hungarian-matched query) and row i of the targets (the object embedding of
its matched box) are a positive pair; every other row of the batch is a
negative. With unit vectors ``p_i``, ``t_j`` and ``s_ij = p_i . t_j / tau``:

    L = w / N sum_i -log(exp(s_ii) / sum_j exp(s_ij))      (prediction -> object)
      + w / N sum_i -log(exp(s_ii) / sum_j exp(s_ji))      (object -> prediction)

Both sides receive gradients: the object embeddings are trained too (they
come out of the mutual enhancement module). MutDet weighs each direction by
``w = 2 tau`` (0.4 at its temperature 0.2): the defaults.
"""
import torch
import torch.nn.functional as F
from mmrotate.registry import MODELS
from torch import Tensor, nn


def symmetric_info_nce(pred: Tensor, target: Tensor, temperature: float) -> Tensor:
    """Both InfoNCE directions, unweighted, as a (2,) tensor (pred->target, target->pred).

    ``pred`` and ``target`` are (N, D), paired row by row, not necessarily
    normalised. Computed in float32 at least (fp16 logits overflow at
    ``1 / tau``) and returned in that dtype. N=0 gives zeros still attached
    to the inputs' graph.
    """
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(f'pred and target must both be (N, D), got {tuple(pred.shape)} '
                         f'and {tuple(target.shape)}')
    dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)
    pred, target = pred.to(dtype), target.to(dtype)
    if pred.shape[0] == 0:
        # sum over nothing: a zero that keeps both inputs in the graph (DDP)
        return (pred.sum() + target.sum()).expand(2) * 0.0
    logits = F.normalize(pred, dim=1) @ F.normalize(target, dim=1).t() / temperature
    labels = torch.arange(pred.shape[0], device=pred.device)
    return torch.stack([F.cross_entropy(logits, labels), F.cross_entropy(logits.t(), labels)])


@MODELS.register_module()
class ContrastiveAlignmentLoss(nn.Module):
    """Symmetric InfoNCE between matched predicted and object embeddings.

    Args:
        temperature: tau of the similarity logits (MutDet: 0.2).
        loss_weight: weight of each direction (MutDet: ``2 * temperature`` = 0.4).
    """

    def __init__(self, temperature: float = 0.2, loss_weight: float = 0.4) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        self.temperature = temperature
        self.loss_weight = loss_weight

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """pred (N, D) predicted embeddings of the matched queries, target (N, D)
        object embeddings of their boxes (row i with row i) -> scalar loss."""
        return self.loss_weight * symmetric_info_nce(pred, target, self.temperature).sum()
