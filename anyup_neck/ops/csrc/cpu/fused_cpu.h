// Fused CPU kernels for inference of the layers around the attention: each replaces several
// full-size passes of PyTorch ops over memory by one or two (see common/fused_ops.h for the ops'
// contracts), and the Winograd 3x3 convolution (winograd_cpu.cpp).
// fused_cpu_kernels.h and winograd_cpu_kernels.h are compiled once per instruction set, like the
// attention's.
#pragma once

#include <ATen/core/Tensor.h>

namespace anyup_neck {
namespace cpu {

#define ANYUP_NECK_DECLARE_FUSED_ISA(isa)                                                     \
  namespace isa {                                                                             \
  void channel_moments(const at::Tensor& x, const at::Tensor& moments);                       \
  void affine_silu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,      \
                   const at::Tensor& out);                                                     \
  void rms_linear(const at::Tensor& x, const at::Tensor& w_t, const at::Tensor& bias,         \
                  double eps, const at::Tensor& out);                                          \
  void rotary_2d(const at::Tensor& x, const at::Tensor& cos_rows, const at::Tensor& sin_rows, \
                 const at::Tensor& cos_cols, const at::Tensor& sin_cols, bool transpose);       \
  void basis_softmax_mean(const at::Tensor& features, const at::Tensor& basis,                \
                          bool channel_major, const at::Tensor& out);                          \
  void winograd_conv3x3(const at::Tensor& x, const at::Tensor& U, int64_t row_begin,           \
                        const at::Tensor& out);                                                \
  }

ANYUP_NECK_DECLARE_FUSED_ISA(base)
ANYUP_NECK_DECLARE_FUSED_ISA(avx2)
ANYUP_NECK_DECLARE_FUSED_ISA(avx512)

#undef ANYUP_NECK_DECLARE_FUSED_ISA

}  // namespace cpu
}  // namespace anyup_neck
