// Kernels over (B, C, H, W) maps with per-(b, c) coefficients (GroupNorm + SiLU's apply pass,
// and its backward's two passes: per-channel sums, then the input gradient) and the 2-D rotary
// encoding in place. Written once for the GPU (cuda/fused_cuda.cu) and the CPU
// (cpu/channel_rows_cpu.cpp: the ops' CPU kernels, which the tests compare with the PyTorch
// formulas and the GPU with).
//
// A map is viewed as `rows` rows of `length` consecutive elements, so that no element needs an
// index division:
//   NCHW map:          a row is one (b, c) plane, length H * W; one coefficient per row;
//   channels-last map: a row is one (b, pixel), length C; the coefficient changes along the row.
// A thread applies an op to a run of kRun consecutive elements of a row (one vector load and
// store per tensor when rows are whole runs and every pointer is aligned); a block is kThreads
// threads, `x` of them along a row and `y` rows, and walks the rows with a grid stride; it calls
// op(rows, row, col) for each of its runs. The sums over pixels go by pieces instead (Pieces):
// a thread per piece. Loops over a run's lanes have constant trip counts, so that runs stay in
// registers.
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

  // Flat index of (b, c) at the first pixel.
  ANYUP_NECK_HD int64_t first_pixel_of(int64_t b, int64_t c) const {
    return channels_last ? b * P * C + c : (b * C + c) * P;
  }
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

// grad * silu'(z) at z = x * scale + shift, silu'(z) = s (1 + z (1 - s)), s = sigmoid(z): the
// gradient at the output of GroupNorm's affine step (zero where grad is zero).
template <typename acc_t>
ANYUP_NECK_HD acc_t silu_grad(acc_t x, acc_t grad, acc_t scale, acc_t shift) {
  const acc_t z = x * scale + shift;
  const acc_t s = acc_t(1) / (acc_t(1) + std::exp(-z));
  return grad * s * (acc_t(1) + z * (acc_t(1) - s));
}

// Per-(b, c) sums over a map's pixels, cut into pieces that threads sum on their own, each in
// a fixed order, of kFewestPieceRuns to kPieceRuns runs (pieces_of); the caller then adds the
// pieces of every sum in a fixed order, so results are deterministic (no atomics). Consecutive
// pieces read consecutive runs at every step (a warp reads 1 KB of each float32 tensor at once):
//   channels-last: piece (b, s, r) takes run r (channels 8r .. 8r + 7) at pixels s, s + S,
//     s + 2S, ... (S = per_row slices of each image); its lanes are 8 channels' sums, written
//     to partial (B, S, sums, C);
//   NCHW: piece (row = (b, c), j) takes runs j, j + L, j + 2L, ... of the row (L = per_row
//     pieces of each row); its lanes are added in order, written to partial (B, sums, C, L).
constexpr int64_t kPieceRuns = 64;          // the most runs of a piece
constexpr int64_t kFewestPieceRuns = 8;
constexpr int64_t kTargetPieces = 1 << 16;  // shorter pieces down to this many threads

struct Pieces {
  Rows rows;
  int64_t runs, per_row;  // runs per row; S (channels-last) or L (NCHW)

  ANYUP_NECK_HD int64_t count() const {
    return rows.channels_last ? rows.rows / rows.P * per_row * runs : rows.rows * per_row;
  }

  // The run at the first pixel of piece `piece`'s channels: its lanes (channels-last) or its
  // first lane (NCHW) at the piece's channels.
  ANYUP_NECK_HD RunAt first_pixel(int64_t piece) const {
    if (rows.channels_last)
      return run_at(rows, piece / runs / per_row * rows.P, piece % runs * kRun);
    return run_at(rows, piece / per_row, 0);
  }

  // Piece `piece`'s runs in order, visit(row, col) for each; then where its sums go: lane k of
  // sum n at partial[n * stride + at + k] (channels-last: lanes k < count), or the lanes' total
  // at partial[n * stride + at] (NCHW).
  template <typename Visit>
  ANYUP_NECK_HD void walk(int64_t piece, const Visit& visit, int64_t& at, int64_t& stride,
                          int& count) const {
    if (rows.channels_last) {
      const int64_t run = piece % runs, s = piece / runs % per_row, b = piece / runs / per_row;
#ifdef __CUDA_ARCH__
#pragma unroll 4   // the loads of several runs in flight at once
#endif
      for (int64_t pixel = s; pixel < rows.P; pixel += per_row)
        visit(b * rows.P + pixel, run * kRun);
      stride = rows.C;
      at = (b * per_row + s) * 2 * rows.C + run * kRun;
      count = rows.C - run * kRun < kRun ? static_cast<int>(rows.C - run * kRun) : kRun;
    } else {
      const int64_t j = piece % per_row, row = piece / per_row;
#ifdef __CUDA_ARCH__
#pragma unroll 4
#endif
      for (int64_t run = j; run < runs; run += per_row) visit(row, run * kRun);
      stride = rows.C * per_row;
      at = (row / rows.C * 2 * rows.C + row % rows.C) * per_row + j;
      count = 0;
    }
  }
};

