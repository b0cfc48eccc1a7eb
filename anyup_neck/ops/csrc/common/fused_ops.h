// The fused ops around the attention (schema in fused_ops.cpp; CPU kernels registered by
// cpu/fused_cpu.cpp, CUDA kernels by cuda/fused_cuda.cu):
//
//   channel_moments(x) -> (B, 2, C) float64                                        CPU
//       per channel, the sum and the sum of squares over the pixels (GroupNorm statistics);
//   affine_silu(x, scale, shift, out)                                              CPU, CUDA
//       out <- silu(x * scale + shift), scale and shift (B, C) float32 or float64 (taken in the
//       accumulation type: float32, float64 for float64 x); GroupNorm + SiLU is then one pass
//       after the statistics. x (B, C, H, W) NCHW- or channels-last-contiguous, out of the
//       same shape, dtype and memory format (x itself for an in-place update);
//   group_norm_coefficients(x, weight, bias, groups, eps) -> (scale, shift, mean, rstd)
//                                                                                  CPU, CUDA
//       GroupNorm's statistics of x per (b, g), mean and 1 / sqrt(var + eps), (B, groups), and
//       its affine map per (b, c), scale and shift (B, C) (norm(x) = x scale + shift), in the
//       accumulation type; one pass over x (moments shifted by each channel's first pixel,
//       combined exactly per group), deterministic; weight, bias (C) any float dtype;
//   affine_silu_grad_sums(x, grad, scale, shift, center) -> (B, 2, C)              CPU, CUDA
//       with g = grad * silu'(x * scale + shift) (the gradient at the output of GroupNorm's
//       affine step, never stored), per (b, c) sum(g) and sum(g * (x - center)) over the
//       pixels, in the accumulation type (float32; float64 for float64 x), deterministic; grad
//       has x's dtype and layout; center (B, C), the group's mean;
//   group_norm_silu_input_grad(x, grad, scale, shift, coef_g, coef_x, coef, center,
//                              residual=None) -> dx                               CPU, CUDA
//       dx <- coef_g * g + coef_x * (x - center) + coef [+ residual] with g as above,
//       coefficients (B, C); dx of x's dtype and layout: GroupNorm + SiLU's input gradient,
//       whose coefficients come from affine_silu_grad_sums (the backward in 2 passes over x
//       and grad); residual (x's dtype and layout): another gradient of x added in the same
//       pass (a residual block's shortcut), instead of a sum of two maps afterwards;
//   rms_linear(x, weight, bias, eps, out)                                          CPU
//       out <- bias + weight x / sqrt(mean(x^2) + eps) per pixel: RMSNorm (gain folded into
//       weight (C_out, C)) and a linear map in one pass; x (B, C, H, W) and out (B, C_out, H, W)
//       with each image's pixels channels-last-contiguous (out may be rows of a larger map);
//   rotary_2d_(x, cos_rows, sin_rows, cos_cols, sin_cols, transpose)               CPU, CUDA
//       2-D rotary encoding in place, or with `transpose` its transposed map (the backward's:
//       each channel pair turns by its two channels' own angles, so the map is not a rotation
//       and its transpose is not the turn back); x (B, D, H, W), tables (H, D) and (W, D) in
//       the accumulation type (float32; float64 for float64 x); CPU: channels-last x, CUDA:
//       NCHW or channels-last (the row code);
//   basis_softmax_mean(features, basis, per_channel) -> (B, M, h, w)               CPU
//       responses of every feature channel to every k x k basis kernel, softmax, mean (the
//       feature-agnostic layer of AnyUp; see LearnedFeatureUnification for the two groupings).
//
// The per-(b, c) ops and rotary_2d_ on CUDA run the row code of channel_rows.h (the CPU kernels
// of affine_silu and rotary_2d_ are SIMD ones; for the tests the row code is also the CPU ops
// _affine_silu_rows and _rotary_2d_rows_).
// Their maps are (B, C, H, W), NCHW- or channels-last-contiguous, all in one memory format;
// coefficients (B, C) float32 or float64, taken in the accumulation type.
// No autograd (the Python callers use them only when no gradient is recorded). The Python side
// validates user input; the checks here guard the kernels.
#pragma once

#include <ATen/core/Tensor.h>

#include <initializer_list>

namespace anyup_neck {

// `t` (argument `name` of `op`) has x's shape and device, and flat pixels in x's memory format.
void check_map(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x);

// Each of `coefficients` is a contiguous float32 or float64 (B, C) tensor on x's device.
void check_coefficients(const char* op, const at::Tensor& x,
                        std::initializer_list<const at::Tensor*> coefficients);

// affine_silu's checks: x and out (x's dtype) maps, scale and shift coefficients.
void check_affine_silu_args(const at::Tensor& x, const at::Tensor& scale,
                            const at::Tensor& shift, const at::Tensor& out);

// The backward ops' checks: x, grad and the optional residual (x's dtype) maps, then
// `coefficients`.
void check_silu_backward_args(const char* op, const at::Tensor& x, const at::Tensor& grad,
                              std::initializer_list<const at::Tensor*> coefficients,
                              const at::Tensor* residual = nullptr);

}  // namespace anyup_neck
