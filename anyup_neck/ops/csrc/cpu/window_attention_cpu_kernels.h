// CPU kernels of the window-attention op (float32 and float64), parallel with at::parallel_for.
// Included once per instruction set by cpu/kernels_{base,avx2,avx512}.cpp (see isa_target.h).
//
// Forward and the backward "pixel pass" take chunks of up to kChunk consecutive pixels of one
// output row, in segments of kSegment pixels. The forward's softmax runs for a segment's pixels
// at once, one per SIMD lane (segment_softmax; the op's kernels="per_pixel" runs the shared
// per-query math of window_attention_math.h instead, pixel by pixel, as the CUDA kernel does);
// the pixel pass's dq terms come from the shared math. The loops over the C value channels then
// run across a segment's pixels against the union of their windows, so they vectorise, and each
// chunk reads and writes whole runs of NCHW rows.
// The backward "key pass" takes a band of key rows at a time and walks the same chunks and
// segments with each segment's span cut to the band: logits and dw for 16 pixels at once (as the
// pixel pass), the weights and ds of each (pixel, key) pair from the stored lse and delta, then
// register-blocked sums of w * g and ds * q into the band's dv and dk. (The CUDA kernel runs the
// shared key_backward_row instead; backward_keys_shared runs it on the CPU, for the tests, when
// kernels="per_pixel".) No thread writes what
// another writes and every sum runs in a fixed order, whatever the band height or thread count:
// results are deterministic.

#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../common/window_attention.h"
#include "isa_target.h"
#include "window_attention_cpu.h"

WA_BEGIN_TARGET

#include "../common/window_attention_math.h"
#include "vector_blocks.h"

namespace anyup_neck {
namespace cpu {
namespace WA_ISA {
namespace {

constexpr int64_t kSegment = kLanes;  // pixels whose value sums run together (SIMD lanes)
constexpr int64_t kChunk = 256;   // pixels of one row per unit of parallel work
constexpr int kScratch = 4096;    // per-query scratch of the shared math, in acc_t elements

using wa::KeyCursor;
using wa::Window;

template <typename scalar_t>
using acc_type = at::opmath_type<scalar_t>;

int64_t chunks_per_row(const Problem& p) { return (p.W + kChunk - 1) / kChunk; }

// Pixels j0 .. j0 + count - 1 of row i of batch element b.
struct Chunk {
  int64_t b, i, j0, count;

  Chunk(const Problem& p, int64_t item) {
    const int64_t per_row = chunks_per_row(p);
    b = item / (p.H * per_row);
    i = (item / per_row) % p.H;
    j0 = (item % per_row) * kChunk;
    count = std::min(kChunk, p.W - j0);
  }

  int64_t pixel(const Problem& p, int64_t t) const { return i * p.W + j0 + t; }
};

// Pixels t0 .. t0 + count - 1 of a chunk and the union of their windows: the rows are shared
// and column windows never move left as j grows.
struct Segment {
  int64_t t0, count;
  Window span;

  Segment(const Problem& p, const Chunk& chunk, int64_t first) : t0(first) {
    count = std::min(kSegment, chunk.count - t0);
    const int64_t j = chunk.j0 + t0;
    span = wa::query_window(chunk.i, j, p.H, p.W, p.h, p.w, p.ratio);
    span.col1 = wa::query_window(chunk.i, j + count - 1, p.H, p.W, p.h, p.w, p.ratio).col1;
  }