// Pieces of kPieceRuns runs, shorter (down to kFewestPieceRuns) where that leaves fewer than
// kTargetPieces threads; a channels-last piece writes 16 partial sums for its runs, so longer
// pieces keep the partial buffer small against the map (1/32 of it at 64 runs).
ANYUP_NECK_HD Pieces pieces_of(const Rows& r) {
  const int64_t runs = (r.length + kRun - 1) / kRun;
  const int64_t along = r.channels_last ? r.P : runs;   // what a row's pieces share
  int64_t length = r.rows * runs / kTargetPieces;
  length = length < kFewestPieceRuns ? kFewestPieceRuns : length;
  length = length > kPieceRuns ? kPieceRuns : length;
  return {r, runs, (along + length - 1) / length};
}

// Two per-lane sums over piece `piece`'s runs, written to `partial` (see Pieces):
// terms(run, first, second) adds a run's terms into first[kRun] and second[kRun].
template <typename acc_t, typename Terms>
ANYUP_NECK_HD void sum_piece(const Pieces& pieces, int64_t piece, const Terms& terms,
                             acc_t* partial) {
  acc_t first[kRun] = {}, second[kRun] = {};
  int64_t at, stride;
  int count;
  pieces.walk(piece, [&](int64_t row, int64_t col) {
    terms(run_at(pieces.rows, row, col), first, second);
  }, at, stride, count);
  if (pieces.rows.channels_last) {
    for (int k = 0; k < kRun; ++k) {   // constant trip count: the sums stay in registers
      if (k >= count) continue;
      partial[at + k] = first[k];
      partial[stride + at + k] = second[k];
    }
    return;
  }
  acc_t total_first = acc_t(0), total_second = acc_t(0);
  for (int k = 0; k < kRun; ++k) {
    total_first += first[k];
    total_second += second[k];
  }
  partial[at] = total_first;
  partial[stride + at] = total_second;
}

// Per (b, c): sum(x - s) and sum((x - s)^2) over the pixels, s = x at the first pixel of (b, c):
// the moments of GroupNorm's statistics, shifted so that the one-pass variance keeps its
// digits when the mean is large against the spread. One piece per call (see Pieces).
template <typename scalar_t, typename acc_t>
struct ShiftedMoments {
  const scalar_t* x;
  acc_t* partial;
  Pieces pieces;

  ANYUP_NECK_HD void operator()(int64_t piece) const {
    acc_t shift[kRun];
    const Run<scalar_t> first = load(x, pieces.first_pixel(piece));
    for (int k = 0; k < kRun; ++k)
      shift[k] = static_cast<acc_t>(first.v[pieces.rows.channels_last ? k : 0]);
    sum_piece(pieces, piece, [&](const RunAt& run, acc_t* sum, acc_t* sum_sq) {
      const Run<scalar_t> v = load(x, run);
      for (int k = 0; k < kRun; ++k) {
        // past a row's end the loads give zeros, which the shift would make terms
        const acc_t d = k < run.count ? static_cast<acc_t>(v.v[k]) - shift[k] : acc_t(0);
        sum[k] += d;
        sum_sq[k] += d * d;
      }
    }, partial);
  }
};

// Per (b, g) from the (B, 2, C) shifted moments: the group's mean and 1 / sqrt(var + eps), and
// per channel of the group scale = weight rstd and shift = bias - mean scale (GroupNorm's
// affine map x scale + shift). The channels' moments combine exactly: with n pixels, channel
// c's mean, taken from the group's first shift s_0, d_c = (s_c - s_0) + S1_c / n, and its sum
// of squared deviations M_c = S2_c - S1_c^2 / n, the group's mean is s_0 + mean_c d_c and its
// sum of squared deviations sum_c M_c + n sum_c (d_c - mean_c d_c)^2 over n C/G values (no
// difference of two numbers of the mean's size). One (b, g) per call.
template <typename scalar_t, typename acc_t>
struct GroupNormCoefficients {
  const scalar_t* x;
  const acc_t *moments, *weight, *bias;
  acc_t *scale, *shift, *mean, *rstd;
  Rows rows;
  int64_t groups;
  acc_t eps;

  ANYUP_NECK_HD acc_t first(int64_t b, int64_t c) const {
    return static_cast<acc_t>(x[rows.first_pixel_of(b, c)]);
  }

