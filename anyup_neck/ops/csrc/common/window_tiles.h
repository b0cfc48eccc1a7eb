// Tiled kernels of the window-attention op, written once for the GPU and its CPU emulation.
//
// A kernel's block is a sequence of phases separated by barriers. Each phase is a function of
// the thread index, run by every thread of the block through a `run` object:
//   CUDA (cuda/window_attention_cuda.cu):      run(phase) = phase(threadIdx.x); __syncthreads()
//   CPU  (cpu/window_attention_tiles_cpu.cpp):  run(phase) = for t < kThreads: phase(t)
// over the same shared memory (dynamic shared memory on the GPU, an array on the CPU), with the
// same indexing and the same arithmetic, so the CPU tests (the op's private kernels="tiled")
// check the GPU's tile logic. What a thread keeps from one phase to the next lives in shared or
// global memory; loop bounds between phases are the same for every thread of a block.
//
// Notation as in window_attention_math.h: output pixels p of an H x W map, keys on h x w, N
// heads of d channels (D = N d for q and k), C value channels. Windows are monotone per axis
// (both ends never decrease with the output index), so a tile of output pixels, rows [i0, i1)
// x columns [j0, j1), reads only the keys of the rectangle rows [start(i0), stop(i1 - 1)) x
// columns [start(j0), stop(j1 - 1)), its "span", walked in chunks of at most kKeyChunk keys.
//
// Every block owns a tile of kTileRows x kTileCols = 64 output pixels and has 256 threads. The
// work is small matrix products through shared memory, each thread computing a 4 x 4 tile of
// the result in registers (gemm_nn, gemm_tn): per 4 x 4 tile and step along the reduced
// dimension, 8 values read from shared memory for 16 multiply-adds.
//
// Forward (forward_block). Per head n and chunk of span keys: the logits S[key][pixel] =
// <q_n(p), k_n(key)> (q and k through shared memory kQKChunk channels at a time), then the
// per-head softmax statistics of every pixel over the keys of its window (four threads per
// pixel, then their four partial maxima and sums merged in order), and the head-averaged
// weights W[key][pixel] = (1/N) sum_n exp(scale S_n - lse_n) (zero outside the window). Then
// out[c][p] = sum_key W[key][p] v(key)[c], kValueChunk channels at a time, written once in the
// inputs' dtype. A span of more than one chunk takes two walks (statistics first, then weights,
// the sums of its chunks before the last kept in out_sums); one chunk (the usual case: at most
// 64 keys at 448 from 32, ratio 0.1) takes one.
//
// Backward (pixel_block, then reduce_block). Per tile and chunk: dW[key][p] = <g(p), v(key)>,
// then per head the weights a_n, delta_n(p) = sum_key a_n dW, ds_n = scale/N a_n (dW - delta_n),
// dq_n(p) += sum_key ds_n k_n(key) (the tile's own dq), and the tile's shares of the
// key gradients, dk_n(key) = sum_{p in tile} ds_n q_n(p) and dv(key) = sum_{p in tile} W g(p),
// written to a partial-sum buffer: one row of D + C values per (tile, span key) ("slot"). A
// span of more than one chunk walks twice (delta first). reduce_block then adds, per key, the
// partial rows of the tiles whose pixels see it, in tile order, into dk | dv (channels last).
// So every pair (pixel, key) costs its logits, dW, dq, dk and dv once, each as part of a
// matrix product; nothing is recomputed per value channel. The buffer is bounded by bands of
// tile rows (band_rows: at most a tenth of the output's bytes, or one tile row), each band's
// tiles reduced, over the key rows the band sees, before the next band runs.
//
// Every output element is written by one thread, every sum runs in a fixed order, and no
// atomics are used: results are deterministic. Accumulation is in acc_t (float32 for float16,
// bfloat16 and float32; float64 for float64). Nothing of size H*W x h*w is formed.
//
// Work at 448x448 from 32x32, C = 384, D = 128, N = 4, ratio 0.1 (windows of 4 to 8 keys per
// axis, mostly 7 or 8; tile spans of at most 8 x 8 = 64 keys, 56.25 on average), batch 1; a
// FLOP is a multiply or an add; 3136 tiles:
//   forward: logits 2 x 64 x 56.25 x 128 (0.9 MFLOP per tile), weighted values
//     2 x 64 x 56.25 x 384 (2.8 MFLOP): 11.6 GFLOP, 1.15x the windows' 10.1 (the span's keys
//     outside a pixel's window are multiplied by zero weights). Traffic: the output written
//     once (308 MB); q, k and v read once per tile (k, v mostly from L2).
//   backward: dW 2.8, logits 0.9, dq 0.9, dk 0.9, dv 2.8 MFLOP per tile: 26 GFLOP (the
//     windows': 22.7); the partial rows 3136 x 56.25 x 512 x 4 B = 0.36 GB written and read
//     once, in 14 bands of 29 MB (fp32; bf16: 28 of 15 MB) (0.17 ms of traffic at 4.3 TB/s).
//   At the 4 x 4 tiles' ratio of shared-memory reads to multiply-adds the products can run at
//   a large fraction of the fp32 FMA rate (67 TFLOP/s on an H200): the floors are about 0.17
//   ms forward and 0.39 ms backward. None of it is measured on a GPU yet.
//
// Shared memory per block in bytes (*_shared_bytes), N = 4: forward 78 KB (float32), backward
// 113 KB, growing by 512 B per head; float64 doubles it. The CUDA launcher opts in to more than
// 48 KB (cudaFuncSetAttribute) and checks the device's limit.
//
// Registers: the forward and the pixel pass take 150 to 230 per thread (ptxas for sm_90; the
// figures are in README's op section), so one block of 8 warps runs per multiprocessor, though
// the shared memory would hold two; capped for two blocks, they spill. No kernel here may use
// local memory (tests/ops/test_cuda.py checks ptxas's report on every build).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <type_traits>

