// CUDA entry point of affine_silu (contract: common/fused_ops.h): GroupNorm + SiLU's apply pass
// as one elementwise kernel, the row kernel of common/affine_silu_rows.h (runs of 8 elements
// per thread, no index division per element). float32, float16 and bfloat16 with float32
// arithmetic; float64 in float64. Compiled and emulated on the CPU in the tests; not yet run
// on a GPU, so the Python layer uses it only when told to (anyup_neck.ops.fused).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "../common/affine_silu_host.h"

namespace anyup_neck {
namespace {

namespace rows = silu_rows;

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(rows::kThreads)
    affine_silu_kernel(const rows::Map<scalar_t, acc_t> m) {
  const int64_t col = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * rows::kRun;
  if (col >= m.length) return;  // no barrier follows
  const int64_t stride = static_cast<int64_t>(gridDim.y) * blockDim.y;
  for (int64_t row = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; row < m.rows;
       row += stride) {
    rows::apply_run(m, row, col);
  }
}

constexpr int64_t kMaxGridY = 65535;

void affine_silu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                 const at::Tensor& out) {
  TORCH_CHECK(x.is_cuda(), "affine_silu: expected a CUDA tensor, got one on ", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "affine_silu", [&] {
    rows::with_map<scalar_t>(x, scale, shift, out, [&](const auto& m) {
      const rows::BlockShape shape = rows::block_shape(m.length);
      const int64_t runs = (m.length + rows::kRun - 1) / rows::kRun;
      const dim3 grid(static_cast<unsigned>((runs + shape.x - 1) / shape.x),
                      static_cast<unsigned>(std::min((m.rows + shape.y - 1) / shape.y, kMaxGridY)));
      affine_silu_kernel<<<grid, dim3(shape.x, shape.y), 0, c10::cuda::getCurrentCUDAStream()>>>(m);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(anyup_neck, CUDA, m) { m.impl("affine_silu", &affine_silu); }

}  // namespace anyup_neck