  // Index of key (row, col) for segment pixel t in a [span key][kSegment] buffer.
  int64_t slot(int64_t row, int64_t col, int64_t t) const {
    return ((row - span.row0) * span.cols() + col - span.col0) * kSegment + t;
  }
  int64_t slots() const { return span.size() * kSegment; }
  // Offset (y * w + x) of the span's key number u, in slot order.
  int64_t key_offset(int64_t u, int64_t w) const {
    return (span.row0 + u / span.cols()) * w + span.col0 + u % span.cols();
  }
};

template <typename scalar_t>
wa::KeyMap<acc_type<scalar_t>, scalar_t> key_map(const Problem& p, int64_t b) {
  return {p.k_cl.data_ptr<scalar_t>() + b * p.h * p.w * p.D, 1, p.D, p.w,
          static_cast<int>(p.heads), p.dim, static_cast<acc_type<scalar_t>>(p.scale)};
}

// block[c * kChunk + t] = map(c, pixel t of the chunk) for every channel, zero past the chunk's
// end (so that whole segments can be read); map is NCHW- or channels-last-contiguous.
template <typename scalar_t, typename acc_t>
void load_rows(const Problem& p, const Chunk& chunk, const at::Tensor& map, acc_t* block) {
  const Layout l = layout_of(map);
  const scalar_t* rows = map.data_ptr<scalar_t>() + chunk.b * l.batch + chunk.pixel(p, 0) * l.pixel;
  for (int64_t c = 0; c < map.size(1); ++c)
    for (int64_t t = 0; t < kChunk; ++t)
      block[c * kChunk + t] =
          t < chunk.count ? static_cast<acc_t>(rows[c * l.channel + t * l.pixel]) : acc_t(0);
}

// tile[c * kChunk + t] for c < C, t < count -> map(c, pixel t of the chunk), NCHW map.
template <typename scalar_t, typename acc_t>
void store_rows(const Problem& p, const Chunk& chunk, int64_t C, const acc_t* tile,
                const at::Tensor& map) {
  const int64_t HW = p.H * p.W;
  scalar_t* rows = map.data_ptr<scalar_t>() + chunk.b * C * HW + chunk.pixel(p, 0);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t t = 0; t < chunk.count; ++t)
      rows[c * HW + t] = static_cast<scalar_t>(tile[c * kChunk + t]);
}

// Calls fn(value_ptr, u) for the span's keys in slot order; value_ptr = v + key offset.
template <typename scalar_t, typename Fn>
void for_span_keys(const Segment& seg, int64_t w, const scalar_t* v, Fn&& fn) {
  int64_t u = 0;
  for (int64_t y = seg.span.row0; y < seg.span.row1; ++y)
    for (int64_t x = seg.span.col0; x < seg.span.col1; ++x, ++u) fn(v + y * w + x, u);
}

// tile[c * kChunk + seg.t0 + t] = sum_u v(c, u) * weights[u][t] for channels [c0, c0 + kBlock),
// from channels-last values v_cl[key * C + c]: per span key, one load of its kSegment weights
// and kBlock broadcasts from one contiguous run of channels, for kBlock multiply-adds.
template <int64_t kBlock, typename scalar_t, typename acc_t>
void weighted_sum_block(const Segment& seg, int64_t w, int64_t C, const scalar_t* v_cl,
                        int64_t c0, const acc_t* weights, acc_t* tile) {
  using L = Lanes<acc_t>;
  typename L::type acc[kBlock] = {};
  const acc_t* wu = weights;
  for (int64_t y = seg.span.row0; y < seg.span.row1; ++y) {
    const scalar_t* value = v_cl + (y * w + seg.span.col0) * C + c0;
    for (int64_t x = seg.span.col0; x < seg.span.col1; ++x, value += C, wu += kSegment) {
      typename L::type weight;
      L::load(weight, wu);
#pragma GCC unroll 32  // keeps acc[] in registers
      for (int64_t b = 0; b < kBlock; ++b) acc[b] += static_cast<acc_t>(value[b]) * weight;
    }
  }
  for (int64_t b = 0; b < kBlock; ++b) L::store(acc[b], tile + (c0 + b) * kChunk + seg.t0);
}

// weighted_sum_block over channels [c0, C): blocks of kBlock, the rest in halving blocks.
template <int64_t kBlock, typename scalar_t, typename acc_t>
void weighted_sums(const Segment& seg, int64_t w, int64_t C, const scalar_t* v_cl, int64_t c0,
                   const acc_t* weights, acc_t* tile) {
  for (; c0 + kBlock <= C; c0 += kBlock)
    weighted_sum_block<kBlock>(seg, w, C, v_cl, c0, weights, tile);
  if constexpr (kBlock > 1) weighted_sums<kBlock / 2>(seg, w, C, v_cl, c0, weights, tile);
}

// dws[u][t] = sum_c v(c, u) * grads[c * kChunk + seg.t0 + t] for span keys [u0, u0 + kBlock),
// from channels-last values v_cl[key * C + c] (contiguous per key, so that the kBlock keys'
// channels stream through the cache instead of striding by whole maps).
template <int64_t kBlock, typename scalar_t, typename acc_t>
void value_dot_block(const Segment& seg, int64_t w, int64_t C, const scalar_t* v_cl, int64_t u0,
                     const acc_t* grads, acc_t* dws) {
  using L = Lanes<acc_t>;
  const scalar_t* keys[kBlock];
  for (int64_t b = 0; b < kBlock; ++b) keys[b] = v_cl + seg.key_offset(u0 + b, w) * C;
  typename L::type acc[kBlock] = {};
  for (int64_t c = 0; c < C; ++c) {
    typename L::type gc;
    L::load(gc, grads + c * kChunk + seg.t0);
#pragma GCC unroll 32  // keeps acc[] in registers
    for (int64_t b = 0; b < kBlock; ++b) acc[b] += static_cast<acc_t>(keys[b][c]) * gc;
  }
  for (int64_t b = 0; b < kBlock; ++b) L::store(acc[b], dws + (u0 + b) * kSegment);
}

// value_dot_block over span keys [u0, span size): blocks of kBlock, the rest in halving blocks.
template <int64_t kBlock, typename scalar_t, typename acc_t>
void value_dots(const Segment& seg, int64_t w, int64_t C, const scalar_t* v_cl, int64_t u0,
                const acc_t* grads, acc_t* dws) {
  for (; u0 + kBlock <= seg.span.size(); u0 += kBlock)
    value_dot_block<kBlock>(seg, w, C, v_cl, u0, grads, dws);
  if constexpr (kBlock > 1) value_dots<kBlock / 2>(seg, w, C, v_cl, u0, grads, dws);
}

// table[(u * N + n) * kSegment + t] = logit of segment pixel t, head n, against span key u:
// KeyMap::logits' sums (channel order, then the scale) for all kSegment pixels at once, from
// the chunk's queries (queries[c * kChunk + t]) and channels-last keys, for span keys
// [u0, u0 + kBlock): each query load serves kBlock keys, whose sums are independent chains.
template <int64_t kBlock, typename scalar_t, typename acc_t>
void segment_logits_block(const Problem& p, const Segment& seg,
                          const wa::KeyMap<acc_t, scalar_t>& keys, const acc_t* queries,
                          int64_t u0, acc_t* table) {
  using L = Lanes<acc_t>;
  const scalar_t* key[kBlock];
  for (int64_t b = 0; b < kBlock; ++b) key[b] = keys.data + seg.key_offset(u0 + b, p.w) * p.D;
  for (int64_t n = 0; n < p.heads; ++n) {
    typename L::type acc[kBlock] = {};
    for (int64_t e = n * p.dim; e < (n + 1) * p.dim; ++e) {
      typename L::type q;
      L::load(q, queries + e * kChunk + seg.t0);
#pragma GCC unroll 32  // keeps acc[] in registers
      for (int64_t b = 0; b < kBlock; ++b) acc[b] += q * static_cast<acc_t>(key[b][e]);
    }
    for (int64_t b = 0; b < kBlock; ++b) {
      acc[b] = keys.scale * acc[b];
      L::store(acc[b], table + ((u0 + b) * p.heads + n) * kSegment);
    }
  }
}

// segment_logits_block over span keys [u0, span size): blocks of kBlock, the rest in halving
// blocks.
template <int64_t kBlock, typename scalar_t, typename acc_t>
void segment_logits(const Problem& p, const Segment& seg, const wa::KeyMap<acc_t, scalar_t>& keys,
                    const acc_t* queries, int64_t u0, acc_t* table) {
  for (; u0 + kBlock <= seg.span.size(); u0 += kBlock)
    segment_logits_block<kBlock>(p, seg, keys, queries, u0, table);
  if constexpr (kBlock > 1) segment_logits<kBlock / 2>(p, seg, keys, queries, u0, table);
}

// The logits provider of the shared per-query functions for segment pixel t: reads the table.
template <typename acc_t>
struct TableLogits {
  const Segment& seg;
  const acc_t* table;
  int64_t heads, t;
  // Copies the run one window row at a time (consecutive slots of the table).
  void operator()(KeyCursor cursor, int64_t count, acc_t* s, int64_t s_stride) const {
    for (int64_t k = 0; k < count;) {
      const int64_t run = std::min(count - k, cursor.col1 - cursor.col);
      const acc_t* entry = table + seg.slot(cursor.row, cursor.col, 0) * heads + t;
      for (int64_t n = 0; n < heads; ++n)
        for (int64_t r = 0; r < run; ++r)
          s[n * s_stride + k + r] = entry[(r * heads + n) * kSegment];
      k += run;
      cursor.advance(run);
    }
  }
};

// Keys in the largest span of any segment (spans depend on the row and on the segment's place
// in its row, not on the batch element): sizes the per-segment buffers once.
int64_t max_span_size(const Problem& p) {
  int64_t rows = 0, cols = 0;
  for (int64_t i = 0; i < p.H; ++i) {
    int64_t row0, row1;
    wa::window_bounds(i, p.H, p.h, p.ratio, row0, row1);
    rows = std::max(rows, row1 - row0);
  }
  for (int64_t item = 0; item < chunks_per_row(p); ++item) {
    const Chunk chunk(p, item);
    for (int64_t t0 = 0; t0 < chunk.count; t0 += kSegment)
      cols = std::max(cols, Segment(p, chunk, t0).span.cols());
  }
  return rows * cols;
}

// weights[seg.slot(key, t)] = head-averaged weight of segment pixel t for each key of its
// window, from the shared per-query softmax over the logits table; writes the pixels' lse.
// Slots outside a pixel's window are left as they are (zero).
template <typename acc_t>
void segment_weights(const Problem& p, const Chunk& chunk, const Segment& seg,
                     const acc_t* table, acc_t* lse, acc_t* weights) {
  const int64_t HW = p.H * p.W;
  for (int64_t t = 0; t < seg.count; ++t) {
    auto sink = [&](KeyCursor cursor, int64_t count, const acc_t* wts) {
      for (int64_t u = 0; u < count; ++u, cursor.next())
        weights[seg.slot(cursor.row, cursor.col, t)] = wts[u];
    };
    const int64_t pixel = seg.t0 + t;
    const Window win = wa::query_window(chunk.i, chunk.j0 + pixel, p.H, p.W, p.h, p.w, p.ratio);
    const TableLogits<acc_t> logits{seg, table, p.heads, t};
    wa::forward_query<kScratch>(static_cast<int>(p.heads), logits, win,
                                lse + chunk.b * p.heads * HW + chunk.pixel(p, pixel), HW, sink);
  }
}

// The same weights and lse as segment_weights, for the segment's kSegment pixels at once (one
// per SIMD lane) instead of pixel by pixel: the pixels share the span's rows, so a pixel's window
// is the span with its own columns; keys outside it are masked. Per head, the maximum over the
// window, exp(s - max) written over the table (zero where masked), their sum in key order and
// lse = max + log(sum); then each slot's weight sum_n e_n / (N sum_n), heads in order. Lanes past
// the segment's end take its last pixel's window (finite values, never stored).
template <typename acc_t>
void segment_softmax(const Problem& p, const Chunk& chunk, const Segment& seg, acc_t* table,
                     acc_t* lse, acc_t* inv, acc_t* weights) {
  const int64_t N = p.heads, HW = p.H * p.W, cols = seg.span.cols(), keys = seg.span.size();
  int64_t col0[kSegment], col1[kSegment];  // each lane's window columns
  for (int64_t t = 0; t < kSegment; ++t) {
    const int64_t j = chunk.j0 + seg.t0 + std::min(t, seg.count - 1);
    wa::window_bounds(j, p.W, p.w, p.ratio, col0[t], col1[t]);
  }
  const auto column = [&](int64_t u) { return seg.span.col0 + u % cols; };
  for (int64_t n = 0; n < N; ++n) {
    acc_t top[kSegment], sum[kSegment];
    for (int64_t t = 0; t < kSegment; ++t) top[t] = -static_cast<acc_t>(INFINITY);
    for (int64_t u = 0; u < keys; ++u) {
      const acc_t* s = table + (u * N + n) * kSegment;
      const int64_t x = column(u);
      for (int64_t t = 0; t < kSegment; ++t)
        top[t] = x >= col0[t] && x < col1[t] ? wa::max_(top[t], s[t]) : top[t];
    }
    for (int64_t t = 0; t < kSegment; ++t) sum[t] = acc_t(0);
    for (int64_t u = 0; u < keys; ++u) {
      acc_t* s = table + (u * N + n) * kSegment;
      const int64_t x = column(u);
      for (int64_t t = 0; t < kSegment; ++t) {
        const acc_t e = wa::exp_(s[t] - top[t]);
        s[t] = x >= col0[t] && x < col1[t] ? e : acc_t(0);
        sum[t] += s[t];
      }
    }
    acc_t* lse_n = lse + (chunk.b * N + n) * HW + chunk.pixel(p, seg.t0);
    for (int64_t t = 0; t < seg.count; ++t) lse_n[t] = top[t] + wa::log_(sum[t]);
    for (int64_t t = 0; t < kSegment; ++t)
      inv[n * kSegment + t] = acc_t(1) / (static_cast<acc_t>(N) * sum[t]);
  }
  for (int64_t u = 0; u < keys; ++u) {
    const acc_t* e = table + u * N * kSegment;
    acc_t* w = weights + u * kSegment;
    for (int64_t t = 0; t < kSegment; ++t) w[t] = e[t] * inv[t];
    for (int64_t n = 1; n < N; ++n)
      for (int64_t t = 0; t < kSegment; ++t) w[t] += e[n * kSegment + t] * inv[n * kSegment + t];
  }
}

template <typename scalar_t>
void forward_kernel(Problem& p) {
  using acc_t = acc_type<scalar_t>;
  constexpr int64_t kLogitsBlock = register_block<acc_t>(8), kSumBlock = register_block<acc_t>(24);
  const int64_t span_limit = max_span_size(p);
  acc_t* lse = p.lse.data_ptr<acc_t>();
  at::parallel_for(0, p.B * p.H * chunks_per_row(p), 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> queries(kChunk * p.D), tile(kChunk * p.C);
    std::vector<acc_t> weights(span_limit * kSegment), table(span_limit * kSegment * p.heads);
    std::vector<acc_t> inv(p.heads * kSegment);
    for (int64_t item = begin; item < end; ++item) {
      const Chunk chunk(p, item);
      const auto keys = key_map<scalar_t>(p, chunk.b);
      const scalar_t* v_cl = p.v_cl.data_ptr<scalar_t>() + chunk.b * p.h * p.w * p.C;
      load_rows<scalar_t>(p, chunk, p.q, queries.data());
      for (int64_t t0 = 0; t0 < chunk.count; t0 += kSegment) {
        const Segment seg(p, chunk, t0);
        segment_logits<kLogitsBlock>(p, seg, keys, queries.data(), 0, table.data());
        if (p.kernels == Kernels::per_pixel) {
          std::fill_n(weights.begin(), seg.slots(), acc_t(0));
          segment_weights(p, chunk, seg, table.data(), lse, weights.data());
        } else {
          segment_softmax(p, chunk, seg, table.data(), lse, inv.data(), weights.data());
        }
        weighted_sums<kSumBlock>(seg, p.w, p.C, v_cl, 0, weights.data(), tile.data());
      }
      store_rows<scalar_t>(p, chunk, p.C, tile.data(), p.out);
    }
  });
}

// dq[c] += sum_k ds[(c / dim) * stride + k] * key_k[c] over a run of `count` keys from cursor
// (in key order), for D = kBlocks * kSegment channels and heads of lanes_per_head Lanes: dq stays
// in registers through the run.
constexpr int64_t kDqLanes = 8;
template <int64_t kBlocks, typename acc_t, typename scalar_t>
void dq_terms(const wa::KeyMap<acc_t, scalar_t>& keys, int64_t lanes_per_head, KeyCursor cursor,
              int64_t count, const acc_t* ds, int64_t stride, acc_t* dq) {
  using L = Lanes<acc_t>;
  typename L::type acc[kBlocks];
  for (int64_t b = 0; b < kBlocks; ++b) L::load(acc[b], dq + b * kSegment);
  for (int64_t k = 0; k < count; ++k, cursor.next()) {
    const scalar_t* key = keys.at(cursor.row, cursor.col);
#pragma GCC unroll 32
    for (int64_t b = 0; b < kBlocks; ++b) {
      typename L::type kb;
      for (int64_t l = 0; l < kSegment; ++l) kb[l] = static_cast<acc_t>(key[b * kSegment + l]);
      acc[b] += ds[(b / lanes_per_head) * stride + k] * kb;
    }
  }
  for (int64_t b = 0; b < kBlocks; ++b) L::store(acc[b], dq + b * kSegment);
}

// Pixel pass: delta (B, N, H, W) and dq (B, D, H, W).
template <typename scalar_t>
void backward_pixels(Problem& p) {
  using acc_t = acc_type<scalar_t>;
  const int64_t HW = p.H * p.W, hw = p.h * p.w;
  const acc_t* lse = p.lse.data_ptr<acc_t>();
  acc_t* delta = p.delta.data_ptr<acc_t>();
  at::parallel_for(0, p.B * p.H * chunks_per_row(p), 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> queries(kChunk * p.D), grads(kChunk * p.C), dq_tile(kChunk * p.D);
    std::vector<acc_t> dq_p(p.D), dws, table;
    for (int64_t item = begin; item < end; ++item) {
      const Chunk chunk(p, item);
      const auto keys = key_map<scalar_t>(p, chunk.b);
      const scalar_t* v_cl = p.v_cl.data_ptr<scalar_t>() + chunk.b * hw * p.C;
      load_rows<scalar_t>(p, chunk, p.q, queries.data());
      load_rows<scalar_t>(p, chunk, p.grad_out, grads.data());
      for (int64_t t0 = 0; t0 < chunk.count; t0 += kSegment) {
        const Segment seg(p, chunk, t0);
        dws.resize(seg.slots());
        table.resize(seg.slots() * p.heads);
        segment_logits<register_block<acc_t>(8)>(p, seg, keys, queries.data(), 0, table.data());
        value_dots<register_block<acc_t>(8)>(seg, p.w, p.C, v_cl, 0, grads.data(), dws.data());
        for (int64_t t = 0; t < seg.count; ++t) {
          const int64_t pix = t0 + t;
          std::fill(dq_p.begin(), dq_p.end(), acc_t(0));
          auto dw = [&](int64_t row, int64_t col) { return dws[seg.slot(row, col, t)]; };
          auto sink = [&](KeyCursor cursor, int64_t count, const acc_t* ds, int64_t stride) {
            if (p.D == kDqLanes * kSegment && p.dim % kSegment == 0) {
              dq_terms<kDqLanes>(keys, p.dim / kSegment, cursor, count, ds, stride, dq_p.data());
              return;
            }
            for (int64_t k = 0; k < count; ++k, cursor.next()) {
              const scalar_t* key = keys.at(cursor.row, cursor.col);
              for (int64_t n = 0; n < p.heads; ++n) {
                const acc_t coef = ds[n * stride + k];
                for (int64_t e = n * p.dim; e < (n + 1) * p.dim; ++e)
                  dq_p[e] += coef * static_cast<acc_t>(key[e]);
              }
            }
          };
          const Window win = wa::query_window(chunk.i, chunk.j0 + pix, p.H, p.W, p.h, p.w,
                                              p.ratio);
          const int64_t stat = chunk.b * p.heads * HW + chunk.pixel(p, pix);
          const TableLogits<acc_t> logits{seg, table.data(), p.heads, t};
          wa::backward_query<kScratch>(static_cast<int>(p.heads), keys.scale, logits, win,
                                       lse + stat, HW, dw, delta + stat, HW, sink);
          for (int64_t c = 0; c < p.D; ++c) dq_tile[c * kChunk + pix] = dq_p[c];
        }
      }
      store_rows<scalar_t>(p, chunk, p.D, dq_tile.data(), p.dq);
    }
  });
}

// to[t * C + c] = from[c * kChunk + t] for t < count, c < C, in kSegment x kSegment tiles (a
// plain row-by-column copy strides by whole chunk rows and thrashes the cache's sets).
template <typename acc_t>
void transpose_rows(int64_t C, int64_t count, const acc_t* from, acc_t* to) {
  for (int64_t c0 = 0; c0 < C; c0 += kSegment) {
    const int64_t c1 = std::min(C, c0 + kSegment);
    for (int64_t t0 = 0; t0 < count; t0 += kSegment) {
      const int64_t t1 = std::min(count, t0 + kSegment);
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t c = c0; c < c1; ++c) to[t * C + c] = from[c * kChunk + t];
    }
  }
}

