// Fused CPU kernels (float32 and float64), compiled once per instruction set: included by
// cpu/kernels_{base,avx2,avx512}.cpp (see isa_target.h). Loops run over contiguous channels or
// pixels with small fixed-size inner blocks, so that they vectorise for the target; every sum
// runs in a fixed order, independent of the number of threads.

#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fused_cpu.h"
#include "isa_target.h"

WA_BEGIN_TARGET

#include "../common/window_attention_math.h"
#include "vector_blocks.h"

namespace anyup_neck {
namespace cpu {
namespace WA_ISA {
namespace {

constexpr int64_t kStatChunk = 2048;  // pixels per partial sum of the GroupNorm statistics

template <typename acc_t>
acc_t silu(acc_t y) {
  return y / (acc_t(1) + wa::exp_(-y));
}

// ---------------------------------------------------------------- GroupNorm + SiLU
// A GroupNorm followed by SiLU in two passes: channel_moments gives the per-channel sums (the
// caller combines them into per-group statistics, possibly over several tensors), affine_silu
// applies y = silu(x * scale_c + shift_c) with scale_c = weight_c / std_g and shift_c = bias_c -
// mean_g * scale_c (the affine form of PyTorch's GroupNorm kernel).

// Pixels p0 .. p1 - 1 of batch element b of chunk ``item`` of a (B, C, P) map.
struct PixelChunk {
  int64_t b, p0, p1;
  PixelChunk(int64_t item, int64_t chunks, int64_t P)
      : b(item / chunks), p0(item % chunks * kStatChunk), p1(std::min(P, p0 + kStatChunk)) {}
};

bool is_channels_last(const Layout& l, int64_t C) { return l.channel == 1 && C > 1; }

// moments (B, 2, C) float64 = per channel, the sum and the sum of squares of x over its pixels,
// accumulated in float64 per chunk of pixels, then over the chunks in order.
template <typename scalar_t>
void channel_moments_kernel(const at::Tensor& x, const at::Tensor& moments) {
  const int64_t B = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  const Layout l = layout_of(x);
  const scalar_t* data = x.data_ptr<scalar_t>();
  const int64_t chunks = (P + kStatChunk - 1) / kStatChunk;
  std::vector<double> partial(B * chunks * 2 * C, 0.0);  // [item][sum | squares][channel]
  at::parallel_for(0, B * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const PixelChunk chunk(item, chunks, P);
      double* sum = partial.data() + item * 2 * C;
      double* squares = sum + C;
      const scalar_t* base = data + chunk.b * l.batch;
      if (is_channels_last(l, C)) {
        for (int64_t p = chunk.p0; p < chunk.p1; ++p) {
          const scalar_t* pixel = base + p * l.pixel;
          for (int64_t c = 0; c < C; ++c) {
            const double v = pixel[c];
            sum[c] += v;
            squares[c] += v * v;
          }
        }
      } else {  // NCHW: each channel's pixels are contiguous
        for (int64_t c = 0; c < C; ++c) {
          const scalar_t* run = base + c * l.channel + chunk.p0;
          const int64_t n = chunk.p1 - chunk.p0;
          sum[c] = wa::range_sum<scalar_t, double>(run, n);
          squares[c] = wa::dot<double>(run, 1, run, 1, n);
        }
      }
    }
  });
  double* result = moments.data_ptr<double>();
  std::fill(result, result + B * 2 * C, 0.0);
  for (int64_t item = 0; item < B * chunks; ++item)
    for (int64_t i = 0; i < 2 * C; ++i) result[item / chunks * 2 * C + i] += partial[item * 2 * C + i];
}

// out (x's layout; may be x itself) = silu(x * scale + shift), scale and shift (B, C) float64.
template <typename scalar_t>
void affine_silu_kernel(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                        const at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  const Layout l = layout_of(x);
  const scalar_t* data = x.data_ptr<scalar_t>();
  scalar_t* result = out.data_ptr<scalar_t>();
  std::vector<acc_t> sc(B * C), sh(B * C);
  for (int64_t i = 0; i < B * C; ++i) {
    sc[i] = static_cast<acc_t>(scale.data_ptr<double>()[i]);
    sh[i] = static_cast<acc_t>(shift.data_ptr<double>()[i]);
  }
  const int64_t chunks = (P + kStatChunk - 1) / kStatChunk;
  at::parallel_for(0, B * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const PixelChunk chunk(item, chunks, P);
      const acc_t* a = sc.data() + chunk.b * C;
      const acc_t* s = sh.data() + chunk.b * C;
      const int64_t offset = chunk.b * l.batch;
      if (is_channels_last(l, C)) {
        for (int64_t p = chunk.p0; p < chunk.p1; ++p) {
          const scalar_t* pixel = data + offset + p * l.pixel;
          scalar_t* target = result + offset + p * l.pixel;
          for (int64_t c = 0; c < C; ++c)
            target[c] = static_cast<scalar_t>(silu(acc_t(pixel[c]) * a[c] + s[c]));
        }
      } else {
        for (int64_t c = 0; c < C; ++c)
          for (int64_t p = chunk.p0; p < chunk.p1; ++p) {
            const int64_t at = offset + c * l.channel + p * l.pixel;
            result[at] = static_cast<scalar_t>(silu(acc_t(data[at]) * a[c] + s[c]));
          }
      }
    }
  });
}