  ANYUP_NECK_HD void operator()(int64_t item) const {
    const int64_t b = item / groups, per_group = rows.C / groups;
    const int64_t c0 = item % groups * per_group;
    const acc_t n = static_cast<acc_t>(rows.P), origin = first(b, c0);
    auto offset = [&](int64_t c) {   // d_c: channel c's mean from origin
      return (first(b, c) - origin) + moments[(b * 2) * rows.C + c] / n;
    };
    acc_t total = acc_t(0);
    for (int64_t c = c0; c < c0 + per_group; ++c) total += offset(c);
    const acc_t mean_offset = total / static_cast<acc_t>(per_group);
    acc_t squares = acc_t(0);
    for (int64_t c = c0; c < c0 + per_group; ++c) {
      const acc_t s1 = moments[(b * 2) * rows.C + c], s2 = moments[(b * 2 + 1) * rows.C + c];
      const acc_t deviation = offset(c) - mean_offset, within = s2 - s1 * s1 / n;
      squares += (within > acc_t(0) ? within : acc_t(0)) + n * deviation * deviation;
    }
    const acc_t group_mean = origin + mean_offset;
    const acc_t r = acc_t(1) / std::sqrt(squares / (n * static_cast<acc_t>(per_group)) + eps);
    for (int64_t c = c0; c < c0 + per_group; ++c) {
      scale[b * rows.C + c] = weight[c] * r;
      shift[b * rows.C + c] = bias[c] - group_mean * weight[c] * r;
    }
    mean[item] = group_mean;
    rstd[item] = r;
  }
};

// Per (b, c): sum(g) and sum(g * (x - center)) over the pixels (the sums of GroupNorm's input
// gradient; centred on the group's mean, the second has no cancellation when the mean is large
// against the spread), g = silu_grad(x, grad), never written; one piece per call (see Pieces),
// sums in acc_t.
template <typename scalar_t, typename acc_t>
struct AffineSiluGradSums {
  const scalar_t *x, *grad;
  const acc_t *scale, *shift, *center;
  acc_t* partial;
  Pieces pieces;

  ANYUP_NECK_HD void operator()(int64_t piece) const {
    sum_piece(pieces, piece, [&](const RunAt& run, acc_t* sum_g, acc_t* sum_gx) {
      const Run<scalar_t> v = load(x, run), d = load(grad, run);   // zero past a row's end
      for (int k = 0; k < kRun; ++k) {
        const int64_t i = run.coef(k);
        const acc_t value = static_cast<acc_t>(v.v[k]);
        const acc_t g = silu_grad(value, static_cast<acc_t>(d.v[k]), scale[i], shift[i]);
        sum_g[k] += g;
        sum_gx[k] += g * (value - center[i]);
      }
    }, partial);
  }
};

// dx <- coef_g * g + coef_x * (x - center) + coef [+ residual], g = silu_grad(x, grad)
// recomputed: GroupNorm + SiLU's input gradient, whose per-(b, c) coefficients come from
// AffineSiluGradSums, with another gradient of x (residual, or null) added in the same pass.
template <typename scalar_t, typename acc_t>
struct GroupNormSiluInputGrad {
  const scalar_t *x, *grad, *residual;
  scalar_t* dx;
  const acc_t *scale, *shift, *coef_g, *coef_x, *coef, *center;

  ANYUP_NECK_HD void operator()(const Rows& r, int64_t row, int64_t col) const {
    const RunAt at = run_at(r, row, col);
    Run<scalar_t> v = load(x, at);
    const Run<scalar_t> d = load(grad, at);
    Run<scalar_t> added{};
    if (residual != nullptr) added = load(residual, at);
    for (int k = 0; k < kRun; ++k) {
      const int64_t i = at.coef(k);
      const acc_t value = static_cast<acc_t>(v.v[k]);
      const acc_t g = silu_grad(value, static_cast<acc_t>(d.v[k]), scale[i], shift[i]);
      acc_t dx_k = coef_g[i] * g + coef_x[i] * (value - center[i]) + coef[i];
      if (residual != nullptr) dx_k += static_cast<acc_t>(added.v[k]);
      v.v[k] = static_cast<scalar_t>(dx_k);
    }
    store(dx, at, v);
  }
};

// x <- its 2-D rotary encoding, in place: at pixel (i, j) the channel pair (d, e = d + D/2)
// turns by the angles a = row_angle[i, .] + col_angle[j, .]:
//   x_d <- x_d cos(a_d) - x_e sin(a_d),  x_e <- x_e cos(a_e) + x_d sin(a_e),
// or with `transpose` by the transposed map (the backward's):
//   x_d <- x_d cos(a_d) + x_e sin(a_e),  x_e <- x_e cos(a_e) - x_d sin(a_d);
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
  bool transpose;

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
      x1.v[k] = static_cast<scalar_t>(transpose ? a * cos1 + b * sin2 : a * cos1 - b * sin1);
      x2.v[k] = static_cast<scalar_t>(transpose ? b * cos2 - a * sin1 : b * cos2 + a * sin2);
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
