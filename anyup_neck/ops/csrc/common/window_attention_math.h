// Per-query math of the window-attention op, shared by the CPU and the CUDA kernels.
//
// Every function here works on one output pixel (a "query"), one key, or one (query, key) pair,
// and is compiled for host and device from this single source, so the CPU tests exercise the
// arithmetic the GPU runs. The kernels only decide which thread handles which query or key, and
// how the weights meet the C value channels.
//
// Notation: output pixel p = (i, j) of an H x W map, keys on an h x w map, N heads of d channels
// (q and k have D = N * d channels), v has C channels. For head n and a key in p's window:
//   s_n = scale * <q_n(p), k_n(key)>      a_n = exp(s_n - lse_n(p)),  lse_n = log sum exp s_n
//   w   = (1/N) sum_n a_n                  out(p) = sum_key w(key) v(key)
// Backward, with g = dL/dout and dw = <g(p), v(key)>:
//   delta_n(p) = sum_key a_n dw            ds_n = a_n (dw - delta_n) / N
//   dq_n(p) = scale sum_key ds_n k_n(key)  dk_n(key) = scale sum_p ds_n q_n(p)
//   dv(key) = sum_p w g(p)
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "host_device.h"

#define WA_FN ANYUP_NECK_HD

// Translation units built for a specific instruction set (the CPU kernels) define WA_ISA before
// including this header, so that their copies of these inline functions get distinct symbols
// and the linker never mixes them up.
#ifndef WA_ISA
#define WA_ISA generic
#endif

