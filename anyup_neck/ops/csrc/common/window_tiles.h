// Tiled kernels of the window-attention op, written once for the GPU and its CPU emulation.
//
// A kernel's block is a sequence of phases separated by barriers. Each phase is a function of
// the thread index, run by every thread of the block through a `run` object:
//   CUDA (cuda/window_attention_cuda.cu):      run(phase) = phase(threadIdx.x); __syncthreads()
//   CPU  (cpu/window_attention_tiles_cpu.cpp):  run(phase) = for t < kThreads: phase(t)
// over the same shared memory (dynamic shared memory on the GPU, a std::vector on the CPU),
// with the same indexing and the same arithmetic, so the CPU tests (the op's private
// kernels="tiled") check the GPU's tile logic. What a thread keeps from one phase to the next
// lives in shared memory, indexed by the thread; loop bounds between phases are the same for
// every thread of a block.
//
// Notation as in window_attention_math.h: output pixels p of an H x W map, keys on h x w, N
// heads of d channels (D = N d for q and k), C value channels. Windows are monotone per axis
// (both ends never decrease with the output index), so
//   - a tile of output pixels, rows [i0, i1) x columns [j0, j1), reads only the keys of the
//     rectangle rows [start(i0), stop(i1 - 1)) x columns [start(j0), stop(j1 - 1)) (its "key
//     span"), and
//   - a tile of keys, rows [y0, y1) x columns [x0, x1), is seen only by the output pixels of
//     the rectangle rows [lo(y0), hi(y1 - 1)) x columns [lo(x0), hi(x1 - 1)) (its "covering
//     pixels", lo/hi from covering_range).
//
// Forward (forward_block): a block owns a tile of kTileRows x kTileCols output pixels, one
// thread per pixel. Pass 1 walks its key span in chunks of key_chunk(D) keys: the chunk's keys
// (all D channels) are loaded into shared memory once, each thread updates its per-head running
// maximum and sum of exp over the keys of its window (online softmax), and the per-head lse is
// stored. Pass 2 walks the chunks again: the head-averaged weights w = (1/N) sum_n
// exp(s_n - lse_n) of every (pixel, key) pair of the chunk go to shared memory, then the values
// pass through shared memory kChannelChunk channels at a time, each thread adding its weighted
// sums to its output pixel (written along rows of pixels; read back only when the span has more
// than one chunk).
// Backward pixel pass (pixel_block): tiled like the forward; per chunk dw = <g(p), v(key)>
// (values through shared memory in channel chunks), then delta_n = sum a_n dw in a first walk
// and dq_n += scale/N sum a_n (dw - delta_n) k_n in a second.
// Backward key pass (key_block): a block owns a tile of keys, one thread per key, and a share of
// its covering pixels (key_splits shares, so that small key maps still give the GPU enough
// blocks), which it walks kPixelChunk at a time: their lse, delta, g and q pass through shared
// memory; each (pixel, key) pair's logits, weight and ds are computed once per pixel chunk (not
// once per value slice) and added to the share's partial dk and dv; the caller adds the
// key_splits partial sums up (torch's sum over the first dimension, a fixed-order reduction).
// Every output element is written by one thread only, every sum runs in a fixed order, and no
// atomics are used: results are deterministic. Accumulation is in acc_t (float32 for float16,
// bfloat16 and float32; float64 for float64). Nothing of size H*W x h*w is formed.
//
// Work and traffic at 448x448 from 32x32, C = 384, D = 128, N = 4, ratio 0.1 (windows of about
// 7 x 7 = 49 keys, a tile's key span about 9 x 9), batch 1; a FLOP is a multiply or an add:
//   forward: logits 2 x 200k pixels x 49 keys x 128 = 2.5 GFLOP per walk, two walks (the floor
//     has one), weighted values 2 x 200k x 49 x 384 = 7.5 GFLOP: 12.5 GFLOP. Traffic: the
//     output written once (308 MB), q read per logit from the L1/L2 caches, k and v of each span
//     read once per tile (3136 tiles x 81 keys x 512 channels x 4 B = 0.5 GB, mostly from L2).
//   backward: pixel pass 4 logit walks (10 GFLOP), dw twice (15 GFLOP), dq 2.5 GFLOP; key pass
//     logits, dw, dk, dv once per (pixel, key) pair (2.5 + 7.5 + 2.5 + 7.5 GFLOP), its dk and dv
//     read and written once per chunk of kPixelChunk covering pixels (a tile of 8 x 8 keys has
//     about 130 x 130 covering pixels: about 530 chunks x 64 keys x 512 channels x 8 B = 140 MB
//     per key tile, 2.2 GB in all, from L2). About 4x the forward's FLOPs.
//   Extra memory: the key pass's partial sums, key_splits x (D + C) x h x w (at most 8 times dk
//     and dv, key-sized); nothing of output size beyond the op's own outputs.
//   None of it is measured on a GPU yet.
//
// Shared memory per block in acc_t elements (*_shared_size) for N = 4, D = 128: forward 7.7 k
// (30 KB float32, 60 KB float64), pixel pass 9.7 k (38 KB, 76 KB), key pass 9.5 k (37 KB,
// 74 KB); it grows with N (and D, until key_chunk shrinks). The CUDA launcher opts in to more
// than 48 KB (cudaFuncSetAttribute) and checks the device's limit.
#pragma once

