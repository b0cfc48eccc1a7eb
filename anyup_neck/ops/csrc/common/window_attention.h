// Host-side helpers of the window-attention op (schema in window_attention.cpp; kernels
// registered by window_attention_cpu.cpp and window_attention_cuda.cu).
//
//   window_attention_forward(q, k, v, num_heads, window_ratio, scale, kernels="auto")
//       -> (out, lse)
//   window_attention_backward(grad_out, q, k, v, lse, num_heads, window_ratio, scale,
//                             kernels="auto") -> (grad_q, grad_k, grad_v)
//
// q (B, D, H, W), k (B, D, h, w), v (B, C, h, w); out (B, C, H, W) contiguous, lse (B, N, H, W)
// in the accumulation dtype (float32, or float64 for float64 inputs); grads contiguous like
// their inputs' shapes. The Python layer validates arguments with readable messages; the checks
// here are the last line of defence for direct torch.ops calls.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

namespace anyup_neck {

using at::Tensor;

// Which kernels run: the ops' private `kernels` argument (the Python layer keeps "auto" for
// users; the tests name the others). The forward's lse is the same statistic whichever kernels
// made it, so any backward works with any forward.
//   "fast"       CPU only: the CPU's own kernels (16 pixels per SIMD register); the CPU default.
//   "per_pixel"  one output pixel (forward, backward pixel pass) or one key (key pass) at a time
//                through the per-query math of common/window_attention_math.h: the CUDA
//                default; on the CPU the same functions run pixel by pixel (tests).
//   "tiled"      the tiled kernels of common/window_tiles.h: on CUDA selectable (not yet run
//                on a GPU); on the CPU their block code runs thread by thread between the
//                barriers, with the same shared-memory indexing (tests).
//   "tiled_racecheck"  CPU only: "tiled" with the threads of every phase and the blocks of
//                every launch run in reverse order (blocks one at a time), a race check for
//                the tests: a thread that reads what another thread writes in the same phase
//                (no barrier between them on the GPU), or a block that depends on another block
//                of its launch, gives other results than "tiled" wherever the order changes a
//                value; and two threads of a phase that change the same shared-memory word,
//                or two blocks of a launch the same output element (e.g. both adding to one
//                sum, which a GPU can lose), stop it with an error.
enum class Kernels { fast, per_pixel, tiled, tiled_racecheck };

// `name` as Kernels; "auto" gives `device_default`. `device` names the caller in the error for
// a name that device has no kernels for.
Kernels parse_kernels(c10::string_view name, Kernels device_default, const char* device);

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