// Key pass: dk (B, D, h, w) and dv (B, C, h, w). One work item is a band of key rows of one batch
// element; it walks the output rows that see the band chunk by chunk, segment by segment (as the
// pixel pass does, with the segment's span cut to the band), recomputes each (pixel, key)
// pair's weights and ds from the logits, lse and delta, and adds w * g and ds * q to the band's
// accumulators. Each gradient element is one serial sum over output rows, then pixels in row
// order, whatever the band height or thread count: results are deterministic.
template <typename scalar_t>
void backward_keys(Problem& p) {
  using acc_t = acc_type<scalar_t>;
  const int64_t HW = p.H * p.W, hw = p.h * p.w, N = p.heads;
  // dv: 2 keys x up to 12 Lanes of channels; dk: up to 8 keys x the head's Lanes (2 for 32
  // channels per head, else single Lanes and the rest channel by channel).
  constexpr int64_t kDvBlock = std::min<int64_t>(12, std::max<int64_t>(1, accumulate_registers<acc_t>() / 2));
  constexpr int64_t kDkKeys = std::min<int64_t>(8, std::max<int64_t>(1, accumulate_registers<acc_t>() / 2));
  // Band height: up to 8 key rows (each chunk's rows are then read once for the band), fewer
  // when that leaves too few work items for the threads. Does not change any result.
  const int64_t threads = at::get_num_threads();
  int64_t band = 8;
  while (band > 1 && p.B * ((p.h + band - 1) / band) < 4 * threads) band /= 2;
  const int64_t bands = (p.h + band - 1) / band;
  const int64_t span_limit = max_span_size(p);
  const acc_t* lse_all = p.lse.data_ptr<acc_t>();
  const acc_t* delta_all = p.delta.data_ptr<acc_t>();
  const acc_t inv_heads = acc_t(1) / static_cast<acc_t>(N);
  at::parallel_for(0, p.B * bands, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> queries(kChunk * p.D), grads(kChunk * p.C), q_t(kChunk * p.D),
        g_t(kChunk * p.C);
    std::vector<acc_t> dk(band * p.w * p.D), dv(band * p.w * p.C);
    std::vector<acc_t> table(span_limit * kSegment * N), dws(span_limit * kSegment),
        wts(span_limit * kSegment), ds(span_limit * kSegment * N);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / bands, y0 = (item % bands) * band,
                    y1 = std::min(p.h, y0 + band);
      std::fill(dk.begin(), dk.end(), acc_t(0));
      std::fill(dv.begin(), dv.end(), acc_t(0));
      const auto keys = key_map<scalar_t>(p, b);
      const scalar_t* v_cl = p.v_cl.data_ptr<scalar_t>() + b * hw * p.C;
      int64_t i0, i1, lo, hi;
      wa::covering_range(y0, p.H, p.h, p.ratio, i0, lo);
      wa::covering_range(y1 - 1, p.H, p.h, p.ratio, hi, i1);
      for (int64_t i = i0; i < i1; ++i) {
        for (int64_t part = 0; part < chunks_per_row(p); ++part) {
          const Chunk chunk(p, (b * p.H + i) * chunks_per_row(p) + part);
          load_rows<scalar_t>(p, chunk, p.q, queries.data());
          load_rows<scalar_t>(p, chunk, p.grad_out, grads.data());
          transpose_rows(p.D, chunk.count, queries.data(), q_t.data());
          transpose_rows(p.C, chunk.count, grads.data(), g_t.data());
          for (int64_t t0 = 0; t0 < chunk.count; t0 += kSegment) {
            Segment seg(p, chunk, t0);
            seg.span.row0 = std::max(seg.span.row0, y0);
            seg.span.row1 = std::min(seg.span.row1, y1);
            if (seg.span.row0 >= seg.span.row1) continue;
            const int64_t keys_in_span = seg.span.size(), cols = seg.span.cols();
            segment_logits<register_block<acc_t>(8)>(p, seg, keys, queries.data(), 0,
                                                     table.data());
            value_dots<register_block<acc_t>(8)>(seg, p.w, p.C, v_cl, 0, grads.data(),
                                                 dws.data());
            // Per pixel: its window's columns, lse and delta.
            acc_t lse[kSegment * wa::kMaxHeads], delta[kSegment * wa::kMaxHeads];
            int64_t col0[kSegment], col1[kSegment];
            const int64_t stat = b * N * HW + chunk.pixel(p, t0);
            for (int64_t t = 0; t < kSegment; ++t) {
              const bool in = t < seg.count;
              int64_t c0 = 0, c1 = 0;
              if (in) wa::window_bounds(chunk.j0 + t0 + t, p.W, p.w, p.ratio, c0, c1);
              col0[t] = c0;
              col1[t] = c1;
              for (int64_t n = 0; n < N; ++n) {
                lse[n * kSegment + t] = in ? lse_all[stat + n * HW + t] : acc_t(0);
                delta[n * kSegment + t] = in ? delta_all[stat + n * HW + t] : acc_t(0);
              }
            }
            const acc_t coef = keys.scale * inv_heads;
            for (int64_t u = 0; u < keys_in_span; ++u) {
              const int64_t x = seg.span.col0 + u % cols;
              acc_t* wu = wts.data() + u * kSegment;
              const acc_t* dwu = dws.data() + u * kSegment;
              for (int64_t t = 0; t < kSegment; ++t) wu[t] = acc_t(0);
              for (int64_t n = 0; n < N; ++n) {
                const acc_t* su = table.data() + (u * N + n) * kSegment;
                acc_t* du = ds.data() + (n * keys_in_span + u) * kSegment;
                for (int64_t t = 0; t < kSegment; ++t) {
                  const bool in = x >= col0[t] && x < col1[t];
                  const acc_t a = in ? wa::exp_(su[t] - lse[n * kSegment + t]) : acc_t(0);
                  wu[t] += a;
                  du[t] = coef * a * (dwu[t] - delta[n * kSegment + t]);
                }
              }
              for (int64_t t = 0; t < kSegment; ++t) wu[t] *= inv_heads;
            }
            // Accumulate per span row: keys (row, span cols) are consecutive in the band buffers.
            for (int64_t row = seg.span.row0; row < seg.span.row1; ++row) {
              const int64_t u0 = (row - seg.span.row0) * cols;
              const int64_t key0 = (row - y0) * p.w + seg.span.col0;
              accumulate_rows<2, kDvBlock>(cols, seg.count, p.C, p.C, wts.data() + u0 * kSegment,
                                          kSegment, g_t.data() + t0 * p.C,
                                          dv.data() + key0 * p.C, p.C);
              for (int64_t n = 0; n < N; ++n) {
                const acc_t* coef_n = ds.data() + (n * keys_in_span + u0) * kSegment;
                const acc_t* q_n = q_t.data() + t0 * p.D + n * p.dim;
                acc_t* dk_n = dk.data() + key0 * p.D + n * p.dim;
                if (p.dim % (2 * kSegment) == 0)
                  accumulate_rows<kDkKeys, 2>(cols, seg.count, p.dim, p.D, coef_n, kSegment, q_n,
                                              dk_n, p.D);
                else
                  accumulate_rows<kDkKeys, 1>(cols, seg.count, p.dim, p.D, coef_n, kSegment, q_n,
                                              dk_n, p.D);
              }
            }
          }
        }
      }
      for (int64_t y = y0; y < y1; ++y) {
        scalar_t* dk_row = p.dk.data_ptr<scalar_t>() + b * p.D * hw + y * p.w;
        scalar_t* dv_row = p.dv.data_ptr<scalar_t>() + b * p.C * hw + y * p.w;
        const acc_t* dk_band = dk.data() + (y - y0) * p.w * p.D;
        const acc_t* dv_band = dv.data() + (y - y0) * p.w * p.C;
        for (int64_t col = 0; col < p.w; ++col) {
          for (int64_t c = 0; c < p.D; ++c)
            dk_row[c * hw + col] = static_cast<scalar_t>(dk_band[col * p.D + c]);
          for (int64_t c = 0; c < p.C; ++c)
            dv_row[c * hw + col] = static_cast<scalar_t>(dv_band[col * p.C + c]);
        }
      }
    }
  });
}

