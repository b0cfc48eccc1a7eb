// CPU kernels of the channel-row ops (common/channel_rows.h): affine_silu_backward,
// group_norm_input_grad, and _affine_silu_rows (affine_silu through the row code, for the
// tests; the op's own CPU kernel is SIMD). Every (row, run) a GPU thread would take, with the
// same indexing, vector moves and arithmetic.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../common/channel_rows_host.h"

namespace anyup_neck {
namespace {

namespace rows = channel_rows;

struct OnCpu {
  template <typename Op>
  void operator()(const rows::Rows& r, const Op& op) const {
    at::parallel_for(0, r.rows, 1, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        for (int64_t col = 0; col < r.length; col += rows::kRun) op(rows::run_at(r, row, col));
      }
    });
  }
};

void check_cpu(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.device().is_cpu(), op, ": expected a CPU tensor, got one on ", x.device());
}

void affine_silu_rows(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                      const at::Tensor& out) {
  check_cpu(x, "_affine_silu_rows");
  rows::affine_silu(x, scale, shift, out, OnCpu());
}

at::Tensor affine_silu_backward(const at::Tensor& x, const at::Tensor& grad,
                                const at::Tensor& scale, const at::Tensor& shift) {
  check_cpu(x, "affine_silu_backward");
  return rows::affine_silu_backward(x, grad, scale, shift, OnCpu());
}

at::Tensor group_norm_input_grad(const at::Tensor& g, const at::Tensor& x,
                                 const at::Tensor& coef_g, const at::Tensor& coef_x,
                                 const at::Tensor& coef) {
  check_cpu(x, "group_norm_input_grad");
  return rows::group_norm_input_grad(g, x, coef_g, coef_x, coef, OnCpu());
}

}  // namespace

TORCH_LIBRARY_IMPL(anyup_neck, CPU, m) {
  m.impl("_affine_silu_rows", &affine_silu_rows);
  m.impl("affine_silu_backward", &affine_silu_backward);
  m.impl("group_norm_input_grad", &group_norm_input_grad);
}

}  // namespace anyup_neck