#include "window_attention_math.h"

namespace anyup_neck {
namespace wa {
inline namespace WA_ISA {
namespace tiles {

constexpr int kTileRows = 8, kTileCols = 8;        // output pixels (or keys) of one block
constexpr int kThreads = kTileRows * kTileCols;    // one thread per pixel (or key)
constexpr int64_t kKeyChunk = 64;                  // keys of a span per chunk, at most
constexpr int64_t kKeyElements = 4096;             // key elements (keys x D) per chunk, at most
constexpr int64_t kChannelChunk = 32;              // value (and q) channels per pass
constexpr int64_t kPixelChunk = 32;                // covering pixels per chunk of the key pass
constexpr int64_t kKeyPassBlocks = 512;            // blocks the key pass aims at, at least
constexpr int64_t kMaxKeySplits = 8;               // shares of a key tile's covering pixels, at most

// Problem sizes, passed to the kernels by value.
struct Sizes {
  int64_t B, D, C, H, W, h, w, dim;
  int heads;
  float ratio;
};

// The tensors of one call. q (B, D, H, W) with element (b, e, p) at
// q[b * q_batch + e * q_channel + p * q_pixel]; k_cl (B, h, w, D); v and g contiguous
// (B, C, h, w) and (B, C, H, W); the acc_t outputs contiguous: out (B, C, H, W), lse and delta
// (B, N, H, W), dq (B, D, H, W), and the key pass's partial sums dk (key_splits, B, D, h, w), dv
// (key_splits, B, C, h, w); dq, dk, dv zero on entry.
template <typename scalar_t, typename acc_t>
struct Tensors {
  const scalar_t* q;
  int64_t q_batch, q_channel, q_pixel;
  const scalar_t* k_cl;
  const scalar_t* v;
  const scalar_t* g;
  acc_t* out;
  acc_t* lse;
  acc_t* delta;
  acc_t* dq;
  acc_t* dk;
  acc_t* dv;
};

// Keys per chunk of a key span: kKeyChunk, fewer when D is large (the chunk holds all D
// channels of its keys).
WA_FN int64_t key_chunk(const Sizes& s) {
  return max_<int64_t>(1, min_<int64_t>(kKeyChunk, kKeyElements / s.D));
}

WA_FN int64_t tiles_along(int64_t length, int64_t tile) { return (length + tile - 1) / tile; }

WA_FN bool contains(const Window& win, int64_t row, int64_t col) {
  return row >= win.row0 && row < win.row1 && col >= win.col0 && col < win.col1;
}

// Blocks of the forward and the pixel pass (tiles of output pixels), and of the key pass.
WA_FN int64_t pixel_blocks(const Sizes& s) {
  return s.B * tiles_along(s.H, kTileRows) * tiles_along(s.W, kTileCols);
}
WA_FN int64_t key_tiles(const Sizes& s) {
  return s.B * tiles_along(s.h, kTileRows) * tiles_along(s.w, kTileCols);
}
// Shares of each key tile's covering pixels: enough for about kKeyPassBlocks blocks, at most
// kMaxKeySplits (each share has its own partial dk and dv).
WA_FN int64_t key_splits(const Sizes& s) {
  return max_<int64_t>(1, min_<int64_t>(kMaxKeySplits, tiles_along(kKeyPassBlocks, key_tiles(s))));
}
WA_FN int64_t key_blocks(const Sizes& s) { return key_tiles(s) * key_splits(s); }

// Cell number u of a rectangle, in row-major order, as (row, col).
WA_FN void rect_cell(const Window& rect, int64_t u, int64_t& row, int64_t& col) {
  row = rect.row0 + u / rect.cols();
  col = rect.col0 + u % rect.cols();
}

// Tile number `block` of kTileRows x kTileCols cells of a rows x cols map, counted over the
// batch: batch element b, first cell (row0, col0), last cell (row_last, col_last), cut at the
// map's edge. Thread t owns cell (row0 + t / kTileCols, col0 + t % kTileCols).
struct Tile {
  int64_t b, row0, col0, row_last, col_last;

  WA_FN Tile(int64_t rows, int64_t cols, int64_t block) {
    const int64_t across = tiles_along(cols, kTileCols);
    const int64_t per_batch = tiles_along(rows, kTileRows) * across;
    b = block / per_batch;
    row0 = (block % per_batch) / across * kTileRows;
    col0 = (block % per_batch) % across * kTileCols;
    row_last = min_<int64_t>(row0 + kTileRows, rows) - 1;
    col_last = min_<int64_t>(col0 + kTileCols, cols) - 1;
  }

  // Thread t's cell (row, col); false for threads past the map's edge.
  WA_FN bool cell(int t, int64_t& row, int64_t& col) const {
    row = row0 + t / kTileCols;
    col = col0 + t % kTileCols;
    return row <= row_last && col <= col_last;
  }
};

// A tile of output pixels and its key span.
struct PixelTile : Tile {
  Window span;

  WA_FN PixelTile(const Sizes& s, int64_t block) : Tile(s.H, s.W, block) {
    int64_t unused;
    window_bounds(row0, s.H, s.h, s.ratio, span.row0, unused);
    window_bounds(row_last, s.H, s.h, s.ratio, unused, span.row1);
    window_bounds(col0, s.W, s.w, s.ratio, span.col0, unused);
    window_bounds(col_last, s.W, s.w, s.ratio, unused, span.col1);
  }

  // Thread t's pixel (i, j); false for threads past the map's edge.
  WA_FN bool pixel(int t, int64_t& i, int64_t& j) const { return cell(t, i, j); }

  // Key number u of the span, as (row, col).
  WA_FN void key(int64_t u, int64_t& row, int64_t& col) const { rect_cell(span, u, row, col); }
};

// A tile of keys and its covering pixels (empty when no window holds these keys).
struct KeyTile : Tile {
  Window pixels;  // rows and columns of output pixels

  WA_FN KeyTile(const Sizes& s, int64_t block) : Tile(s.h, s.w, block) {
    int64_t unused;
    covering_range(row0, s.H, s.h, s.ratio, pixels.row0, unused);
    covering_range(row_last, s.H, s.h, s.ratio, unused, pixels.row1);
    covering_range(col0, s.W, s.w, s.ratio, pixels.col0, unused);
    covering_range(col_last, s.W, s.w, s.ratio, unused, pixels.col1);
  }

  WA_FN int64_t pixel_count() const {
    return pixels.row1 > pixels.row0 && pixels.col1 > pixels.col0 ? pixels.size() : 0;
  }

  // Thread t's key (y, x); false for threads past the map's edge.
  WA_FN bool key(int t, int64_t& y, int64_t& x) const { return cell(t, y, x); }

  // Covering pixel number u, as (i, j).
  WA_FN void pixel(int64_t u, int64_t& i, int64_t& j) const { rect_cell(pixels, u, i, j); }
};

// scale * <q_n(p), key_n> over head n's channels in channel order (as KeyMap::logits), with
// the key's D channels at key[e].
template <typename scalar_t, typename acc_t>
WA_FN acc_t logit(const Sizes& s, const Tensors<scalar_t, acc_t>& x, int64_t b, int64_t p, int n,
                  const acc_t* key, acc_t scale) {
  const scalar_t* qp = x.q + b * x.q_batch + p * x.q_pixel;
  acc_t sum = acc_t(0);
  for (int64_t e = n * s.dim; e < (n + 1) * s.dim; ++e)
    sum += static_cast<acc_t>(qp[e * x.q_channel]) * key[e];
  return scale * sum;
}

// Phase: keys [u0, u0 + count) of the tile's span, all D channels, into keys[u * D + e].
template <typename scalar_t, typename acc_t>
WA_FN void load_keys(const Sizes& s, const Tensors<scalar_t, acc_t>& x, const PixelTile& tile,
                     int64_t u0, int64_t count, acc_t* keys, int t) {
  const scalar_t* k_b = x.k_cl + tile.b * s.h * s.w * s.D;
  for (int64_t index = t; index < count * s.D; index += kThreads) {
    int64_t row, col;
    tile.key(u0 + index / s.D, row, col);
    keys[index] = static_cast<acc_t>(k_b[(row * s.w + col) * s.D + index % s.D]);
  }
}

// Phase: channels [c0, c0 + cc) of the values of span keys [u0, u0 + count) into
// values[u * kChannelChunk + c] (consecutive threads read consecutive keys of a channel).
template <typename scalar_t, typename acc_t>
WA_FN void load_values(const Sizes& s, const Tensors<scalar_t, acc_t>& x, const PixelTile& tile,
                       int64_t u0, int64_t count, int64_t c0, int64_t cc, acc_t* values, int t) {
  const scalar_t* v_b = x.v + tile.b * s.C * s.h * s.w;
  for (int64_t index = t; index < count * cc; index += kThreads) {
    const int64_t c = index / count, u = index % count;
    int64_t row, col;
    tile.key(u0 + u, row, col);
    values[u * kChannelChunk + c] = static_cast<acc_t>(v_b[(c0 + c) * s.h * s.w + row * s.w + col]);
  }
}

// ---------------------------------------------------------------------------------------------
// Forward.

WA_FN int64_t forward_shared_size(const Sizes& s) {
  const int64_t kt = key_chunk(s);
  return 2 * s.heads * kThreads + kt * s.D + kt * kThreads + kt * kChannelChunk;
}

// One tile of output pixels: out (acc_t) and lse.
template <typename Run, typename scalar_t, typename acc_t>
WA_FN void forward_block(const Run& run, const Sizes& s, const Tensors<scalar_t, acc_t>& x,
                         acc_t scale, int64_t block, acc_t* shared) {
  const PixelTile tile(s, block);
  const int N = s.heads;
  const int64_t HW = s.H * s.W, kt = key_chunk(s), total = tile.span.size();
  acc_t* top = shared;              // [N][kThreads] running maximum, then lse
  acc_t* sum = top + N * kThreads;  // [N][kThreads] running sum of exp(s - top)
  acc_t* keys = sum + N * kThreads; // [kt][D]
  acc_t* weights = keys + kt * s.D; // [kt][kThreads]
  acc_t* values = weights + kt * kThreads;  // [kt][kChannelChunk]
  run([&](int t) {
    for (int n = 0; n < N; ++n) {
      top[n * kThreads + t] = -static_cast<acc_t>(INFINITY);
      sum[n * kThreads + t] = acc_t(0);
    }
  });
  for (int64_t u0 = 0; u0 < total; u0 += kt) {
    const int64_t count = min_(kt, total - u0);
    run([&](int t) { load_keys(s, x, tile, u0, count, keys, t); });
    run([&](int t) {
      int64_t i, j;
      if (!tile.pixel(t, i, j)) return;
      const Window win = query_window(i, j, s.H, s.W, s.h, s.w, s.ratio);
      for (int64_t u = 0; u < count; ++u) {
        int64_t row, col;
        tile.key(u0 + u, row, col);
        if (!contains(win, row, col)) continue;
        for (int n = 0; n < N; ++n) {
          const acc_t sv = logit(s, x, tile.b, i * s.W + j, n, keys + u * s.D, scale);
          acc_t& m = top[n * kThreads + t];
          const acc_t m_new = max_(m, sv);
          sum[n * kThreads + t] = sum[n * kThreads + t] * exp_(m - m_new) + exp_(sv - m_new);
          m = m_new;
        }
      }
    });
  }
  run([&](int t) {
    int64_t i, j;
    if (!tile.pixel(t, i, j)) return;
    for (int n = 0; n < N; ++n) {
      const acc_t lse = top[n * kThreads + t] + log_(sum[n * kThreads + t]);
      top[n * kThreads + t] = lse;
      x.lse[(tile.b * N + n) * HW + i * s.W + j] = lse;
    }
  });
  const acc_t inv_heads = acc_t(1) / static_cast<acc_t>(N);
  for (int64_t u0 = 0; u0 < total; u0 += kt) {
    const int64_t count = min_(kt, total - u0);
    run([&](int t) { load_keys(s, x, tile, u0, count, keys, t); });
    run([&](int t) {
      int64_t i, j;
      const bool valid = tile.pixel(t, i, j);
      const Window win = query_window(valid ? i : 0, valid ? j : 0, s.H, s.W, s.h, s.w, s.ratio);
      for (int64_t u = 0; u < count; ++u) {
        int64_t row, col;
        tile.key(u0 + u, row, col);
        acc_t wsum = acc_t(0);
        if (valid && contains(win, row, col))
          for (int n = 0; n < N; ++n)
            wsum += exp_(logit(s, x, tile.b, i * s.W + j, n, keys + u * s.D, scale) -
                         top[n * kThreads + t]);
        weights[u * kThreads + t] = wsum * inv_heads;
      }
    });
    for (int64_t c0 = 0; c0 < s.C; c0 += kChannelChunk) {
      const int64_t cc = min_(kChannelChunk, s.C - c0);
      run([&](int t) { load_values(s, x, tile, u0, count, c0, cc, values, t); });
      run([&](int t) {
        int64_t i, j;
        if (!tile.pixel(t, i, j)) return;
        acc_t* out = x.out + (tile.b * s.C + c0) * HW + i * s.W + j;
        for (int64_t c = 0; c < cc; ++c) {
          acc_t acc = u0 == 0 ? acc_t(0) : out[c * HW];
          for (int64_t u = 0; u < count; ++u)
            acc += weights[u * kThreads + t] * values[u * kChannelChunk + c];
          out[c * HW] = acc;
        }
      });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward pixel pass.

WA_FN int64_t pixel_shared_size(const Sizes& s) {
  const int64_t kt = key_chunk(s);
  return 2 * s.heads * kThreads + kt * s.D + 2 * kt * kThreads + kt * kChannelChunk;
}

// One tile of output pixels: delta (acc_t, B x N x H x W) and dq (added to).
template <typename Run, typename scalar_t, typename acc_t>
WA_FN void pixel_block(const Run& run, const Sizes& s, const Tensors<scalar_t, acc_t>& x,
                       acc_t scale, int64_t block, acc_t* shared) {
  const PixelTile tile(s, block);
  const int N = s.heads;
  const int64_t HW = s.H * s.W, kt = key_chunk(s), total = tile.span.size();
  acc_t* lse = shared;                   // [N][kThreads]
  acc_t* delta = lse + N * kThreads;     // [N][kThreads]
  acc_t* keys = delta + N * kThreads;    // [kt][D]
  acc_t* dws = keys + kt * s.D;          // [kt][kThreads]
  acc_t* ds = dws + kt * kThreads;       // [kt][kThreads], one head at a time
  acc_t* values = ds + kt * kThreads;    // [kt][kChannelChunk]
  run([&](int t) {
    int64_t i, j;
    const bool valid = tile.pixel(t, i, j);
    for (int n = 0; n < N; ++n) {
      lse[n * kThreads + t] = valid ? x.lse[(tile.b * N + n) * HW + i * s.W + j] : acc_t(0);
      delta[n * kThreads + t] = acc_t(0);
    }
  });
  const acc_t coef = scale / static_cast<acc_t>(N);
  for (int walk = 0; walk < 2; ++walk) {  // 0: delta, 1: dq
    for (int64_t u0 = 0; u0 < total; u0 += kt) {
      const int64_t count = min_(kt, total - u0);
      run([&](int t) {
        load_keys(s, x, tile, u0, count, keys, t);
        for (int64_t u = 0; u < count; ++u) dws[u * kThreads + t] = acc_t(0);
      });
      for (int64_t c0 = 0; c0 < s.C; c0 += kChannelChunk) {
        const int64_t cc = min_(kChannelChunk, s.C - c0);
        run([&](int t) { load_values(s, x, tile, u0, count, c0, cc, values, t); });
        run([&](int t) {  // dw = <g(p), v(key)>, channel by channel
          int64_t i, j;
          if (!tile.pixel(t, i, j)) return;
          const scalar_t* g = x.g + (tile.b * s.C + c0) * HW + i * s.W + j;
          for (int64_t c = 0; c < cc; ++c) {
            const acc_t gc = static_cast<acc_t>(g[c * HW]);
            for (int64_t u = 0; u < count; ++u)
              dws[u * kThreads + t] += gc * values[u * kChannelChunk + c];
          }
        });
      }
      run([&](int t) {
        int64_t i, j;
        if (!tile.pixel(t, i, j)) return;
        const int64_t p = i * s.W + j;
        const Window win = query_window(i, j, s.H, s.W, s.h, s.w, s.ratio);
        if (walk == 0) {
          for (int64_t u = 0; u < count; ++u) {
            int64_t row, col;
            tile.key(u0 + u, row, col);
            if (!contains(win, row, col)) continue;
            for (int n = 0; n < N; ++n)
              delta[n * kThreads + t] +=
                  exp_(logit(s, x, tile.b, p, n, keys + u * s.D, scale) - lse[n * kThreads + t]) *
                  dws[u * kThreads + t];
          }
          return;
        }
        for (int n = 0; n < N; ++n) {
          for (int64_t u = 0; u < count; ++u) {
            int64_t row, col;
            tile.key(u0 + u, row, col);
            acc_t value = acc_t(0);
            if (contains(win, row, col))
              value = coef *
                      exp_(logit(s, x, tile.b, p, n, keys + u * s.D, scale) - lse[n * kThreads + t]) *
                      (dws[u * kThreads + t] - delta[n * kThreads + t]);
            ds[u * kThreads + t] = value;
          }
          acc_t* dq = x.dq + tile.b * s.D * HW + p;
          for (int64_t e = n * s.dim; e < (n + 1) * s.dim; ++e) {
            acc_t acc = dq[e * HW];
            for (int64_t u = 0; u < count; ++u) acc += ds[u * kThreads + t] * keys[u * s.D + e];
            dq[e * HW] = acc;
          }
        }
      });
    }
  }
  run([&](int t) {
    int64_t i, j;
    if (!tile.pixel(t, i, j)) return;
    for (int n = 0; n < N; ++n)
      x.delta[(tile.b * N + n) * HW + i * s.W + j] = delta[n * kThreads + t];
  });
}

// ---------------------------------------------------------------------------------------------
// Backward key pass.

WA_FN int64_t key_shared_size(const Sizes& s) {
  return 2 * s.heads * kPixelChunk + 4 * kPixelChunk * kThreads + kChannelChunk * kPixelChunk;
}

// Phase: channels [c0, c0 + cc) of a per-pixel tensor (element (c, pixel) at
// map[c * channel_stride + pixel * pixel_stride]) for covering pixels [u0, u0 + count) into
// rows[c * kPixelChunk + u].
template <typename scalar_t, typename acc_t>
WA_FN void load_pixels(const KeyTile& tile, int64_t W, const scalar_t* map, int64_t channel_stride,
                       int64_t pixel_stride, int64_t u0, int64_t count, int64_t c0, int64_t cc,
                       acc_t* rows, int t) {
  for (int64_t index = t; index < cc * count; index += kThreads) {
    const int64_t c = index / count, u = index % count;
    int64_t i, j;
    tile.pixel(u0 + u, i, j);
    rows[c * kPixelChunk + u] =
        static_cast<acc_t>(map[(c0 + c) * channel_stride + (i * W + j) * pixel_stride]);
  }
}

// One share of one tile of keys: its partial dk and dv (added to). Block number
// tile * key_splits + split.
template <typename Run, typename scalar_t, typename acc_t>
WA_FN void key_block(const Run& run, const Sizes& s, const Tensors<scalar_t, acc_t>& x,
                     acc_t scale, int64_t block, acc_t* shared) {
  const int64_t splits = key_splits(s), split = block % splits;
  const KeyTile tile(s, block / splits);
  const int N = s.heads;
  const int64_t HW = s.H * s.W, hw = s.h * s.w;
  const int64_t chunks = tiles_along(tile.pixel_count(), kPixelChunk);
  const int64_t first = split * chunks / splits * kPixelChunk;
  const int64_t total = min_(tile.pixel_count(), (split + 1) * chunks / splits * kPixelChunk);
  acc_t* const dk_share = x.dk + split * s.B * s.D * hw;
  acc_t* const dv_share = x.dv + split * s.B * s.C * hw;
  acc_t* lse = shared;                          // [N][kPixelChunk]
  acc_t* delta = lse + N * kPixelChunk;         // [N][kPixelChunk]
  acc_t* weights = delta + N * kPixelChunk;     // [kPixelChunk][kThreads], sum over heads of a_n
  acc_t* dws = weights + kPixelChunk * kThreads;  // [kPixelChunk][kThreads]
  acc_t* logits = dws + kPixelChunk * kThreads;   // [kPixelChunk][kThreads], one head, then ds
  acc_t* inside = logits + kPixelChunk * kThreads;  // [kPixelChunk][kThreads], 1 in the window
  acc_t* rows = inside + kPixelChunk * kThreads;    // [kChannelChunk][kPixelChunk]: g or q
  const scalar_t* q_b = x.q + tile.b * x.q_batch;
  const scalar_t* g_b = x.g + tile.b * s.C * HW;
  const acc_t coef = scale / static_cast<acc_t>(N), inv_heads = acc_t(1) / static_cast<acc_t>(N);
  for (int64_t u0 = first; u0 < total; u0 += kPixelChunk) {
    const int64_t count = min_(kPixelChunk, total - u0);
    run([&](int t) {
      for (int64_t index = t; index < N * count; index += kThreads) {
        const int64_t n = index / count, u = index % count;
        int64_t i, j;
        tile.pixel(u0 + u, i, j);
        lse[n * kPixelChunk + u] = x.lse[(tile.b * N + n) * HW + i * s.W + j];
        delta[n * kPixelChunk + u] = x.delta[(tile.b * N + n) * HW + i * s.W + j];
      }
      int64_t y, xk;
      const bool valid = tile.key(t, y, xk);
      for (int64_t u = 0; u < count; ++u) {
        int64_t i, j;
        tile.pixel(u0 + u, i, j);
        const bool in = valid && contains(query_window(i, j, s.H, s.W, s.h, s.w, s.ratio), y, xk);
        inside[u * kThreads + t] = in ? acc_t(1) : acc_t(0);
        weights[u * kThreads + t] = acc_t(0);
        dws[u * kThreads + t] = acc_t(0);
      }
    });
    for (int64_t c0 = 0; c0 < s.C; c0 += kChannelChunk) {  // dw = <g(p), v(key)>
      const int64_t cc = min_(kChannelChunk, s.C - c0);
      run([&](int t) { load_pixels(tile, s.W, g_b, HW, 1, u0, count, c0, cc, rows, t); });
      run([&](int t) {
        int64_t y, xk;
        if (!tile.key(t, y, xk)) return;
        for (int64_t c = 0; c < cc; ++c) {
          const acc_t vc = static_cast<acc_t>(x.v[(tile.b * s.C + c0 + c) * hw + y * s.w + xk]);
          for (int64_t u = 0; u < count; ++u) dws[u * kThreads + t] += vc * rows[c * kPixelChunk + u];
        }
      });
    }
    for (int n = 0; n < N; ++n) {
      run([&](int t) {
        for (int64_t u = 0; u < count; ++u) logits[u * kThreads + t] = acc_t(0);
      });
      for (int64_t e0 = n * s.dim; e0 < (n + 1) * s.dim; e0 += kChannelChunk) {
        const int64_t ee = min_(kChannelChunk, (n + 1) * s.dim - e0);
        run([&](int t) {
          load_pixels(tile, s.W, q_b, x.q_channel, x.q_pixel, u0, count, e0, ee, rows, t);
        });
        run([&](int t) {  // logits in channel order, as logit()
          int64_t y, xk;
          if (!tile.key(t, y, xk)) return;
          const scalar_t* key = x.k_cl + ((tile.b * s.h + y) * s.w + xk) * s.D;
          for (int64_t u = 0; u < count; ++u) {
            acc_t acc = logits[u * kThreads + t];
            for (int64_t e = 0; e < ee; ++e)
              acc += rows[e * kPixelChunk + u] * static_cast<acc_t>(key[e0 + e]);
            logits[u * kThreads + t] = acc;
          }
        });
      }
      run([&](int t) {  // a_n, the weights' sum and ds_n (over the logits)
        for (int64_t u = 0; u < count; ++u) {
          const int64_t at = u * kThreads + t;
          const acc_t a =
              inside[at] != acc_t(0) ? exp_(scale * logits[at] - lse[n * kPixelChunk + u]) : acc_t(0);
          weights[at] += a;
          logits[at] = coef * a * (dws[at] - delta[n * kPixelChunk + u]);
        }
      });
      for (int64_t e0 = n * s.dim; e0 < (n + 1) * s.dim; e0 += kChannelChunk) {
        const int64_t ee = min_(kChannelChunk, (n + 1) * s.dim - e0);
        run([&](int t) {
          load_pixels(tile, s.W, q_b, x.q_channel, x.q_pixel, u0, count, e0, ee, rows, t);
        });
        run([&](int t) {  // dk_n(key) += sum_p ds_n q_n(p)
          int64_t y, xk;
          if (!tile.key(t, y, xk)) return;
          acc_t* dk = dk_share + (tile.b * s.D + e0) * hw + y * s.w + xk;
          for (int64_t e = 0; e < ee; ++e) {
            acc_t acc = dk[e * hw];
            for (int64_t u = 0; u < count; ++u) acc += logits[u * kThreads + t] * rows[e * kPixelChunk + u];
            dk[e * hw] = acc;
          }
        });
      }
    }
    for (int64_t c0 = 0; c0 < s.C; c0 += kChannelChunk) {  // dv(key) += sum_p w g(p)
      const int64_t cc = min_(kChannelChunk, s.C - c0);
      run([&](int t) { load_pixels(tile, s.W, g_b, HW, 1, u0, count, c0, cc, rows, t); });
      run([&](int t) {
        int64_t y, xk;
        if (!tile.key(t, y, xk)) return;
        acc_t* dv = dv_share + (tile.b * s.C + c0) * hw + y * s.w + xk;
        for (int64_t c = 0; c < cc; ++c) {
          acc_t acc = dv[c * hw];
          for (int64_t u = 0; u < count; ++u)
            acc += weights[u * kThreads + t] * inv_heads * rows[c * kPixelChunk + u];
          dv[c * hw] = acc;
        }
      });
    }
  }
}

}  // namespace tiles
}  // namespace WA_ISA
}  // namespace wa
}  // namespace anyup_neck
