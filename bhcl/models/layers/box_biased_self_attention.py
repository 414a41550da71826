"""Query self-attention biased by the Gaussian-Wasserstein similarity of the query boxes."""
import torch
from mmrotate.registry import MODELS
from torch import Tensor, nn

from .rbox_ops import box_position_features, gaussian_wasserstein_similarity


@MODELS.register_module()
class BoxBiasedSelfAttention(nn.Module):
    """Multi-head self-attention with ``scale_h * log(GW similarity)`` added to the logits.

    Queries and keys also get a learned encoding of the box (centre, log size,
    doubled angle). Boxes are treated as constants (no gradient through them).

    Args:
        embed_dims: width of the content attended over (2C for decoupled queries).
        num_heads: heads.
        dropout: attention dropout.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.attn = nn.MultiheadAttention(embed_dims, num_heads, dropout=dropout,
                                          batch_first=True)
        self.pos_proj = nn.Sequential(nn.Linear(6, embed_dims), nn.ReLU(inplace=True),
                                      nn.Linear(embed_dims, embed_dims))
        self.bias_scale = nn.Parameter(torch.ones(num_heads))

    def attention_bias(self, boxes: Tensor) -> Tensor:
        """(B, N, 5) -> (B * heads, N, N) additive attention bias."""
        with torch.no_grad():
            log_sim = gaussian_wasserstein_similarity(boxes.detach().float()).log()
        bias = self.bias_scale[None, :, None, None] * log_sim[:, None]
        return bias.flatten(0, 1)

    def forward(self, query: Tensor, boxes: Tensor, img_size: Tensor) -> Tensor:
        """(B, N, D) content, (B, N, 5) boxes, (B, 2) padded image ``(w, h)`` -> (B, N, D)."""
        pos = self.pos_proj(box_position_features(boxes.detach(), img_size))
        qk = query + pos
        bias = self.attention_bias(boxes).to(query.dtype)
        out, _ = self.attn(qk, qk, query, attn_mask=bias, need_weights=False)
        return out
