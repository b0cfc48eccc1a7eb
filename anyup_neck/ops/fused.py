"""Fused CPU kernels for inference: drop-in replacements for short chains of PyTorch ops.

Without autograd, AnyUp's run time on CPU is its convolutions plus many full-size passes over
memory (GroupNorm, then SiLU; RoPE's products; the feature-agnostic layer's M*C responses). The
compiled extension has one kernel per chain (``anyup_neck/ops/csrc/fused_cpu*.{h,cpp}``):

* :func:`group_norm_silu` -- ``silu(group_norm(x))`` in two passes: :func:`channel_moments`
  (statistics), then :func:`affine_silu` (apply); the two also work on a map held in pieces;
* :func:`rms_linear` -- RMSNorm and a linear map per pixel in one pass (AnyUp's query and key
  projections);
* :func:`rotary_2d_` -- the 2-D rotary encoding in place, one pass;
* :func:`basis_softmax_mean` -- per-pixel basis responses, softmax and mean in cache, never
  writing the M*C responses to memory.

:func:`conv3x3_winograd` runs a zero-padded 3x3 convolution as Winograd F(2x2, 3x3): 2.25
times fewer multiplications, float32 results within a few ulps of the direct convolution.
:func:`conv1x1_add_` (a residual connection's 1x1 conv and its sum in one pass) comes from
oneDNN's fused convolution, where PyTorch was built with it.

They hold no autograd formula: callers use them only where :func:`usable` says so (CPU,
float32/float64, extension loaded, no gradient needed, not traced by ``torch.compile``), and
keep the PyTorch ops otherwise, which the tests compare them against.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import extension

_DTYPES = (torch.float32, torch.float64)


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the fused kernels can stand in for the PyTorch ops on ``tensors``."""
    if not extension.available() or torch.compiler.is_compiling():
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return all(t.device.type == 'cpu' and t.dtype in _DTYPES for t in tensors)


def channel_moments(x: torch.Tensor) -> torch.Tensor:
    """Per-channel sum and sum of squares of (B, C, H, W) ``x`` over its pixels: (B, 2, C)
    float64. Moments of the pieces of a map add up to the map's."""
    x = x if x.is_contiguous(memory_format=torch.channels_last) else x.contiguous()
    return torch.ops.anyup_neck.channel_moments(x)


