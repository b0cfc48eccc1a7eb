// Schema of the fused ops and the argument checks their CPU and CUDA entry points share
// (contracts in fused_ops.h).
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <utility>

#include "fused_ops.h"
#include "window_attention.h"

namespace anyup_neck {

void check_map(const char* op, const char* name, const Tensor& t, const Tensor& x) {
  TORCH_CHECK(t.dim() == 4 && t.sizes() == x.sizes() && t.device() == x.device(), op, ": ",
              name, " must have x's shape and device, 4-D, got ", t.sizes(), " on ",
              t.device());
  TORCH_CHECK(t.is_contiguous() || t.is_contiguous(at::MemoryFormat::ChannelsLast), op, ": ",
              name, " must be NCHW- or channels-last-contiguous");
  const Layout lt = layout_of(t), lx = layout_of(x);
  TORCH_CHECK(lt.batch == lx.batch && lt.channel == lx.channel && lt.pixel == lx.pixel, op,
              ": ", name, " must have x's memory format");
}

void check_coefficients(const char* op, const Tensor& x,
                        std::initializer_list<const Tensor*> coefficients) {
  for (const Tensor* t : coefficients) {
    TORCH_CHECK((t->scalar_type() == at::kDouble || t->scalar_type() == at::kFloat) &&
                    t->is_contiguous() && t->dim() == 2 && t->size(0) == x.size(0) &&
                    t->size(1) == x.size(1) && t->device() == x.device(),
                op, ": coefficients must be contiguous float32 or float64 (", x.size(0), ", ",
                x.size(1), ") tensors on x's device, got ", t->sizes(), " ", t->scalar_type(),
                " on ", t->device());
  }
}

void check_affine_silu_args(const Tensor& x, const Tensor& scale, const Tensor& shift,
                            const Tensor& out) {
  const char* op = "affine_silu";
  check_map(op, "x", x, x);
  check_map(op, "out", out, x);
  TORCH_CHECK(out.scalar_type() == x.scalar_type(), op, ": out must have x's dtype ",
              x.scalar_type(), ", got ", out.scalar_type());
  check_coefficients(op, x, {&scale, &shift});
}

void check_silu_backward_args(const char* op, const Tensor& x, const Tensor& grad,
                              std::initializer_list<const Tensor*> coefficients,
                              const Tensor* residual) {
  check_map(op, "x", x, x);
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"grad", &grad},
                                {"residual", residual}}) {
    if (t == nullptr) continue;
    check_map(op, name, *t, x);
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), op, ": ", name, " must have x's dtype ",
                x.scalar_type(), ", got ", t->scalar_type());
  }
  check_coefficients(op, x, coefficients);
}

TORCH_LIBRARY_FRAGMENT(anyup_neck, m) {
  m.def("channel_moments(Tensor x) -> Tensor");
  m.def("affine_silu(Tensor x, Tensor scale, Tensor shift, Tensor(a!) out) -> ()");
  m.def("rms_linear(Tensor x, Tensor weight, Tensor bias, float eps, Tensor(a!) out) -> ()");
  m.def("rotary_2d_(Tensor(a!) x, Tensor cos_rows, Tensor sin_rows, Tensor cos_cols, "
        "Tensor sin_cols, bool transpose=False) -> ()");
  m.def("basis_softmax_mean(Tensor features, Tensor basis, bool per_channel) -> Tensor");
  m.def("group_norm_coefficients(Tensor x, Tensor weight, Tensor bias, int groups, float eps) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def("affine_silu_grad_sums(Tensor x, Tensor grad, Tensor scale, Tensor shift, "
        "Tensor center) -> Tensor");
  m.def("group_norm_silu_input_grad(Tensor x, Tensor grad, Tensor scale, Tensor shift, "
        "Tensor coef_g, Tensor coef_x, Tensor coef, Tensor center, Tensor? residual=None) "
        "-> Tensor");
  // affine_silu and rotary_2d_ through the row code on the CPU (tests only; those ops' CPU
  // kernels are SIMD).
  m.def("_affine_silu_rows(Tensor x, Tensor scale, Tensor shift, Tensor(a!) out) -> ()");
  m.def("_rotary_2d_rows_(Tensor(a!) x, Tensor cos_rows, Tensor sin_rows, Tensor cos_cols, "
        "Tensor sin_cols, bool transpose=False) -> ()");
}

}  // namespace anyup_neck
