"""mmdet's ChannelMapper followed by one GroupNorm shared by all output levels."""
from typing import List, Sequence, Tuple

from mmdet.models.necks import ChannelMapper
from mmrotate.registry import MODELS
from torch import Tensor, nn


@MODELS.register_module()
class ChannelMapperGN(ChannelMapper):
    """``ChannelMapper`` (1x1 conv + ReLU per input, strided 3x3 convs for the extra
    levels) whose every output goes through the same ``GroupNorm`` (OrientedFormer's neck).

    Args:
        in_channels, out_channels, **kwargs: as ``mmdet.ChannelMapper``.
        num_groups: groups of the shared GroupNorm.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, num_groups: int = 32,
                 **kwargs):
        super().__init__(list(in_channels), out_channels, **kwargs)
        self.gn_out = nn.GroupNorm(num_groups, out_channels)

    def forward(self, inputs: Tuple[Tensor, ...]) -> List[Tensor]:
        return [self.gn_out(out) for out in super().forward(inputs)]