#include "window_attention_math.h"

namespace anyup_neck {
namespace wa {
inline namespace WA_ISA {
namespace tiles {

constexpr int kThreads = 256;                      // threads per block
constexpr int kTileRows = 8, kTileCols = 8;        // output pixels of one block
constexpr int kPixels = kTileRows * kTileCols;
constexpr int kShares = kThreads / kPixels;        // threads per pixel in the per-pixel reductions
constexpr int64_t kKeyChunk = 96;                  // span keys per chunk (a multiple of 4)
constexpr int64_t kQKChunk = 32;                   // q and k channels per operand load
constexpr int64_t kValueChunk = 64;                // v and g channels per operand load
// Row lengths of the shared arrays: [.][pixel], [.][key], [key][q/k channel]. Multiples of 4
// (rows start 16-byte aligned, for 4-wide loads), padded so that rows fall in other banks.
constexpr int64_t kPixelLd = kPixels + 4;
constexpr int64_t kKeyLd = kKeyChunk + 4;
constexpr int64_t kQKLd = kQKChunk + 4;

// Problem sizes, passed to the kernels by value.
struct Sizes {
  int64_t B, D, C, H, W, h, w, dim;
  int heads;
  float ratio;
};

// The tensors of one call. q (B, D, H, W) with element (b, e, p) at
// q[b * q_batch + e * q_channel + p * q_pixel]; k, v contiguous (B, D, h, w), (B, C, h, w), and
// channels last k_cl, v_cl (B, h, w, D), (B, h, w, C); g contiguous (B, C, H, W). The forward's
// out (B, C, H, W) and the backward's dq (B, D, H, W) are in scalar_t, each element written once
// from acc_t sums; where a tile's key span takes more than one chunk, the sums of the chunks
// before its last go through out_sums and dq_sums, of the same shapes in acc_t (null when no
// span does; they may be out and dq themselves when the types agree). The acc_t outputs: lse
// (B, N, H, W), part (the backward's partial rows of one band), kv (B, h, w, D + C: dk | dv,
// zero on entry).
template <typename scalar_t, typename acc_t>
struct Tensors {
  const scalar_t* q;
  int64_t q_batch, q_channel, q_pixel;
  const scalar_t* k;
  const scalar_t* k_cl;
  const scalar_t* v;
  const scalar_t* v_cl;
  const scalar_t* g;
  scalar_t* out;
  acc_t* out_sums;
  acc_t* lse;
  scalar_t* dq;
  acc_t* dq_sums;
  acc_t* part;
  acc_t* kv;
};

WA_FN int64_t tiles_along(int64_t length, int64_t tile) { return (length + tile - 1) / tile; }

WA_FN bool contains(const Window& win, int64_t row, int64_t col) {
  return row >= win.row0 && row < win.row1 && col >= win.col0 && col < win.col1;
}

// Keys [start(first), stop(last)) seen along one axis by output indices [first, last].
WA_FN void span_along(int64_t first, int64_t last, int64_t out_len, int64_t in_len, float ratio,
                      int64_t& start, int64_t& stop) {
  int64_t unused;
  window_bounds(first, out_len, in_len, ratio, start, unused);
  window_bounds(last, out_len, in_len, ratio, unused, stop);
}

// Widest span along one axis over the tiles of `tile` output indices.
WA_FN int64_t widest_span(int64_t out_len, int64_t in_len, float ratio, int64_t tile) {
  int64_t widest = 0;
  for (int64_t first = 0; first < out_len; first += tile) {
    int64_t start, stop;
    span_along(first, min_(first + tile, out_len) - 1, out_len, in_len, ratio, start, stop);
    widest = max_(widest, stop - start);
  }
  return widest;
}

// ---------------------------------------------------------------------------------------------
// Tiles, bands and the backward's partial rows.

// Tile rows [row0, row0 + rows) of every batch element: the blocks of one launch. slots: the
// backward's partial rows per tile (slots(s), computed once on the host: on the device it is a
// loop over H / 8 + W / 8 window bounds per thread). Key rows [key_row0, key_row0 + key_rows):
// those the band's pixels see (band_of), the blocks of its reduction.
struct Band {
  int64_t row0, rows, slots, key_row0, key_rows;
};

WA_FN Band whole_map(const Sizes& s) { return {0, tiles_along(s.H, kTileRows), 0, 0, s.h}; }

// Blocks of one tile row of every batch element; of a band (a launch of the pixel passes).
WA_FN int64_t row_blocks(const Sizes& s) { return s.B * tiles_along(s.W, kTileCols); }

WA_FN int64_t band_blocks(const Sizes& s, const Band& band) { return band.rows * row_blocks(s); }

// Partial rows per tile: the largest span (the part buffer's rows of one block).
WA_FN int64_t slots(const Sizes& s) {
  return widest_span(s.H, s.h, s.ratio, kTileRows) * widest_span(s.W, s.w, s.ratio, kTileCols);
}

// Whether every tile's key span fits one chunk (then no out_sums or dq_sums is needed).
WA_FN bool spans_fit_one_chunk(const Sizes& s) { return slots(s) <= kKeyChunk; }

// The backward's band of tile rows [row0, row0 + rows) with `slots` partial rows per tile, and
// the key rows its pixels see: windows are monotone, so those of its first and last pixel rows
// bound them.
WA_FN Band band_of(const Sizes& s, int64_t row0, int64_t rows, int64_t slots) {
  int64_t key_row0, key_stop;
  span_along(row0 * kTileRows, min_<int64_t>((row0 + rows) * kTileRows, s.H) - 1, s.H, s.h,
             s.ratio, key_row0, key_stop);
  return {row0, rows, slots, key_row0, key_stop - key_row0};
}

// Blocks of the backward's reduction of `band`: one per (batch element, key of its key rows).
WA_FN int64_t reduce_blocks(const Sizes& s, const Band& band) {
  return s.B * band.key_rows * s.w;
}

// Block `block` of `band`: a tile of output pixels and its key span. Pixel m of the tile (m <
// kPixels) is (row0 + m / kTileCols, col0 + m % kTileCols).
struct PixelTile {
  int64_t b, row0, col0, row_last, col_last;
  Window span;

  WA_FN PixelTile(const Sizes& s, const Band& band, int64_t block) {
    const int64_t across = tiles_along(s.W, kTileCols), per_batch = band.rows * across;
    b = block / per_batch;
    row0 = (band.row0 + block % per_batch / across) * kTileRows;
    col0 = block % per_batch % across * kTileCols;
    row_last = min_<int64_t>(row0 + kTileRows, s.H) - 1;
    col_last = min_<int64_t>(col0 + kTileCols, s.W) - 1;
    span_along(row0, row_last, s.H, s.h, s.ratio, span.row0, span.row1);
    span_along(col0, col_last, s.W, s.w, s.ratio, span.col0, span.col1);
  }

  // Pixel m's (i, j); false past the map's edge.
  WA_FN bool pixel(int64_t m, int64_t& i, int64_t& j) const {
    i = row0 + m / kTileCols;
    j = col0 + m % kTileCols;
    return i <= row_last && j <= col_last;
  }

  // Span key u's offset row * w + col in a key map of width w (32-bit division: spans are
  // small, and 64-bit division is a long routine on the GPU), and a cursor at span key u.
  WA_FN int64_t key_offset(int64_t u, int64_t w) const {
    const int cols = static_cast<int>(span.cols()), index = static_cast<int>(u);
    return (span.row0 + index / cols) * w + span.col0 + index % cols;
  }
  WA_FN KeyCursor cursor(int64_t u) const {
    KeyCursor c(span);
    c.advance(u);
    return c;
  }
};

// ---------------------------------------------------------------------------------------------
// 4 x 4 register tiles of small matrix products (phase bodies).

// Where the GPU moves 4 floats as one vector, their address must be 16-byte aligned (else the
// kernel stops with a misaligned-address error); the CPU emulation checks it.
template <typename T>
WA_FN void check_vector_alignment(const T* p) {
#ifndef __CUDA_ARCH__
  if (std::is_same<T, float>::value && reinterpret_cast<std::uintptr_t>(p) % 16 != 0)
    throw std::runtime_error("window_attention (tiled kernels): a 4-float vector access is not "
                             "16-byte aligned");
#endif
}

// 4 consecutive values from p (16-byte aligned): one vector load for float on the GPU.
template <typename T>
WA_FN void load4(const T* p, T* r) {
  check_vector_alignment(p);
#ifdef __CUDA_ARCH__
  if constexpr (std::is_same<T, float>::value) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    r[0] = v.x;
    r[1] = v.y;
    r[2] = v.z;
    r[3] = v.w;
  } else
#endif
  {
    for (int i = 0; i < 4; ++i) r[i] = p[i];
  }
}

// 4 values to p (16-byte aligned; in global memory when kGlobal): one vector store for float
// on the GPU (to global memory through the intrinsic: the compiler splits a plain float4
// assignment there into scalar stores).
template <bool kGlobal, typename T>
WA_FN void store4(T* p, const T* r) {
  check_vector_alignment(p);
#ifdef __CUDA_ARCH__
  if constexpr (std::is_same<T, float>::value) {
    const float4 v = make_float4(r[0], r[1], r[2], r[3]);
    if constexpr (kGlobal)
      __stcg(reinterpret_cast<float4*>(p), v);
    else
      *reinterpret_cast<float4*>(p) = v;
  } else
#endif
  {
    for (int i = 0; i < 4; ++i) p[i] = r[i];
  }
}

// A 4 x 4 tile of an M x N result: rows m(0..3), columns n(0..3).
struct Micro {
  int64_t m0, dm, n0, dn;
  WA_FN int64_t m(int i) const { return m0 + i * dm; }
  WA_FN int64_t n(int j) const { return n0 + j * dn; }
};

// Tile g of an M x N result cut into 4 x 4 tiles, with consecutive rows and columns (packed,
// for operands read along m and n), or rows and columns strided by the tile counts
// (interleaved, for operands read along the reduced dimension: a warp's rows then start in
// different banks). Threads take tiles g = t, t + kThreads, ..., m fastest.
template <bool kInterleaved>
WA_FN Micro micro_tile(int64_t g, int64_t M, int64_t N) {
  const int64_t across = tiles_along(M, 4), down = tiles_along(N, 4);
  const int64_t gm = g % across, gn = g / across;
  if (kInterleaved) return {gm, across, gn, down};
  return {4 * gm, 1, 4 * gn, 1};
}

// result = init + sum_k a[k * lda + m] b[k * ldb + n] for m < M, n < N: result.init(tile, acc)
// fills acc[4][4], result.store(tile, acc) writes it (skipping rows >= M and columns >= N, whose
// values are not meaningful: a and b are read up to M and N rounded up to 4).
template <typename acc_t, typename Result>
WA_FN void gemm_nn(int t, int64_t M, int64_t N, int64_t K, const acc_t* a, int64_t lda,
                   const acc_t* b, int64_t ldb, const Result& result) {
  for (int64_t g = t; g < tiles_along(M, 4) * tiles_along(N, 4); g += kThreads) {
    const Micro mt = micro_tile<false>(g, M, N);
    acc_t acc[4][4];
    result.init(mt, acc);
    for (int64_t k = 0; k < K; ++k) {
      acc_t av[4], bv[4];
      load4(a + k * lda + mt.m0, av);
      load4(b + k * ldb + mt.n0, bv);
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
    }
    result.store(mt, acc);
  }
}

// result = sum_k a[m * lda + k] b[n * ldb + k] for m < M, n < N, K a multiple of 4; stored as
// in gemm_nn (a has at least M rows rounded up to 4, b N).
template <typename acc_t, typename Result>
WA_FN void gemm_tn(int t, int64_t M, int64_t N, int64_t K, const acc_t* a, int64_t lda,
                   const acc_t* b, int64_t ldb, const Result& result) {
  for (int64_t g = t; g < tiles_along(M, 4) * tiles_along(N, 4); g += kThreads) {
    const Micro mt = micro_tile<true>(g, M, N);
    acc_t acc[4][4] = {};
    for (int64_t k = 0; k < K; k += 4) {
      acc_t av[4][4], bv[4][4];
      for (int i = 0; i < 4; ++i) load4(a + mt.m(i) * lda + k, av[i]);
      for (int j = 0; j < 4; ++j) load4(b + mt.n(j) * ldb + k, bv[j]);
      for (int kk = 0; kk < 4; ++kk)
        for (int i = 0; i < 4; ++i)
          for (int j = 0; j < 4; ++j) acc[i][j] += av[i][kk] * bv[j][kk];
    }
    result.store(mt, acc);
  }
}

// A result over the tile's pixels (m < kPixels) kept in shared memory as out[n * ld + m] (n <
// N); init zeroes when `fresh`, else continues the sums there. A packed tile's rows m0..m0+3
// of a column are 4 consecutive values (ld a multiple of 4): one vector each way.
template <typename acc_t>
struct SharedResult {
  acc_t* out;
  int64_t ld, N;
  bool fresh;
  WA_FN void init(const Micro& mt, acc_t (&acc)[4][4]) const {
    for (int j = 0; j < 4; ++j) {
      acc_t v[4] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0)};
      if (!fresh && mt.n(j) < N) load4(out + mt.n(j) * ld + mt.m0, v);
      for (int i = 0; i < 4; ++i) acc[i][j] = v[i];
    }
  }
  WA_FN void store(const Micro& mt, const acc_t (&acc)[4][4]) const {
    for (int j = 0; j < 4; ++j) {
      const acc_t v[4] = {acc[0][j], acc[1][j], acc[2][j], acc[3][j]};
      if (mt.n(j) < N) store4<false>(out + mt.n(j) * ld + mt.m0, v);
    }
  }
};

// A result over the tile's pixels (m) and channels [c0, c0 + N) (n) of per-pixel maps of one
// batch element (16-byte aligned), element (c, i, j) at [(c * H + i) * W + j]: init continues
// the sums in `from` (acc_t; zeros when null), store writes `to` (out_t; it may be `from`).
// Pixels past the map's edge are skipped. A packed tile's 4 pixels lie in one row of the map;
// when W is a multiple of 4 and all 4 are inside, they move as one aligned vector per channel
// (so a warp writes whole 32-byte sectors).
template <typename acc_t, typename out_t>
struct PixelMapResult {
  const acc_t* from;
  out_t* to;
  const PixelTile& tile;
  int64_t H, W, c0, N;
  WA_FN bool at(const Micro& mt, int i, int j, int64_t& index) const {
    int64_t pi, pj;
    if (mt.n(j) >= N || !tile.pixel(mt.m(i), pi, pj)) return false;
    index = ((c0 + mt.n(j)) * H + pi) * W + pj;
    return true;
  }
  // The first pixel p = i * W + j of the tile's 4 pixels when they move as one vector.
  WA_FN bool quad(const Micro& mt, int64_t& pixel) const {
    int64_t pi, pj, last_i, last_j;
    if (W % 4 != 0 || mt.dm != 1 || !tile.pixel(mt.m0 + 3, last_i, last_j)) return false;
    tile.pixel(mt.m0, pi, pj);
    pixel = pi * W + pj;
    return true;
  }
  WA_FN void init(const Micro& mt, acc_t (&acc)[4][4]) const {
    int64_t pixel;
    if (from != nullptr && quad(mt, pixel)) {
      for (int j = 0; j < 4; ++j) {
        acc_t v[4] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0)};
        if (mt.n(j) < N) load4(from + (c0 + mt.n(j)) * H * W + pixel, v);
        for (int i = 0; i < 4; ++i) acc[i][j] = v[i];
      }
      return;
    }
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        int64_t index;
        acc[i][j] = from != nullptr && at(mt, i, j, index) ? from[index] : acc_t(0);
      }
  }
  WA_FN void store(const Micro& mt, const acc_t (&acc)[4][4]) const {
    int64_t pixel;
    if (quad(mt, pixel)) {
      for (int j = 0; j < 4; ++j) {
        if (mt.n(j) >= N) continue;
        const out_t v[4] = {static_cast<out_t>(acc[0][j]), static_cast<out_t>(acc[1][j]),
                            static_cast<out_t>(acc[2][j]), static_cast<out_t>(acc[3][j])};
        store4<true>(to + (c0 + mt.n(j)) * H * W + pixel, v);
      }
      return;
    }
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        int64_t index;
        if (at(mt, i, j, index)) to[index] = static_cast<out_t>(acc[i][j]);
      }
  }
};

