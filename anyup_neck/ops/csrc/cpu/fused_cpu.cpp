// CPU entry points of the fused ops (contracts and schema: common/fused_ops.h, .cpp; kernels:
// fused_cpu_kernels.h): float32 and float64.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "cpu_isa.h"
#include "fused_cpu.h"
#include "../common/fused_ops.h"
#include "../common/window_attention.h"

namespace anyup_neck {
namespace {

void check_cpu_map(const Tensor& x, const char* op) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4, op, ": expected a 4-D CPU tensor, got ",
              x.sizes(), " on ", x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": expected float32 or float64, got ", x.scalar_type());
}

Tensor channel_moments(const Tensor& x) {
  check_cpu_map(x, "channel_moments");
  check_map("channel_moments", "x", x, x);
  Tensor moments = at::zeros({x.size(0), 2, x.size(1)}, x.options().dtype(at::kDouble));
  if (x.numel() > 0) ANYUP_NECK_CPU_DISPATCH(channel_moments, x, moments)
  return moments;
}

void affine_silu(const Tensor& x, const Tensor& scale, const Tensor& shift, const Tensor& out) {
  check_cpu_map(x, "affine_silu");
  check_affine_silu_args(x, scale, shift, out);
  const Tensor scale64 = scale.to(at::kDouble), shift64 = shift.to(at::kDouble);  // the kernels'
  if (x.numel() > 0) ANYUP_NECK_CPU_DISPATCH(affine_silu, x, scale64, shift64, out)
}

// Whether each image of (B, C, H, W) t has its pixels channels-last-contiguous (strides of
// size-1 dimensions do not matter).
bool image_pixels_contiguous(const Tensor& t) {
  const int64_t C = t.size(1), H = t.size(2), W = t.size(3);
  return (C == 1 || t.stride(1) == 1) && (W == 1 || t.stride(3) == C) &&
         (H == 1 || t.stride(2) == W * C);
}

void rms_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                const Tensor& out) {
  const char* op = "rms_linear";
  check_cpu_map(x, op);
  check_cpu_map(out, op);
  TORCH_CHECK(image_pixels_contiguous(x) && image_pixels_contiguous(out), op,
              ": x and out must have each image's pixels channels-last-contiguous");
  const int64_t C_out = out.size(1);
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == C_out && weight.size(1) == x.size(1) &&
                  bias.dim() == 1 && bias.size(0) == C_out,
              op, ": expected weight (", C_out, ", ", x.size(1), ") and bias (", C_out,
              "), got ", weight.sizes(), " and ", bias.sizes());
  TORCH_CHECK(out.size(0) == x.size(0) && out.size(2) == x.size(2) && out.size(3) == x.size(3) &&
                  out.scalar_type() == x.scalar_type() && weight.scalar_type() == x.scalar_type() &&
                  bias.scalar_type() == x.scalar_type(),
              op, ": out, weight and bias must match x's batch, size and dtype");
  if (x.numel() == 0 || out.numel() == 0) return;
  const Tensor w_t = weight.t().contiguous(), shift = bias.contiguous();
  ANYUP_NECK_CPU_DISPATCH(rms_linear, x, w_t, shift, eps, out)
}

void rotary_2d_(const Tensor& x, const Tensor& cos_rows, const Tensor& sin_rows,
                const Tensor& cos_cols, const Tensor& sin_cols, bool transpose) {
  const char* op = "rotary_2d_";
  check_cpu_map(x, op);
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast) && x.size(1) % 2 == 0, op,
              ": x must be channels-last-contiguous with an even channel count, got ", x.sizes());
  for (const Tensor* t : {&cos_rows, &sin_rows, &cos_cols, &sin_cols}) {
    TORCH_CHECK(t->is_contiguous() && t->scalar_type() == x.scalar_type() && t->dim() == 2 &&
                    t->size(1) == x.size(1),
                op, ": tables must be contiguous (n, ", x.size(1), ") tensors like x, got ",
                t->sizes());
  }
  TORCH_CHECK(cos_rows.size(0) == x.size(2) && sin_rows.size(0) == x.size(2) &&
                  cos_cols.size(0) == x.size(3) && sin_cols.size(0) == x.size(3),
              op, ": tables must have ", x.size(2), " rows and ", x.size(3), " columns");
  if (x.numel() == 0) return;
  ANYUP_NECK_CPU_DISPATCH(rotary_2d, x, cos_rows, sin_rows, cos_cols, sin_cols, transpose)
}

Tensor basis_softmax_mean(const Tensor& features, const Tensor& basis, bool per_channel) {
  const char* op = "basis_softmax_mean";
  check_cpu_map(features, op);
  TORCH_CHECK(basis.dim() == 4 && basis.size(1) == 1 && basis.size(2) == basis.size(3) &&
                  basis.size(2) % 2 == 1 && basis.scalar_type() == features.scalar_type(),
              op, ": basis must be (M, 1, k, k) with odd k, like features, got ", basis.sizes());
  TORCH_CHECK(features.numel() > 0 && basis.size(0) > 0, op, ": empty inputs");
  const Tensor feats = features.contiguous();
  const Tensor kernels = basis.reshape({basis.size(0), -1}).contiguous();
  Tensor out = at::empty({feats.size(0), basis.size(0), feats.size(2), feats.size(3)},
                         feats.options());
  ANYUP_NECK_CPU_DISPATCH(basis_softmax_mean, feats, kernels, per_channel, out)
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(anyup_neck, CPU, m) {
  m.impl("channel_moments", &channel_moments);
  m.impl("affine_silu", &affine_silu);
  m.impl("rms_linear", &rms_linear);
  m.impl("rotary_2d_", &rotary_2d_);
  m.impl("basis_softmax_mean", &basis_softmax_mean);
}

}  // namespace anyup_neck