// ---------------------------------------------------------------- RMSNorm + linear map
// out[p] = bias + W x[p] / sqrt(mean_c x[p]_c^2 + eps) per pixel p: AnyUp's query/key
// projection with RMSNorm's gain folded into W. x (B, C, H, W) and out (B, C_out, H, W) have
// each image's pixels channels-last-contiguous (out may be rows of a larger map); w_t = W^T
// (C, C_out). A run of kProjectionRun pixels at a time: its products (register-blocked
// multiply_accumulate) stay in cache, and the scaling and bias are applied as they are stored.
constexpr int64_t kProjectionRun = 48;

template <typename scalar_t>
void rms_linear_kernel(const at::Tensor& x, const at::Tensor& w_t, const at::Tensor& bias,
                       double eps, const at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = x.size(0), C = x.size(1), P = x.size(2) * x.size(3), C_out = out.size(1);
  const int64_t runs = (P + kProjectionRun - 1) / kProjectionRun;
  const scalar_t *input = x.data_ptr<scalar_t>(), *weight = w_t.data_ptr<scalar_t>();
  const scalar_t* shift = bias.data_ptr<scalar_t>();
  scalar_t* result = out.data_ptr<scalar_t>();
  at::parallel_for(0, B * runs, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> acc(kProjectionRun * C_out);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / runs, p0 = item % runs * kProjectionRun;
      const int64_t count = std::min(kProjectionRun, P - p0);
      const scalar_t* pixels = input + b * x.stride(0) + p0 * C;
      std::fill(acc.begin(), acc.end(), scalar_t(0));
      multiply_accumulate(count, C, C_out, pixels, C, weight, C_out, acc.data(), C_out);
      for (int64_t t = 0; t < count; ++t) {
        const scalar_t* pixel = pixels + t * C;
        const acc_t mean_square = wa::dot<acc_t>(pixel, 1, pixel, 1, C) / acc_t(C);
        const acc_t scale = acc_t(1) / std::sqrt(mean_square + acc_t(eps));
        const scalar_t* products = acc.data() + t * C_out;
        scalar_t* target = result + b * out.stride(0) + (p0 + t) * C_out;
        for (int64_t o = 0; o < C_out; ++o) target[o] = shift[o] + products[o] * scale;
      }
    }
  });
}

// ---------------------------------------------------------------- 2-D rotary encoding, in place
// x channels-last (B, D, H, W). For channel d of pixel (i, j) the angle is row_d(i) + col_d(j);
// its cos and sin come from the row and column tables by the angle-addition formulas. With the
// halves x1 = x[:D/2], x2 = x[D/2:]: x1 <- x1 cos1 - x2 sin1, x2 <- x2 cos2 + x1 sin2 (the
// channels' own angles); kTranspose, the transposed map: x1 <- x1 cos1 + x2 sin2,
// x2 <- x2 cos2 - x1 sin1.
template <typename scalar_t, bool kTranspose>
void rotary_2d_kernel(const at::Tensor& x, const at::Tensor& cos_rows, const at::Tensor& sin_rows,
                      const at::Tensor& cos_cols, const at::Tensor& sin_cols) {
  const int64_t B = x.size(0), D = x.size(1), H = x.size(2), W = x.size(3), half = D / 2;
  scalar_t* data = x.data_ptr<scalar_t>();
  const scalar_t *cr = cos_rows.data_ptr<scalar_t>(), *sr = sin_rows.data_ptr<scalar_t>();
  const scalar_t *cc = cos_cols.data_ptr<scalar_t>(), *sc = sin_cols.data_ptr<scalar_t>();
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t i = row % H;
      const scalar_t *cri = cr + i * D, *sri = sr + i * D;
      for (int64_t j = 0; j < W; ++j) {
        scalar_t* pixel = data + (row * W + j) * D;
        const scalar_t *ccj = cc + j * D, *scj = sc + j * D;
        for (int64_t d = 0; d < half; ++d) {
          const int64_t e = d + half;
          const scalar_t cos1 = cri[d] * ccj[d] - sri[d] * scj[d];
          const scalar_t sin1 = sri[d] * ccj[d] + cri[d] * scj[d];
          const scalar_t cos2 = cri[e] * ccj[e] - sri[e] * scj[e];
          const scalar_t sin2 = sri[e] * ccj[e] + cri[e] * scj[e];
          const scalar_t x1 = pixel[d], x2 = pixel[e];
          pixel[d] = kTranspose ? x1 * cos1 + x2 * sin2 : x1 * cos1 - x2 * sin1;
          pixel[e] = kTranspose ? x2 * cos2 - x1 * sin1 : x2 * cos2 + x1 * sin2;
        }
      }
    }
  });
}