// use(result) with the result of channels [c0, c0 + N) of a per-pixel map for the chunk of
// `count` span keys from u0 (`total` in the span), continuing the sums of the chunks before:
// the span's last chunk into `map` (out_t), the ones before into `sums` (acc_t).
template <typename acc_t, typename out_t, typename Use>
WA_FN void chunk_result(const Sizes& s, const PixelTile& tile, int64_t u0, int64_t count,
                        int64_t total, out_t* map, acc_t* sums, int64_t c0, int64_t N,
                        const Use& use) {
  const acc_t* from = u0 == 0 ? nullptr : sums;
  if (u0 + count == total)
    use(PixelMapResult<acc_t, out_t>{from, map, tile, s.H, s.W, c0, N});
  else
    use(PixelMapResult<acc_t, acc_t>{from, sums, tile, s.H, s.W, c0, N});
}

// Partial rows (channels m < M from channel e0, span keys n < N from key u0) of one tile: row
// u0 + n of part, element e0 + m (row_length values per row).
template <typename acc_t>
struct PartialRows {
  acc_t* part;
  int64_t row_length, u0, e0, M, N;
  WA_FN void store(const Micro& mt, const acc_t (&acc)[4][4]) const {
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j)
        if (mt.m(i) < M && mt.n(j) < N)
          part[(u0 + mt.n(j)) * row_length + e0 + mt.m(i)] = acc[i][j];
  }
};

