// The tiled CUDA kernels' block code (common/window_tiles.h) on the CPU, for the tests: each
// block's phases run one after the other, each phase for every thread of the block in turn,
// over a shared-memory array of the size the GPU gets. Blocks run in parallel (they write
// disjoint outputs). The shared memory is filled with NaN before each block, so a phase that
// reads what no earlier phase wrote shows in the results.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <limits>
#include <vector>

#include "../common/window_attention.h"
#include "../common/window_tiles.h"
#include "window_attention_cpu.h"

namespace anyup_neck {
namespace cpu {
namespace {

namespace tiles = wa::tiles;

// The barrier-separated phases of one block, run thread by thread.
struct SerialBlock {
  template <typename Phase>
  void operator()(const Phase& phase) const {
    for (int t = 0; t < tiles::kThreads; ++t) phase(t);
  }
};

tiles::Sizes sizes_of(const Problem& p) {
  return {p.B, p.D, p.C, p.H, p.W, p.h, p.w, p.dim, static_cast<int>(p.heads), p.ratio};
}

// The problem's tensors as the block code sees them (CPU kernels accumulate in their dtype).
template <typename scalar_t>
tiles::Tensors<scalar_t, scalar_t> tensors_of(const Problem& p) {
  auto data = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
  const Layout q = layout_of(p.q);
  return {data(p.q), q.batch, q.channel, q.pixel, data(p.k_cl), data(p.v), data(p.grad_out),
          data(p.out), data(p.lse), data(p.delta), data(p.dq), data(p.dk), data(p.dv)};
}

// Runs block(run, sizes, x, scale, index, shared) for every block index below `blocks`.
template <typename scalar_t, typename Block>
void run_blocks(const Problem& p, const tiles::Tensors<scalar_t, scalar_t>& x, int64_t blocks,
                int64_t shared_size, const Block& block) {
  const tiles::Sizes s = sizes_of(p);
  const auto scale = static_cast<scalar_t>(p.scale);
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> shared(shared_size);
    for (int64_t index = begin; index < end; ++index) {
      std::fill(shared.begin(), shared.end(), std::numeric_limits<scalar_t>::quiet_NaN());
      block(SerialBlock{}, s, x, scale, index, shared.data());
    }
  });
}

}  // namespace

void tiled_forward(Problem& p) {
  const tiles::Sizes s = sizes_of(p);
  AT_DISPATCH_FLOATING_TYPES(p.q.scalar_type(), "window_attention_tiled_forward", [&] {
    run_blocks<scalar_t>(p, tensors_of<scalar_t>(p), tiles::pixel_blocks(s),
                         tiles::forward_shared_size(s),
                         [](auto&&... args) { tiles::forward_block(args...); });
  });
}

void tiled_backward(Problem& p) {
  const tiles::Sizes s = sizes_of(p);
  AT_DISPATCH_FLOATING_TYPES(p.q.scalar_type(), "window_attention_tiled_backward", [&] {
    auto x = tensors_of<scalar_t>(p);
    run_blocks<scalar_t>(p, x, tiles::pixel_blocks(s), tiles::pixel_shared_size(s),
                         [](auto&&... args) { tiles::pixel_block(args...); });
    const int64_t splits = tiles::key_splits(s);
    const at::Tensor dk_shares = at::zeros({splits, p.B, p.D, p.h, p.w}, p.q.options());
    const at::Tensor dv_shares = at::zeros({splits, p.B, p.C, p.h, p.w}, p.q.options());
    x.dk = dk_shares.data_ptr<scalar_t>();
    x.dv = dv_shares.data_ptr<scalar_t>();
    run_blocks<scalar_t>(p, x, tiles::key_blocks(s), tiles::key_shared_size(s),
                         [](auto&&... args) { tiles::key_block(args...); });
    at::sum_out(p.dk, dk_shares, 0);
    at::sum_out(p.dv, dv_shares, 0);
  });
}

}  // namespace cpu
}  // namespace anyup_neck
