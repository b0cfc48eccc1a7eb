"""Fused primitives: short chains of PyTorch ops behind one call that picks how to run them.

Each primitive takes plain tensors (and ``torch.nn`` layers for their parameters) and decides
by itself, from the tensors' device and dtype and whether autograd records them, between

* **its compiled CPU kernel** (``anyup_neck/ops/csrc/cpu/fused_cpu*``, the Winograd conv),
  where :func:`cpu_kernels_usable` says so: CPU float32/float64 tensors, the extension loaded,
  no gradient recorded, not traced by ``torch.compile``. These kernels make one pass where
  the PyTorch ops make several, and several of them work on a map held in row pieces, so that
  a full-size temporary is never allocated;
* **a formulation for the GPU** (any device; used on CUDA, and for float16/bfloat16, e.g. under
  ``torch.autocast``): whole-map PyTorch ops with few launches and statistics in float32,
  differentiable by autograd. :func:`group_norm_silu` is the case that matters: PyTorch's CUDA
  GroupNorm reduces each (sample, group) in one thread block, 8 blocks at batch 1 for 8 groups;
  here the statistics are PyTorch's own reductions over a (B, G, n) view, which split one long
  reduction over many blocks, and under autograd one Function saves only x and the (sample,
  group) and (sample, channel) coefficients. Its full-map passes can run the extension's CUDA
  kernels (:data:`use_cuda_kernels`, :func:`cuda_kernels_usable`; off until measured on a GPU);
* **the plain PyTorch ops**, e.g. autograd's path on the CPU.

The primitives:

* :func:`group_norm_silu` -- ``silu(group_norm(x))``;
* :func:`preactivation_residual` -- ``conv2(gn_silu(conv1(gn_silu(x)))) + shortcut(x)``,
  optionally average-pooled, on the CPU in row pieces written over ``x``;
* :func:`rms_linear` -- RMSNorm over the channels, then a linear map, per pixel;
* :func:`conv3x3_rms_linear` -- a 3x3 convolution followed by :func:`rms_linear`; on the CPU
  as Winograd F(2x2, 3x3) (:func:`conv3x3_winograd`) in blocks of rows;
* :func:`rotary_2d` -- a 2-D rotary encoding (angle = row angle + column angle per channel);
* :func:`basis_softmax_mean` -- every channel convolved with every kernel of a basis, softmax
  over groups of the responses, mean over the groups, never holding all responses at once;
* :func:`conv1x1_add` -- ``acc + conv1x1(x)`` (a convolution or GEMM with a fused add).

Memory: where a formulation works on a full-size map without autograd, it goes in pieces of
at most :func:`piece_elements` values: small on the CPU, where pieces stay in cache; large on
GPUs, where every piece costs its launches and only the temporaries' size matters.
Primitives with ``overwrite=True`` may write their result over their input (the caller's
temporary) when autograd does not record it; always use the returned tensor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import extension

#: Largest piece, in values, of a full-size map that a primitive processes at once without
#: autograd on the CPU (16 MB in float32): its temporaries are this large instead of map-sized.
max_piece_elements: int = 1 << 22

#: The same on other devices (256 MB in float32): a 448x448 map of 128 channels (26M values)
#: is one piece, while the temporaries of very large outputs stay bounded.
max_gpu_piece_elements: int = 1 << 26

#: Whether GroupNorm+SiLU on CUDA tensors runs the extension's CUDA kernels:
#: ``group_norm_coefficients`` for the statistics and the affine map (3 launches instead of
#: about 10 to 16), ``affine_silu`` for the apply pass (one pass instead of ``addcmul`` and an
#: in-place SiLU), and under autograd ``affine_silu_grad_sums`` and
#: ``group_norm_silu_input_grad`` for the backward (5 memory passes over the map instead of 17,
#: no full-size temporary); and ``rotary_2d_`` for RoPE (2 passes in place instead of about
#: 20; under autograd about 18 forward and backward instead of about 70). Off until they have
#: been measured on a GPU; ``tools/benchmark.py --cuda-fused-kernels`` times the model with
#: them, side by side.
use_cuda_kernels: bool = False

_KERNEL_DTYPES = (torch.float32, torch.float64)


def records_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd records an op applied to ``tensors``."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def cpu_kernels_usable(*tensors: torch.Tensor) -> bool:
    """Whether the compiled CPU kernels can stand in for the PyTorch ops on ``tensors``."""
    if not extension.available() or torch.compiler.is_compiling() or records_grad(*tensors):
        return False
    return all(t.device.type == 'cpu' and t.dtype in _KERNEL_DTYPES for t in tensors)


def cuda_kernels_usable(*tensors: torch.Tensor) -> bool:
    """Whether the extension's CUDA kernels can stand in for the PyTorch ops on ``tensors``:
    :data:`use_cuda_kernels` set, the extension built with CUDA, CUDA tensors, no gradient
    recorded, not traced by ``torch.compile``."""
    if (not use_cuda_kernels or not extension.has_cuda_kernels()
            or torch.compiler.is_compiling() or records_grad(*tensors)):
        return False
    return all(t.device.type == 'cuda' for t in tensors)


def _may_write_out(*tensors: torch.Tensor) -> bool:
    """Whether an op on ``tensors`` may write into a given ``out=`` tensor: not when autograd
    records it, nor under ``torch.compile`` (which traces no ``out=`` of another layout)."""
    return not (records_grad(*tensors) or torch.compiler.is_compiling())


def uses_gpu_formulation(x: torch.Tensor) -> bool:
    """Whether ``x`` goes through the GPU formulations rather than the plain PyTorch ops."""
    return x.device.type == 'cuda' or x.dtype not in _KERNEL_DTYPES


def piece_elements(x: torch.Tensor) -> int:
    """Largest piece, in values, of a full-size map on ``x``'s device."""
    return max_piece_elements if x.device.type == 'cpu' else max_gpu_piece_elements


def _statistics_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other type keeps its statistics in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _params(*modules: nn.Module) -> list[torch.Tensor]:
    return [p for m in modules for p in m.parameters()]