// ---------------------------------------------------------------------------------------------
// Loads into shared memory (phase bodies).

// Channels [c0, c0 + cc) of a per-pixel map (element (c, pixel p) at map[c * channel + p *
// pixel]) for the tile's pixels, into dst[c * kPixelLd + m]; zero past the map's edge.
template <typename scalar_t, typename acc_t>
WA_FN void load_pixels(const Sizes& s, const PixelTile& tile, const scalar_t* map,
                       int64_t channel, int64_t pixel, int64_t c0, int64_t cc, acc_t* dst, int t) {
  for (int64_t index = t; index < cc * kPixels; index += kThreads) {
    const int64_t c = index / kPixels, m = index % kPixels;
    int64_t i, j;
    dst[c * kPixelLd + m] =
        tile.pixel(m, i, j) ? static_cast<acc_t>(map[(c0 + c) * channel + (i * s.W + j) * pixel])
                            : acc_t(0);
  }
}

// The loads below give each thread a few keys (one key position each) and, per key, channels
// with a stride: consecutive threads read consecutive keys (channel-major maps) or channels
// (channels-last maps), and no division runs per element.
constexpr int kKeyLanes = 64, kChannelLanes = kThreads / kKeyLanes;  // channel-major maps
constexpr int kKeyRows = kThreads / 32;                              // channels-last maps

