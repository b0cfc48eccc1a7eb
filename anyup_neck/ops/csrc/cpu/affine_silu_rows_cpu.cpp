// affine_silu's CUDA row kernel (common/affine_silu_rows.h) on the CPU, for the tests: the private
// op _affine_silu_rows runs every (row, run) a GPU thread would, with the same indexing, vector
// moves and arithmetic, in float64, float32, float16 and bfloat16.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../common/affine_silu_host.h"

namespace anyup_neck {
namespace {

namespace rows = silu_rows;

void affine_silu_rows(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                      const at::Tensor& out) {
  TORCH_CHECK(x.device().is_cpu(), "_affine_silu_rows: expected a CPU tensor, got one on ",
              x.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "_affine_silu_rows",
                                  [&] {
    rows::with_map<scalar_t>(x, scale, shift, out, [&](const auto& m) {
      at::parallel_for(0, m.rows, 1, [&](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
          for (int64_t col = 0; col < m.length; col += rows::kRun) rows::apply_run(m, row, col);
        }
      });
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(anyup_neck, CPU, m) { m.impl("_affine_silu_rows", &affine_silu_rows); }

}  // namespace anyup_neck