# -- GroupNorm + SiLU ---------------------------------------------------------------------
def channel_moments(x: torch.Tensor) -> torch.Tensor:
    """CPU kernel: per-channel sum and sum of squares of (B, C, H, W) ``x`` over its pixels,
    (B, 2, C) float64. Moments of the pieces of a map add up to the map's."""
    x = x if x.is_contiguous(memory_format=torch.channels_last) else x.contiguous()
    return torch.ops.anyup_neck.channel_moments(x)


def group_norm_affine(moments: torch.Tensor, pixels: int,
                      norm: nn.GroupNorm) -> tuple[torch.Tensor, torch.Tensor]:
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
    """The extension's kernel for x's device (CPU: float32/float64; CUDA: also float16 and
    bfloat16, float32 arithmetic): ``silu(x * scale + shift)`` per (batch, channel) for NCHW or
    channels-last (B, C, H, W) ``x``, ``scale``/``shift`` (B, C) float32 or float64 on x's
    device (taken in the arithmetic's type), into ``out`` (default: a new tensor of x's
    layout; pass ``x`` itself to update it in place)."""
    x = x if x.is_contiguous(memory_format=torch.channels_last) else x.contiguous()
    out = torch.empty_like(x) if out is None else out
    torch.ops.anyup_neck.affine_silu(x, scale, shift, out)
    return out


def _groups(t: torch.Tensor, num_groups: int) -> torch.Tensor:
    """The (B, G, C/G, ...) view of (B, C, ...) ``t``."""
    return t.unflatten(1, (num_groups, -1))