// Channels [c0, c0 + cc) of span keys [u0, u0 + count) of a channel-major key map (B, channels,
// h, w) into dst[c * ld + u].
template <typename scalar_t, typename acc_t>
WA_FN void load_keys_by_channel(const Sizes& s, const PixelTile& tile, const scalar_t* map,
                                int64_t channels, int64_t c0, int64_t cc, int64_t u0,
                                int64_t count, acc_t* dst, int64_t ld, int t) {
  const int64_t hw = s.h * s.w;
  const scalar_t* map_c = map + (tile.b * channels + c0) * hw;
  for (int64_t u = t % kKeyLanes; u < count; u += kKeyLanes) {
    const scalar_t* key = map_c + tile.key_offset(u0 + u, s.w);
    for (int64_t c = t / kKeyLanes; c < cc; c += kChannelLanes)
      dst[c * ld + u] = static_cast<acc_t>(key[c * hw]);
  }
}

// Channels [c0, c0 + cc) of span keys [u0, u0 + count) of a channels-last key map (B, h, w,
// channels) into dst[u * ld + c].
template <typename scalar_t, typename acc_t>
WA_FN void load_keys_by_key(const Sizes& s, const PixelTile& tile, const scalar_t* map,
                            int64_t channels, int64_t c0, int64_t cc, int64_t u0, int64_t count,
                            acc_t* dst, int64_t ld, int t) {
  const scalar_t* map_b = map + tile.b * s.h * s.w * channels + c0;
  for (int64_t u = t / 32; u < count; u += kKeyRows) {
    const scalar_t* key = map_b + tile.key_offset(u0 + u, s.w) * channels;
    for (int64_t c = t % 32; c < cc; c += 32) dst[u * ld + c] = static_cast<acc_t>(key[c]);
  }
}

// ---------------------------------------------------------------------------------------------
// Per-pixel walks over a chunk's keys (phase bodies).

// Thread t's share of the (pixel, key) pairs of span keys [u0, u0 + count): pixel m = t %
// kPixels, keys [count * r / kShares, count * (r + 1) / kShares) of the chunk for r = t /
// kPixels; visit(m, u, inside) with u counted from u0 and inside = the key is in the pixel's
// window (never for pixels past the map's edge).
template <typename Visit>
WA_FN void pixel_key_share(const Sizes& s, const PixelTile& tile, int t, int64_t u0,
                           int64_t count, const Visit& visit) {
  const int m = t % kPixels, r = t / kPixels;
  int64_t i, j;
  const bool valid = tile.pixel(m, i, j);
  const Window win = query_window(valid ? i : 0, valid ? j : 0, s.H, s.W, s.h, s.w, s.ratio);
  const int64_t first = count * r / kShares, last = count * (r + 1) / kShares;
  KeyCursor key = tile.cursor(u0 + first);
  for (int64_t u = first; u < last; ++u, key.next())
    visit(m, u, valid && contains(win, key.row, key.col));
}

// Merges a running (maximum, sum of exp(x - maximum)) pair with another (empty when sum == 0).
template <typename acc_t>
WA_FN void merge_softmax(acc_t& top, acc_t& sum, acc_t other_top, acc_t other_sum) {
  if (other_sum == acc_t(0)) return;
  if (sum == acc_t(0)) {
    top = other_top;
    sum = other_sum;
    return;
  }
  const acc_t m = max_(top, other_top);
  sum = sum * exp_(top - m) + other_sum * exp_(other_top - m);
  top = m;
}

