"""The cross-attention decoder: query conv, RMSNorm'd projections, window attention."""
from __future__ import annotations

import math

import torch
from torch import nn

from ...ops import fused, window_attention, window_mask


class WindowCrossAttention(nn.Module):
    """RMSNorm'd queries and keys, projected per head, attending to raw feature values.

    ``attention`` is an ``nn.MultiheadAttention`` used only as the holder of the query/key
    projections (``in_proj_weight`` rows 0..D-1 and D..2D-1), so that official checkpoints
    load unchanged; its value and output projections are never applied. ``backend`` is the
    window-attention backend (:func:`~anyup_neck.ops.window_attention`).
    """

    def __init__(self, dim: int, num_heads: int, window_ratio: float, backend: str = 'auto') -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_ratio = window_ratio
        self.backend = backend
        self.norm_q = nn.RMSNorm(dim)
        self.norm_k = nn.RMSNorm(dim)
        self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)

    def _projection(self, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        return self.attention.in_proj_weight[rows], self.attention.in_proj_bias[rows]

    def project_queries(self, q: torch.Tensor, query_conv: nn.Conv2d | None = None,
                        overwrite: bool = False) -> torch.Tensor:
        """(B, D, H, W) queries -> RMSNorm'd, projected (B, D, H, W).

        ``query_conv`` (a 3x3 zero-padded conv without bias) is applied first when given, as
        one primitive with the projection
        (:func:`~anyup_neck.ops.fused.conv3x3_rms_linear`); with ``overwrite`` q may hold the
        result.
        """
        weight, bias = self._projection(slice(0, q.shape[1]))
        if query_conv is None:
            return fused.rms_linear(q, self.norm_q.weight, weight, bias, self.norm_q.eps)
        return fused.conv3x3_rms_linear(q, query_conv.weight, self.norm_q.weight, weight, bias,
                                        self.norm_q.eps, overwrite=overwrite)

    def project_keys(self, k: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) -> RMSNorm'd, projected keys (B, D, h, w)."""
        D = k.shape[1]
        weight, bias = self._projection(slice(D, 2 * D))
        return fused.rms_linear(k, self.norm_k.weight, weight, bias, self.norm_k.eps)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                query_conv: nn.Conv2d | None = None, overwrite: bool = False) -> torch.Tensor:
        """q (B, D, H, W), k (B, D, h, w) raw queries and keys, v (B, C, h, w) -> (B, C, H, W)
        in v's dtype. ``query_conv``, ``overwrite``: see :meth:`project_queries`.

        Outside ``torch.autocast`` the projections are cast to v's dtype (the features may
        come in another float type than the model's). Under autocast they go to the op as they
        are, and the op picks the precision it runs in (the autocast dtype on CUDA).
        """
        q = self.project_queries(q, query_conv, overwrite)
        k = self.project_keys(k)
        if not torch.is_autocast_enabled(v.device.type):
            q, k = q.to(v.dtype), k.to(v.dtype)
        return window_attention(q, k, v, num_heads=self.num_heads,
                                window_ratio=self.window_ratio, backend=self.backend)

    def pixel_weights(self, q: torch.Tensor, k: torch.Tensor, pixel: tuple[int, int],
                      query_conv: nn.Conv2d | None = None) -> torch.Tensor:
        """Head-averaged attention weights of one output pixel over the keys, (B, h, w).

        ``q`` (B, D, H, W) and ``k`` (B, D, h, w) as :meth:`forward` takes them. For
        inspection only (a dense row of the attention); zero outside the pixel's window.
        """
        (H, W), (h, w), D = q.shape[-2:], k.shape[-2:], q.shape[1]
        i, j = pixel
        if not (0 <= i < H and 0 <= j < W):
            raise ValueError(f'pixel: expected a position inside the {H}x{W} output, got {pixel}')
        qp = self.project_queries(q, query_conv)[:, :, i:i + 1, j:j + 1]      # (B, D, 1, 1)
        kp = self.project_keys(k)                                             # (B, D, h, w)
        d = D // self.num_heads
        dtype = torch.promote_types(qp.dtype, torch.float32)   # softmax at least in float32
        logits = torch.einsum('bnd,bndk->bnk', qp.reshape(-1, self.num_heads, d).to(dtype),
                              kp.reshape(kp.shape[0], self.num_heads, d, h * w).to(dtype))
        logits = logits / math.sqrt(d)
        allowed = window_mask((H, W), (h, w), self.window_ratio, k.device)[i * W + j]
        logits = logits.masked_fill(~allowed, float('-inf'))
        return logits.softmax(dim=-1).mean(dim=1).view(-1, h, w)


class CrossAttentionBlock(nn.Module):
    """3x3 conv (zero padding, no bias) on the queries, then :class:`WindowCrossAttention`.

    The conv and the query projection run as one primitive: on the CPU a Winograd F(2x2, 3x3)
    conv in blocks of rows, each block projected at once, written over the queries when they
    are the caller's temporary (:func:`~anyup_neck.ops.fused.conv3x3_rms_linear`).
    """

    def __init__(self, dim: int, num_heads: int, window_ratio: float, backend: str = 'auto') -> None:
        super().__init__()
        self.cross_attn = WindowCrossAttention(dim, num_heads, window_ratio, backend)
        self.conv2d = nn.Conv2d(dim, dim, 3, padding=1, bias=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                overwrite: bool = False) -> torch.Tensor:
        """Pooled queries q (B, D, H, W), keys k (B, D, h, w), values v (B, C, h, w) ->
        (B, C, H, W) in v's dtype. ``overwrite``: q is the caller's temporary."""
        return self.cross_attn(q, k, v, query_conv=self.conv2d, overwrite=overwrite)

    def pixel_weights(self, q: torch.Tensor, k: torch.Tensor,
                      pixel: tuple[int, int]) -> torch.Tensor:
        """The weights (B, h, w) with which output ``pixel`` averages the values."""
        return self.cross_attn.pixel_weights(q, k, pixel, query_conv=self.conv2d)
