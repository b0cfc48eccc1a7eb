// CUDA kernels of the window-attention op: float32, float16 and bfloat16 (float32 accumulation),
// and float64, in two versions chosen by the op's `kernels` argument:
//   per_pixel (the default): one thread per output pixel runs the shared per-query math
//     (common/window_attention_math.h) for the forward and the backward pixel pass; one thread
//     per (key, slice of kSlice value channels) runs the shared key pass.
//   tiled: the blocks of common/window_tiles.h (tiles of 8 x 8 pixels, 4 x 4 register tiles of
//     small matrix products through shared memory; the backward's key gradients as per-tile
//     partial rows reduced per key), whose phases run here between __syncthreads() and on the
//     CPU thread by thread in the tests. Compiled and tested on the CPU, not yet run on a GPU.
// Every output element is written by exactly one thread with a fixed summation order, so
// forward and backward are deterministic (no atomics), whatever
// torch.use_deterministic_algorithms says.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/window_attention.h"
#include "../common/window_attention_math.h"
#include "../common/window_tiles.h"
#include "../common/window_tiles_host.h"

namespace anyup_neck {
namespace {

constexpr int kScratch = 256;     // per-thread scratch of the shared math (local memory)
constexpr int kThreads = 128;     // threads per block
constexpr int64_t kSlice = 32;    // value channels per key-pass thread

using wa::KeyCursor;
using wa::Window;

// Problem sizes, passed to the kernels by value.
struct Sizes {
  int64_t B, D, C, H, W, h, w;
  int heads;
  int64_t dim;
  float ratio;

  Sizes(const Tensor& q, const Tensor& v, int64_t num_heads, double window_ratio)
      : B(q.size(0)), D(q.size(1)), C(v.size(1)), H(q.size(2)), W(q.size(3)), h(v.size(2)),
        w(v.size(3)), heads(static_cast<int>(num_heads)), dim(q.size(1) / num_heads),
        ratio(static_cast<float>(window_ratio)) {}
};

template <typename acc_t, typename scalar_t>
__device__ wa::KeyMap<acc_t, scalar_t> key_map(const Sizes& s, const scalar_t* k_cl, int64_t b,
                                               acc_t scale) {
  return {k_cl + b * s.h * s.w * s.D, 1, s.D, s.w, s.heads, s.dim, scale};
}

int blocks_for(int64_t threads) {
  const int64_t blocks = (threads + kThreads - 1) / kThreads;
  TORCH_CHECK(blocks <= INT32_MAX, "window_attention (CUDA): problem too large");
  return static_cast<int>(blocks);
}

// out (B, C, H, W) in the accumulation type; lse (B, N, H, W).
template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(Sizes s, acc_t scale, const scalar_t* q, Layout ql,
                               const scalar_t* k_cl, const scalar_t* v, acc_t* out, acc_t* lse) {
  const int64_t HW = s.H * s.W, hw = s.h * s.w;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= s.B * HW) return;
  const int64_t b = index / HW, p = index % HW;
  const scalar_t* vb = v + b * s.C * hw;
  acc_t* op = out + b * s.C * HW + p;
  bool first = true;
  // Adds the run's weighted values to every output channel (the first run initialises them).
  auto sink = [&](KeyCursor cursor, int64_t count, const acc_t* wts) {
    for (int64_t c = 0; c < s.C; ++c) {
      acc_t acc = first ? acc_t(0) : op[c * HW];
      KeyCursor key = cursor;
      for (int64_t u = 0; u < count; ++u, key.next())
        acc += wts[u] * static_cast<acc_t>(vb[c * hw + key.row * s.w + key.col]);
      op[c * HW] = acc;
    }
    first = false;
  };
  const Window win = wa::query_window(p / s.W, p % s.W, s.H, s.W, s.h, s.w, s.ratio);
  const auto keys = key_map(s, k_cl, b, scale);
  const wa::QueryLogits<acc_t, scalar_t, scalar_t> logits{keys, q + b * ql.batch + p * ql.pixel,
                                                          ql.channel};
  wa::forward_query<kScratch>(s.heads, logits, win, lse + b * s.heads * HW + p, HW, sink);
}

// Pixel pass: delta (B, N, H, W) and dq (B, D, H, W, zero on entry), accumulation type.
template <typename scalar_t, typename acc_t>
__global__ void backward_pixel_kernel(Sizes s, acc_t scale, const scalar_t* g, const scalar_t* q,
                                      Layout ql, const scalar_t* k_cl, const scalar_t* v,
                                      const acc_t* lse, acc_t* delta, acc_t* dq) {
  const int64_t HW = s.H * s.W, hw = s.h * s.w;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= s.B * HW) return;
  const int64_t b = index / HW, p = index % HW;
  const scalar_t* gp = g + b * s.C * HW + p;
  const scalar_t* vb = v + b * s.C * hw;
  const scalar_t* kb = k_cl + b * hw * s.D;
  acc_t* dqp = dq + b * s.D * HW + p;
  auto dw = [&](int64_t row, int64_t col) {
    const scalar_t* vk = vb + row * s.w + col;
    acc_t acc = acc_t(0);
    for (int64_t c = 0; c < s.C; ++c)
      acc += static_cast<acc_t>(gp[c * HW]) * static_cast<acc_t>(vk[c * hw]);
    return acc;
  };
  auto sink = [&](KeyCursor cursor, int64_t count, const acc_t* ds, int64_t stride) {
    for (int64_t c = 0; c < s.D; ++c) {
      const acc_t* dsn = ds + (c / s.dim) * stride;
      acc_t acc = dqp[c * HW];
      KeyCursor key = cursor;
      for (int64_t u = 0; u < count; ++u, key.next())
        acc += dsn[u] * static_cast<acc_t>(kb[(key.row * s.w + key.col) * s.D + c]);
      dqp[c * HW] = acc;
    }
  };
  const Window win = wa::query_window(p / s.W, p % s.W, s.H, s.W, s.h, s.w, s.ratio);
  const int64_t stat = b * s.heads * HW + p;
  const auto keys = key_map(s, k_cl, b, scale);
  const wa::QueryLogits<acc_t, scalar_t, scalar_t> logits{keys, q + b * ql.batch + p * ql.pixel,
                                                          ql.channel};
  wa::backward_query<kScratch>(s.heads, scale, logits, win, lse + stat, HW, dw, delta + stat, HW,
                               sink);
}

