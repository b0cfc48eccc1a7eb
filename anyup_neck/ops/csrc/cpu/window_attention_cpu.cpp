// CPU entry points: prepare layouts and outputs, then run the kernels built for the selected
// instruction set (cpu_isa.h).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "cpu_isa.h"
#include "../common/window_attention.h"
#include "window_attention_cpu.h"

namespace anyup_neck {
namespace {

cpu::Problem make_problem(const Tensor& q, const Tensor& k, const Tensor& v, int64_t num_heads,
                          double window_ratio, double scale, c10::string_view kernels) {
  TORCH_CHECK(q.device().is_cpu(), "window_attention (CPU kernel): expected CPU tensors, got ",
              q.device());
  cpu::Problem p;
  p.kernels = parse_kernels(kernels, Kernels::fast, "CPU");
  const bool single_or_double = q.scalar_type() == at::kFloat || q.scalar_type() == at::kDouble;
  TORCH_CHECK(single_or_double || cpu::is_tiled(p.kernels),
              "window_attention (CPU kernel): expected float32 or float64, got ", q.scalar_type(),
              " (float16 and bfloat16 only with the tiled kernels' emulation)");
  p.B = q.size(0);
  p.D = q.size(1);
  p.C = v.size(1);
  p.H = q.size(2);
  p.W = q.size(3);
  p.h = k.size(2);
  p.w = k.size(3);
  p.heads = num_heads;
  p.dim = p.D / num_heads;
  p.ratio = static_cast<float>(window_ratio);
  p.scale = scale;
  p.k_cl = k.permute({0, 2, 3, 1}).contiguous();
  p.v = v.contiguous();
  return p;
}

at::ScalarType acc_dtype(const Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

std::tuple<Tensor, Tensor> forward_cpu(const Tensor& q, const Tensor& k, const Tensor& v,
                                       int64_t num_heads, double window_ratio, double scale,
                                       c10::string_view kernels) {
  check_forward_args(q, k, v, num_heads, window_ratio);
  cpu::Problem p = make_problem(q, k, v, num_heads, window_ratio, scale, kernels);
  p.q = with_flat_pixels(q);
  p.v_cl = v.permute({0, 2, 3, 1}).contiguous();
  p.out = at::empty({p.B, p.C, p.H, p.W}, q.options());
  p.lse = at::empty({p.B, p.heads, p.H, p.W}, q.options().dtype(acc_dtype(q)));
  if (cpu::is_tiled(p.kernels)) {
    cpu::tiled_forward(p, k.contiguous());
  } else {
    ANYUP_NECK_CPU_DISPATCH(forward, p)
  }
  return {p.out, p.lse};
}

std::tuple<Tensor, Tensor, Tensor> backward_cpu(const Tensor& grad_out, const Tensor& q,
                                                const Tensor& k, const Tensor& v,
                                                const Tensor& lse, int64_t num_heads,
                                                double window_ratio, double scale,
                                                c10::string_view kernels) {
  check_backward_args(grad_out, q, k, v, lse, num_heads, window_ratio);
  cpu::Problem p = make_problem(q, k, v, num_heads, window_ratio, scale, kernels);
  p.q = q.contiguous();  // the key pass reads q along rows of pixels
  p.v_cl = v.permute({0, 2, 3, 1}).contiguous();
  p.grad_out = grad_out.contiguous();
  p.lse = lse.to(acc_dtype(q)).contiguous();
  p.dq = at::empty(q.sizes(), q.options());
  if (cpu::is_tiled(p.kernels)) {
    cpu::tiled_backward(p, k.contiguous());  // allocates dk and dv as the CUDA launcher does
  } else {
    p.delta = at::empty_like(p.lse);
    p.dk = at::empty(k.sizes(), k.options());
    p.dv = at::empty(v.sizes(), v.options());
    ANYUP_NECK_CPU_DISPATCH(backward, p)
  }
  return {p.dq, p.dk, p.dv};
}

}  // namespace

TORCH_LIBRARY_IMPL(anyup_neck, CPU, m) {
  m.impl("window_attention_forward", &forward_cpu);
  m.impl("window_attention_backward", &backward_cpu);
}

}  // namespace anyup_neck