def group_norm_affine(moments: torch.Tensor, pixels: int,
                      norm: torch.nn.GroupNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), each (B, C) float64, such that ``norm(x) = x * scale + shift`` for the
    map x of ``pixels`` pixels per channel whose :func:`channel_moments` are ``moments``."""
    B, _, C = moments.shape
    per_group = C // norm.num_groups
    sums = moments.view(B, 2, norm.num_groups, per_group).sum(dim=-1) / (pixels * per_group)
    mean, mean_square = sums[:, 0], sums[:, 1]
    rstd = ((mean_square - mean.square()).clamp_min(0) + norm.eps).rsqrt()
    scale = norm.weight.double() * rstd.repeat_interleave(per_group, dim=1)
    shift = norm.bias.double() - mean.repeat_interleave(per_group, dim=1) * scale
    return scale.contiguous(), shift.contiguous()


def affine_silu(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """``silu(x * scale + shift)`` per (batch, channel) for NCHW or channels-last (B, C, H, W)
    ``x``, ``scale``/``shift`` (B, C) float64, into ``out`` (default: a new tensor of x's
    layout; pass ``x`` itself to update it in place)."""
    x = x if x.is_contiguous(memory_format=torch.channels_last) else x.contiguous()
    out = torch.empty_like(x) if out is None else out
    torch.ops.anyup_neck.affine_silu(x, scale, shift, out)
    return out


def group_norm_silu(x: torch.Tensor, norm: torch.nn.GroupNorm,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """``silu(norm(x))`` for (B, C, H, W) ``x`` (NCHW or channels-last), into ``out`` as in
    :func:`affine_silu`. ``norm`` must be affine."""
    pixels = x.shape[2] * x.shape[3]
    return affine_silu(x, *group_norm_affine(channel_moments(x), pixels, norm), out=out)


def image_pixels_contiguous(t: torch.Tensor) -> bool:
    """Whether each image of (B, C, H, W) ``t`` is channels-last-contiguous, as a channels-last
    map or a block of its rows is."""
    return t.dim() == 4 and t[:1].is_contiguous(memory_format=torch.channels_last)


def rms_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """``bias + weight @ x / sqrt(mean(x ** 2) + eps)`` per pixel of (B, C, H, W) ``x``:
    RMSNorm (its gain folded into ``weight`` (C_out, C)) then a linear map, one pass, into
    ``out`` (B, C_out, H, W) (default: a new channels-last map). x and out must satisfy
    :func:`image_pixels_contiguous`; out may be a block of rows of a larger map."""
    if out is None:
        out = torch.empty(x.shape[0], weight.shape[0], *x.shape[2:], dtype=x.dtype,
                          device=x.device, memory_format=torch.channels_last)
    torch.ops.anyup_neck.rms_linear(x, weight, bias, float(eps), out)
    return out


def rotary_2d_(x: torch.Tensor, cos_rows: torch.Tensor, sin_rows: torch.Tensor,
               cos_cols: torch.Tensor, sin_cols: torch.Tensor) -> torch.Tensor:
    """Rotate channels-last ``x`` (B, D, H, W) in place by the angles row(i) + col(j).

    Tables (H, D) and (W, D) hold cos/sin of the per-row and per-column angles; channel d and
    d + D/2 form a pair: x1 <- x1 cos - x2 sin, x2 <- x2 cos + x1 sin. Returns ``x``.
    """
    torch.ops.anyup_neck.rotary_2d_(x, cos_rows.contiguous(), sin_rows.contiguous(),
                                    cos_cols.contiguous(), sin_cols.contiguous())
    return x


def basis_softmax_mean(features: torch.Tensor, basis: torch.Tensor,
                       per_channel: bool) -> torch.Tensor:
    """(B, C, h, w) features, (M, 1, k, k) basis -> (B, M, h, w), as LearnedFeatureUnification.

    ``per_channel``: softmax over each channel's M responses ('paper' mode); otherwise the
    official regrouping of the flat responses into an (M, C) array.
    """
    return torch.ops.anyup_neck.basis_softmax_mean(features, basis.to(features.dtype),
                                                   per_channel)


#: G of the Winograd F(2x2, 3x3) kernel transform U = G g G^T (4 x 3).
_WINOGRAD_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def winograd_weights(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, 3, 3) kernel -> its Winograd transform (16, C_in, C_out) in its dtype,
    entry ``4 i + j`` of G g G^T, computed in float64 (the one rounding is the final cast)."""
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(f'weight: expected shape (C_out, C_in, 3, 3), got {tuple(weight.shape)}')
    G = torch.tensor(_WINOGRAD_G, dtype=torch.float64, device=weight.device)
    U = torch.einsum('ik,ockl,jl->ijco', G, weight.detach().double(), G)
    return U.reshape(16, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


def conv3x3_winograd(x: torch.Tensor, weights: torch.Tensor,
                     rows: tuple[int, int] | None = None) -> torch.Tensor:
    """Rows ``rows`` = (begin, end) (default all) of ``conv2d(x, g, padding=1)``, channels-last
    (B, C_out, end - begin, W), for channels-last x (B, C_in, H, W) and ``weights =
    winograd_weights(g)``; the rows outside the range act as the neighbours they are."""
    begin, end = (0, x.shape[2]) if rows is None else rows
    return torch.ops.anyup_neck.conv3x3_winograd(x, weights, begin, end)


def _onednn_conv_add(acc: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether oneDNN's in-place fused convolution + add can compute ``acc += conv(x)``."""
    return (acc.dtype == x.dtype == weight.dtype == torch.float32
            and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, '_convolution_pointwise_')
            and acc.shape == x.shape[:1] + weight.shape[:1] + x.shape[2:]
            and acc.is_contiguous(memory_format=torch.channels_last)
            and x.is_contiguous(memory_format=torch.channels_last))


def conv1x1_add_(acc: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``acc += conv2d(x, weight)`` for a bias-free 1x1 ``weight`` (C_out, C_in, 1, 1), x
    (B, C_in, H, W), acc (B, C_out, H, W); returns ``acc``.

    For float32 channels-last maps the sum is oneDNN's post-op of the convolution, applied as
    each output block is produced: one pass over ``acc`` less than a conv and an ``add_``, same
    values. Otherwise those two ops. Inference only, like the other kernels here.
    """
    if _onednn_conv_add(acc, x, weight):
        return torch.ops.mkldnn._convolution_pointwise_.binary(
            acc, x, weight, None, [0, 0], [1, 1], [1, 1], 1, 'add', 1.0, None, [], None)
    return acc.add_(F.conv2d(x, weight))
