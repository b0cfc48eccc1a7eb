// Schema and CPU entry point of the Winograd F(2x2, 3x3) convolution (kernel:
// winograd_cpu_kernels.h):
//
//   conv3x3_winograd(x, weights, row_begin, row_end) -> (B, C_out, R, W)
//       rows row_begin .. row_end - 1 (R of them) of conv2d(x, g, padding=1) for a bias-free
//       3x3 kernel g (C_out, C_in, 3, 3) given as weights = G g G^T, (16, C_in, C_out) with
//       G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1], entry e = 4 i + j of the 4x4 transform;
//       x (B, C_in, H, W) and the result channels-last. The rows outside the range are read
//       as the convolution's neighbours (zero beyond the map), so row ranges can be computed
//       separately.
//
// Float32 and float64; no autograd (inference only, like the fused ops).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "cpu_isa.h"
#include "fused_cpu.h"

namespace anyup_neck {
namespace {

using at::Tensor;

Tensor conv3x3_winograd(const Tensor& x, const Tensor& weights, int64_t row_begin,
                        int64_t row_end) {
  const char* op = "conv3x3_winograd";
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4 &&
                  (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble),
              op, ": expected a 4-D float32 or float64 CPU tensor x, got ", x.sizes(), " ",
              x.scalar_type(), " on ", x.device());
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast), op,
              ": x must be channels-last-contiguous");
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(weights.dim() == 3 && weights.size(0) == 16 && weights.size(1) == C &&
                  weights.is_contiguous() && weights.scalar_type() == x.scalar_type() &&
                  weights.device() == x.device(),
              op, ": weights must be contiguous (16, ", C, ", C_out) tensors like x, got ",
              weights.sizes(), " ", weights.scalar_type());
  TORCH_CHECK(0 <= row_begin && row_begin < row_end && row_end <= H, op,
              ": expected 0 <= row_begin < row_end <= ", H, ", got ", row_begin, " and ", row_end);
  const int64_t C_out = weights.size(2), R = row_end - row_begin;
  Tensor out = at::empty({B, C_out, R, W},
                         x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (x.numel() > 0 && C_out > 0) {
    ANYUP_NECK_CPU_DISPATCH(winograd_conv3x3, x, weights, row_begin, out)
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(anyup_neck, m) {
  m.def("conv3x3_winograd(Tensor x, Tensor weights, int row_begin, int row_end) -> Tensor");
}

TORCH_LIBRARY_IMPL(anyup_neck, CPU, m) { m.impl("conv3x3_winograd", &conv3x3_winograd); }

}  // namespace anyup_neck
