// Host-side helpers of the window-attention op (schema in window_attention.cpp; kernels
// registered by window_attention_cpu.cpp and window_attention_cuda.cu).
//
//   window_attention_forward(q, k, v, num_heads, window_ratio, scale) -> (out, lse)
//   window_attention_backward(grad_out, q, k, v, lse, num_heads, window_ratio, scale)
//       -> (grad_q, grad_k, grad_v)
//
// q (B, D, H, W), k (B, D, h, w), v (B, C, h, w); out (B, C, H, W) contiguous, lse (B, N, H, W)
// in the accumulation dtype (float32, or float64 for float64 inputs); grads contiguous like
// their inputs' shapes. The Python layer validates arguments with readable messages; the checks
// here are the last line of defence for direct torch.ops calls.
#pragma once

#include <ATen/core/Tensor.h>

namespace anyup_neck {

using at::Tensor;

// Shapes, dtypes, devices and head count of (q, k, v) are consistent (TORCH_CHECK otherwise).
void check_forward_args(const Tensor& q, const Tensor& k, const Tensor& v, int64_t num_heads,
                        double window_ratio);

// As check_forward_args, plus grad_out (B, C, H, W) and lse (B, N, H, W).
void check_backward_args(const Tensor& grad_out, const Tensor& q, const Tensor& k,
                         const Tensor& v, const Tensor& lse, int64_t num_heads,
                         double window_ratio);

// Element strides of a 4-D tensor whose H x W pixels flatten to one index p = i * W + j.
struct Layout {
  int64_t batch, channel, pixel;
};

// `t` itself when it is NCHW- or channels-last-contiguous, else a contiguous copy.
Tensor with_flat_pixels(const Tensor& t);

// Strides of a tensor returned by with_flat_pixels.
Layout layout_of(const Tensor& t);

}  // namespace anyup_neck
