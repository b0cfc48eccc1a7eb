// CPU kernels of the channel-row ops (common/channel_rows.h): group_norm_coefficients,
// affine_silu_grad_sums, group_norm_silu_input_grad, and for the tests _affine_silu_rows and
// _rotary_2d_rows_ (affine_silu and rotary_2d_ through the row code; those ops' own CPU kernels
// are SIMD). Every (row, run) or piece a GPU thread would take, with the same indexing, vector
// moves and arithmetic.
#include <ATen/core/Tensor.h>
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
        for (int64_t col = 0; col < r.length; col += rows::kRun) op(r, row, col);
      }
    });
  }
  template <typename Op>
  void each(int64_t count, const Op& op) const {
    at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) op(i);
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

rows::Coefficients group_norm_coefficients(const at::Tensor& x, const at::Tensor& weight,
                                           const at::Tensor& bias, int64_t groups, double eps) {
  check_cpu(x, "group_norm_coefficients");
  return rows::group_norm_coefficients(x, weight, bias, groups, eps, OnCpu());
}

at::Tensor affine_silu_grad_sums(const at::Tensor& x, const at::Tensor& grad,
                                 const at::Tensor& scale, const at::Tensor& shift,
                                 const at::Tensor& center) {
  check_cpu(x, "affine_silu_grad_sums");
  return rows::affine_silu_grad_sums(x, grad, scale, shift, center, OnCpu());
}

at::Tensor group_norm_silu_input_grad(const at::Tensor& x, const at::Tensor& grad,
                                      const at::Tensor& scale, const at::Tensor& shift,
                                      const at::Tensor& coef_g, const at::Tensor& coef_x,
                                      const at::Tensor& coef, const at::Tensor& center,
                                      const std::optional<at::Tensor>& residual) {
  check_cpu(x, "group_norm_silu_input_grad");
  return rows::group_norm_silu_input_grad(x, grad, scale, shift, coef_g, coef_x, coef, center,
                                          residual, OnCpu());
}

void rotary_2d_rows_(const at::Tensor& x, const at::Tensor& cos_rows, const at::Tensor& sin_rows,
                     const at::Tensor& cos_cols, const at::Tensor& sin_cols, bool transpose) {
  check_cpu(x, "_rotary_2d_rows_");
  rows::rotary_2d_(x, cos_rows, sin_rows, cos_cols, sin_cols, transpose, OnCpu());
}

}  // namespace

TORCH_LIBRARY_IMPL(anyup_neck, CPU, m) {
  m.impl("_affine_silu_rows", &affine_silu_rows);
  m.impl("_rotary_2d_rows_", &rotary_2d_rows_);
  m.impl("group_norm_coefficients", &group_norm_coefficients);
  m.impl("affine_silu_grad_sums", &affine_silu_grad_sums);
  m.impl("group_norm_silu_input_grad", &group_norm_silu_input_grad);
}

}  // namespace anyup_neck