namespace anyup_neck {
namespace wa {
inline namespace WA_ISA {

// Largest head count the compiled kernels accept: the per-query scratch holds 2 values per head
// plus at least one key's logits.
constexpr int kMaxHeads = 64;

// exp for float in plain arithmetic (Cephes' expf: Cody-Waite reduction, degree-5 polynomial,
// about 1 ulp), so that loops over it vectorise on the CPU and the GPU computes the same
// formula (nvcc fuses its multiply-adds, so GPU values may differ by an ulp). Arguments below
// -87.3 give exp(-87.3) ~ 1e-38 instead of a denormal or 0 (also for -inf), which no softmax
// weight can tell apart; above 88 it returns exp(88). NaN propagates through the polynomial.
// (Comparisons, not fminf/fmaxf, so that it vectorises.)
WA_FN float exp_(float x) {
  x = x < -87.33654f ? -87.33654f : x;
  x = x > 88.0f ? 88.0f : x;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float shifted = x * 1.44269504088896341f + magic;
  const float n = shifted - magic;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t exponent = static_cast<int32_t>(n) + 127;
  const uint32_t bits = static_cast<uint32_t>(exponent) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
WA_FN double exp_(double x) { return ::exp(x); }
WA_FN float log_(float x) { return logf(x); }
WA_FN double log_(double x) { return ::log(x); }
template <typename T>
WA_FN T max_(T a, T b) { return a > b ? a : b; }
template <typename T>
WA_FN T min_(T a, T b) { return a < b ? a : b; }

// ---------------------------------------------------------------------------------------------
// The window rule. Output index i of out_len sees keys [start, stop) of in_len along an axis:
//   centre = (i + 0.5) / out_len
//   start  = floor(clamp(centre - ratio, 0, 1) * in_len)     (inclusive)
//   stop   = ceil(clamp(centre + ratio, 0, 1) * in_len)      (exclusive)
// evaluated in float32 in exactly this order everywhere (here, anyup_neck/ops/windows.py, the
// dense reference): float64 arithmetic can land on the other side of an integer and move a
// window edge. ratio 0 means a global window. Rows and columns are independent, and both ends
// never decrease with i (monotone windows), which the covering ranges and the tiles rely on.

// Keys [start, stop) seen along one axis by output index `index` of `out_len`, over `in_len` keys.
WA_FN void window_bounds(int64_t index, int64_t out_len, int64_t in_len, float ratio,
                         int64_t& start, int64_t& stop) {
  if (ratio == 0.0f) {
    start = 0;
    stop = in_len;
    return;
  }
  const float centre = (static_cast<float>(index) + 0.5f) / static_cast<float>(out_len);
  const float lo = fminf(fmaxf(centre - ratio, 0.0f), 1.0f) * static_cast<float>(in_len);
  const float hi = fminf(fmaxf(centre + ratio, 0.0f), 1.0f) * static_cast<float>(in_len);
  start = static_cast<int64_t>(floorf(lo));
  stop = static_cast<int64_t>(ceilf(hi));
}

// Output indices [lo, hi) along one axis whose windows contain key `key` (empty when lo >= hi).
// Window starts and stops never decrease with the output index, so both ends are binary searches.
WA_FN void covering_range(int64_t key, int64_t out_len, int64_t in_len, float ratio,
                          int64_t& lo, int64_t& hi) {
  int64_t start, stop, a = 0, b = out_len;
  while (a < b) {  // first index whose window stops after the key
    const int64_t mid = (a + b) / 2;
    window_bounds(mid, out_len, in_len, ratio, start, stop);
    if (stop > key) b = mid; else a = mid + 1;
  }
  lo = a;
  b = out_len;
  while (a < b) {  // first index whose window starts after the key
    const int64_t mid = (a + b) / 2;
    window_bounds(mid, out_len, in_len, ratio, start, stop);
    if (start > key) b = mid; else a = mid + 1;
  }
  hi = a;
}

// Key rectangle [row0, row1) x [col0, col1) of one query.
struct Window {
  int64_t row0, row1, col0, col1;
  WA_FN int64_t cols() const { return col1 - col0; }
  WA_FN int64_t size() const { return (row1 - row0) * (col1 - col0); }
};

WA_FN Window query_window(int64_t i, int64_t j, int64_t H, int64_t W, int64_t h, int64_t w,
                          float ratio) {
  Window win;
  window_bounds(i, H, h, ratio, win.row0, win.row1);
  window_bounds(j, W, w, ratio, win.col0, win.col1);
  return win;
}

// Walks a window's keys in row-major order.
struct KeyCursor {
  int64_t row, col, col0, col1;
  WA_FN explicit KeyCursor(const Window& win)
      : row(win.row0), col(win.col0), col0(win.col0), col1(win.col1) {}
  WA_FN void next() {
    if (++col == col1) {
      col = col0;
      ++row;
    }
  }
  // `count` times next().
  WA_FN void advance(int64_t count) {
    const int64_t offset = col - col0 + count, cols = col1 - col0;
    row += offset / cols;
    col = col0 + offset % cols;
  }
};

// ---------------------------------------------------------------------------------------------
// Dot products and logits.

// <a, b> over n elements with strides, in a fixed association of 8 partial sums (vectorisable
// on the CPU, deterministic everywhere).
template <typename acc_t, typename A, typename B>
WA_FN acc_t strided_dot(const A* a, int64_t a_stride, const B* b, int64_t b_stride, int64_t n) {
  constexpr int kLanes = 8;
  acc_t part[kLanes];
  for (int l = 0; l < kLanes; ++l) part[l] = acc_t(0);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l)
      part[l] += static_cast<acc_t>(a[(i + l) * a_stride]) * static_cast<acc_t>(b[(i + l) * b_stride]);
  for (; i < n; ++i) part[0] += static_cast<acc_t>(a[i * a_stride]) * static_cast<acc_t>(b[i * b_stride]);
  return ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
}

// max_(init, x[0], ..., x[n - 1]) in 8 interleaved partial maxima: vectorisable on the CPU, and
// the same value as a serial scan (a maximum does not depend on the order).
template <typename T>
WA_FN T range_max(const T* x, int64_t n, T init) {
  constexpr int kLanes = 8;
  T part[kLanes];
  for (int l = 0; l < kLanes; ++l) part[l] = init;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) part[l] = max_(part[l], x[i + l]);
  for (; i < n; ++i) part[0] = max_(part[0], x[i]);
  return max_(max_(max_(part[0], part[4]), max_(part[1], part[5])),
              max_(max_(part[2], part[6]), max_(part[3], part[7])));
}

// x[0] + ... + x[n - 1], accumulated in acc_t, in strided_dot's fixed association of 8 partial
// sums (vectorisable on the CPU, deterministic everywhere).
template <typename T, typename acc_t = T>
WA_FN acc_t range_sum(const T* x, int64_t n) {
  constexpr int kLanes = 8;
  acc_t part[kLanes];
  for (int l = 0; l < kLanes; ++l) part[l] = acc_t(0);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) part[l] += static_cast<acc_t>(x[i + l]);
  for (; i < n; ++i) part[0] += static_cast<acc_t>(x[i]);
  return ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
}

// strided_dot, with a copy for contiguous operands that compilers turn into vector loads
// (same association, same result).
template <typename acc_t, typename A, typename B>
WA_FN acc_t dot(const A* a, int64_t a_stride, const B* b, int64_t b_stride, int64_t n) {
  if (a_stride == 1 && b_stride == 1) return strided_dot<acc_t>(a, 1, b, 1, n);
  return strided_dot<acc_t>(a, a_stride, b, b_stride, n);
}

// The key map of one batch element: element (channel c, key row y, key col x) sits at
// data[c * channel_stride + (y * width + x) * pixel_stride].
//
// A logit is s_n = scale * (q[e0] k[e0] + q[e0 + 1] k[e0 + 1] + ...) over head n's channels,
// summed in channel order everywhere: here, in the key pass below, and in the CPU kernels that
// evaluate it for 16 pixels at once, so that all paths compute the same logits.
template <typename acc_t, typename T>
struct KeyMap {
  const T* data;
  int64_t channel_stride, pixel_stride, width;
  int heads;
  int64_t dim;  // channels per head
  acc_t scale;