// Two phases: the chunk's logits (raw dot products in S[u][m], scaled by `scale`) enter the
// running softmax statistics top[m], sum[m] of one head. part_top, part_sum: [kShares][kPixels].
// After the span's last chunk (lse non-null: the head's lse map of the batch element), top
// becomes the lse, also written to lse.
template <typename Run, typename acc_t>
WA_FN void softmax_statistics(const Run& run, const Sizes& s, const PixelTile& tile, int64_t u0,
                              int64_t count, const acc_t* S, acc_t scale, acc_t* top, acc_t* sum,
                              acc_t* part_top, acc_t* part_sum, acc_t* lse) {
  run([&](int t) {
    acc_t m_t = -static_cast<acc_t>(INFINITY), l_t = acc_t(0);
    pixel_key_share(s, tile, t, u0, count, [&](int m, int64_t u, bool inside) {
      if (!inside) return;
      const acc_t logit = scale * S[u * kPixelLd + m];  // one exp per logit
      if (logit > m_t) {
        l_t = l_t * exp_(m_t - logit) + acc_t(1);
        m_t = logit;
      } else {
        l_t += exp_(logit - m_t);
      }
    });
    part_top[t] = m_t;
    part_sum[t] = l_t;
  });
  run([&](int t) {
    if (t >= kPixels) return;
    for (int r = 0; r < kShares; ++r)
      merge_softmax(top[t], sum[t], part_top[r * kPixels + t], part_sum[r * kPixels + t]);
    int64_t i, j;
    if (lse == nullptr || !tile.pixel(t, i, j)) return;
    top[t] += log_(sum[t]);
    lse[i * s.W + j] = top[t];
  });
}

// Phase pair: per pixel, head n's logits of the chunk into S[u][m] (raw dot products over the
// head's channels in chunks of kQKChunk, q via qop[e][m], k via kop[e][u]).
template <typename Run, typename scalar_t, typename acc_t>
WA_FN void chunk_logits(const Run& run, const Sizes& s, const Tensors<scalar_t, acc_t>& x,
                        const PixelTile& tile, int n, int64_t u0, int64_t count, acc_t* qop,
                        acc_t* kop, acc_t* S) {
  const scalar_t* q_b = x.q + tile.b * x.q_batch;
  for (int64_t e0 = n * s.dim; e0 < (n + 1) * s.dim; e0 += kQKChunk) {
    const int64_t ee = min_(kQKChunk, (n + 1) * s.dim - e0);
    run([&](int t) {
      load_pixels(s, tile, q_b, x.q_channel, x.q_pixel, e0, ee, qop, t);
      load_keys_by_channel(s, tile, x.k, s.D, e0, ee, u0, count, kop, kKeyLd, t);
    });
    const SharedResult<acc_t> logits{S, kPixelLd, count, e0 == n * s.dim};
    run([&](int t) { gemm_nn(t, kPixels, count, ee, qop, kPixelLd, kop, kKeyLd, logits); });
  }
}

// ---------------------------------------------------------------------------------------------
// Forward.

template <typename acc_t>
WA_FN int64_t forward_shared_bytes(const Sizes& s) {
  return (2 * kKeyChunk * kPixelLd + kQKChunk * (kPixelLd + kKeyLd) + 2 * s.heads * kPixels +
          2 * kThreads) * static_cast<int64_t>(sizeof(acc_t));
}

