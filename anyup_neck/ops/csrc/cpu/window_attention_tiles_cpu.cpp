// The tiled CUDA kernels' block code (common/window_tiles.h) on the CPU, for the tests: each
// block's phases run one after the other, each phase for every thread of the block in turn,
// over a shared-memory array of the size the GPU gets, in the GPU's types (float16 and
// bfloat16 inputs with float32 accumulation too). Blocks run in parallel (they write disjoint
// outputs). The shared memory is filled with NaN before each block, so a phase that
// reads what no earlier phase wrote shows in the results (shared integers are not NaN: an
// unwritten offset is a garbage index instead); guard zones of NaN on both sides of it are
// checked after each block, so a write just outside it stops the op with an error. With
// Kernels::tiled_reversed the threads of every phase, and the blocks of every launch, run in
// reverse order and one block at a time: results that differ from Kernels::tiled show a race
// on the GPU. (Conflicts that give the same value in either order, such as two threads adding
// to one sum, which a GPU can lose, do not show.)
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../common/window_attention.h"
#include "../common/window_tiles.h"
#include "../common/window_tiles_host.h"
#include "window_attention_cpu.h"

namespace anyup_neck {
namespace cpu {
namespace {

namespace tiles = wa::tiles;

// The barrier-separated phases of one block, run thread by thread (in reverse if `reversed`).
struct SerialBlock {
  bool reversed;
  template <typename Phase>
  void operator()(const Phase& phase) const {
    for (int i = 0; i < tiles::kThreads; ++i) phase(reversed ? tiles::kThreads - 1 - i : i);
  }
};

tiles::Sizes sizes_of(const Problem& p) {
  return {p.B, p.D, p.C, p.H, p.W, p.h, p.w, p.dim, static_cast<int>(p.heads), p.ratio};
}

// The accumulation dtype's options for tensors like `t`.
at::TensorOptions acc_options(const at::Tensor& t) {
  return t.options().dtype(at::toOpMathType(t.scalar_type()));
}

// A map's sums buffer apart from the map even where the dtypes agree: the path the GPU takes
// for float16 and bfloat16 (sums in float32, the map written once from them).
at::Tensor sums_apart(const tiles::Sizes& s, const at::Tensor& map) {
  return tiles::sums_buffer(s, map, acc_options(map), /*share=*/false);
}

// Elements of the NaN guard zones before and after a block's shared memory (a stray write
// lands there unless it is NaN or goes further than this).
constexpr int64_t kGuard = 256;

// Runs block(SerialBlock, index, shared) for every block index below `blocks`, over
// `shared_bytes` of NaN-filled shared memory (of acc_t) per block between two guard zones:
// blocks in parallel, or for Kernels::tiled_reversed one after another from the last, each
// phase's threads from the last.
template <typename acc_t, typename Block>
void run_blocks(Kernels kernels, int64_t blocks, int64_t shared_bytes, const Block& block) {
  const SerialBlock run{kernels == Kernels::tiled_reversed};
  const int64_t size = (shared_bytes + sizeof(acc_t) - 1) / sizeof(acc_t);
  const int64_t grain = run.reversed ? std::max<int64_t>(blocks, 1) : 1;  // one chunk: serial
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> memory(kGuard + size + kGuard);
    for (int64_t i = begin; i < end; ++i) {
      std::fill(memory.begin(), memory.end(), std::numeric_limits<acc_t>::quiet_NaN());
      block(run, run.reversed ? blocks - 1 - i : i, static_cast<void*>(memory.data() + kGuard));
      for (int64_t g = 0; g < kGuard; ++g) {
        TORCH_CHECK(std::isnan(memory[g]) && std::isnan(memory[kGuard + size + g]),
                    "window_attention (tiled kernels): a block wrote outside its ", shared_bytes,
                    " bytes of shared memory");
      }
    }
  });
}

}  // namespace

void tiled_forward(Problem& p, const at::Tensor& k) {
  const tiles::Sizes s = sizes_of(p);
  const at::Tensor out_sums = sums_apart(s, p.out);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.q.scalar_type(),
                                  "window_attention_tiled_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto x = tiles::tensors_of<scalar_t, acc_t>(p.q, k, p.k_cl, p.v, p.v_cl, at::Tensor(),
                                                        p.out, out_sums, p.lse, at::Tensor(),
                                                        at::Tensor());
    const auto scale = static_cast<acc_t>(p.scale);
    run_blocks<acc_t>(p.kernels, tiles::band_blocks(s, tiles::whole_map(s)),
                      tiles::forward_shared_bytes<acc_t>(s),
                      [&](const SerialBlock& run, int64_t index, void* shared) {
                        tiles::forward_block(run, s, x, scale, index, shared);
                      });
  });
}

void tiled_backward(Problem& p, const at::Tensor& k) {
  const tiles::Sizes s = sizes_of(p);
  const at::Tensor dq_sums = sums_apart(s, p.dq);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.q.scalar_type(),
                                  "window_attention_tiled_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto x = tiles::tensors_of<scalar_t, acc_t>(p.q, k, p.k_cl, p.v, p.v_cl, p.grad_out,
                                                  at::Tensor(), at::Tensor(), p.lse, p.dq,
                                                  dq_sums);
    const auto scale = static_cast<acc_t>(p.scale);
    const auto [dk, dv] = tiles::backward_in_bands(
        s, x, acc_options(p.q),
        [&](const tiles::Band& band) {
          run_blocks<acc_t>(p.kernels, tiles::band_blocks(s, band),
                            tiles::pixel_shared_bytes<acc_t>(s),
                            [&](const SerialBlock& run, int64_t index, void* shared) {
                              tiles::pixel_block(run, s, x, band, scale, index, shared);
                            });
        },
        [&](const tiles::Band& band) {
          run_blocks<acc_t>(p.kernels, s.B * s.h * s.w, tiles::reduce_shared_bytes<acc_t>(s),
                            [&](const SerialBlock& run, int64_t index, void* shared) {
                              tiles::reduce_block(run, s, x, band, index, shared);
                            });
        });
    p.dk.copy_(dk);
    p.dv.copy_(dv);
  });
}

}  // namespace cpu
}  // namespace anyup_neck