  WA_FN const T* at(int64_t row, int64_t col) const {
    return data + (row * width + col) * pixel_stride;
  }

  // s[n * s_stride] = the logit of head n against key (row, col); q[c * q_stride] is the
  // query's channel c.
  template <typename Q>
  WA_FN void logits(const Q* q, int64_t q_stride, int64_t row, int64_t col, acc_t* s,
                    int64_t s_stride) const {
    const T* key = at(row, col);
    for (int n = 0; n < heads; ++n) {
      acc_t sum = acc_t(0);
      for (int64_t e = n * dim; e < (n + 1) * dim; ++e)
        sum += static_cast<acc_t>(q[e * q_stride]) * static_cast<acc_t>(key[e * channel_stride]);
      s[n * s_stride] = scale * sum;
    }
  }
};

// The logits of one query, as the per-query functions below take them: logits(cursor, count,
// s, s_stride) writes head n's logit against the t-th key of the run of `count` keys from
// `cursor` on to s[n * s_stride + t] (a provider may fill runs faster than key by key).
template <typename acc_t, typename T, typename Q>
struct QueryLogits {
  const KeyMap<acc_t, T>& keys;
  const Q* q;
  int64_t q_stride;
  WA_FN void operator()(KeyCursor cursor, int64_t count, acc_t* s, int64_t s_stride) const {
    for (int64_t t = 0; t < count; ++t, cursor.next())
      keys.logits(q, q_stride, cursor.row, cursor.col, s + t, s_stride);
  }
};

// ---------------------------------------------------------------------------------------------
// Forward of one query.
//
// logits(cursor, count, s, s_stride) gives the query's logits against runs of keys (see
// QueryLogits).
// Computes the per-head softmax statistics over the window with a running maximum, writes
// lse[n * lse_stride] = log sum_key exp(s_n), and hands the head-averaged weights to the caller
// in runs of consecutive keys: sink(cursor_at_first_key, count, weights). The logits of up to
// (kScratch - 2N) / N keys are held at once; when the window fits, each logit is evaluated and
// exponentiated once, otherwise a second pass recomputes them chunk by chunk.
template <int kScratch, typename acc_t, typename Logits, typename Sink>
WA_FN void forward_query(int N, const Logits& logits, const Window& win, acc_t* lse,
                         int64_t lse_stride, Sink& sink) {
  acc_t scratch[kScratch];
  acc_t* m = scratch;          // running maximum per head
  acc_t* l = scratch + N;      // running sum of exp(s - m) per head, later 1 / (N * sum)
  acc_t* e = scratch + 2 * N;  // head-major: e[n * chunk + key]
  const int64_t chunk = (kScratch - 2 * N) / N;
  const int64_t total = win.size();
  for (int n = 0; n < N; ++n) {
    m[n] = -static_cast<acc_t>(INFINITY);
    l[n] = acc_t(0);
  }
  KeyCursor cursor(win);
  for (int64_t t0 = 0; t0 < total; t0 += chunk) {
    const int64_t count = min_(chunk, total - t0);
    logits(cursor, count, e, chunk);
    cursor.advance(count);
    for (int n = 0; n < N; ++n) {
      acc_t* row = e + n * chunk;
      const acc_t top = range_max(row, count, m[n]);
      for (int64_t t = 0; t < count; ++t) row[t] = exp_(row[t] - top);
      l[n] = l[n] * exp_(m[n] - top) + range_sum(row, count);
      m[n] = top;
    }
  }
  for (int n = 0; n < N; ++n) {
    lse[n * lse_stride] = m[n] + log_(l[n]);
    l[n] = acc_t(1) / (static_cast<acc_t>(N) * l[n]);
  }
  // Head-averaged weights of `count` keys whose exponentials are in e, written over head 0's
  // row e[0..count): sum_n e_n * l_n in head order, one head at a time across the keys (so that
  // the loops vectorise on the CPU).
  auto emit = [&](const KeyCursor& first, int64_t count) {
    for (int64_t t = 0; t < count; ++t) e[t] *= l[0];
    for (int n = 1; n < N; ++n)
      for (int64_t t = 0; t < count; ++t) e[t] += e[n * chunk + t] * l[n];
    sink(first, count, e);
  };
  if (total <= chunk) {
    emit(KeyCursor(win), total);
    return;
  }
  KeyCursor again(win);
  for (int64_t t0 = 0; t0 < total; t0 += chunk) {
    const KeyCursor first = again;
    const int64_t count = min_(chunk, total - t0);
    logits(again, count, e, chunk);
    again.advance(count);
    for (int n = 0; n < N; ++n)
      for (int64_t t = 0; t < count; ++t) e[n * chunk + t] = exp_(e[n * chunk + t] - m[n]);
    emit(first, count);
  }
}

// ---------------------------------------------------------------------------------------------
// Backward of one query (the "pixel pass").
//
// dw(row, col) returns <g(p), v(key)>. Writes delta[n * delta_stride] and hands
// ds_n * scale for runs of consecutive keys to the caller: sink(cursor, count, ds, ds_stride)
// with ds[n * ds_stride + t] for key t of the run (the caller accumulates dq from them).
template <int kScratch, typename acc_t, typename Logits, typename DW, typename Sink>
WA_FN void backward_query(int N, acc_t scale, const Logits& logits, const Window& win,
                          const acc_t* lse, int64_t lse_stride, DW& dw, acc_t* delta,
                          int64_t delta_stride, Sink& sink) {
  acc_t scratch[kScratch];
  acc_t* lse_ = scratch;           // lse per head
  acc_t* delta_ = scratch + N;     // delta per head
  acc_t* a = scratch + 2 * N;      // head-major a[n * chunk + t], then ds
  const int64_t chunk = (kScratch - 2 * N) / (N + 1);
  acc_t* dws = a + N * chunk;      // dw per key of the chunk
  const int64_t total = win.size();
  for (int n = 0; n < N; ++n) {
    lse_[n] = lse[n * lse_stride];
    delta_[n] = acc_t(0);
  }
  // Probabilities and dw of `count` keys from `first` into a and dws.
  auto fill = [&](KeyCursor cursor, int64_t count) {
    logits(cursor, count, a, chunk);
    for (int n = 0; n < N; ++n)
      for (int64_t t = 0; t < count; ++t) a[n * chunk + t] = exp_(a[n * chunk + t] - lse_[n]);
    for (int64_t t = 0; t < count; ++t, cursor.next()) dws[t] = dw(cursor.row, cursor.col);
  };
  KeyCursor cursor(win);
  for (int64_t t0 = 0; t0 < total; t0 += chunk) {
    const int64_t count = min_(chunk, total - t0);
    fill(cursor, count);
    cursor.advance(count);
    for (int n = 0; n < N; ++n)
      for (int64_t t = 0; t < count; ++t) delta_[n] += a[n * chunk + t] * dws[t];
  }
  const acc_t coef = scale / static_cast<acc_t>(N);
  KeyCursor again(win);
  for (int64_t t0 = 0; t0 < total; t0 += chunk) {
    const int64_t count = min_(chunk, total - t0);
    if (total > chunk) fill(again, count);  // a single chunk is still in place
    for (int n = 0; n < N; ++n)
      for (int64_t t = 0; t < count; ++t)
        a[n * chunk + t] = coef * a[n * chunk + t] * (dws[t] - delta_[n]);
    sink(again, count, static_cast<const acc_t*>(a), chunk);
    for (int64_t t = 0; t < count; ++t) again.next();
  }
  for (int n = 0; n < N; ++n) delta[n * delta_stride] = delta_[n];
}

// ---------------------------------------------------------------------------------------------
// Backward of one key (the "key pass").

// Per-pixel tensors of one batch element: element (channel c, pixel index p = i * W + j) at
// data[c * channel_stride + p * pixel_stride].
template <typename T>
struct PixelMap {
  T* data;
  int64_t channel_stride, pixel_stride;
  WA_FN T* at(int64_t c, int64_t p) const { return data + c * channel_stride + p * pixel_stride; }
};

// Geometry shared by all queries of a problem.
struct Geometry {
  int64_t H, W, h, w;
  float ratio;
};

// Everything the key pass reads for one batch element.
template <typename acc_t, typename T>
struct KeyPassMaps {
  KeyMap<acc_t, T> keys;
  PixelMap<const T> q, g;            // (D or C channels) x (H * W pixels)
  PixelMap<const acc_t> lse, delta;  // N x (H * W)
  PixelMap<const T> v;               // C x (h * w keys)
  int64_t C, W;
};

// Gradient accumulators of one key: dv[c * dv_stride] for c in [c_begin, c_end) and, when
// with_dk, dk[c * dk_stride] for c < D.
template <typename acc_t>
struct KeyGrads {
  acc_t* dk;
  int64_t dk_stride;
  acc_t* dv;
  int64_t dv_stride;
  int64_t c_begin, c_end;
  bool with_dk;
};

// Adds to `out` the contributions of pixels [j0, j1) of output row i (whose windows contain key
// (row, col)), in runs of up to kScratch / (N + 2) pixels, with the channel loops outermost so
// that each run reads g and q along contiguous pixels.
template <int kScratch, typename acc_t, typename T>
WA_FN void key_backward_row(const KeyPassMaps<acc_t, T>& m, int64_t row, int64_t col, int64_t i,
                            int64_t j0, int64_t j1, const KeyGrads<acc_t>& out) {
  const KeyMap<acc_t, T>& keys = m.keys;
  const int N = keys.heads;
  const int64_t D = N * keys.dim;
  acc_t scratch[kScratch];
  const int64_t run = kScratch / (N + 2);
  acc_t* dws = scratch;        // dw per pixel of the run
  acc_t* wts = scratch + run;  // head-averaged weight per pixel
  acc_t* s = wts + run;        // head-major logits s[n * run + t], then ds
  const T* key = keys.at(row, col);
  const int64_t key_index = row * keys.width + col;
  const acc_t inv_heads = acc_t(1) / static_cast<acc_t>(N);
  for (int64_t jr = j0; jr < j1; jr += run) {
    const int64_t count = min_(run, j1 - jr);
    const int64_t p0 = i * m.W + jr;
    for (int64_t t = 0; t < count; ++t) dws[t] = acc_t(0);
    if (out.with_dk) {
      for (int64_t c = 0; c < m.C; ++c) {
        const acc_t vc = static_cast<acc_t>(*m.v.at(c, key_index));
        const T* gc = m.g.at(c, p0);
        for (int64_t t = 0; t < count; ++t)
          dws[t] += vc * static_cast<acc_t>(gc[t * m.g.pixel_stride]);
      }
    }
    for (int64_t t = 0; t < N * run; ++t) s[t] = acc_t(0);
    for (int n = 0; n < N; ++n) {
      for (int64_t e = 0; e < keys.dim; ++e) {
        const int64_t c = n * keys.dim + e;
        const acc_t kc = static_cast<acc_t>(key[c * keys.channel_stride]);
        const T* qc = m.q.at(c, p0);
        for (int64_t t = 0; t < count; ++t)
          s[n * run + t] += kc * static_cast<acc_t>(qc[t * m.q.pixel_stride]);
      }
    }
    for (int n = 0; n < N; ++n)
      for (int64_t t = 0; t < count; ++t)
        s[n * run + t] = exp_(keys.scale * s[n * run + t] - *m.lse.at(n, p0 + t));
    for (int64_t t = 0; t < count; ++t) {
      acc_t weight = acc_t(0);
      for (int n = 0; n < N; ++n) weight += s[n * run + t];
      wts[t] = weight * inv_heads;
    }
    for (int64_t c = out.c_begin; c < out.c_end; ++c)
      out.dv[c * out.dv_stride] += dot<acc_t>(wts, 1, m.g.at(c, p0), m.g.pixel_stride, count);
    if (!out.with_dk) continue;
    const acc_t coef = keys.scale * inv_heads;
    for (int n = 0; n < N; ++n)
      for (int64_t t = 0; t < count; ++t)
        s[n * run + t] = coef * s[n * run + t] * (dws[t] - *m.delta.at(n, p0 + t));
    for (int64_t c = 0; c < D; ++c)
      out.dk[c * out.dk_stride] +=
          dot<acc_t>(s + (c / keys.dim) * run, 1, m.q.at(c, p0), m.q.pixel_stride, count);
  }
}

}  // namespace WA_ISA
}  // namespace wa
}  // namespace anyup_neck