// One tile of output pixels: out and lse.
template <typename Run, typename scalar_t, typename acc_t>
WA_FN void forward_block(const Run& run, const Sizes& s, const Tensors<scalar_t, acc_t>& x,
                         acc_t scale, int64_t block, void* shared_memory) {
  const PixelTile tile(s, whole_map(s), block);
  const int N = s.heads;
  const int64_t HW = s.H * s.W, total = tile.span.size();
  const bool one_chunk = total <= kKeyChunk;
  acc_t* weights = static_cast<acc_t*>(shared_memory);  // [kKeyChunk][kPixelLd]
  acc_t* S = weights + kKeyChunk * kPixelLd;            // [kKeyChunk][kPixelLd] logits,
  acc_t* values = S;                                    //   then [key][value channel]
  acc_t* qop = S + kKeyChunk * kPixelLd;                // [kQKChunk][kPixelLd]
  acc_t* kop = qop + kQKChunk * kPixelLd;               // [kQKChunk][kKeyLd]
  acc_t* top = kop + kQKChunk * kKeyLd;                 // [N][kPixels] running maximum, then lse
  acc_t* sum = top + N * kPixels;                       // [N][kPixels]
  acc_t* part_top = sum + N * kPixels;                  // [kShares][kPixels]
  acc_t* part_sum = part_top + kThreads;
  run([&](int t) {
    for (int64_t index = t; index < N * kPixels; index += kThreads) {
      top[index] = -static_cast<acc_t>(INFINITY);
      sum[index] = acc_t(0);
    }
  });
  auto statistics = [&](int n, int64_t u0, int64_t count) {
    softmax_statistics(run, s, tile, u0, count, S, scale, top + n * kPixels, sum + n * kPixels,
                       part_top, part_sum,
                       u0 + count == total ? x.lse + (tile.b * N + n) * HW : nullptr);
  };
  if (!one_chunk) {  // first walk: the statistics
    for (int64_t u0 = 0; u0 < total; u0 += kKeyChunk) {
      const int64_t count = min_(kKeyChunk, total - u0);
      for (int n = 0; n < N; ++n) {
        chunk_logits(run, s, x, tile, n, u0, count, qop, kop, S);
        statistics(n, u0, count);
      }
    }
  }
  const acc_t inv_heads = acc_t(1) / static_cast<acc_t>(N);
  scalar_t* out_b = x.out + tile.b * s.C * HW;
  acc_t* sums_b = one_chunk ? nullptr : x.out_sums + tile.b * s.C * HW;
  for (int64_t u0 = 0; u0 < total; u0 += kKeyChunk) {
    const int64_t count = min_(kKeyChunk, total - u0);
    for (int n = 0; n < N; ++n) {
      chunk_logits(run, s, x, tile, n, u0, count, qop, kop, S);
      if (one_chunk) statistics(n, u0, count);
      run([&](int t) {  // weights = (1/N) sum_n exp(scale S_n - lse_n)
        const acc_t* lse = top + n * kPixels;
        pixel_key_share(s, tile, t, u0, count, [&](int m, int64_t u, bool inside) {
          const int64_t at = u * kPixelLd + m;
          const acc_t a = inside ? exp_(scale * S[at] - lse[m]) : acc_t(0);
          const acc_t w = (n == 0 ? acc_t(0) : weights[at]) + a;
          weights[at] = n == N - 1 ? w * inv_heads : w;
        });
      });
    }
    for (int64_t c0 = 0; c0 < s.C; c0 += kValueChunk) {
      const int64_t cc = min_(kValueChunk, s.C - c0);
      run([&](int t) {
        load_keys_by_key(s, tile, x.v_cl, s.C, c0, cc, u0, count, values, kPixelLd, t);
      });
      // out[c][p] (+)= sum_u weights[u][p] values[u][c]
      chunk_result(s, tile, u0, count, total, out_b, sums_b, c0, cc, [&](const auto& result) {
        run([&](int t) {
          gemm_nn(t, kPixels, cc, count, weights, kPixelLd, values, kPixelLd, result);
        });
      });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward: pixel pass (dq, partial rows), then the per-key reduction.

template <typename acc_t>
WA_FN int64_t pixel_shared_bytes(const Sizes& s) {
  return (3 * kKeyChunk * kPixelLd + kValueChunk * kPixelLd +
          max_(kQKChunk * kKeyLd, kKeyChunk * kQKLd) + 2 * s.heads * kPixels + kThreads) *
         static_cast<int64_t>(sizeof(acc_t));
}

// One tile of output pixels of `band`: its dq and its partial rows: part[(block *
// band.slots + u) * (D + C) + e] for span key u, dk channels e < D, then dv channels.
template <typename Run, typename scalar_t, typename acc_t>
WA_FN void pixel_block(const Run& run, const Sizes& s, const Tensors<scalar_t, acc_t>& x,
                       const Band& band, acc_t scale, int64_t block, void* shared_memory) {
  const PixelTile tile(s, band, block);
  const int N = s.heads;
  const int64_t HW = s.H * s.W, total = tile.span.size(), row_length = s.D + s.C;
  const bool one_chunk = total <= kKeyChunk;
  acc_t* dW = static_cast<acc_t*>(shared_memory);  // [kKeyChunk][kPixelLd] <g(p), v(key)>
  acc_t* S = dW + kKeyChunk * kPixelLd;            // [kKeyChunk][kPixelLd] logits, a_n, ds_n
  acc_t* weights = S + kKeyChunk * kPixelLd;       // [kKeyChunk][kPixelLd]
  acc_t* pop = weights + kKeyChunk * kPixelLd;     // [kValueChunk][kPixelLd]: g or q channels
  acc_t* kop = pop + kValueChunk * kPixelLd;       // [channel][kKeyLd] v or k, or [key][kQKLd] k
  acc_t* lse = kop + max_(kQKChunk * kKeyLd, kKeyChunk * kQKLd);  // [N][kPixels]
  acc_t* delta = lse + N * kPixels;                               // [N][kPixels]
  acc_t* part_delta = delta + N * kPixels;                        // [kShares][kPixels]
  const scalar_t* q_b = x.q + tile.b * x.q_batch;
  const scalar_t* g_b = x.g + tile.b * s.C * HW;
  scalar_t* const dq_b = x.dq + tile.b * s.D * HW;
  acc_t* const dq_sums_b = one_chunk ? nullptr : x.dq_sums + tile.b * s.D * HW;
  acc_t* const part = x.part + block * band.slots * row_length;
  run([&](int t) {
    for (int64_t index = t; index < N * kPixels; index += kThreads) {
      const int n = static_cast<int>(index / kPixels);
      int64_t i, j;
      lse[index] = tile.pixel(index % kPixels, i, j) ? x.lse[(tile.b * N + n) * HW + i * s.W + j]
                                                     : acc_t(0);
      delta[index] = acc_t(0);
    }
  });
  const acc_t coef = scale / static_cast<acc_t>(N), inv_heads = acc_t(1) / static_cast<acc_t>(N);

  for (int walk = one_chunk ? 1 : 0; walk < 2; ++walk) {  // 0: delta only
    for (int64_t u0 = 0; u0 < total; u0 += kKeyChunk) {
      const int64_t count = min_(kKeyChunk, total - u0);
      for (int64_t c0 = 0; c0 < s.C; c0 += kQKChunk) {  // dW = <g(p), v(key)>
        const int64_t cc = min_(kQKChunk, s.C - c0);
        run([&](int t) {
          load_pixels(s, tile, g_b, HW, int64_t(1), c0, cc, pop, t);
          load_keys_by_channel(s, tile, x.v, s.C, c0, cc, u0, count, kop, kKeyLd, t);
        });
        const SharedResult<acc_t> dws{dW, kPixelLd, count, c0 == 0};
        run([&](int t) { gemm_nn(t, kPixels, count, cc, pop, kPixelLd, kop, kKeyLd, dws); });
      }
      for (int n = 0; n < N; ++n) {
        chunk_logits(run, s, x, tile, n, u0, count, pop, kop, S);
        // a_n = exp(scale S - lse_n) in the window, else 0; delta_n = sum_key a_n dW.
        auto weight = [&](int m, int64_t at, bool inside) {
          return inside ? exp_(scale * S[at] - lse[n * kPixels + m]) : acc_t(0);
        };
        const bool with_delta = walk == 0 || one_chunk;  // else S still holds the logits
        if (with_delta) {
          run([&](int t) {  // S = a_n, and the thread's share of delta_n
            acc_t partial = acc_t(0);
            pixel_key_share(s, tile, t, u0, count, [&](int m, int64_t u, bool inside) {
              const int64_t at = u * kPixelLd + m;
              S[at] = weight(m, at, inside);
              partial += S[at] * dW[at];
            });
            part_delta[t] = partial;
          });
          run([&](int t) {
            if (t >= kPixels) return;
            acc_t d = delta[n * kPixels + t];
            for (int r = 0; r < kShares; ++r) d += part_delta[r * kPixels + t];
            delta[n * kPixels + t] = d;
          });
        }
        if (walk == 0) continue;
        run([&](int t) {  // weights += a_n / N; S = ds_n = scale/N a_n (dW - delta_n)
          pixel_key_share(s, tile, t, u0, count, [&](int m, int64_t u, bool inside) {
            const int64_t at = u * kPixelLd + m;
            const acc_t a = with_delta ? S[at] : weight(m, at, inside);
            const acc_t w = (n == 0 ? acc_t(0) : weights[at]) + a;
            weights[at] = n == N - 1 ? w * inv_heads : w;
            S[at] = coef * a * (dW[at] - delta[n * kPixels + m]);
          });
        });
        for (int64_t e0 = n * s.dim; e0 < (n + 1) * s.dim; e0 += kQKChunk) {
          const int64_t ee = min_(kQKChunk, (n + 1) * s.dim - e0);
          run([&](int t) {
            load_keys_by_key(s, tile, x.k_cl, s.D, e0, ee, u0, count, kop, kQKLd, t);
            load_pixels(s, tile, q_b, x.q_channel, x.q_pixel, e0, ee, pop, t);
          });
          // dq[e][p] (+)= sum_u ds[u][p] k[u][e]; dk_n[u][e] = sum_p ds q
          const PartialRows<acc_t> dk{part, row_length, u0, e0, ee, count};
          chunk_result(s, tile, u0, count, total, dq_b, dq_sums_b, e0, ee, [&](const auto& dq) {
            run([&](int t) {
              gemm_nn(t, kPixels, ee, count, S, kPixelLd, kop, kQKLd, dq);
              gemm_tn(t, ee, count, kPixels, pop, kPixelLd, S, kPixelLd, dk);
            });
          });
        }
      }
      if (walk == 0) continue;
      for (int64_t c0 = 0; c0 < s.C; c0 += kValueChunk) {  // dv
        const int64_t cc = min_(kValueChunk, s.C - c0);
        run([&](int t) { load_pixels(s, tile, g_b, HW, int64_t(1), c0, cc, pop, t); });
        const PartialRows<acc_t> dv{part, row_length, u0, s.D + c0, cc, count};
        run([&](int t) { gemm_tn(t, cc, count, kPixels, pop, kPixelLd, weights, kPixelLd, dv); });
      }
    }
  }
}

template <typename acc_t>
WA_FN int64_t reduce_shared_bytes(const Sizes&) {
  return kThreads * static_cast<int64_t>(sizeof(int64_t));
}

// Output indices [lo, hi) along one axis whose windows contain `key`, as the tiles of `tile`
// indices holding them: [first, last] (first > last when none).
WA_FN void covering_tiles(int64_t key, int64_t out_len, int64_t in_len, float ratio, int64_t tile,
                          int64_t& first, int64_t& last) {
  int64_t lo, hi;
  covering_range(key, out_len, in_len, ratio, lo, hi);
  first = lo / tile;
  last = hi > lo ? (hi - 1) / tile : first - 1;
}

// Block (b, key) of `band`'s key rows (reduce_blocks): adds the partial rows of the band's tiles
// whose pixels see the key, tile by tile in row-major order, to kv[b][key][.] (dk | dv).
template <typename Run, typename scalar_t, typename acc_t>
WA_FN void reduce_block(const Run& run, const Sizes& s, const Tensors<scalar_t, acc_t>& x,
                        const Band& band, int64_t block, void* shared_memory) {
  int64_t* offsets = static_cast<int64_t*>(shared_memory);  // [kThreads] partial rows
  const int64_t per_batch = band.key_rows * s.w, b = block / per_batch;
  const int64_t y = band.key_row0 + block % per_batch / s.w, xk = block % s.w;
  const int64_t row_length = s.D + s.C, across = tiles_along(s.W, kTileCols);
  int64_t tr0, tr1, tc0, tc1;
  covering_tiles(y, s.H, s.h, s.ratio, kTileRows, tr0, tr1);
  covering_tiles(xk, s.W, s.w, s.ratio, kTileCols, tc0, tc1);
  tr0 = max_(tr0, band.row0);
  tr1 = min_(tr1, band.row0 + band.rows - 1);
  const int64_t cols = tc1 - tc0 + 1, pairs = tr1 >= tr0 && cols > 0 ? (tr1 - tr0 + 1) * cols : 0;
  acc_t* kv = x.kv + ((b * s.h + y) * s.w + xk) * row_length;
  for (int64_t p0 = 0; p0 < pairs; p0 += kThreads) {
    const int64_t count = min_<int64_t>(kThreads, pairs - p0);
    run([&](int t) {
      if (t >= count) return;
      const int64_t tr = tr0 + (p0 + t) / cols, tc = tc0 + (p0 + t) % cols;
      const int64_t tile_block = (b * band.rows + tr - band.row0) * across + tc;
      const PixelTile tile(s, band, tile_block);
      const int64_t u = (y - tile.span.row0) * tile.span.cols() + xk - tile.span.col0;
      offsets[t] = (tile_block * band.slots + u) * row_length;
    });
    run([&](int t) {
      for (int64_t e = t; e < row_length; e += kThreads) {
        acc_t acc = kv[e];
        for (int64_t p = 0; p < count; ++p) acc += x.part[offsets[p] + e];
        kv[e] = acc;
      }
    });
  }
}

}  // namespace tiles
}  // namespace WA_ISA
}  // namespace wa
}  // namespace anyup_neck
