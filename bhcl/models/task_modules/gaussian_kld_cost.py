"""Gaussian KLD between rotated boxes as a match cost, pairwise.

The numbers are those of mmrotate's ``GDLoss(loss_type='kld')`` applied to
every (prediction, ground truth) pair, so a matcher and a loss built with the
same ``fun`` / ``tau`` / ``alpha`` / ``sqrt`` agree; only the (N, M) layout is
ours, computed from (N, 2, 2) and (M, 2, 2) covariances without (N, M, 2, 2)
intermediates.
"""
from typing import Optional, Union

import torch
from mmdet.models.task_modules.assigners.match_cost import BaseMatchCost
from mmengine.structures import InstanceData
from mmrotate.models.losses.gaussian_dist_loss import postprocess, xy_wh_r_2_xy_sigma
from mmrotate.registry import TASK_UTILS
from torch import Tensor

from bhcl.structures.box_coding import box_tensor

FUNS = ('log1p', 'sqrt', 'none')


def pairwise_gaussian_kld(pred: Tensor, target: Tensor, fun: str = 'log1p', tau: float = 1.0,
                          alpha: float = 1.0, sqrt: bool = True) -> Tensor:
    """(N, 5) and (M, 5) boxes ``(cx, cy, w, h, t)`` -> (N, M) mmrotate KLD loss values.

    Entry (i, j) equals mmrotate's ``kld_loss`` of prediction i against target
    j: ``KL(N_target || N_pred)`` of the boxes' Gaussians (mean the centre,
    covariance ``R diag(w/2, h/2)^2 R^T``), centre term divided by ``alpha^2``,
    then ``sqrt`` (if set) and ``postprocess(fun, tau)``. The KLD does not
    change when both sets are moved, turned or scaled alike, nor with the
    angle convention, so pixel boxes need no normalisation.
    """
    if fun not in FUNS:
        raise ValueError(f'fun must be one of {FUNS}, got {fun!r}')
    xy_p, sigma_p = xy_wh_r_2_xy_sigma(pred)
    xy_t, sigma_t = xy_wh_r_2_xy_sigma(target)
    det_p = sigma_p.det()
    # adjugate / det, written out as mmrotate does
    inv_p = torch.stack((sigma_p[:, 1, 1], -sigma_p[:, 0, 1], -sigma_p[:, 1, 0],
                         sigma_p[:, 0, 0]), dim=-1) / det_p[:, None]  # (N, 4) row-major
    dx = xy_p[:, None, 0] - xy_t[None, :, 0]  # (N, M)
    dy = xy_p[:, None, 1] - xy_t[None, :, 1]
    xy_distance = 0.5 * (inv_p[:, None, 0] * dx.square() + (inv_p[:, None, 1] + inv_p[:, None, 2])
                         * dx * dy + inv_p[:, None, 3] * dy.square())
    # tr(A B) = sum_ij A_ij B_ji: one (N, 4) x (4, M) product
    trace = inv_p @ sigma_t.transpose(-1, -2).flatten(1).T
    log_det_ratio = det_p.log()[:, None] - sigma_t.det().log()[None, :]
    distance = xy_distance / (alpha * alpha) + 0.5 * trace + 0.5 * log_det_ratio - 1
    if sqrt:
        distance = distance.clamp(1e-7).sqrt()
    return postprocess(distance, fun=fun, tau=tau)


@TASK_UTILS.register_module()
class GaussianKLDCost(BaseMatchCost):
    """``weight *`` the Gaussian KLD loss of each prediction against each
    ground-truth rotated box (RHINO's matching cost).

    Use the arguments of the ``GDLoss(loss_type='kld', ...)`` it pairs with.
    Note that ``GDLoss`` itself defaults to ``tau=0.0`` while this cost
    defaults to ``tau=1.0`` (the usual KLD loss setting): set ``tau`` in the
    loss config explicitly.

    Args:
        weight: cost weight.
        fun: ``'log1p'``, ``'sqrt'`` or ``'none'``, applied to the distance.
        tau: ``1 - 1 / (tau + d)`` when ``tau >= 1``, ``d`` otherwise.
        alpha: the centre term is divided by ``alpha^2``.
        sqrt: take the square root of the divergence first.
    """

    def __init__(self, weight: Union[float, int] = 1., fun: str = 'log1p', tau: float = 1.0,
                 alpha: float = 1.0, sqrt: bool = True) -> None:
        super().__init__(weight=weight)
        if fun not in FUNS:
            raise ValueError(f'fun must be one of {FUNS}, got {fun!r}')
        self.fun, self.tau, self.alpha, self.sqrt = fun, tau, alpha, sqrt

    def __call__(self,
                 pred_instances: InstanceData,
                 gt_instances: InstanceData,
                 img_meta: Optional[dict] = None,
                 **kwargs) -> Tensor:
        """``bboxes`` (N, 5) predictions and (M, 5) ground truth -> (N, M) cost.

        ``img_meta`` is not used: the KLD does not change with a common scale,
        and dividing ``(w, h)`` by ``(W, H)`` would reshape rotated boxes on
        non-square images.
        """
        pred, gt = pred_instances.bboxes, gt_instances.bboxes
        pred, gt = box_tensor(pred), box_tensor(gt)
        cost = pairwise_gaussian_kld(pred.float(), gt.to(pred.device).float(), fun=self.fun,
                                     tau=self.tau, alpha=self.alpha, sqrt=self.sqrt)
        return cost * self.weight
