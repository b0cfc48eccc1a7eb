// The CPU kernels' view of one problem, and their per-instruction-set entry points.
//
// window_attention_cpu.cpp prepares a Problem (layouts, allocations) and picks the widest
// instruction set the processor supports; window_attention_cpu_kernels.h is compiled once per
// instruction set (window_attention_cpu_{base,avx2,avx512}.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include "../common/window_attention.h"

namespace anyup_neck {
namespace cpu {

struct Problem {
  int64_t B, D, C, H, W, h, w, heads, dim;  // D = q/k channels = heads * dim, C = v channels
  float ratio;
  Kernels kernels = Kernels::fast;  // per_pixel, tiled(_racecheck): the CUDA kernels' code (tests)
  double scale;
  at::Tensor q;         // (B, D, H, W), NCHW- or channels-last-contiguous
  at::Tensor k_cl;      // (B, h, w, D) contiguous
  at::Tensor v;         // (B, C, h, w) contiguous
  at::Tensor v_cl;      // (B, h, w, C) contiguous
  at::Tensor lse;       // (B, N, H, W) accumulation dtype: forward output, backward input
  at::Tensor out;       // forward: (B, C, H, W) contiguous
  at::Tensor grad_out;  // backward: (B, C, H, W) contiguous, q is then NCHW-contiguous
  at::Tensor delta;     // backward scratch, like lse (not the tiled kernels')
  at::Tensor dq, dk, dv;
};

// The tiled CUDA kernels' block code (common/window_tiles.h) run thread by thread
// (cpu/window_attention_tiles_cpu.cpp), given k (B, D, h, w) contiguous: forward fills out and
// lse; backward fills dq and allocates dk and dv (all contiguous). Kernels::tiled_racecheck
// also checks for races (see there).
inline bool is_tiled(Kernels k) { return k == Kernels::tiled || k == Kernels::tiled_racecheck; }
void tiled_forward(Problem& p, const at::Tensor& k);
void tiled_backward(Problem& p, const at::Tensor& k);

#define ANYUP_NECK_DECLARE_CPU_ISA(isa) \
  namespace isa {                       \
  void forward(Problem& p);             \
  void backward(Problem& p);            \
  }

ANYUP_NECK_DECLARE_CPU_ISA(base)
ANYUP_NECK_DECLARE_CPU_ISA(avx2)
ANYUP_NECK_DECLARE_CPU_ISA(avx512)

#undef ANYUP_NECK_DECLARE_CPU_ISA

}  // namespace cpu
}  // namespace anyup_neck