def group_statistics(x: torch.Tensor, num_groups: int,
                     eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, 1 / sqrt(var + eps)) of each (sample, group) of (B, C, ...) ``x``, each (B, G) in
    the statistics dtype (float32; float64 for float64 x).

    PyTorch's reductions over the (B, G, C/G, ...) view of x (any memory layout), which on CUDA
    split each long reduction over many thread blocks: ``var_mean`` (Welford) for
    float32/float64; for float16/bfloat16 the mean and the norm accumulated in float32
    straight from the reduced-precision values (no float32 copy of x; their 8 or 11 significant
    bits make the one-pass variance as exact as the data), then 5 small ops on (B, G) (at batch
    1 their launches, not the map, take the time).
    """
    grouped = _groups(x, num_groups)
    dims = tuple(range(2, grouped.dim()))
    if x.dtype in _KERNEL_DTYPES:
        var, mean = torch.var_mean(grouped, dim=dims, correction=0)
        return mean, (var + eps).rsqrt()
    count = grouped[0, 0].numel()
    mean = grouped.mean(dim=dims, dtype=torch.float32)
    norm = torch.linalg.vector_norm(grouped, dim=dims, dtype=torch.float32)
    minus_var = torch.addcmul(mean * mean, norm, norm, value=-1 / count)  # mean^2 - |x|^2 / n
    return mean, torch.rsub(minus_var.clamp_max(0), eps).rsqrt()


def _channels(t: torch.Tensor, C: int) -> torch.Tensor:
    """(B, G) or (B, C) ``t`` as a contiguous (B, C) tensor (a group's value per channel)."""
    return t.repeat_interleave(C // t.shape[1], dim=1) if t.shape[1] != C else t.contiguous()


def _per_channel(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B, G) or (B, C) ``t`` as (B, C, 1, ...), broadcastable against (B, C, ...) ``x``."""
    B, C = x.shape[:2]
    return _channels(t, C).reshape(B, C, *(1,) * (x.dim() - 2))


def _flat_pixels_format(*maps: torch.Tensor) -> torch.memory_format | None:
    """A memory format in which every (B, C, H, W) map of ``maps`` is contiguous (channels-last
    first), or None."""
    for layout in (torch.channels_last, torch.contiguous_format):
        if all(t.dim() == 4 and t.is_contiguous(memory_format=layout) for t in maps):
            return layout
    return None


def _group_affine(mean: torch.Tensor, rstd: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), each (B, C) in the statistics' dtype, such that the affine GroupNorm of
    x with these (B, G) statistics is ``x * scale + shift``."""
    G = mean.shape[1]
    scale = weight.to(rstd.dtype).view(G, -1) * rstd[:, :, None]          # (B, G, C/G)
    shift = torch.addcmul(bias.to(rstd.dtype).view(G, -1), mean[:, :, None], scale, value=-1)
    return scale.flatten(1), shift.flatten(1)


def _group_norm_coefficients(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                             num_groups: int, eps: float) -> tuple[torch.Tensor, ...]:
    """(scale, shift, mean, rstd): GroupNorm's affine map ``x * scale + shift``, each (B, C),
    and its statistics, each (B, G), in the statistics dtype. Where :func:`cuda_kernels_usable`
    (x NCHW- or channels-last-contiguous, with pixels) the extension's kernel (one pass over
    x, three launches); otherwise :func:`group_statistics` and :func:`_group_affine` (4 small
    ops after the reduction; 7 after the two reductions in float16/bfloat16)."""
    if _flat_pixels_format(x) is not None and x.numel() > 0 and cuda_kernels_usable(x):
        return torch.ops.anyup_neck.group_norm_coefficients(x, weight, bias, num_groups, eps)
    mean, rstd = group_statistics(x, num_groups, eps)
    return (*_group_affine(mean, rstd, weight, bias), mean, rstd)


def _apply_affine_silu(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                       into_x: bool = False) -> torch.Tensor:
    """``silu(x * scale + shift)`` with (B, C) ``scale`` and ``shift``: where
    :func:`cuda_kernels_usable` (and x is NCHW- or channels-last-contiguous), the CUDA kernel
    :func:`affine_silu` (float32 arithmetic);
    otherwise one ``addcmul`` in the coefficients' dtype, then SiLU in place: float16/bfloat16
    x is computed in float32 with unrounded coefficients and written in its own type (through
    ``out=``, no converted coefficients or map; under ``torch.compile``, which traces no
    ``out=`` of another layout, a conversion it fuses). The result has x's dtype and layout,
    and is x itself with ``into_x``. Without autograd only."""
    if _flat_pixels_format(x) is not None and cuda_kernels_usable(x):
        return affine_silu(x, scale.contiguous(), shift.contiguous(),
                           out=x if into_x else None)
    scale, shift = _per_channel(scale, x), _per_channel(shift, x)
    if into_x or (x.dtype != scale.dtype and _may_write_out(x)):
        y = torch.addcmul(shift, x, scale, out=x if into_x else torch.empty_like(x))
    else:
        y = torch.addcmul(shift, x, scale).to(x.dtype)
    # Not in place while torch.compile traces (it fuses SiLU anyway): under torch 2.11 an
    # autograd.Function whose forward returns an in-place op's result, as _GroupNormSiLU's
    # does through this, gets zero gradients (pytorch/pytorch#180642).
    return F.silu(y, inplace=into_x or not torch.compiler.is_compiling())


def _addcmul_in(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                dtype: torch.dtype) -> torch.Tensor:
    """``acc + a b`` (broadcast into acc's shape) in ``dtype``, computed in the operands' type:
    into acc itself when it has that dtype, else straight into a new map of that (reduced)
    dtype in acc's layout, so that no map of acc's dtype is converted afterwards (where no
    ``out=`` may be written, e.g. under ``torch.compile``: a conversion, which it fuses)."""
    if acc.dtype == dtype:
        return acc.addcmul_(a, b)
    if not _may_write_out(acc, a, b):
        return torch.addcmul(acc, a, b).to(dtype)
    return torch.addcmul(acc, a, b, out=torch.empty_like(acc, dtype=dtype))


class _GroupNormSiLU(torch.autograd.Function):
    """``(silu(group_norm(x)), x)`` for autograd, saving x, the (B, G) statistics and the
    (B, C) affine map only (autograd through the PyTorch ops also saves the normalised map, a
    second full-size tensor); the backward recomputes the normalised map from them. The second
    output, x itself (a view), is for a residual block's shortcut: its gradient joins
    dx in the backward (with the CUDA kernels in dx's pass, one more read of a map instead of
    autograd's sum of two maps afterwards); unused, it costs nothing. Its formulas: with
    ``g`` the gradient at the GroupNorm's output, per (sample, channel) ``S1 = sum(g)``, ``S2 =
    sum(g * x)``, so ``sum(g * xhat) = rstd (S2 - mean S1)``; per group ``A = sum_c w S1`` and
    ``Bv = sum_c w rstd (S2 - mean S1)``; then ``dx = rstd w g - rstd A / n - rstd^2 (x - mean)
    Bv / n`` for n values per group, ``dweight = sum_b rstd (S2 - mean S1)``, ``dbias = sum_b
    S1``, all in the statistics dtype."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                num_groups: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift, mean, rstd = _group_norm_coefficients(x, weight, bias, num_groups, eps)
        ctx.save_for_backward(x, weight, mean, rstd, scale, shift)
        ctx.bias_dtype = bias.dtype
        ctx.set_materialize_grads(False)   # no zero map for an unused output
        return _apply_affine_silu(x, scale, shift), x

    @staticmethod
    def backward(ctx, grad: torch.Tensor | None, shortcut_grad: torch.Tensor | None):
        if grad is None:
            return shortcut_grad, None, None, None, None
        # Full-map passes (reads + writes). PyTorch ops: g 5 (z, then g over it), S1 1, S2 4,
        # dx 5 (over g; for float16/bfloat16 x, whose g is float32, the last of them writes dx
        # in x's dtype: no float32 map converted afterwards). CUDA kernels: S1 and S2 2 (x and
        # grad read, g never stored), dx 3; they centre x on the group's mean, so no sum
        # cancels when the mean is large. The shortcut's gradient: 1 more read in the kernels'
        # dx pass; 3 (an add, as autograd's sum) with the PyTorch ops.
        # The coefficient math runs on the (B, 2, G, C/G) sums and (B, G) tensors, which
        # broadcast into the (B, G, C/G, H, W) view of the map: 11 small ops (23 on (B, C) ones).
        x, weight, mean, rstd, scale, shift = ctx.saved_tensors
        B, C = x.shape[:2]
        G = mean.shape[1]
        n = x[0].numel() // G
        mean3, rstd3 = mean[:, :, None], rstd[:, :, None]                     # (B, G, 1)
        layout = _flat_pixels_format(x)
        kernels = layout is not None and cuda_kernels_usable(x, grad)
        writes_out = _may_write_out(x, grad)   # into maps via out= (not while compiling)
        # sums (B, 2, G, C/G): per channel S1 and sum(g * xhat), in the statistics dtype
        if kernels:
            grad = grad.contiguous(memory_format=layout)
            if shortcut_grad is not None:
                shortcut_grad = shortcut_grad.contiguous(memory_format=layout)
            mean_c = _channels(mean, C)
            sums = torch.ops.anyup_neck.affine_silu_grad_sums(
                x, grad, scale, shift, mean_c).view(B, 2, G, -1)
            sums[:, 1] *= rstd3
        else:
            z = torch.addcmul(_per_channel(shift, x), x, _per_channel(scale, x))
            if writes_out:
                g = torch.ops.aten.silu_backward.grad_input(grad, z, grad_input=z)
            else:
                g = torch.ops.aten.silu_backward(grad, z)
            dims = tuple(range(2, x.dim()))
            sums = torch.stack((g.sum(dim=dims), (g * x).sum(dim=dims)), 1).view(B, 2, G, -1)
            sums[:, 1].addcmul_(mean3, sums[:, 0], value=-1).mul_(rstd3)
        w = weight.to(sums.dtype).view(G, -1)
        # dx = coef_g g + coef_x (x - mean) + coef_a, coef_a = -rstd A / n, coef_x = -rstd^2 Bv / n
        coef_a, coef_x = ((sums * w).sum(dim=3) * (rstd * (-1 / n))[:, None]).unbind(1)
        coef_x = coef_x * rstd                                                 # (B, G)
        coef_g = rstd3 * w                                                     # (B, G, C/G)
        if kernels:
            dx = torch.ops.anyup_neck.group_norm_silu_input_grad(
                x, grad, scale, shift, coef_g.view(B, C), _channels(coef_x, C),
                _channels(coef_a, C), mean_c, shortcut_grad)
        else:
            pixels = (1,) * (x.dim() - 2)
            coef = torch.addcmul(coef_a, coef_x, mean, value=-1).view(B, G, 1, *pixels)
            g_groups = _groups(g, G)
            g_groups = torch.addcmul(coef, g_groups, coef_g.view(B, G, -1, *pixels),
                                     out=g_groups if writes_out else None)  # into g's memory
            # the last term into g (float32/float64), or straight into x's reduced dtype
            dx = _addcmul_in(g_groups, _groups(x, G), coef_x.view(B, G, 1, *pixels),
                             x.dtype).flatten(1, 2)
            if shortcut_grad is not None:   # what autograd's sum of the two would move
                dx = dx.add_(shortcut_grad)
        d_bias, d_weight = sums.sum(0).flatten(1)
        return (dx if ctx.needs_input_grad[0] else None,
                d_weight.to(weight.dtype) if ctx.needs_input_grad[1] else None,
                d_bias.to(ctx.bias_dtype) if ctx.needs_input_grad[2] else None, None, None)


def group_norm_silu_by_reductions(x: torch.Tensor, norm: nn.GroupNorm,
                                  overwrite: bool = False) -> torch.Tensor:
    """The GPU formulation of :func:`group_norm_silu` (runs on any device; tested on the CPU).

    Statistics and per-(sample, channel) scale and shift from :func:`_group_norm_coefficients`,
    then the apply pass (:func:`_apply_affine_silu`); the result has x's dtype and layout. Under
    autograd :class:`_GroupNormSiLU`, which saves only x, the statistics and the affine map.
    """
    if records_grad(x, norm.weight, norm.bias):
        return _GroupNormSiLU.apply(x, norm.weight, norm.bias, norm.num_groups, norm.eps)[0]
    scale, shift, _, _ = _group_norm_coefficients(x, norm.weight, norm.bias, norm.num_groups,
                                                  norm.eps)
    return _apply_affine_silu(x, scale, shift, into_x=overwrite and _may_write_out(x))


def group_norm_silu(x: torch.Tensor, norm: nn.GroupNorm, overwrite: bool = False) -> torch.Tensor:
    """``silu(norm(x))`` for (B, C, H, W) ``x`` (NCHW or channels-last) and an affine GroupNorm;
    the result has x's dtype and layout.

    CPU kernel: one statistics pass (:func:`channel_moments`, float64) and one apply pass
    (:func:`affine_silu`). On CUDA and for reduced precision:
    :func:`group_norm_silu_by_reductions`. Otherwise ``F.silu(norm(x))``.
    """
    if cpu_kernels_usable(x, norm.weight, norm.bias):
        scale, shift = group_norm_affine(channel_moments(x), x.shape[2] * x.shape[3], norm)
        return affine_silu(x, scale, shift, out=x if overwrite else None)
    if uses_gpu_formulation(x):
        return group_norm_silu_by_reductions(x, norm, overwrite)
    y = norm(x)
    return F.silu(y, inplace=not records_grad(y))


def group_norm_silu_and_shortcut(x: torch.Tensor,
                                 norm: nn.GroupNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(:func:`group_norm_silu` of x, x for the shortcut) of a residual block whose branch
    starts with GroupNorm + SiLU and whose shortcut reads x. Where autograd records the GPU
    formulation, the second is x as :class:`_GroupNormSiLU`'s second output, so that the
    shortcut's gradient joins the GroupNorm's input gradient in its backward instead of in a
    sum of two maps by autograd; otherwise x itself."""
    if uses_gpu_formulation(x) and records_grad(x, norm.weight, norm.bias):
        return _GroupNormSiLU.apply(x, norm.weight, norm.bias, norm.num_groups, norm.eps)
    return group_norm_silu(x, norm), x


# -- pre-activation residual block ------------------------------------------------------------
def adaptive_pool(x: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Adaptive average pooling to ``size``; a map already of that size (or ``size=None``) is
    returned as is."""
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.adaptive_avg_pool2d(x, size)


def conv1x1_add(acc: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                in_place: bool = False) -> torch.Tensor:
    """``acc + conv2d(x, weight)`` for a bias-free 1x1 ``weight`` (C_out, C_in, 1, 1), x
    (B, C_in, H, W), acc (B, C_out, H, W); ``in_place`` (without autograd only): into acc.

    * float32 channels-last CPU maps, in place: oneDNN's convolution with the add as its
      post-op, applied as each output block is produced (one pass over acc less than a conv and
      an ``add_``, same values);
    * float16/bfloat16 maps (the reduced-precision path, e.g. on a GPU under autocast), both
      NCHW- or both channels-last-contiguous: one GEMM whose epilogue reads acc (``addmm`` over
      the pixels of channels-last maps, ``baddbmm`` per image of NCHW ones): one pass over the
      map less, and in place no temporary at all. float32 keeps the convolution, whose TF32
      setting on CUDA (cuDNN's) is not matmul's;
    * otherwise the conv, then the add.

    The result has acc's layout; differentiable by autograd where not in place.
    """
    if in_place and _onednn_conv_add(acc, x, weight):
        return torch.ops.mkldnn._convolution_pointwise_.binary(
            acc, x, weight, None, [0, 0], [1, 1], [1, 1], 1, 'add', 1.0, None, [], None)
    layout = _gemm_layout(acc, x, weight)
    if layout is not None:
        B, C_out, H, W = acc.shape
        matrix = weight.to(x.dtype).view(C_out, -1)
        if layout == torch.channels_last:     # pixels as rows: acc + x W^T
            acc_m = acc.permute(0, 2, 3, 1).view(-1, C_out)
            a, b = x.permute(0, 2, 3, 1).view(-1, x.shape[1]), matrix.t()
            gemm, gemm_ = torch.addmm, torch.Tensor.addmm_
        else:                                 # per image: acc + W x
            acc_m = acc.view(B, C_out, H * W)
            a, b = matrix.expand(B, -1, -1), x.view(B, -1, H * W)
            gemm, gemm_ = torch.baddbmm, torch.Tensor.baddbmm_
        if in_place:
            gemm_(acc_m, a, b)
            return acc
        summed = gemm(acc_m, a, b)
        if layout == torch.channels_last:
            return summed.view(B, H, W, C_out).permute(0, 3, 1, 2)
        return summed.view(B, C_out, H, W)
    conv = F.conv2d(x, weight)
    return acc.add_(conv) if in_place else acc + conv


def _gemm_layout(acc: torch.Tensor, x: torch.Tensor,
                 weight: torch.Tensor) -> torch.memory_format | None:
    """The memory format in which :func:`conv1x1_add` runs as one GEMM (float16/bfloat16 maps
    of one dtype, both channels-last- or both NCHW-contiguous), else None."""
    if not (acc.dtype == x.dtype and x.dtype in (torch.float16, torch.bfloat16)
            and acc.shape == x.shape[:1] + weight.shape[:1] + x.shape[2:]):
        return None
    return _flat_pixels_format(acc, x)


def _onednn_conv_add(acc: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether oneDNN's in-place fused convolution + add can compute ``acc += conv(x)``."""
    return (not torch.compiler.is_compiling()
            and acc.dtype == x.dtype == weight.dtype == torch.float32
            and acc.device.type == 'cpu' and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, '_convolution_pointwise_')
            and acc.shape == x.shape[:1] + weight.shape[:1] + x.shape[2:]
            and acc.is_contiguous(memory_format=torch.channels_last)
            and x.is_contiguous(memory_format=torch.channels_last))


def _pointwise(conv: nn.Conv2d) -> bool:
    return conv.kernel_size == (1, 1)


def _plain_pointwise(conv: nn.Conv2d) -> bool:
    """A 1x1 convolution that is a per-pixel matrix product and nothing else."""
    return (_pointwise(conv) and conv.bias is None and conv.stride == (1, 1)
            and conv.padding == (0, 0) and conv.groups == 1)


def preactivation_residual(x: torch.Tensor, norm1: nn.GroupNorm, conv1: nn.Conv2d,
                           norm2: nn.GroupNorm, conv2: nn.Conv2d, shortcut: nn.Module,
                           pool_to: tuple[int, int] | None = None,
                           overwrite: bool = False) -> torch.Tensor:
    """``pool(conv2(silu(norm2(conv1(silu(norm1(x))))))) + pool(shortcut(x))``, x (B, C, H, W).

    ``pool`` is :func:`adaptive_pool` to ``pool_to`` (None: none). With 1x1 convs the last
    conv and the shortcut run after the pooling (average pooling commutes with per-pixel linear
    maps), on the small map's pixels. The convs are the layers themselves (any kernel size and
    padding mode); ``shortcut`` is ``nn.Identity`` or a conv.

    CPU kernel (1x1 convs, identity shortcut, channels-last x, ``overwrite``): the block runs
    in pieces of rows of at most :data:`max_piece_elements` values and writes its result (or,
    when pooling, its hidden map) into x: it holds x and one hidden map in pieces instead of
    three full maps. Otherwise whole-map ops, each full-size map dropped once used.
    """
    pointwise = _pointwise(conv1) and _pointwise(conv2)
    pool = pool_to is not None and tuple(x.shape[-2:]) != tuple(pool_to)
    if (overwrite and pointwise and isinstance(shortcut, nn.Identity) and x.dim() == 4
            and x.is_contiguous(memory_format=torch.channels_last)
            and cpu_kernels_usable(x, *_params(norm1, conv1, norm2, conv2))):
        return _residual_in_pieces(x, norm1, conv1, norm2, conv2, pool_to if pool else None)
    normed, shortcut_x = group_norm_silu_and_shortcut(x, norm1)
    hidden = group_norm_silu(conv1(normed), norm2, overwrite=True)
    if pool and pointwise:
        pooled_x = adaptive_pool(shortcut_x, pool_to)
        return conv2(adaptive_pool(hidden, pool_to)) + shortcut(pooled_x)
    grad = records_grad(hidden, shortcut_x, *_params(conv2, shortcut))
    if _plain_pointwise(conv2):  # the shortcut's map, or x itself when ``overwrite``, takes the sum
        identity = isinstance(shortcut, nn.Identity)
        in_place = not grad and (overwrite or not identity)
        summed = conv1x1_add(shortcut(shortcut_x), hidden, conv2.weight, in_place=in_place)
        return adaptive_pool(summed, pool_to)
    if grad:
        return adaptive_pool(conv2(hidden) + shortcut(shortcut_x), pool_to)
    return adaptive_pool(conv2(hidden).add_(shortcut(shortcut_x)), pool_to)


def _row_pieces(x: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """(batch index, view of some rows of that image), covering x; each view is
    channels-last-contiguous."""
    B, C, H, W = x.shape
    rows = max(1, max_piece_elements // (C * W))
    return [(b, x[b:b + 1, :, r0:r0 + rows]) for b in range(B) for r0 in range(0, H, rows)]


def _residual_in_pieces(x: torch.Tensor, norm1: nn.GroupNorm, conv1: nn.Conv2d,
                        norm2: nn.GroupNorm, conv2: nn.Conv2d,
                        pool_to: tuple[int, int] | None) -> torch.Tensor:
    """:func:`preactivation_residual` with the CPU kernels, in pieces, over x."""
    pieces = _row_pieces(x)
    pixels = x.shape[2] * x.shape[3]
    pooled_x = None if pool_to is None else adaptive_pool(x, pool_to)  # before x is overwritten
    scale, shift = group_norm_affine(channel_moments(x), pixels, norm1)
    hidden = []
    moments = x.new_zeros(x.shape[0], 2, conv1.out_channels, dtype=torch.float64)
    for b, piece in pieces:
        y = conv1(affine_silu(piece, scale[b:b + 1], shift[b:b + 1]))
        moments[b] += channel_moments(y)[0]
        hidden.append(y)
    scale, shift = group_norm_affine(moments, pixels, norm2)
    for n, (b, piece) in enumerate(pieces):
        y, hidden[n] = hidden[n], None   # dropped as soon as it is consumed
        if pool_to is None:
            conv1x1_add(piece, affine_silu(y, scale[b:b + 1], shift[b:b + 1], out=y),
                        conv2.weight, in_place=True)
        else:                            # the hidden map goes into x, pooled afterwards
            affine_silu(y, scale[b:b + 1], shift[b:b + 1], out=piece)
    if pool_to is None:
        return x
    return conv2(adaptive_pool(x, pool_to)).add_(pooled_x)


# -- RMSNorm + linear -------------------------------------------------------------------------
def image_pixels_contiguous(t: torch.Tensor) -> bool:
    """Whether each image of (B, C, H, W) ``t`` is channels-last-contiguous, as a channels-last
    map or a block of its rows is."""
    return t.dim() == 4 and t[:1].is_contiguous(memory_format=torch.channels_last)


def _rms_eps(eps: float | None, dtype: torch.dtype) -> float:
    """RMSNorm's epsilon; None = the machine epsilon of the statistics' dtype."""
    return torch.finfo(_statistics_dtype(dtype)).eps if eps is None else float(eps)


def rms_linear(x: torch.Tensor, gain: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               eps: float | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """``bias + weight @ (gain * x / sqrt(mean(x ** 2) + eps))`` per pixel of (B, C, H, W) x:
    RMSNorm over the channels (gain (C,); ``eps`` None = machine epsilon of the statistics'
    dtype), then a linear map (weight (C_out, C), bias (C_out,)) -> (B, C_out, H, W).

    The gain folds into the weight and the per-pixel 1/rms scales the product (both are
    linear per pixel). CPU kernel (x and ``out`` channels-last per image): one pass, into
    ``out`` if given (e.g. a block of rows of a larger map). Otherwise a 1x1 conv (a GEMM over
    the pixels; the reduced type under autocast) and one ``addcmul``, the mean square in float32
    (float64 for float64); the result has the conv's dtype. Differentiable by autograd there.
    """
    eps = _rms_eps(eps, x.dtype)
    if (cpu_kernels_usable(x, gain, weight, bias) and image_pixels_contiguous(x)
            and (out is None or image_pixels_contiguous(out))):
        if out is None:
            out = torch.empty(x.shape[0], weight.shape[0], *x.shape[2:], dtype=x.dtype,
                              device=x.device, memory_format=torch.channels_last)
        torch.ops.anyup_neck.rms_linear(x, weight * gain, bias, eps, out)
        return out
    projected = F.conv2d(x, (weight * gain)[:, :, None, None])
    mean_square = torch.linalg.vector_norm(x, dim=1, keepdim=True,
                                           dtype=_statistics_dtype(x.dtype))
    mean_square = mean_square.square() / x.shape[1]
    rstd = (mean_square + eps).rsqrt().to(projected.dtype)
    bias = bias.to(projected.dtype)[:, None, None]
    if not _may_write_out(projected, rstd, bias):
        return torch.addcmul(bias, projected, rstd)
    return torch.addcmul(bias, projected, rstd, out=projected if out is None else out)


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
    """CPU kernel: rows ``rows`` = (begin, end) (default all) of ``conv2d(x, g, padding=1)``,
    channels-last (B, C_out, end - begin, W), for channels-last x (B, C_in, H, W) and
    ``weights = winograd_weights(g)``; the rows outside the range act as the neighbours they
    are. 2.25 times fewer multiplications than the direct convolution; float32 results within
    a few ulps of it."""
    begin, end = (0, x.shape[2]) if rows is None else rows
    return torch.ops.anyup_neck.conv3x3_winograd(x, weights, begin, end)


def conv3x3_rms_linear(x: torch.Tensor, conv_weight: torch.Tensor, gain: torch.Tensor,
                       weight: torch.Tensor, bias: torch.Tensor, eps: float | None = None,
                       overwrite: bool = False) -> torch.Tensor:
    """``rms_linear(conv2d(x, conv_weight, padding=1), gain, weight, bias, eps)``: a 3x3
    convolution (zero padding, no bias) then :func:`rms_linear`, x (B, C, H, W) ->
    (B, C_out, H, W).

    CPU kernels (channels-last x): the conv as Winograd F(2x2, 3x3) in blocks of rows of at most
    :data:`max_piece_elements` values, each block projected as soon as it is convolved. With
    ``overwrite`` (and as many output as input channels) the result goes into x itself: a
    block's result is stored once the next block, whose conv reads the block's last row, has
    been convolved; so the whole step holds x and two blocks. Otherwise the two primitives on
    the whole map, with ``overwrite`` (and the result in x's shape and dtype) the projection
    written into x: x and the convolved map are held, not a third map as well.
    """
    if not (cpu_kernels_usable(x, conv_weight, gain, weight, bias)
            and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)):
        convolved = F.conv2d(x, conv_weight, padding=1)
        into_x = (overwrite and weight.shape[0] == x.shape[1] and convolved.dtype == x.dtype
                  and _may_write_out(x, convolved))
        return rms_linear(convolved, gain, weight, bias, eps, out=x if into_x else None)
    B, C, H, W = x.shape
    into_x = overwrite and weight.shape[0] == C
    out = x if into_x else torch.empty(B, weight.shape[0], H, W, dtype=x.dtype, device=x.device,
                                       memory_format=torch.channels_last)
    transformed = winograd_weights(conv_weight)
    rows = max(1, max_piece_elements // (B * max(C, conv_weight.shape[0]) * W))
    pending = None                       # (rows r0..r1 of the conv, r0, r1) not yet stored
    for r0 in range(0, H, rows):
        r1 = min(H, r0 + rows)
        convolved = conv3x3_winograd(x, transformed, (r0, r1))
        if pending is not None:
            rms_linear(pending[0], gain, weight, bias, eps, out=out[:, :, pending[1]:pending[2]])
        pending = (convolved, r0, r1)
    rms_linear(pending[0], gain, weight, bias, eps, out=out[:, :, pending[1]:pending[2]])
    return out


# -- rotary encoding --------------------------------------------------------------------------
def _rotary_tables(x: torch.Tensor, row_angles: torch.Tensor,
                   col_angles: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """cos and sin of ``row_angles`` (H, D) and ``col_angles`` (W, D), in x's statistics dtype:
    (cos_rows, sin_rows, cos_cols, sin_cols)."""
    dtype = _statistics_dtype(x.dtype)
    row, col = row_angles.to(dtype), col_angles.to(dtype)
    return row.cos(), row.sin(), col.cos(), col.sin()


def _quarter_turned(tables: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """:func:`_rotary_tables` of every angle plus pi/2 (the row angles' cos and sin become
    -sin and cos): the rotary map with them is the map's derivative by its angle."""
    cos_r, sin_r, cos_c, sin_c = tables
    return -sin_r, cos_r, cos_c, sin_c


def _rotate_block(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor,
                  transpose: bool, overwrite: bool) -> torch.Tensor:
    """``x cos + turn(x) sin`` (transposed: ``x cos - turn(x) swap(sin)``) for (B, D, r, W) x,
    turn(x) = cat(-x2, x1), swap exchanging the channel halves, from the (D, r, W) tables
    ``cos`` and ``signed_sin`` = cat(-sin1, sin2) of :func:`_block_tables`; into x with
    ``overwrite``. As ``turn(x) sin = swap(x) signed_sin`` and ``-turn(x) swap(sin) =
    swap(x) swap(signed_sin)``: a multiply, then per channel half one ``addcmul_`` from the
    other half of x (in place, each half in turn, keeping a copy of the first), no turned
    map."""
    x1, x2 = x.chunk(2, dim=1)
    sin1, sin2 = signed_sin.chunk(2, dim=0)
    sin_for_x2, sin_for_x1 = (sin2, sin1) if transpose else (sin1, sin2)
    if overwrite:
        cos1, cos2 = cos.chunk(2, dim=0)
        first_half = x1.clone()
        x1.mul_(cos1).addcmul_(x2, sin_for_x2)
        x2.mul_(cos2).addcmul_(first_half, sin_for_x1)
        return x
    out = x * cos
    out1, out2 = out.chunk(2, dim=1)
    out1.addcmul_(x2, sin_for_x2)
    out2.addcmul_(x1, sin_for_x1)
    return out


def _rotate(x: torch.Tensor, tables: tuple[torch.Tensor, ...], transpose: bool = False,
            overwrite: bool = False) -> torch.Tensor:
    """The rotary map (or with ``transpose`` its transposed map) of :func:`rotary_2d` for the
    ``tables`` of :func:`_rotary_tables`, without autograd; into x with ``overwrite``.

    The extension's kernel where it can (CPU: channels-last float32/float64; CUDA:
    :func:`cuda_kernels_usable`), on x or a copy; otherwise :func:`_rotate_block` in blocks
    of rows whose temporaries hold at most :func:`piece_elements` values, each block's cos and
    sin built from the tables (on a GPU a 448x448 map is one block; blocks out of place are
    joined by a cat).
    """
    on_gpu = _flat_pixels_format(x) is not None and cuda_kernels_usable(x, *tables)
    on_cpu = (x.is_contiguous(memory_format=torch.channels_last)
              and cpu_kernels_usable(x, *tables))
    if on_gpu or on_cpu:  # tables in the statistics dtype: x's own on the CPU
        out = x if overwrite else x.clone(memory_format=torch.preserve_format)
        torch.ops.anyup_neck.rotary_2d_(out, *(t.contiguous() for t in tables), transpose)
        return out
    B, D, H, W = x.shape
    # A block's temporaries: its (D, r, W) tables; in place also a copy of its first channel half.
    step = max(1, piece_elements(x) // ((B if overwrite else 1) * D * W))
    rows = [slice(r0, min(H, r0 + step)) for r0 in range(0, H, step)]
    blocks = [_rotate_block(x[:, :, r], *_block_tables(x, tables, r), transpose, overwrite)
              for r in rows]
    return x if overwrite else blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=2)


def _block_tables(x: torch.Tensor, tables: tuple[torch.Tensor, ...],
                  rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, signed_sin) of each channel's angle at the pixels of ``rows`` of (B, D, H, W) x,
    signed_sin being sin with its first channel half negated, each (D, r, W) in x's dtype and
    laid out like x's pixels (so that the rotation reads them in runs). By the angle-addition
    formulas from :func:`_rotary_tables`' ``tables``, with the signs in the small (n, D)
    tables: a multiply and an addcmul each (:func:`_addcmul_in`), in the tables' dtype (no
    negative ``value``, which torch.compile rounds differently in place)."""
    cos_r, sin_r, cos_c, sin_c = tables                                  # (H, D), (W, D)
    cos_r, sin_r = cos_r[rows], sin_r[rows]
    sign = torch.ones(cos_r.shape[1], dtype=cos_r.dtype, device=cos_r.device)
    sign[:sign.numel() // 2] = -1
    row_tables = (cos_r, -sin_r, sin_r * sign, cos_r * sign)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        # (r, 1, D) times (1, W, D): (r, W, D), viewed as (D, r, W)
        row_tables = [t[:, None] for t in row_tables]
        cos_c, sin_c, order = cos_c[None], sin_c[None], (2, 0, 1)
    else:  # (D, r, 1) times (D, 1, W): (D, r, W)
        row_tables = [t.t().contiguous()[:, :, None] for t in row_tables]
        cos_c, sin_c = (t.t().contiguous()[:, None] for t in (cos_c, sin_c))
        order = (0, 1, 2)
    cos = _addcmul_in(torch.mul(row_tables[0], cos_c), row_tables[1], sin_c, x.dtype)
    signed_sin = _addcmul_in(torch.mul(row_tables[2], cos_c), row_tables[3], sin_c, x.dtype)
    return cos.permute(order), signed_sin.permute(order)


class _Rotary2d(torch.autograd.Function):
    """:func:`rotary_2d` for autograd, saving x and the four (n, D) tables (autograd through the
    PyTorch ops also saves full-size cos, sin and turned maps). With g the output's gradient:
    ``dx`` is the transposed map applied to g; the angle of channel d at pixel (i, j) gets
    ``g (turn(x) c - x s)`` (the map for every angle plus pi/2, applied to x), summed over the
    batch and the columns for ``row_angles[i, d]``, over the batch and the rows for
    ``col_angles[j, d]``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, row_angles: torch.Tensor,
                col_angles: torch.Tensor) -> torch.Tensor:
        tables = _rotary_tables(x, row_angles, col_angles)
        ctx.save_for_backward(x, *tables)
        ctx.angle_dtypes = row_angles.dtype, col_angles.dtype
        return _rotate(x, tables)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, *tables = ctx.saved_tensors
        dx = _rotate(grad, tables, transpose=True) if ctx.needs_input_grad[0] else None
        d_rows = d_cols = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            d_angle = _rotate(x, _quarter_turned(tables)).mul_(grad)          # (B, D, H, W)
            dtype = tables[0].dtype
            d_rows = d_angle.sum(dim=(0, 3), dtype=dtype).t().to(ctx.angle_dtypes[0])
            d_cols = d_angle.sum(dim=(0, 2), dtype=dtype).t().to(ctx.angle_dtypes[1])
        return dx, d_rows, d_cols


def rotary_2d(x: torch.Tensor, row_angles: torch.Tensor, col_angles: torch.Tensor,
              overwrite: bool = False) -> torch.Tensor:
    """Rotate the channel pairs (d, d + D/2) of x (B, D, H, W) by ``row_angles[i, d] +
    col_angles[j, d]`` at pixel (i, j): x1 <- x1 cos - x2 sin, x2 <- x2 cos + x1 sin, each
    channel by its own angle.

    ``row_angles`` (H, D), ``col_angles`` (W, D), any float dtype (their cos/sin are taken in
    float32, float64 for float64 x). cos and sin of the sums come from the per-row and
    per-column tables by the angle-addition formulas, no transcendental per element.
    CPU kernel (channels-last x): one pass (in place with ``overwrite``, else over a copy);
    likewise the CUDA kernel (NCHW or channels-last x) where :func:`cuda_kernels_usable`.
    Otherwise blocks of rows of at most :func:`piece_elements` values, in place with
    ``overwrite``. Under autograd :class:`_Rotary2d`, whose backward runs the same kernels. The
    result has x's dtype.
    """
    if records_grad(x, row_angles, col_angles):
        return _Rotary2d.apply(x, row_angles, col_angles)
    return _rotate(x, _rotary_tables(x, row_angles, col_angles), overwrite=overwrite)


# -- basis responses, softmax, mean -----------------------------------------------------------
def basis_softmax_mean(features: torch.Tensor, basis: torch.Tensor,
                       per_channel: bool) -> torch.Tensor:
    """(B, C, h, w) features, (M, 1, k, k) basis (odd k) -> (B, M, h, w).

    Each channel is convolved on its own with every basis kernel (zero padding; each response
    divided by the number of in-image taps), giving M*C responses per pixel with flat index
    ``channel * M + kernel``. These are arranged in an (M, C) grid, a softmax runs down each
    column and the C columns are averaged:

    * ``per_channel=True``: column c holds channel c's M responses (the result is invariant to
      the order of the channels);
    * ``per_channel=False``: the flat responses read in order as an (M, C) array.

    CPU kernel: per pixel in cache, the M*C responses never written to memory. Otherwise one
    grouped convolution (each channel against the M kernels: responses already in flat
    order, nothing gathered), the division by the tap counts, which writes the responses in
    the softmax's dtype (float32, float64 for float64), the softmax and the mean over the
    (B, M, C) or (B, C, M) view; without autograd in blocks of rows of at most
    :func:`piece_elements` responses (each block's convolution reads its rows and the k // 2
    rows either side). The result has the features' dtype.
    """
    if cpu_kernels_usable(features, basis):
        return torch.ops.anyup_neck.basis_softmax_mean(features, basis.to(features.dtype),
                                                       per_channel)
    B, C, h, w = features.shape
    M, k = basis.shape[0], basis.shape[-1]
    pad = k // 2
    padded = F.pad(features, (pad, pad, pad, pad))
    softmax_dtype = _statistics_dtype(features.dtype)
    # In the softmax's dtype, so the division writes the responses in it (one pass, no copy).
    taps = F.conv2d(F.pad(features.new_ones(1, 1, h, w), (pad, pad, pad, pad)),
                    features.new_ones(1, 1, k, k)).to(softmax_dtype)     # (1, 1, h, w)
    kernels = basis.to(padded.dtype).repeat(C, 1, 1, 1)                  # output c * M + m
    # The (M, C) grid over the flat responses: column c is channel c's responses (per_channel),
    # or the flat order read as M rows of C.
    grid, softmax_dim = ((C, M), 2) if per_channel else ((M, C), 1)
    # Under autograd every block's responses are saved anyway: one block, fewer launches.
    rows = (h if records_grad(features, basis)
            else max(1, piece_elements(features) // (B * M * C * w)))
    blocks = []
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        responses = F.conv2d(padded[:, :, r0:r1 + 2 * pad], kernels, groups=C)
        responses = (responses / taps[:, :, r0:r1]).view(B, *grid, r1 - r0, w)
        blocks.append(responses.softmax(dim=softmax_dim).sum(dim=3 - softmax_dim))
    total = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=2)
    return (total / C).to(features.dtype)


__all__ = ['max_piece_elements', 'max_gpu_piece_elements', 'piece_elements', 'records_grad',
           'cpu_kernels_usable', 'cuda_kernels_usable', 'use_cuda_kernels',
           'uses_gpu_formulation',
           'group_norm_silu', 'group_norm_silu_by_reductions', 'group_norm_silu_and_shortcut',
           'group_statistics',
           'preactivation_residual',
           'adaptive_pool', 'conv1x1_add', 'rms_linear', 'conv3x3_rms_linear', 'rotary_2d',
           'basis_softmax_mean', 'channel_moments', 'group_norm_affine', 'affine_silu',
           'winograd_weights', 'conv3x3_winograd', 'image_pixels_contiguous']