// ---------------------------------------------------------------- basis responses, softmax, mean
// features (B, C, h, w) contiguous, basis (M, k * k) contiguous, out (B, M, h, w) contiguous.
// Per pixel: responses r[c * M + m] = (channel c's zero-padded k x k patch . basis m) / (number of
// in-image taps), all C * M of them in a per-thread buffer; then
//   per_channel: softmax over each channel's M responses (rows of the (C, M) view), mean over c;
//   otherwise (the official regrouping): the flat responses read as an (M, C) array, softmax
//   down each of its C columns, mean over the columns.
// The responses run in register blocks of channels x Lanes of basis kernels, over the pixel's
// in-image taps only (the padding's zeros add nothing), reading the features straight from
// their planes: each basis row load serves a block of channels, each feature broadcast a block
// of Lanes.

// Register block of the responses: kResponseLanes Lanes of basis kernels (a basis row's load,
// kept in registers) by kResponseChannels channels (at most 4), their accumulators and one
// feature broadcast within the target's vector registers: 4 x 4 zmm accumulators on AVX-512.
template <typename acc_t>
constexpr int64_t kResponseLanes = std::max<int64_t>(1, 4 / lanes_registers<acc_t>());
template <typename acc_t>
constexpr int64_t kResponseChannels = std::clamp<int64_t>(
    (kVectorRegisters - 1) / (kResponseLanes<acc_t> * lanes_registers<acc_t>()) - 1, 1, 4);

// One pixel's response problem: its in-image taps as (index t into the k x k kernel, offset of
// the tap's pixel in a feature plane), and where the responses go.
template <typename scalar_t, typename acc_t>
struct PixelResponses {
  const scalar_t* planes;  // (C, hw) features of the pixel's batch element
  const acc_t* basis_t;    // [tap][lanes * kLanes], zero past M
  int64_t C, M, hw, row;   // row = lanes * kLanes, the basis_t row length
  std::vector<int64_t> tap, offset;
  acc_t inside;            // number of in-image taps
  acc_t* r;                // (C, M) responses

  // Taps of pixel (y, x) of an h x w map that lie inside it, in kernel order.
  void set_pixel(int64_t y, int64_t x, int64_t h, int64_t w, int64_t k) {
    const int64_t pad = k / 2;
    tap.clear();
    offset.clear();
    for (int64_t yy = std::max<int64_t>(0, y - pad); yy < std::min(h, y + pad + 1); ++yy)
      for (int64_t xx = std::max<int64_t>(0, x - pad); xx < std::min(w, x + pad + 1); ++xx) {
        tap.push_back((yy - y + pad) * k + xx - x + pad);
        offset.push_back(yy * w + xx);
      }
    inside = static_cast<acc_t>(tap.size());
  }
};

