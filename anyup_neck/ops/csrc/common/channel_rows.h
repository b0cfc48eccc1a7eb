// Elementwise kernels over (B, C, H, W) maps with per-(b, c) coefficients (GroupNorm + SiLU's
// apply pass and the two full-map passes of its backward) and the 2-D rotary encoding in
// place. Written once for the GPU
// (cuda/fused_cuda.cu) and the CPU (cpu/channel_rows_cpu.cpp: the ops' CPU kernels, which the
// tests compare with the PyTorch formulas and the GPU with).
//
// A map is viewed as `rows` rows of `length` consecutive elements, so that no element needs an
// index division:
//   NCHW map:          a row is one (b, c) plane, length H * W; one coefficient per row;
//   channels-last map: a row is one (b, pixel), length C; the coefficient changes along the row.
// A thread applies an op to a run of kRun consecutive elements of a row (one vector load and
// store per tensor when rows are whole runs and every pointer is aligned); a block is kThreads
// threads, `x` of them along a row and `y` rows, and walks the rows with a grid stride; it calls
// op(rows, row, col) for each of its runs. Loops over a run's lanes have constant trip counts,
// so that runs stay in registers.
#pragma once

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace anyup_neck {
namespace channel_rows {

constexpr int kRun = 8;         // consecutive elements per thread
constexpr int kThreads = 256;   // threads per block

struct Rows {
  int64_t rows, length;
  int64_t C, P;                 // channels, pixels per image
  bool channels_last;
  bool vectors;                 // every run of a whole row moves as one Run per tensor
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

// One thread's run: flat elements [begin, begin + count), lane k's coefficients at coef(k).
struct RunAt {
  int64_t begin, first;
  int count;
  bool whole, channels_last;

  ANYUP_NECK_HD int64_t coef(int k) const {
    return channels_last ? first + (k < count ? k : 0) : first;
  }
};

// The run of row `row` starting at column `col`.
ANYUP_NECK_HD RunAt run_at(const Rows& r, int64_t row, int64_t col) {
  RunAt at;
  at.begin = row * r.length + col;
  at.count = r.length - col < kRun ? static_cast<int>(r.length - col) : kRun;
  at.whole = r.vectors && at.count == kRun;
  at.channels_last = r.channels_last;
  at.first = r.channels_last ? row / r.P * r.C + col : row;   // (b, c) of the first element
  return at;
}

template <typename T>
struct alignas(sizeof(T) * kRun) Run {
  T v[kRun];
};

template <typename T>
ANYUP_NECK_HD Run<T> load(const T* p, const RunAt& at) {
  if (at.whole) return *reinterpret_cast<const Run<T>*>(p + at.begin);
  Run<T> r;
  for (int k = 0; k < kRun; ++k) r.v[k] = k < at.count ? p[at.begin + k] : T(0);
  return r;
}

template <typename T>
ANYUP_NECK_HD void store(T* p, const RunAt& at, const Run<T>& r) {
  if (at.whole) {
    *reinterpret_cast<Run<T>*>(p + at.begin) = r;
  } else {
    for (int k = 0; k < kRun; ++k) {
      if (k < at.count) p[at.begin + k] = r.v[k];
    }
  }
}

// out <- silu(x * scale + shift).
template <typename scalar_t, typename acc_t>
struct AffineSilu {
  const scalar_t* x;
  scalar_t* out;  // may be x
  const acc_t *scale, *shift;

  ANYUP_NECK_HD void operator()(const Rows& r, int64_t row, int64_t col) const {
    const RunAt at = run_at(r, row, col);
    Run<scalar_t> v = load(x, at);
    for (int k = 0; k < kRun; ++k) {
      const int64_t i = at.coef(k);
      const acc_t z = static_cast<acc_t>(v.v[k]) * scale[i] + shift[i];
      v.v[k] = static_cast<scalar_t>(z / (acc_t(1) + std::exp(-z)));
    }
    store(out, at, v);
  }
};

// g <- grad * silu'(z), z = x * scale + shift, silu'(z) = s (1 + z (1 - s)), s = sigmoid(z):
// the gradient at the output of GroupNorm's affine step, in acc_t.
template <typename scalar_t, typename acc_t>
struct AffineSiluBackward {
  const scalar_t *x, *grad;
  acc_t* g;
  const acc_t *scale, *shift;

  ANYUP_NECK_HD void operator()(const Rows& r, int64_t row, int64_t col) const {
    const RunAt at = run_at(r, row, col);
    const Run<scalar_t> v = load(x, at), d = load(grad, at);
    Run<acc_t> out;
    for (int k = 0; k < kRun; ++k) {
      const int64_t i = at.coef(k);
      const acc_t z = static_cast<acc_t>(v.v[k]) * scale[i] + shift[i];
      const acc_t s = acc_t(1) / (acc_t(1) + std::exp(-z));
      out.v[k] = static_cast<acc_t>(d.v[k]) * s * (acc_t(1) + z * (acc_t(1) - s));
    }
    store(g, at, out);
  }
};

// dx <- coef_g * g + coef_x * x + coef: GroupNorm's input gradient from g (acc_t).
template <typename scalar_t, typename acc_t>
struct GroupNormInputGrad {
  const acc_t* g;
  const scalar_t* x;
  scalar_t* dx;
  const acc_t *coef_g, *coef_x, *coef;

  ANYUP_NECK_HD void operator()(const Rows& r, int64_t row, int64_t col) const {
    const RunAt at = run_at(r, row, col);
    const Run<acc_t> a = load(g, at);
    Run<scalar_t> v = load(x, at);
    for (int k = 0; k < kRun; ++k) {
      const int64_t i = at.coef(k);
      v.v[k] = static_cast<scalar_t>(coef_g[i] * a.v[k] +
                                     coef_x[i] * static_cast<acc_t>(v.v[k]) + coef[i]);
    }
    store(dx, at, v);
  }
};

// x <- its 2-D rotary encoding, in place: at pixel (i, j) the channel pair (d, e = d + D/2)
// turns by the angles a = row_angle[i, .] + col_angle[j, .]:
//   x_d <- x_d cos(a_d) - x_e sin(a_d),  x_e <- x_e cos(a_e) + x_d sin(a_e),
// cos and sin of each sum from the per-row and per-column tables (angle addition, no
// transcendental per element). Its rows (rotary_rows): channels-last, one per (b, pixel) of
// length D / 2, a run being 8 channels of the first half with their partners; NCHW, one per
// (b, d < D / 2) of length H * W, a run being 8 pixels of plane d and the same of plane e.
template <typename scalar_t, typename acc_t>
struct Rotary2d {
  scalar_t* x;
  const acc_t *cos_rows, *sin_rows;   // (H, D)
  const acc_t *cos_cols, *sin_cols;   // (W, D)
  int64_t D, W;

  ANYUP_NECK_HD void operator()(const Rows& r, int64_t row, int64_t col) const {
    const int64_t half = D / 2;
    RunAt first;
    first.count = r.length - col < kRun ? static_cast<int>(r.length - col) : kRun;
    first.whole = r.vectors && first.count == kRun;
    int64_t i, j, d0;                 // the run's first element: pixel (i, j), channel d0
    if (r.channels_last) {
      const int64_t pixel = row % r.P;
      i = pixel / W;
      j = pixel % W;
      d0 = col;
      first.begin = row * D + col;
    } else {
      const int64_t b = row / half;
      d0 = row % half;
      i = col / W;
      j = col % W;
      first.begin = (b * D + d0) * r.P + col;
    }
    RunAt second = first;
    second.begin += r.channels_last ? half : half * r.P;
    Run<scalar_t> x1 = load(x, first), x2 = load(x, second);
    for (int k = 0; k < kRun; ++k) {
      const int64_t d = r.channels_last ? d0 + (k < first.count ? k : 0) : d0, e = d + half;
      const acc_t *cr = cos_rows + i * D, *sr = sin_rows + i * D;
      const acc_t *cc = cos_cols + j * D, *sc = sin_cols + j * D;
      const acc_t cos1 = cr[d] * cc[d] - sr[d] * sc[d], sin1 = sr[d] * cc[d] + cr[d] * sc[d];
      const acc_t cos2 = cr[e] * cc[e] - sr[e] * sc[e], sin2 = sr[e] * cc[e] + cr[e] * sc[e];
      const acc_t a = static_cast<acc_t>(x1.v[k]), b = static_cast<acc_t>(x2.v[k]);
      x1.v[k] = static_cast<scalar_t>(a * cos1 - b * sin1);
      x2.v[k] = static_cast<scalar_t>(b * cos2 + a * sin2);
      if (!r.channels_last && k + 1 < first.count && ++j == W) {  // the next pixel
        j = 0;
        ++i;
      }
    }
    store(x, first, x1);
    store(x, second, x2);
  }
};

}  // namespace channel_rows
}  // namespace anyup_neck
