"""AnyUp's building blocks. Module and parameter names follow the official state_dict.

All maps are NCHW. D is the query/key width (qk_dim), M the LFU basis size.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import fused, window_attention, window_mask


def needs_grad(module: nn.Module, *inputs: torch.Tensor) -> bool:
    """Whether autograd must record ``module`` applied to ``inputs`` (else the layers may run
    in place and with the fused inference kernels)."""
    return torch.is_grad_enabled() and (any(t.requires_grad for t in inputs) or
                                        any(p.requires_grad for p in module.parameters()))


def adaptive_pool(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Adaptive average pooling to ``size``; a map already of that size is returned as is."""
    return x if tuple(x.shape[-2:]) == tuple(size) else F.adaptive_avg_pool2d(x, size)


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if needs_grad(self, x):
            return self.block(x) + self.shortcut(x)
        return self._residual(x).add_(self.shortcut(x))

    def forward_(self, x: torch.Tensor) -> torch.Tensor:
        """``self(x)``, overwriting ``x`` where it can (the caller's temporary).

        Without autograd, with the fused kernels, 1x1 convs, an identity shortcut and a
        channels-last x, the block runs in pieces of rows and writes its output into x: it
        holds x and one hidden map (in pieces) instead of three full maps. Otherwise it is
        ``self(x)``.
        """
        if not self._runs_in_pieces(x):
            return self(x)
        pieces = self._row_pieces(x)
        for (b, piece), hidden in zip(pieces, self._hidden_in_pieces(x, pieces)):
            fused.conv1x1_add_(piece, hidden, self.block[5].weight)
        return x

    def pooled_(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``adaptive_pool(self(x), size)``, overwriting ``x`` where it can (as :meth:`forward_`).

        The final 1x1 conv and the shortcut run after the pooling: average pooling commutes
        with per-pixel linear maps, so they cost the small map's pixels instead of x's.
        """
        conv1, conv2 = self.block[2], self.block[5]
        if conv1.kernel_size != (1, 1) or tuple(x.shape[-2:]) == tuple(size):
            return adaptive_pool(self.forward_(x), size)
        shortcut = self.shortcut(adaptive_pool(x, size))
        if self._runs_in_pieces(x):  # the hidden map goes into x's memory, piece by piece
            pieces = self._row_pieces(x)
            for _ in self._hidden_in_pieces(x, pieces, into_input=True):
                pass
            hidden = x
        else:
            hidden = self._residual(x, last_conv=False)
        return conv2(adaptive_pool(hidden, size)) + shortcut

    #: values of a channels-last map per piece in :meth:`forward_` (8 MB in float32)
    max_piece_elements: int = 1 << 21

    def _runs_in_pieces(self, x: torch.Tensor) -> bool:
        norm1, conv1 = self.block[0], self.block[2]
        return (isinstance(self.shortcut, nn.Identity) and conv1.kernel_size == (1, 1)
                and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
                and not needs_grad(self, x) and fused.usable(x, norm1.weight, conv1.weight))

    def _row_pieces(self, x: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
        """(batch index, view of some rows of that image), covering x; each view is
        channels-last-contiguous."""
        B, C, H, W = x.shape
        rows = max(1, self.max_piece_elements // (C * W))
        return [(b, x[b:b + 1, :, r0:r0 + rows]) for b in range(B) for r0 in range(0, H, rows)]

    def _hidden_in_pieces(self, x: torch.Tensor, pieces: list[tuple[int, torch.Tensor]],
                          into_input: bool = False):
        """Yields silu(norm2(conv1(silu(norm1(x))))) piece by piece (the input of the last
        conv), after computing all of conv1's pieces for norm2's statistics; written over the
        input's piece if ``into_input``."""
        norm1, _, conv1, norm2, _, _ = self.block
        pixels = x.shape[2] * x.shape[3]
        scale, shift = fused.group_norm_affine(fused.channel_moments(x), pixels, norm1)
        hidden = []
        moments = x.new_zeros(x.shape[0], 2, conv1.out_channels, dtype=torch.float64)
        for b, piece in pieces:
            y = conv1(fused.affine_silu(piece, scale[b:b + 1], shift[b:b + 1]))
            moments[b] += fused.channel_moments(y)[0]
            hidden.append(y)
        scale, shift = fused.group_norm_affine(moments, pixels, norm2)
        for n, (b, piece) in enumerate(pieces):
            y, hidden[n] = hidden[n], None   # dropped as soon as it is consumed
            yield fused.affine_silu(y, scale[b:b + 1], shift[b:b + 1],
                                    out=piece if into_input else y)

    def _residual(self, x: torch.Tensor, last_conv: bool = True) -> torch.Tensor:
        """The block without the shortcut (without its last conv if not ``last_conv``)."""
        norm1, _, conv1, norm2, _, conv2 = self.block
        if needs_grad(self, x):
            y = conv1(F.silu(norm1(x)))
            y = F.silu(norm2(y))
        else:  # GroupNorm and SiLU fused (or SiLU in place); each step drops its input
            y = conv1(_norm_silu(norm1, x, in_place=False))
            y = _norm_silu(norm2, y, in_place=True)
        return conv2(y) if last_conv else y


def _norm_silu(norm: nn.GroupNorm, x: torch.Tensor, in_place: bool) -> torch.Tensor:
    """silu(norm(x)) without autograd: the fused kernels where usable, into x if ``in_place``."""
    if fused.usable(x, norm.weight):
        return fused.group_norm_silu(x, norm, out=x if in_place else None)
    return F.silu(norm(x), inplace=True)


class Encoder(nn.Sequential):
    """A first layer, then ResBlocks (the official encoders' module tree, so the same keys).

    Without autograd the ResBlocks overwrite the first layer's output in place
    (:meth:`ResBlock.forward_`), which holds fewer full-size maps at once.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self[0](x)
        for block in self[1:]:
            x = block.forward_(x)
        return x

    def pooled(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``adaptive_pool(self(x), size)``; the last block's final conv runs after the pooling."""
        return self[-1].pooled_(self[:-1](x), size)


LFU_MODES = ('official', 'paper')


class LearnedFeatureUnification(nn.Module):
    """Maps features with any channel count C to M channels (paper Eq. 1).

    Features are L2-normalised over channels by the caller. Each input channel is convolved on
    its own with every basis kernel (zero padding, each response divided by the number of
    in-image taps), giving M*C responses with flat index ``channel * M + basis``. These are
    arranged in an (M, C) grid whose column c holds the M responses that share one softmax:

    * ``'official'``: the flat responses read in order as an (M, C) array (what the official
      checkpoints were trained with; depends on the order of the input channels);
    * ``'paper'``: column c holds channel c's M basis responses (invariant to channel order).

    The softmax runs down each column and the columns are averaged. Columns are processed in
    chunks of at most ``max_chunk_elements`` responses so the M*C stack is never held at once.
    """

    max_chunk_elements: int = 1 << 24

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

    def response_grid(self, num_channels: int, device: torch.device) -> torch.Tensor:
        """Flat response index (channel * M + basis) at each cell of the (M, C) softmax grid."""
        M = self.basis.shape[0]
        grid = torch.arange(M * num_channels, device=device)
        if self.mode == 'official':
            return grid.view(M, num_channels)
        return grid.view(num_channels, M).t()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) normalised features -> (B, M, h, w)."""
        if not needs_grad(self, features) and fused.usable(features, self.basis):
            return fused.basis_softmax_mean(features, self.basis, per_channel=self.mode == 'paper')
        B, C, h, w = features.shape
        M, k = self.basis.shape[0], self.kernel_size
        pad = k // 2
        padded = F.pad(features, (pad, pad, pad, pad))
        taps = F.conv2d(F.pad(features.new_ones(1, 1, h, w), (pad, pad, pad, pad)),
                        features.new_ones(1, 1, k, k))                   # (1, 1, h, w)
        grid = self.response_grid(C, features.device)
        cols_per_chunk = max(1, self.max_chunk_elements // (B * M * h * w))
        total = features.new_zeros(B, M, h, w)
        for c0 in range(0, C, cols_per_chunk):
            flat = grid[:, c0:c0 + cols_per_chunk].reshape(-1)          # m-major
            responses = F.conv2d(padded[:, flat // M], self.basis[flat % M], groups=flat.numel())
            responses = (responses / taps).view(B, M, -1, h, w)
            total = total + responses.softmax(dim=1).sum(dim=2)
        return total / C


class RoPE(nn.Module):
    """2-D rotary position encoding over the channels of an NCHW map.

    Coordinates are linspace(0, 1) per axis at the map's resolution; ``freqs`` (2, D) maps
    (row, col) to D angles. It is a parameter, so checkpoints override the initial values.
    """

    max_block_elements: int = 1 << 22

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """out = x * cos(angle) + rotate_half(x) * sin(angle), angle = row * f0 + col * f1.

        cos and sin come from per-row and per-column tables by the angle-addition formulas
        (no transcendental per element), for blocks of at most ``max_block_elements`` values
        of rows; without autograd the result overwrites ``x``.
        """
        B, D, H, W = x.shape
        freqs = self.freqs.to(x.dtype)

        def angles(n: int, f: torch.Tensor) -> torch.Tensor:
            return torch.linspace(0, 1, n, device=x.device, dtype=x.dtype)[:, None] * f

        row, col = angles(H, freqs[0]), angles(W, freqs[1])            # (H, D), (W, D)
        cos_r, sin_r, cos_c, sin_c = row.cos(), row.sin(), col.cos(), col.sin()
        in_place = not needs_grad(self, x)
        if in_place and fused.usable(x) and x.is_contiguous(memory_format=torch.channels_last):
            return fused.rotary_2d_(x, cos_r, sin_r, cos_c, sin_c)
        blocks = []
        step = max(1, self.max_block_elements // (B * D * W))
        for r0 in range(0, H, step):
            r = slice(r0, min(H, r0 + step))
            cos = (cos_r[r, None] * cos_c - sin_r[r, None] * sin_c).permute(2, 0, 1)
            sin = (sin_r[r, None] * cos_c + cos_r[r, None] * sin_c).permute(2, 0, 1)
            xb = x[:, :, r]
            x1, x2 = xb.chunk(2, dim=1)
            rotated = torch.cat([-x2, x1], dim=1)
            if in_place:
                xb.mul_(cos).addcmul_(rotated, sin)
            else:
                blocks.append(xb * cos + rotated * sin)
        return x if in_place else torch.cat(blocks, dim=2)


class WindowCrossAttention(nn.Module):
    """RMSNorm'd queries and keys, projected per head, attending to raw feature values.

    ``attention`` is an ``nn.MultiheadAttention`` used only as the holder of the query/key
    projections (``in_proj_weight`` rows 0..D-1 and D..2D-1), so that official checkpoints
    load unchanged; its value and output projections are never applied.
    """

    def __init__(self, dim: int, num_heads: int, window_ratio: float, backend: str = 'auto') -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_ratio = window_ratio
        self.backend = backend
        self.norm_q = nn.RMSNorm(dim)
        self.norm_k = nn.RMSNorm(dim)
        self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)

    def _project(self, x: torch.Tensor, norm: nn.RMSNorm, rows: slice,
                 out: torch.Tensor | None = None) -> torch.Tensor:
        weight = self.attention.in_proj_weight[rows]
        bias = self.attention.in_proj_bias[rows]
        if needs_grad(self, x):
            return F.linear(norm(x.permute(0, 2, 3, 1)), weight, bias).permute(0, 3, 1, 2)
        # Without autograd, RMSNorm's weight folds into the projection, and the per-pixel 1/rms
        # scales its output (both are linear per pixel): one fused pass over channels-last
        # maps, else a 1x1 conv (a GEMM over the pixels) and a scaling pass.
        eps = torch.finfo(x.dtype).eps if norm.eps is None else norm.eps
        folded = weight * norm.weight
        if (fused.usable(x, folded, bias) and fused.image_pixels_contiguous(x)
                and (out is None or fused.image_pixels_contiguous(out))):
            return fused.rms_linear(x, folded, bias, eps, out)
        mean_square = torch.linalg.vector_norm(x, dim=1, keepdim=True).square_().div_(x.shape[1])
        projected = F.conv2d(x, folded[:, :, None, None])
        return torch.addcmul(bias[:, None, None], projected, mean_square.add_(eps).rsqrt_(),
                             out=projected if out is None else out)

    def project_queries(self, q: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D, H, W) -> RMSNorm'd, projected queries (B, D, H, W).

        Without autograd they are written into ``out`` if given (e.g. a view of a larger map).
        """
        return self._project(q, self.norm_q, slice(0, q.shape[1]), out)

    def project_keys(self, k: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) -> RMSNorm'd, projected keys (B, D, h, w)."""
        D = k.shape[1]
        return self._project(k, self.norm_k, slice(D, 2 * D))

    def pixel_weights(self, projected_q: torch.Tensor, k: torch.Tensor,
                      pixel: tuple[int, int]) -> torch.Tensor:
        """Head-averaged attention weights of one output pixel over the keys, (B, h, w).

        ``projected_q`` (B, D, H, W) as :meth:`attend` takes it, ``k`` (B, D, h, w) raw keys.
        For inspection only (a dense row of the attention); zero outside the pixel's window.
        """
        (H, W), (h, w), D = projected_q.shape[-2:], k.shape[-2:], projected_q.shape[1]
        i, j = pixel
        if not (0 <= i < H and 0 <= j < W):
            raise ValueError(f'pixel: expected a position inside the {H}x{W} output, got {pixel}')
        qp = projected_q[:, :, i:i + 1, j:j + 1]                              # (B, D, 1, 1)
        kp = self.project_keys(k)                                             # (B, D, h, w)
        d = D // self.num_heads
        logits = torch.einsum('bnd,bndk->bnk', qp.reshape(-1, self.num_heads, d),
                              kp.reshape(kp.shape[0], self.num_heads, d, h * w)) / math.sqrt(d)
        allowed = window_mask((H, W), (h, w), self.window_ratio, k.device)[i * W + j]
        logits = logits.masked_fill(~allowed, float('-inf'))
        return logits.softmax(dim=-1).mean(dim=1).view(-1, h, w)

    def attend(self, projected_q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               backend: str | None = None) -> torch.Tensor:
        """Already projected queries (B, D, H, W), raw keys (B, D, h, w), values (B, C, h, w).

        Runs in the values' dtype and returns (B, C, H, W).
        """
        return window_attention(projected_q.to(v.dtype), self.project_keys(k).to(v.dtype), v,
                                num_heads=self.num_heads, window_ratio=self.window_ratio,
                                backend=backend or self.backend)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                backend: str | None = None) -> torch.Tensor:
        """q (B, D, H, W), k (B, D, h, w), v (B, C, h, w) -> (B, C, H, W)."""
        return self.attend(self.project_queries(q), k, v, backend)


