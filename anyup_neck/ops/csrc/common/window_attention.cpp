// Schema of the window-attention ops, and the argument checks and layout helpers shared by the
// CPU and CUDA entry points (which register their kernels next to them).
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <string>

#include "window_attention.h"
#include "window_attention_math.h"

namespace anyup_neck {

void check_forward_args(const Tensor& q, const Tensor& k, const Tensor& v, int64_t num_heads,
                        double window_ratio) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
              "window_attention: q, k, v must be 4-D, got ", q.sizes(), ", ", k.sizes(), ", ",
              v.sizes());
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
              "window_attention: q, k, v must share one dtype, got ", q.scalar_type(), ", ",
              k.scalar_type(), ", ", v.scalar_type());
  TORCH_CHECK(k.device() == q.device() && v.device() == q.device(),
              "window_attention: q, k, v must be on one device, got ", q.device(), ", ",
              k.device(), ", ", v.device());
  TORCH_CHECK(k.size(0) == q.size(0) && k.size(1) == q.size(1),
              "window_attention: k must have q's batch and channels ", q.sizes().slice(0, 2),
              ", got ", k.sizes());
  TORCH_CHECK(v.size(0) == q.size(0) && v.size(2) == k.size(2) && v.size(3) == k.size(3),
              "window_attention: v must have q's batch and k's spatial size, got ", v.sizes());
  TORCH_CHECK(q.numel() > 0 && k.numel() > 0 && v.numel() > 0,
              "window_attention: empty inputs are not supported");
  TORCH_CHECK(num_heads >= 1 && num_heads <= wa::kMaxHeads && q.size(1) % num_heads == 0,
              "window_attention: num_heads must divide ", q.size(1), " and be in [1, ",
              wa::kMaxHeads, "], got ", num_heads);
  TORCH_CHECK(window_ratio >= 0.0 && window_ratio <= 1.0,
              "window_attention: window_ratio must be in [0, 1], got ", window_ratio);
}

void check_backward_args(const Tensor& grad_out, const Tensor& q, const Tensor& k,
                         const Tensor& v, const Tensor& lse, int64_t num_heads,
                         double window_ratio) {
  check_forward_args(q, k, v, num_heads, window_ratio);
  const std::vector<int64_t> out_shape{q.size(0), v.size(1), q.size(2), q.size(3)};
  const std::vector<int64_t> lse_shape{q.size(0), num_heads, q.size(2), q.size(3)};
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef(out_shape), "window_attention: grad_out must "
              "have shape ", out_shape, ", got ", grad_out.sizes());
  TORCH_CHECK(lse.sizes() == at::IntArrayRef(lse_shape), "window_attention: lse must have shape ",
              lse_shape, ", got ", lse.sizes());
  TORCH_CHECK(grad_out.scalar_type() == q.scalar_type() && grad_out.device() == q.device() &&
                  lse.device() == q.device(),
              "window_attention: grad_out and lse must match q's dtype/device");
}

Kernels parse_kernels(c10::string_view name, Kernels device_default, const char* device) {
  if (name == "auto") return device_default;
  if (name == "per_pixel") return Kernels::per_pixel;
  if (name == "tiled") return Kernels::tiled;
  const bool cpu = std::string(device) == "CPU";
  TORCH_CHECK(cpu && (name == "fast" || name == "tiled_racecheck"), "window_attention (", device,
              "): kernels: expected ",
              cpu ? "auto, fast, per_pixel, tiled or tiled_racecheck" : "auto, per_pixel or tiled",
              ", got '", std::string(name), "'");
  return name == "fast" ? Kernels::fast : Kernels::tiled_racecheck;
}

int64_t max_heads() { return wa::kMaxHeads; }

Tensor with_flat_pixels(const Tensor& t) {
  if (t.is_contiguous() || t.is_contiguous(at::MemoryFormat::ChannelsLast)) return t;
  return t.contiguous();
}

Layout layout_of(const Tensor& t) {
  const int64_t C = t.size(1), HW = t.size(2) * t.size(3);
  // Strides of size-1 dimensions are arbitrary, so they are derived from the memory format.
  if (t.is_contiguous()) return {C * HW, HW, 1};
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast),
              "window_attention: internal error, tensor without flat pixels");
  return {C * HW, 1, C};
}

TORCH_LIBRARY(anyup_neck, m) {
  m.def("window_attention_forward(Tensor q, Tensor k, Tensor v, int num_heads, "
        "float window_ratio, float scale, str kernels=\"auto\") -> (Tensor, Tensor)");
  m.def("window_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor lse, "
        "int num_heads, float window_ratio, float scale, str kernels=\"auto\") "
        "-> (Tensor, Tensor, Tensor)");
  // The largest head count the kernels accept, for the Python layer's checks.
  m.def("_max_heads() -> int", &max_heads);
}

}  // namespace anyup_neck