// Key pass: dk (B, D, h, w) and dv (B, C, h, w), zero on entry, accumulation type. Thread
// (b, key, slice) owns dv channels [slice * kSlice, ...) of its key; slice 0 also owns dk.
template <typename scalar_t, typename acc_t>
__global__ void backward_key_kernel(Sizes s, acc_t scale, const scalar_t* g, const scalar_t* q,
                                    Layout ql, const scalar_t* k_cl, const scalar_t* v,
                                    const acc_t* lse, const acc_t* delta, acc_t* dk, acc_t* dv) {
  const int64_t HW = s.H * s.W, hw = s.h * s.w;
  const int64_t slices = (s.C + kSlice - 1) / kSlice;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= s.B * hw * slices) return;
  const int64_t slice = index % slices, key = (index / slices) % hw, b = index / (slices * hw);
  const int64_t row = key / s.w, col = key % s.w;
  const wa::KeyPassMaps<acc_t, scalar_t> maps{
      key_map(s, k_cl, b, scale),
      {q + b * ql.batch, ql.channel, ql.pixel},
      {g + b * s.C * HW, HW, 1},
      {lse + b * s.heads * HW, HW, 1},
      {delta + b * s.heads * HW, HW, 1},
      {v + b * s.C * hw, hw, 1},
      s.C,
      s.W};
  const wa::KeyGrads<acc_t> grads{dk + b * s.D * hw + key, hw, dv + b * s.C * hw + key, hw,
                                  slice * kSlice, wa::min_((slice + 1) * kSlice, s.C), slice == 0};
  int64_t i0, i1, j0, j1;
  wa::covering_range(row, s.H, s.h, s.ratio, i0, i1);
  wa::covering_range(col, s.W, s.w, s.ratio, j0, j1);
  for (int64_t i = i0; i < i1; ++i) wa::key_backward_row<kScratch>(maps, row, col, i, j0, j1, grads);
}

// ---------------------------------------------------------------------------------------------
// Tiled kernels: the phases of common/window_tiles.h, each followed by a barrier.

namespace tiles = wa::tiles;

struct BlockRun {
  template <typename Phase>
  __host__ __device__ void operator()(const Phase& phase) const {
#ifdef __CUDA_ARCH__
    phase(static_cast<int>(threadIdx.x));
    __syncthreads();
#endif
  }
};

tiles::Sizes tile_sizes(const Sizes& s) {
  return {s.B, s.D, s.C, s.H, s.W, s.h, s.w, s.dim, s.heads, s.ratio};
}

