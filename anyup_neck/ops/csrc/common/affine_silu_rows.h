// The CUDA kernel of affine_silu (contract in fused_ops.h), written once for the GPU
// (cuda/fused_cuda.cu) and for its CPU emulation in the tests (cpu/affine_silu_rows_cpu.cpp).
//
// The map is viewed as `rows` rows of `length` consecutive elements, so that no element needs
// an index division:
//   NCHW map:          a row is one (b, c) plane, length H * W; one scale and shift per row;
//   channels-last map: a row is one (b, pixel), length C; scale and shift change along the row.
// A thread applies the op to a run of kRun consecutive elements of a row (one vector load and
// store when the row length is a multiple of kRun and the pointers are aligned); a block is
// kThreads threads, `x` of them along a row and `y` rows, and walks the rows with a grid stride.
#pragma once

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace anyup_neck {
namespace silu_rows {

constexpr int kRun = 8;         // consecutive elements per thread
constexpr int kThreads = 256;   // threads per block

template <typename scalar_t, typename acc_t>
struct Map {
  const scalar_t* x;
  scalar_t* out;           // may be x
  const acc_t* scale;      // (B, C)
  const acc_t* shift;      // (B, C)
  int64_t rows, length;
  int64_t C, P;            // channels, pixels per image
  bool channels_last;
  bool vectors;            // runs are aligned vectors (see vectors_fit)
};

// A block's threads along a row (the power of two covering a row's runs, at most kThreads)
// and across rows.
struct BlockShape {
  int x, y;
};

ANYUP_NECK_HD BlockShape block_shape(int64_t length) {
  const int64_t runs = (length + kRun - 1) / kRun;
  int x = 1;
  while (x < runs && x < kThreads) x *= 2;
  return {x, kThreads / x};
}

template <typename scalar_t>
struct alignas(sizeof(scalar_t) * kRun) Run {
  scalar_t v[kRun];
};

// Whether every run can move as one Run: rows are whole runs and x, out are Run-aligned.
template <typename scalar_t>
bool vectors_fit(const void* x, const void* out, int64_t length) {
  const auto aligned = [](const void* p) {
    return reinterpret_cast<uintptr_t>(p) % alignof(Run<scalar_t>) == 0;
  };
  return length % kRun == 0 && aligned(x) && aligned(out);
}

// out <- silu(x * scale + shift) on elements [col, col + kRun) of row `row` (those inside it).
template <typename scalar_t, typename acc_t>
ANYUP_NECK_HD void apply_run(const Map<scalar_t, acc_t>& m, int64_t row, int64_t col) {
  const int64_t begin = row * m.length + col;
  const int count = m.length - col < kRun ? static_cast<int>(m.length - col) : kRun;
  const bool whole = m.vectors && count == kRun;
  // Every loop runs over all kRun lanes with constant trip counts (unrolled by the compiler),
  // so that the run stays in registers; lanes past the row's end are skipped.
  Run<scalar_t> run;
  if (whole) {
    run = *reinterpret_cast<const Run<scalar_t>*>(m.x + begin);
  } else {
    for (int k = 0; k < kRun; ++k) run.v[k] = k < count ? m.x[begin + k] : scalar_t(0);
  }
  // Index of (b, c) in scale and shift for the run's first element; +1 per element along a
  // channels-last row.
  const int64_t first = m.channels_last ? row / m.P * m.C + col : row;
  for (int k = 0; k < kRun; ++k) {
    const int64_t i = m.channels_last ? (k < count ? first + k : first) : first;
    const acc_t z = static_cast<acc_t>(run.v[k]) * m.scale[i] + m.shift[i];
    run.v[k] = static_cast<scalar_t>(z / (acc_t(1) + std::exp(-z)));
  }
  if (whole) {
    *reinterpret_cast<Run<scalar_t>*>(m.out + begin) = run;
  } else {
    for (int k = 0; k < kRun; ++k) {
      if (k < count) m.out[begin + k] = run.v[k];
    }
  }
}

}  // namespace silu_rows
}  // namespace anyup_neck
