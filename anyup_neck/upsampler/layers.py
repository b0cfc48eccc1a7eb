"""AnyUp's building blocks. Module and parameter names follow the official state_dict.

All maps are NCHW. D is the query/key width (qk_dim), M the LFU basis size. Each layer has one
forward; how it runs (compiled CPU kernels, a GPU formulation, plain PyTorch ops; in pieces,
in place) is decided by the primitives of :mod:`anyup_neck.ops.fused` it calls. A forward's
``overwrite=True`` says that its input is the caller's temporary, which the result may reuse.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..ops import fused, window_attention, window_mask
from ..ops.fused import adaptive_pool

__all__ = ['ResBlock', 'Encoder', 'LearnedFeatureUnification', 'LFU_MODES', 'RoPE',
           'WindowCrossAttention', 'CrossAttentionBlock', 'adaptive_pool']


class ResBlock(nn.Module):
    """GroupNorm(8) -> SiLU -> conv -> GroupNorm(8) -> SiLU -> conv, plus a shortcut.

    Convs have no bias; the shortcut is the identity, or a 1x1 conv when channels change.
    Parameters sit at ``block.0/.2/.3/.5`` (and ``shortcut``) as in the official model.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 num_groups: int = 8, padding_mode: str = 'reflect') -> None:
        super().__init__()
        pad = kernel_size // 2
        # Nothing to pad for 1x1 convs: zero mode skips the copy a reflect F.pad would make.
        mode = padding_mode if pad else 'zeros'
        self.block = nn.Sequential(
            nn.GroupNorm(num_groups, in_channels), nn.SiLU(),
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=pad,
                      padding_mode=mode, bias=False),
            nn.GroupNorm(num_groups, out_channels), nn.SiLU(),
            nn.Conv2d(out_channels, out_channels, kernel_size, padding=pad,
                      padding_mode=mode, bias=False),
        )
        self.shortcut = (nn.Identity() if in_channels == out_channels
                         else nn.Conv2d(in_channels, out_channels, 1, bias=False))

    def forward(self, x: torch.Tensor, pool_to: tuple[int, int] | None = None,
                overwrite: bool = False) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W), or adaptive-average-pooled to ``pool_to``.

        ``overwrite``: x is the caller's temporary and may hold the result (see
        :func:`~anyup_neck.ops.fused.preactivation_residual`).
        """
        norm1, _, conv1, norm2, _, conv2 = self.block
        return fused.preactivation_residual(x, norm1, conv1, norm2, conv2, self.shortcut,
                                            pool_to=pool_to, overwrite=overwrite)


class Encoder(nn.Sequential):
    """A first layer, then ResBlocks (the official encoders' module tree, so the same keys)."""

    def forward(self, x: torch.Tensor, pool_to: tuple[int, int] | None = None) -> torch.Tensor:
        """x -> the encoding, adaptive-average-pooled to ``pool_to`` if given (the last block
        pools before its last conv where it can). The blocks work over the first layer's
        output, which is this encoder's own temporary."""
        x = self[0](x)
        if len(self) == 1:
            return adaptive_pool(x, pool_to)
        for n, block in enumerate(self[1:], start=2):
            x = block(x, pool_to=pool_to if n == len(self) else None, overwrite=True)
        return x


LFU_MODES = ('official', 'paper')


class LearnedFeatureUnification(nn.Module):
    """Maps features with any channel count C to M channels (paper Eq. 1).

    Features are L2-normalised over channels by the caller. Each input channel is convolved on
    its own with every basis kernel (zero padding, each response divided by the number of
    in-image taps), giving M*C responses with flat index ``channel * M + basis``. These are
    arranged in an (M, C) grid whose column c holds the M responses that share one softmax:

    * ``'official'``: the flat responses read in order as an (M, C) array (what the official
      checkpoints were trained with: the official code views the channel-major stack as
      (B, M, C, h, w), softmaxes over its first axis and averages over its second; so the
      result depends on the order of the input channels);
    * ``'paper'``: column c holds channel c's M basis responses (invariant to channel order).

    The softmax runs down each column and the columns are averaged
    (:func:`~anyup_neck.ops.fused.basis_softmax_mean`).
    """

    def __init__(self, num_basis: int = 128, kernel_size: int = 5, mode: str = 'official') -> None:
        super().__init__()
        if mode not in LFU_MODES:
            raise ValueError(f'lfu_mode: expected one of {LFU_MODES}, got {mode!r}')
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f'lfu_kernel_size: expected an odd positive int, got {kernel_size}')
        self.mode = mode
        self.kernel_size = kernel_size
        self.basis = nn.Parameter(torch.randn(num_basis, 1, kernel_size, kernel_size))

    def extra_repr(self) -> str:
        return f'num_basis={self.basis.shape[0]}, kernel_size={self.kernel_size}, mode={self.mode!r}'

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) normalised features -> (B, M, h, w)."""
        return fused.basis_softmax_mean(features, self.basis, per_channel=self.mode == 'paper')


class RoPE(nn.Module):
    """2-D rotary position encoding over the channels of an NCHW map.

    Coordinates are linspace(0, 1) per axis at the map's resolution; ``freqs`` (2, D) maps
    (row, col) to D angles, angle = row * freqs[0] + col * freqs[1]. It is a parameter, so
    checkpoints override the initial values. Channels d and d + D/2 rotate as a pair:
    out = x * cos(angle) + cat(-x2, x1) * sin(angle).
    """

    def __init__(self, dim: int, theta: float = 100.0) -> None:
        super().__init__()
        if dim % 4:
            raise ValueError(f'qk_dim: expected a multiple of 4 for 2-D RoPE, got {dim}')
        g = theta ** torch.linspace(0, -1, dim // 4)
        f = 2 * math.pi * torch.cat([g, g])
        freqs = torch.zeros(2, dim)
        freqs[0, :dim // 2] = f
        freqs[1, dim // 2:] = f
        self.freqs = nn.Parameter(freqs)

    def forward(self, x: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
        """(B, D, H, W) -> (B, D, H, W) rotated; with ``overwrite`` x may hold the result.

        The angles are computed in float32 (float64 for float64 x), whatever x's dtype.
        """
        H, W = x.shape[-2:]
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        freqs = self.freqs.to(dtype)

        def angles(n: int, f: torch.Tensor) -> torch.Tensor:
            return torch.linspace(0, 1, n, device=x.device, dtype=dtype)[:, None] * f

        return fused.rotary_2d(x, angles(H, freqs[0]), angles(W, freqs[1]), overwrite=overwrite)


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