__device__ void* shared_memory() {
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  return shared_bytes;
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(tiles::kThreads)
    tiled_forward_kernel(tiles::Sizes s, tiles::Tensors<scalar_t, acc_t> x, acc_t scale) {
  tiles::forward_block(BlockRun{}, s, x, scale, blockIdx.x, shared_memory());
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(tiles::kThreads)
    tiled_pixel_kernel(tiles::Sizes s, tiles::Tensors<scalar_t, acc_t> x, tiles::Band band,
                       acc_t scale) {
  tiles::pixel_block(BlockRun{}, s, x, band, scale, blockIdx.x, shared_memory());
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(tiles::kThreads)
    tiled_reduce_kernel(tiles::Sizes s, tiles::Tensors<scalar_t, acc_t> x, tiles::Band band) {
  tiles::reduce_block(BlockRun{}, s, x, band, blockIdx.x, shared_memory());
}

// Launches `kernel` on `blocks` blocks of kThreads threads with `bytes` of dynamic shared
// memory, opting in above the default 48 KB; the device's limit is checked.
template <typename Kernel, typename... Args>
void launch_tiled(Kernel kernel, int64_t blocks, int64_t bytes, const char* name, Args... args) {
  if (blocks == 0) return;
  TORCH_CHECK(blocks <= INT32_MAX, "window_attention (CUDA, tiled): problem too large");
  int limit = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                        c10::cuda::current_device()));
  TORCH_CHECK(bytes <= static_cast<int64_t>(limit), "window_attention (CUDA, tiled): ", name,
              " needs ", bytes, " bytes of shared memory per block, the device allows ", limit,
              " (fewer heads, or kernels='per_pixel')");
  if (bytes > 48 * 1024)
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(bytes)));
  kernel<<<static_cast<int>(blocks), tiles::kThreads, bytes,
           c10::cuda::getCurrentCUDAStream()>>>(args...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void check_cuda(const Tensor& q) {
  TORCH_CHECK(q.is_cuda(), "window_attention (CUDA kernel): expected CUDA tensors, got ",
              q.device());
}

at::ScalarType acc_dtype(const Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// `buffer` (accumulation type) as a tensor of `like`'s dtype.
Tensor as_dtype_of(const Tensor& buffer, const Tensor& like) {
  return buffer.scalar_type() == like.scalar_type() ? buffer : buffer.to(like.scalar_type());
}

std::tuple<Tensor, Tensor> forward_cuda(const Tensor& q_in, const Tensor& k, const Tensor& v_in,
                                        int64_t num_heads, double window_ratio, double scale,
                                        c10::string_view kernels) {
  check_forward_args(q_in, k, v_in, num_heads, window_ratio);
  check_cuda(q_in);
  const Kernels choice = parse_kernels(kernels, Kernels::per_pixel, "CUDA");
  const c10::cuda::CUDAGuard guard(q_in.device());
  const Sizes s(q_in, v_in, num_heads, window_ratio);
  const Tensor q = with_flat_pixels(q_in);
  const Tensor k_cl = k.permute({0, 2, 3, 1}).contiguous();
  const Tensor v = v_in.contiguous();
  const auto acc_options = q.options().dtype(acc_dtype(q));
  // The tiled kernels write out in q's dtype (half the memory of float32 sums in float16 and
  // bfloat16, and no conversion after); the per-pixel ones in the accumulation type.
  Tensor out = at::empty({s.B, s.C, s.H, s.W},
                         choice == Kernels::tiled ? q.options() : acc_options);
  Tensor lse = at::empty({s.B, s.heads, s.H, s.W}, acc_options);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(),
                                  "window_attention_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (choice == Kernels::tiled) {
      const Tensor k_channels = k.contiguous(), v_cl = v.permute({0, 2, 3, 1}).contiguous();
      const tiles::Sizes ts = tile_sizes(s);
      const Tensor out_sums = tiles::sums_buffer(ts, out, acc_options, /*share=*/true);
      const auto x = tiles::tensors_of<scalar_t, acc_t>(q, k_channels, k_cl, v, v_cl, Tensor(),
                                                        out, out_sums, lse, Tensor(), Tensor());
      launch_tiled(tiled_forward_kernel<scalar_t, acc_t>,
                   tiles::band_blocks(ts, tiles::whole_map(ts)),
                   tiles::forward_shared_bytes<acc_t>(ts), "the forward", ts, x,
                   static_cast<acc_t>(scale));
      return;
    }
    forward_kernel<scalar_t, acc_t><<<blocks_for(s.B * s.H * s.W), kThreads, 0, stream>>>(
        s, static_cast<acc_t>(scale), q.data_ptr<scalar_t>(), layout_of(q),
        k_cl.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), out.data_ptr<acc_t>(),
        lse.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {as_dtype_of(out, q), lse};
}

std::tuple<Tensor, Tensor, Tensor> backward_cuda(const Tensor& grad_out, const Tensor& q_in,
                                                 const Tensor& k, const Tensor& v_in,
                                                 const Tensor& lse_in, int64_t num_heads,
                                                 double window_ratio, double scale,
                                                 c10::string_view kernels) {
  check_backward_args(grad_out, q_in, k, v_in, lse_in, num_heads, window_ratio);
  check_cuda(q_in);
  const Kernels choice = parse_kernels(kernels, Kernels::per_pixel, "CUDA");
  const c10::cuda::CUDAGuard guard(q_in.device());
  const Sizes s(q_in, v_in, num_heads, window_ratio);
  const Tensor g = grad_out.contiguous();
  const Tensor q = with_flat_pixels(q_in);
  const Tensor k_cl = k.permute({0, 2, 3, 1}).contiguous();
  const Tensor v = v_in.contiguous();
  const auto acc_options = q.options().dtype(acc_dtype(q));
  const Tensor lse = lse_in.to(acc_dtype(q)).contiguous();
  // The tiled kernels write dq in q's dtype (NCHW), the per-pixel ones add to float32 zeros.
  Tensor dq = choice == Kernels::tiled ? at::empty(q.sizes(), q.options())
                                       : at::zeros(q.sizes(), acc_options);
  Tensor dk, dv;  // the per-pixel key pass accumulates into zeros, the tiled one reduces rows
  const int64_t slices = (s.C + kSlice - 1) / kSlice;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(),
                                  "window_attention_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto sc = static_cast<acc_t>(scale);
    if (choice == Kernels::tiled) {
      const Tensor k_channels = k.contiguous(), v_cl = v.permute({0, 2, 3, 1}).contiguous();
      const tiles::Sizes ts = tile_sizes(s);
      const Tensor dq_sums = tiles::sums_buffer(ts, dq, acc_options, /*share=*/true);
      auto x = tiles::tensors_of<scalar_t, acc_t>(q, k_channels, k_cl, v, v_cl, g, Tensor(),
                                                  Tensor(), lse, dq, dq_sums);
      const int64_t pixel_bytes = tiles::pixel_shared_bytes<acc_t>(ts);
      std::tie(dk, dv) = tiles::backward_in_bands(
          ts, x, acc_options,
          [&](const tiles::Band& band) {
            launch_tiled(tiled_pixel_kernel<scalar_t, acc_t>, tiles::band_blocks(ts, band),
                         pixel_bytes, "the backward pixel pass", ts, x, band, sc);
          },
          [&](const tiles::Band& band) {
            launch_tiled(tiled_reduce_kernel<scalar_t, acc_t>, tiles::reduce_blocks(ts, band),
                         tiles::reduce_shared_bytes<acc_t>(ts), "the backward reduction", ts,
                         x, band);
          });
      return;
    }
    const Tensor delta = at::empty_like(lse);
    dk = at::zeros(k.sizes(), acc_options);
    dv = at::zeros(v.sizes(), acc_options);
    backward_pixel_kernel<scalar_t, acc_t><<<blocks_for(s.B * s.H * s.W), kThreads, 0, stream>>>(
        s, sc, g.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), layout_of(q),
        k_cl.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), lse.data_ptr<acc_t>(),
        delta.data_ptr<acc_t>(), dq.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    backward_key_kernel<scalar_t, acc_t><<<blocks_for(s.B * s.h * s.w * slices), kThreads, 0,
                                           stream>>>(
        s, sc, g.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), layout_of(q),
        k_cl.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), lse.data_ptr<acc_t>(),
        delta.data_ptr<acc_t>(), dk.data_ptr<acc_t>(), dv.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {as_dtype_of(dq, q).contiguous(), as_dtype_of(dk, k), as_dtype_of(dv, v)};
}

}  // namespace

TORCH_LIBRARY_IMPL(anyup_neck, CUDA, m) {
  m.impl("window_attention_forward", &forward_cuda);
  m.impl("window_attention_backward", &backward_cuda);
}

}  // namespace anyup_neck