// r[c * M + m] for channels [c0, c0 + kC) and the basis kernels of Lanes [g0, g0 + kG) below M:
// per channel and kernel, the products summed in tap order, then divided by the tap count.
template <int64_t kC, int64_t kG, typename scalar_t, typename acc_t>
void response_block(const PixelResponses<scalar_t, acc_t>& p, int64_t c0, int64_t g0) {
  using L = Lanes<acc_t>;
  typename L::type acc[kC][kG];
  for (int64_t c = 0; c < kC; ++c)
    for (int64_t g = 0; g < kG; ++g) acc[c][g] = typename L::type{};
  const scalar_t* planes = p.planes + c0 * p.hw;
  for (size_t u = 0; u < p.tap.size(); ++u) {
    typename L::type kernels[kG];
    for (int64_t g = 0; g < kG; ++g)
      L::load(kernels[g], p.basis_t + p.tap[u] * p.row + (g0 + g) * kLanes);
    const scalar_t* value = planes + p.offset[u];
#pragma GCC unroll 32  // keeps acc[][] in registers
    for (int64_t c = 0; c < kC; ++c) {
      const acc_t v = static_cast<acc_t>(value[c * p.hw]);
      for (int64_t g = 0; g < kG; ++g) acc[c][g] += v * kernels[g];
    }
  }
  for (int64_t c = 0; c < kC; ++c)
    for (int64_t g = 0; g < kG; ++g) {
      const int64_t m = (g0 + g) * kLanes, n = std::min(kLanes, p.M - m);
      acc_t* to = p.r + (c0 + c) * p.M + m;
      const typename L::type response = acc[c][g] / p.inside;
      if (n == kLanes) {
        L::store(response, to);
      } else {  // the last Lanes of a basis row: only its first n kernels exist
        acc_t lanes[kLanes];
        L::store(response, lanes);
        std::copy(lanes, lanes + n, to);
      }
    }
}

// response_block over Lanes [g0, row / kLanes): blocks of kG, the rest in halving blocks.
template <int64_t kC, int64_t kG, typename scalar_t, typename acc_t>
void response_lanes(const PixelResponses<scalar_t, acc_t>& p, int64_t c0, int64_t g0) {
  for (; (g0 + kG) * kLanes <= p.row; g0 += kG) response_block<kC, kG>(p, c0, g0);
  if constexpr (kG > 1) response_lanes<kC, kG / 2>(p, c0, g0);
}

// All of the pixel's responses: channel blocks of kC (the rest in halving blocks), each over
// all Lanes of basis kernels.
template <int64_t kC, int64_t kG, typename scalar_t, typename acc_t>
void responses(const PixelResponses<scalar_t, acc_t>& p, int64_t c0 = 0) {
  for (; c0 + kC <= p.C; c0 += kC) response_lanes<kC, kG>(p, c0, 0);
  if constexpr (kC > 1) responses<kC / 2, kG>(p, c0);
}

// out[i] = sum_c a[i * n + c] * weights[c] for rows [i0, rows) of the (rows, n) array a: blocks
// of kRows rows (the rest in halving blocks), each weights load serving the block; per row,
// kLanes partial sums over the whole Lanes of columns (added up by range_sum), plus the rest of
// the columns.
template <int64_t kRows, typename acc_t>
void row_dots(const acc_t* a, int64_t rows, int64_t n, const acc_t* weights, acc_t* out,
              int64_t i0 = 0) {
  using L = Lanes<acc_t>;
  for (; i0 + kRows <= rows; i0 += kRows) {
    typename L::type acc[kRows];
    for (int64_t i = 0; i < kRows; ++i) acc[i] = typename L::type{};
    int64_t c = 0;
    for (; c + kLanes <= n; c += kLanes) {
      typename L::type w;
      L::load(w, weights + c);
      for (int64_t i = 0; i < kRows; ++i) {
        typename L::type x;
        L::load(x, a + (i0 + i) * n + c);
        acc[i] += x * w;
      }
    }
    for (int64_t i = 0; i < kRows; ++i) {
      acc_t lanes[kLanes];
      L::store(acc[i], lanes);
      acc_t rest = 0;
      for (int64_t e = c; e < n; ++e) rest += a[(i0 + i) * n + e] * weights[e];
      out[i0 + i] = wa::range_sum(lanes, kLanes) + rest;
    }
  }
  if constexpr (kRows > 1) row_dots<kRows / 2>(a, rows, n, weights, out, i0);
}

// sums[m] = sum_c softmax over m of row c of the (C, M) responses r (overwritten by its exps).
template <typename acc_t>
void softmax_rows_sum(acc_t* r, int64_t C, int64_t M, acc_t* sums) {
  std::fill(sums, sums + M, acc_t(0));
  for (int64_t c = 0; c < C; ++c) {
    acc_t* row = r + c * M;
    const acc_t top = wa::range_max(row, M, row[0]);
    for (int64_t m = 0; m < M; ++m) row[m] = wa::exp_(row[m] - top);
    const acc_t inv = acc_t(1) / wa::range_sum(row, M);
    for (int64_t m = 0; m < M; ++m) sums[m] += row[m] * inv;
  }
}

