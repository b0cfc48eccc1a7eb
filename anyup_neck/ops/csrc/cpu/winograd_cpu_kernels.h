// The Winograd F(2x2, 3x3) convolution (float32 and float64), compiled once per instruction
// set: included by cpu/kernels_{base,avx2,avx512}.cpp (see isa_target.h); the products are
// vector_blocks.h's register-blocked multiply_accumulate.
//
// A 3x3 convolution (zero padding 1, stride 1) computes each 2x2 block of outputs ("tile") from
// the 4x4 input patch d around it as Y = A^T [U . V] A, where V = B^T d B is the patch's
// transform and U = G g G^T the kernel's (made once by the caller), the product elementwise per
// transform entry e (16 of them) and summed over the input channels: 16 matrix products
// (tiles x C_in) (C_in x C_out), 2.25 times fewer multiplications than the direct convolution,
// with transforms of additions and subtractions only, so float32 results stay within a few ulps
// of the direct ones.
//
// Tile (b, ty, tx) covers output rows row_begin + 2 ty + {0, 1} and columns 2 tx + {0, 1}; its
// patch is rows row_begin + 2 ty - 1 .. + 2 and columns 2 tx - 1 .. + 2, zero outside the map.
// One work item is a run of up to kWinogradTiles tiles of one row of tiles: its transforms and
// products stay in the cache, and the whole convolution is one parallel loop. Maps are
// channels-last; the transforms' loops run over contiguous channels.

#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "fused_cpu.h"
#include "isa_target.h"

WA_BEGIN_TARGET

#include "vector_blocks.h"