// The key pass through the shared per-key math (wa::key_backward_row, which the CUDA kernel
// runs): slower than backward_keys, kept so that the CPU tests exercise the GPU's key-pass
// arithmetic (kernels="per_pixel"). One work item is one row of keys.
template <typename scalar_t>
void backward_keys_shared(Problem& p) {
  using acc_t = acc_type<scalar_t>;
  const int64_t HW = p.H * p.W, hw = p.h * p.w;
  at::parallel_for(0, p.B * p.h, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> dk(p.w * p.D), dv(p.w * p.C);
    std::vector<int64_t> cols(2 * p.w);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / p.h, row = item % p.h;
      std::fill(dk.begin(), dk.end(), acc_t(0));
      std::fill(dv.begin(), dv.end(), acc_t(0));
      const wa::KeyPassMaps<acc_t, scalar_t> maps{
          key_map<scalar_t>(p, b),
          {p.q.data_ptr<scalar_t>() + b * p.D * HW, HW, 1},
          {p.grad_out.data_ptr<scalar_t>() + b * p.C * HW, HW, 1},
          {p.lse.data_ptr<acc_t>() + b * p.heads * HW, HW, 1},
          {p.delta.data_ptr<acc_t>() + b * p.heads * HW, HW, 1},
          {p.v.data_ptr<scalar_t>() + b * p.C * hw, hw, 1},
          p.C,
          p.W};
      for (int64_t col = 0; col < p.w; ++col)
        wa::covering_range(col, p.W, p.w, p.ratio, cols[2 * col], cols[2 * col + 1]);
      int64_t i0, i1;
      wa::covering_range(row, p.H, p.h, p.ratio, i0, i1);
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t col = 0; col < p.w; ++col) {
          const wa::KeyGrads<acc_t> grads{dk.data() + col * p.D, 1, dv.data() + col * p.C, 1,
                                          0, p.C, true};
          wa::key_backward_row<kScratch>(maps, row, col, i, cols[2 * col], cols[2 * col + 1],
                                         grads);
        }
      scalar_t* dk_row = p.dk.data_ptr<scalar_t>() + b * p.D * hw + row * p.w;
      scalar_t* dv_row = p.dv.data_ptr<scalar_t>() + b * p.C * hw + row * p.w;
      for (int64_t col = 0; col < p.w; ++col) {
        for (int64_t c = 0; c < p.D; ++c) dk_row[c * hw + col] = static_cast<scalar_t>(dk[col * p.D + c]);
        for (int64_t c = 0; c < p.C; ++c) dv_row[c * hw + col] = static_cast<scalar_t>(dv[col * p.C + c]);
      }
    }
  });
}

}  // namespace

void forward(Problem& p) {
  AT_DISPATCH_FLOATING_TYPES(p.q.scalar_type(), "window_attention_forward_cpu",
                             [&] { forward_kernel<scalar_t>(p); });
}

void backward(Problem& p) {
  AT_DISPATCH_FLOATING_TYPES(p.q.scalar_type(), "window_attention_backward_cpu", [&] {
    backward_pixels<scalar_t>(p);
    if (p.kernels == Kernels::per_pixel)
      backward_keys_shared<scalar_t>(p);
    else
      backward_keys<scalar_t>(p);
  });
}

}  // namespace WA_ISA
}  // namespace cpu
}  // namespace anyup_neck

WA_END_TARGET