class CrossAttentionBlock(nn.Module):
    """3x3 conv (zero padding, no bias) on the queries, then :class:`WindowCrossAttention`.

    Without autograd, the query path (conv, norm, projection) runs in blocks of output rows
    of at most ``max_block_elements`` values, written into one preallocated tensor, so a
    very large output holds about two query-sized buffers instead of four. On CPU with the
    compiled extension the conv of a channels-last map runs as Winograd F(2x2, 3x3)
    (:func:`~anyup_neck.ops.fused.conv3x3_winograd`: 2.25x fewer multiplications).
    """

    max_block_elements: int = 1 << 24

    def __init__(self, dim: int, num_heads: int, window_ratio: float, backend: str = 'auto') -> None:
        super().__init__()
        self.cross_attn = WindowCrossAttention(dim, num_heads, window_ratio, backend)
        self.conv2d = nn.Conv2d(dim, dim, 3, padding=1, bias=False)

    def decode_queries(self, q: torch.Tensor) -> torch.Tensor:
        """Pooled queries (B, D, H, W) -> convolved, normalised, projected (B, D, H, W)."""
        if needs_grad(self, q):
            return self.cross_attn.project_queries(self.conv2d(q))
        B, D, H, W = q.shape
        conv_rows = self._conv_rows(q)
        out = torch.empty_like(q)
        rows = max(1, self.max_block_elements // (B * D * W))
        for r0 in range(0, H, rows):
            r1 = min(H, r0 + rows)
            self.cross_attn.project_queries(conv_rows(r0, r1), out=out[:, :, r0:r1])
        return out

    def _conv_rows(self, q: torch.Tensor):
        """A function (r0, r1) -> rows r0 .. r1 - 1 of ``self.conv2d(q)``, without autograd."""
        weight = self.conv2d.weight
        if fused.usable(q, weight) and q.is_contiguous(memory_format=torch.channels_last):
            weights = fused.winograd_weights(weight)
            return lambda r0, r1: fused.conv3x3_winograd(q, weights, (r0, r1))

        def direct(r0: int, r1: int) -> torch.Tensor:
            # With one halo row each side (none at the borders), zero padding gives rows r0..r1
            # exactly their true neighbours; the halo rows' own outputs are dropped.
            top = max(0, r0 - 1)
            return F.conv2d(q[:, :, top:r1 + 1], weight, padding=1)[:, :, r0 - top:r1 - top]
        return direct

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                backend: str | None = None) -> torch.Tensor:
        return self.cross_attn.attend(self.decode_queries(q), k, v, backend=backend)