namespace anyup_neck {
namespace cpu {
namespace WA_ISA {
namespace {

constexpr int64_t kWinogradTiles = 48;  // tiles per work item (a multiple of the row block)

// v[e * stride + t * C + c] = (B^T d B)[e] of channel c for tiles t < count starting at column
// tile tx0 of tile row (b, ty), B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
template <typename scalar_t>
void transform_patches(const scalar_t* x, int64_t C, int64_t H, int64_t W, int64_t b, int64_t y0,
                       int64_t tx0, int64_t count, const scalar_t* zeros, scalar_t* v,
                       int64_t stride) {
  for (int64_t t = 0; t < count; ++t) {
    const scalar_t* d[4][4];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        const int64_t y = y0 - 1 + i, column = 2 * (tx0 + t) - 1 + j;
        const bool inside = y >= 0 && y < H && column >= 0 && column < W;
        d[i][j] = inside ? x + ((b * H + y) * W + column) * C : zeros;
      }
    scalar_t* out = v + t * C;
#pragma GCC ivdep
    for (int64_t c = 0; c < C; ++c) {
      scalar_t r[4][4];  // B^T d: combinations of the patch's rows
      for (int j = 0; j < 4; ++j) {
        r[0][j] = d[0][j][c] - d[2][j][c];
        r[1][j] = d[1][j][c] + d[2][j][c];
        r[2][j] = d[2][j][c] - d[1][j][c];
        r[3][j] = d[1][j][c] - d[3][j][c];
      }
      for (int i = 0; i < 4; ++i) {  // (B^T d) B: the same combinations of its columns
        out[(4 * i + 0) * stride + c] = r[i][0] - r[i][2];
        out[(4 * i + 1) * stride + c] = r[i][1] + r[i][2];
        out[(4 * i + 2) * stride + c] = r[i][2] - r[i][1];
        out[(4 * i + 3) * stride + c] = r[i][1] - r[i][3];
      }
    }
  }
}

// Each tile's 2x2 outputs A^T m A from m[e * stride + t * C + c], A^T = [1 1 1 0; 0 1 -1 -1],
// into rows[i] (output row y0 + i, channels-last, nullptr past the range) at columns
// 2 (tx0 + t) + j < W.
template <typename scalar_t>
void transform_products(const scalar_t* m, int64_t stride, int64_t C, int64_t W, int64_t tx0,
                        int64_t count, scalar_t* const rows[2], scalar_t* discard) {
  for (int64_t t = 0; t < count; ++t) {
    scalar_t* y[2][2];
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j) {
        const int64_t column = 2 * (tx0 + t) + j;
        y[i][j] = rows[i] != nullptr && column < W ? rows[i] + column * C : discard;
      }
    const scalar_t* in = m + t * C;
#pragma GCC ivdep
    for (int64_t c = 0; c < C; ++c) {
      scalar_t s[4][2];  // m A: combinations of the columns
      for (int i = 0; i < 4; ++i) {
        const scalar_t m0 = in[(4 * i) * stride + c], m1 = in[(4 * i + 1) * stride + c];
        const scalar_t m2 = in[(4 * i + 2) * stride + c], m3 = in[(4 * i + 3) * stride + c];
        s[i][0] = m0 + m1 + m2;
        s[i][1] = m1 - m2 - m3;
      }
      for (int j = 0; j < 2; ++j) {  // A^T (m A): the same combinations of the rows
        y[0][j][c] = s[0][j] + s[1][j] + s[2][j];
        y[1][j][c] = s[1][j] - s[2][j] - s[3][j];
      }
    }
  }
}

// out (B, C_out, R, W) channels-last = output rows row_begin .. row_begin + R - 1 of the
// convolution of x (B, C_in, H, W) channels-last with the kernel whose transform is U (16, C_in,
// C_out).
template <typename scalar_t>
void winograd_conv3x3_kernel(const at::Tensor& x, const at::Tensor& U, int64_t row_begin,
                             const at::Tensor& out) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t C_out = out.size(1), R = out.size(2);
  const int64_t tile_rows = (R + 1) / 2, tiles_w = (W + 1) / 2;
  const int64_t runs = (tiles_w + kWinogradTiles - 1) / kWinogradTiles;
  // Entry e of a run's transforms starts at e * stride; one spare cache line keeps the 16 entries
  // from mapping onto the same cache sets.
  const int64_t v_stride = kWinogradTiles * C + 64 / sizeof(scalar_t);
  const int64_t m_stride = kWinogradTiles * C_out + 64 / sizeof(scalar_t);
  const scalar_t *input = x.data_ptr<scalar_t>(), *kernels = U.data_ptr<scalar_t>();
  scalar_t* result = out.data_ptr<scalar_t>();
  const std::vector<scalar_t> zeros(C, scalar_t(0));  // the padding, read like a pixel
  at::parallel_for(0, B * tile_rows * runs, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> v(16 * v_stride), m(16 * m_stride), discard(C_out);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / (tile_rows * runs), ty = item / runs % tile_rows;
      const int64_t tx0 = item % runs * kWinogradTiles;
      const int64_t count = std::min(kWinogradTiles, tiles_w - tx0);
      const int64_t row = 2 * ty;  // of out
      transform_patches(input, C, H, W, b, row_begin + row, tx0, count, zeros.data(), v.data(),
                        v_stride);
      std::fill(m.begin(), m.end(), scalar_t(0));
      for (int64_t e = 0; e < 16; ++e)
        multiply_accumulate(count, C, C_out, v.data() + e * v_stride, C,
                            kernels + e * C * C_out, C_out, m.data() + e * m_stride, C_out);
      scalar_t* const rows[2] = {result + (b * R + row) * W * C_out,
                                 row + 1 < R ? result + (b * R + row + 1) * W * C_out : nullptr};
      transform_products(m.data(), m_stride, C_out, W, tx0, count, rows, discard.data());
    }
  });
}

}  // namespace

void winograd_conv3x3(const at::Tensor& x, const at::Tensor& U, int64_t row_begin,
                      const at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "winograd_conv3x3_cpu",
                             [&] { winograd_conv3x3_kernel<scalar_t>(x, U, row_begin, out); });
}

}  // namespace WA_ISA
}  // namespace cpu
}  // namespace anyup_neck

WA_END_TARGET
