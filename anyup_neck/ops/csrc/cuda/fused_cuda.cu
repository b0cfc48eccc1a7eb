// CUDA kernels of the channel-row ops (contracts: common/fused_ops.h; element code:
// common/channel_rows.h, runs of 8 elements per thread, no index division per element):
// group_norm_coefficients (GroupNorm's statistics and affine map; per-thread pieces of the
// sums, see Pieces), affine_silu (GroupNorm + SiLU's apply pass), affine_silu_grad_sums and
// group_norm_silu_input_grad (its backward's two passes over x and grad), rotary_2d_ (the 2-D
// rotary encoding in place or its transpose, NCHW or channels-last, angle tables in float32).
// float32, float16 and bfloat16 with float32 arithmetic; float64 in float64. Compiled here and
// run on the CPU through the same row code in the tests; not yet run on a GPU, so the Python
// layer uses them only when told to (anyup_neck.ops.fused.use_cuda_kernels).
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "../common/channel_rows_host.h"

namespace anyup_neck {
namespace {

namespace rows = channel_rows;

template <typename Op>
__global__ void __launch_bounds__(rows::kThreads) rows_kernel(const rows::Rows r, const Op op) {
  const int64_t col = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * rows::kRun;
  if (col >= r.length) return;  // no barrier follows
  const int64_t stride = static_cast<int64_t>(gridDim.y) * blockDim.y;
  for (int64_t row = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; row < r.rows;
       row += stride) {
    op(r, row, col);
  }
}

template <typename Op>
__global__ void __launch_bounds__(rows::kThreads) each_kernel(const int64_t count, const Op op) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) op(i);
}

constexpr int64_t kMaxGridY = 65535;

struct OnGpu {
  template <typename Op>
  void operator()(const rows::Rows& r, const Op& op) const {
    const rows::BlockShape shape = rows::block_shape(r.length);
    const int64_t runs = (r.length + rows::kRun - 1) / rows::kRun;
    const dim3 grid(static_cast<unsigned>((runs + shape.x - 1) / shape.x),
                    static_cast<unsigned>(std::min((r.rows + shape.y - 1) / shape.y, kMaxGridY)));
    rows_kernel<<<grid, dim3(shape.x, shape.y), 0, c10::cuda::getCurrentCUDAStream()>>>(r, op);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  template <typename Op>
  void each(int64_t count, const Op& op) const {
    const int64_t blocks = (count + rows::kThreads - 1) / rows::kThreads;
    TORCH_CHECK(blocks <= INT32_MAX, "too many pieces for one launch: ", count);
    each_kernel<<<static_cast<unsigned>(blocks), rows::kThreads, 0,
                  c10::cuda::getCurrentCUDAStream()>>>(count, op);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

void check_cuda(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.is_cuda(), op, ": expected a CUDA tensor, got one on ", x.device());
}

void affine_silu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                 const at::Tensor& out) {
  check_cuda(x, "affine_silu");
  const c10::cuda::CUDAGuard guard(x.device());
  rows::affine_silu(x, scale, shift, out, OnGpu());
}

rows::Coefficients group_norm_coefficients(const at::Tensor& x, const at::Tensor& weight,
                                           const at::Tensor& bias, int64_t groups, double eps) {
  check_cuda(x, "group_norm_coefficients");
  const c10::cuda::CUDAGuard guard(x.device());
  return rows::group_norm_coefficients(x, weight, bias, groups, eps, OnGpu());
}

at::Tensor affine_silu_grad_sums(const at::Tensor& x, const at::Tensor& grad,
                                 const at::Tensor& scale, const at::Tensor& shift,
                                 const at::Tensor& center) {
  check_cuda(x, "affine_silu_grad_sums");
  const c10::cuda::CUDAGuard guard(x.device());
  return rows::affine_silu_grad_sums(x, grad, scale, shift, center, OnGpu());
}

at::Tensor group_norm_silu_input_grad(const at::Tensor& x, const at::Tensor& grad,
                                      const at::Tensor& scale, const at::Tensor& shift,
                                      const at::Tensor& coef_g, const at::Tensor& coef_x,
                                      const at::Tensor& coef, const at::Tensor& center,
                                      const std::optional<at::Tensor>& residual) {
  check_cuda(x, "group_norm_silu_input_grad");
  const c10::cuda::CUDAGuard guard(x.device());
  return rows::group_norm_silu_input_grad(x, grad, scale, shift, coef_g, coef_x, coef, center,
                                          residual, OnGpu());
}

void rotary_2d_(const at::Tensor& x, const at::Tensor& cos_rows, const at::Tensor& sin_rows,
                const at::Tensor& cos_cols, const at::Tensor& sin_cols, bool transpose) {
  check_cuda(x, "rotary_2d_");
  const c10::cuda::CUDAGuard guard(x.device());
  rows::rotary_2d_(x, cos_rows, sin_rows, cos_cols, sin_cols, transpose, OnGpu());
}

}  // namespace

TORCH_LIBRARY_IMPL(anyup_neck, CUDA, m) {
  m.impl("rotary_2d_", &rotary_2d_);
  m.impl("affine_silu", &affine_silu);
  m.impl("group_norm_coefficients", &group_norm_coefficients);
  m.impl("affine_silu_grad_sums", &affine_silu_grad_sums);
  m.impl("group_norm_silu_input_grad", &group_norm_silu_input_grad);
}

}  // namespace anyup_neck