// sums[m] = sum_c softmax down column c of the (M, C) array a (overwritten by its exps), with
// (C) scratch top and total: column maxima, then exps and column sums in one pass, then the rows'
// sums weighted by 1 / the column sums.
template <typename acc_t>
void softmax_columns_sum(acc_t* a, int64_t M, int64_t C, acc_t* top, acc_t* total, acc_t* sums) {
  std::copy(a, a + C, top);
  for (int64_t m = 1; m < M; ++m)
    for (int64_t c = 0; c < C; ++c) top[c] = wa::max_(top[c], a[m * C + c]);
  std::fill(total, total + C, acc_t(0));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t c = 0; c < C; ++c) {
      a[m * C + c] = wa::exp_(a[m * C + c] - top[c]);
      total[c] += a[m * C + c];
    }
  for (int64_t c = 0; c < C; ++c) total[c] = acc_t(1) / total[c];
  row_dots<4>(a, M, C, total, sums);
}

template <typename scalar_t>
void basis_softmax_mean_kernel(const at::Tensor& features, const at::Tensor& basis,
                               bool per_channel, const at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = features.size(0), C = features.size(1), h = features.size(2),
                w = features.size(3), M = basis.size(0), taps = basis.size(1);
  const int64_t k = static_cast<int64_t>(std::lround(std::sqrt(double(taps))));
  const int64_t hw = h * w, row = (M + kLanes - 1) / kLanes * kLanes;
  std::vector<acc_t> basis_t(taps * row, acc_t(0));  // [tap][basis]: Lanes run over the basis
  for (int64_t m = 0; m < M; ++m)
    for (int64_t t = 0; t < taps; ++t)
      basis_t[t * row + m] = static_cast<acc_t>(basis.data_ptr<scalar_t>()[m * taps + t]);
  const scalar_t* feats = features.data_ptr<scalar_t>();
  scalar_t* result = out.data_ptr<scalar_t>();

  at::parallel_for(0, B * hw, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> r(C * M), top(C), total(C), sums(M);
    PixelResponses<scalar_t, acc_t> p{nullptr, basis_t.data(), C, M, hw, row, {}, {}, 0, r.data()};
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / hw, y = item % hw / w, x = item % w;
      p.planes = feats + b * C * hw;
      p.set_pixel(y, x, h, w, k);
      responses<kResponseChannels<acc_t>, kResponseLanes<acc_t>>(p);
      if (per_channel)
        softmax_rows_sum(r.data(), C, M, sums.data());
      else  // rows of the (M, C) view are contiguous: column statistics run across them
        softmax_columns_sum(r.data(), M, C, top.data(), total.data(), sums.data());
      for (int64_t m = 0; m < M; ++m)
        result[(b * M + m) * hw + y * w + x] = static_cast<scalar_t>(sums[m] / acc_t(C));
    }
  });
}

}  // namespace

void channel_moments(const at::Tensor& x, const at::Tensor& moments) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "channel_moments_cpu",
                             [&] { channel_moments_kernel<scalar_t>(x, moments); });
}

void affine_silu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                 const at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "affine_silu_cpu",
                             [&] { affine_silu_kernel<scalar_t>(x, scale, shift, out); });
}

void rms_linear(const at::Tensor& x, const at::Tensor& w_t, const at::Tensor& bias, double eps,
                const at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rms_linear_cpu",
                             [&] { rms_linear_kernel<scalar_t>(x, w_t, bias, eps, out); });
}

void rotary_2d(const at::Tensor& x, const at::Tensor& cos_rows, const at::Tensor& sin_rows,
               const at::Tensor& cos_cols, const at::Tensor& sin_cols, bool transpose) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rotary_2d_cpu", [&] {
    if (transpose)
      rotary_2d_kernel<scalar_t, true>(x, cos_rows, sin_rows, cos_cols, sin_cols);
    else
      rotary_2d_kernel<scalar_t, false>(x, cos_rows, sin_rows, cos_cols, sin_cols);
  });
}

void basis_softmax_mean(const at::Tensor& features, const at::Tensor& basis, bool per_channel,
                        const at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES(features.scalar_type(), "basis_softmax_mean_cpu", [&] {
    basis_softmax_mean_kernel<scalar_t>(features, basis, per_channel, out);
  });
}

}  // namespace WA_ISA
}  // namespace cpu
}  // namespace anyup_neck

WA_END_TARGET
