// Host side of affine_silu's row kernel (affine_silu_rows.h), shared by the CUDA entry point and
// its CPU emulation: the map of checked tensors, handed to a device-specific launcher.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include "affine_silu_rows.h"
#include "fused_ops.h"
#include "window_attention.h"

namespace anyup_neck {
namespace silu_rows {

// Checks affine_silu's arguments and calls launch(map) with the silu_rows::Map of
// out <- silu(x * scale + shift); scale and shift are taken in the accumulation type (a copy
// only where their dtype differs).
template <typename scalar_t, typename Launch>
void with_map(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
              const at::Tensor& out, Launch&& launch) {
  using acc_t = at::opmath_type<scalar_t>;
  check_affine_silu_args(x, scale, shift, out);
  if (x.numel() == 0) return;
  const auto acc = c10::CppTypeToScalarType<acc_t>::value;
  const at::Tensor a = scale.to(acc), b = shift.to(acc);
  const int64_t B = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  const bool channels_last = layout_of(x).channel == 1 && C > 1;
  const int64_t rows = channels_last ? B * P : B * C, length = channels_last ? C : P;
  const scalar_t* in = x.const_data_ptr<scalar_t>();
  scalar_t* result = out.data_ptr<scalar_t>();
  launch(Map<scalar_t, acc_t>{in, result, a.const_data_ptr<acc_t>(), b.const_data_ptr<acc_t>(),
                              rows, length, C, P, channels_last,
                              vectors_fit<scalar_t>(in, result, length)});
}

}  // namespace silu_rows
}  // namespace anyup_neck
