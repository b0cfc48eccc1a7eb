// Host side of the tiled kernels (common/window_tiles.h), the same for the GPU launcher and the
// CPU emulation: the kernels' view of the tensors, the sums buffers of out and dq; the
// backward's partial-row buffer of one band, the band loop, and dk, dv from their channels-last
// sums.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <utility>

#include "window_attention.h"
#include "window_tiles.h"

namespace anyup_neck {
namespace wa {
inline namespace WA_ISA {
namespace tiles {

// The tiled kernels' view of one call's tensors: q (any flat-pixel layout), k, k_cl, v, v_cl,
// g, out, dq in scalar_t, out_sums, lse, dq_sums in acc_t; an undefined tensor gives a null
// pointer (the backward's part and kv buffers are set by the caller).
template <typename scalar_t, typename acc_t>
Tensors<scalar_t, acc_t> tensors_of(const at::Tensor& q, const at::Tensor& k,
                                    const at::Tensor& k_cl, const at::Tensor& v,
                                    const at::Tensor& v_cl, const at::Tensor& g,
                                    const at::Tensor& out, const at::Tensor& out_sums,
                                    const at::Tensor& lse, const at::Tensor& dq,
                                    const at::Tensor& dq_sums) {
  auto in = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
  auto acc = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<acc_t>() : nullptr; };
  const Layout ql = layout_of(q);
  return {in(q),        ql.batch, ql.channel, ql.pixel,      in(k),    in(k_cl), in(v),
          in(v_cl),     in(g),    in(out),    acc(out_sums), acc(lse), in(dq),
          acc(dq_sums), nullptr,  nullptr};
}

// The sums buffer of the map `map` (out_sums of out, dq_sums of dq; see Tensors), in
// `sums_options` (the accumulation dtype): undefined when every span fits one chunk; `map`
// itself when `share` and the dtypes agree; else a new tensor.
inline at::Tensor sums_buffer(const Sizes& s, const at::Tensor& map,
                              const at::TensorOptions& sums_options, bool share) {
  if (spans_fit_one_chunk(s)) return at::Tensor();
  if (share && map.scalar_type() == c10::typeMetaToScalarType(sums_options.dtype())) return map;
  return at::empty(map.sizes(), sums_options);
}

// Tile rows per band of the backward: the part buffer of a band holds at most a tenth of the
// output's bytes, or one tile row. Forward and backward then hold at most about 2.5 times the
// output above q, k, v at 448 from 32, C = 384, in float32 and in float16/bfloat16: the output,
// its gradient and dq, which are there in any case, take 2.33 of it, lse and the key-sized
// buffers 0.04. (Float32 partial rows of a bfloat16 output are counted in bytes, so their
// bands are half as high: at batch 1, 2 tile rows, 112 blocks, where float32 has 4.)
template <typename scalar_t, typename acc_t>
int64_t band_rows(const Sizes& s) {
  const int64_t row_bytes = row_blocks(s) * slots(s) * (s.D + s.C) *
                            static_cast<int64_t>(sizeof(acc_t));
  const int64_t budget = s.B * s.C * s.H * s.W * static_cast<int64_t>(sizeof(scalar_t)) / 10;
  return std::max<int64_t>(1, std::min(whole_map(s).rows,
                                       budget / std::max<int64_t>(row_bytes, 1)));
}

// Allocates one band's partial rows and the channels-last dk | dv sums (zero) in `options`
// (the accumulation dtype) into x.part and x.kv, runs pixel_pass(band) then reduction(band)
// for every band of tile rows in order, and returns dk (B, D, h, w) and dv (B, C, h, w) in
// scalar_t, contiguous.
template <typename scalar_t, typename acc_t, typename PixelPass, typename Reduction>
std::pair<at::Tensor, at::Tensor> backward_in_bands(const Sizes& s, Tensors<scalar_t, acc_t>& x,
                                                    const at::TensorOptions& options,
                                                    const PixelPass& pixel_pass,
                                                    const Reduction& reduction) {
  const int64_t rows = band_rows<scalar_t, acc_t>(s), all = whole_map(s).rows;
  const int64_t per_tile = slots(s);
  const at::Tensor part = at::empty({rows * row_blocks(s), per_tile, s.D + s.C}, options);
  const at::Tensor kv = at::zeros({s.B, s.h, s.w, s.D + s.C}, options);
  x.part = part.data_ptr<acc_t>();
  x.kv = kv.data_ptr<acc_t>();
  for (int64_t row0 = 0; row0 < all; row0 += rows) {
    const Band band = band_of(s, row0, std::min(rows, all - row0), per_tile);
    pixel_pass(band);
    reduction(band);
  }
  const auto in_scalar_t = [&](int64_t first, int64_t channels) {  // (B, channels, h, w)
    return at::empty({s.B, channels, s.h, s.w},
                     options.dtype(c10::CppTypeToScalarType<scalar_t>::value))
        .copy_(kv.narrow(3, first, channels).permute({0, 3, 1, 2}));
  };
  return {in_scalar_t(0, s.D), in_scalar_t(s.D, s.C)};
}

}  // namespace tiles
}  // namespace WA_ISA
}  // namespace wa
}  // namespace anyup_neck
