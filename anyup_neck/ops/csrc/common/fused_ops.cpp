// Schema of the fused ops and the argument checks their CPU and CUDA entry points share
// (contracts in fused_ops.h).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "fused_ops.h"
#include "window_attention.h"

namespace anyup_neck {

void check_affine_silu_args(const Tensor& x, const Tensor& scale, const Tensor& shift,
                            const Tensor& out) {
  const char* op = "affine_silu";
  TORCH_CHECK(x.dim() == 4, op, ": expected a 4-D x, got ", x.sizes());
  TORCH_CHECK(x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast), op,
              ": x must be NCHW- or channels-last-contiguous");
  for (const Tensor* t : {&scale, &shift}) {
    TORCH_CHECK((t->scalar_type() == at::kDouble || t->scalar_type() == at::kFloat) &&
                    t->is_contiguous() && t->dim() == 2 && t->size(0) == x.size(0) &&
                    t->size(1) == x.size(1) && t->device() == x.device(),
                op, ": scale and shift must be contiguous float32 or float64 (", x.size(0), ", ",
                x.size(1), ") tensors on x's device, got ", t->sizes(), " ", t->scalar_type(),
                " on ", t->device());
  }
  TORCH_CHECK(out.sizes() == x.sizes() && out.scalar_type() == x.scalar_type() &&
                  out.device() == x.device(),
              op, ": out must have x's shape, dtype and device");
  TORCH_CHECK(out.is_contiguous() || out.is_contiguous(at::MemoryFormat::ChannelsLast), op,
              ": out must be NCHW- or channels-last-contiguous");
  const Layout lx = layout_of(x), lo = layout_of(out);
  TORCH_CHECK(lx.batch == lo.batch && lx.channel == lo.channel && lx.pixel == lo.pixel, op,
              ": out must have x's memory format");
}

TORCH_LIBRARY_FRAGMENT(anyup_neck, m) {
  m.def("channel_moments(Tensor x) -> Tensor");
  m.def("affine_silu(Tensor x, Tensor scale, Tensor shift, Tensor(a!) out) -> ()");
  m.def("rms_linear(Tensor x, Tensor weight, Tensor bias, float eps, Tensor(a!) out) -> ()");
  m.def("rotary_2d_(Tensor(a!) x, Tensor cos_rows, Tensor sin_rows, Tensor cos_cols, "
        "Tensor sin_cols) -> ()");
  m.def("basis_softmax_mean(Tensor features, Tensor basis, bool per_channel) -> Tensor");
  // affine_silu through the CUDA kernel's row code, run on the CPU (tests only).
  m.def("_affine_silu_rows(Tensor x, Tensor scale, Tensor shift, Tensor(a!) out) -> ()");
}

}  // namespace anyup_neck
