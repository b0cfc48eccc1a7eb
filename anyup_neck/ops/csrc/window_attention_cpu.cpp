// CPU entry points: prepare layouts and outputs, then run the kernels built for the widest
// instruction set this processor supports (or the one named by ANYUP_NECK_CPU_ISA: base, avx2,
// avx512; the tests use it to exercise every copy).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdlib>
#include <string>

#include "window_attention.h"
#include "window_attention_cpu.h"

namespace anyup_neck {
namespace {

enum class Isa { base, avx2, avx512 };

bool supported(Isa isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  switch (isa) {
    case Isa::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             supported(Isa::avx2);
    case Isa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::base:
      return true;
  }
  return false;
#else
  return isa == Isa::base;
#endif
}

Isa select_isa() {
  const char* forced = std::getenv("ANYUP_NECK_CPU_ISA");
  if (forced != nullptr && *forced != '\0') {
    const std::string name(forced);
    const Isa isa = name == "avx512" ? Isa::avx512 : name == "avx2" ? Isa::avx2 : Isa::base;
    TORCH_CHECK(name == "base" || name == "avx2" || name == "avx512",
                "ANYUP_NECK_CPU_ISA: expected base, avx2 or avx512, got '", name, "'");
    TORCH_CHECK(supported(isa), "ANYUP_NECK_CPU_ISA: this processor does not support ", name);
    return isa;
  }
  return supported(Isa::avx512) ? Isa::avx512 : supported(Isa::avx2) ? Isa::avx2 : Isa::base;
}

cpu::Problem make_problem(const Tensor& q, const Tensor& k, const Tensor& v, int64_t num_heads,
                          double window_ratio, double scale) {
  TORCH_CHECK(q.device().is_cpu(), "window_attention (CPU kernel): expected CPU tensors, got ",
              q.device());
  TORCH_CHECK(q.scalar_type() == at::kFloat || q.scalar_type() == at::kDouble,
              "window_attention (CPU kernel): expected float32 or float64, got ", q.scalar_type());
  cpu::Problem p;
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
                                       int64_t num_heads, double window_ratio, double scale) {
  check_forward_args(q, k, v, num_heads, window_ratio);
  cpu::Problem p = make_problem(q, k, v, num_heads, window_ratio, scale);
  p.q = with_flat_pixels(q);
  p.v_cl = v.permute({0, 2, 3, 1}).contiguous();
  p.out = at::empty({p.B, p.C, p.H, p.W}, q.options());
  p.lse = at::empty({p.B, p.heads, p.H, p.W}, q.options().dtype(acc_dtype(q)));
  switch (select_isa()) {
    case Isa::avx512: cpu::avx512::forward(p); break;
    case Isa::avx2: cpu::avx2::forward(p); break;
    case Isa::base: cpu::base::forward(p); break;
  }
  return {p.out, p.lse};
}

std::tuple<Tensor, Tensor, Tensor> backward_cpu(const Tensor& grad_out, const Tensor& q,
                                                const Tensor& k, const Tensor& v,
                                                const Tensor& lse, int64_t num_heads,
                                                double window_ratio, double scale) {
  check_backward_args(grad_out, q, k, v, lse, num_heads, window_ratio);
  cpu::Problem p = make_problem(q, k, v, num_heads, window_ratio, scale);
  p.q = q.contiguous();  // the key pass reads q along rows of pixels
  p.grad_out = grad_out.contiguous();
  p.lse = lse.to(acc_dtype(q)).contiguous();
  p.delta = at::empty_like(p.lse);
  p.dq = at::empty(q.sizes(), q.options());
  p.dk = at::empty(k.sizes(), k.options());
  p.dv = at::empty(v.sizes(), v.options());
  switch (select_isa()) {
    case Isa::avx512: cpu::avx512::backward(p); break;
    case Isa::avx2: cpu::avx2::backward(p); break;
    case Isa::base: cpu::base::backward(p); break;
  }
  return {p.dq, p.dk, p.dv};
}

}  // namespace

TORCH_LIBRARY_IMPL(anyup_neck, CPU, m) {
  m.impl("window_attention_forward", &forward_cpu);
  m.impl("window_attention_backward", &backward_cpu);
}

}  // namespace anyup_neck
