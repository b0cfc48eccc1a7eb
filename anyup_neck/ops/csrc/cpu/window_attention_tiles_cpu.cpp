// The tiled CUDA kernels' block code (common/window_tiles.h) on the CPU, for the tests: each
// block's phases run one after the other, each phase for every thread of the block in turn,
// over a shared-memory array of the size the GPU gets, in the GPU's types (float16 and
// bfloat16 inputs with float32 accumulation too). Blocks run in parallel (they write disjoint
// outputs). The shared memory is filled with NaN before each block, so a phase that
// reads what no earlier phase wrote shows in the results (shared integers are not NaN: an
// unwritten offset is a garbage index instead); guard zones of NaN on both sides of it are
// checked after each block, so a write just outside it stops the op with an error.
//
// Kernels::tiled_racecheck checks what the GPU's threads may not do between two barriers. The
// threads of every phase, and the blocks of every launch, run in reverse order, one block at a
// time: a thread that reads what another thread of its phase writes, or a block that depends
// on another block of its launch, gives results that differ from Kernels::tiled. And every
// 4-byte word of shared memory that a thread changes must be changed by no other thread of its
// phase, else the op stops with an error: two threads updating one sum give the same result
// in either order here, but on a GPU one of the updates can be lost. (Two threads writing the
// same value to one word are not seen; on a GPU that race is harmless.)
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
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

// The barrier-separated phases of one block, run thread by thread: in order, or for the race
// check in reverse order, recording which thread of the phase changed each 4-byte word of the
// block's shared memory (`words` of them at `shared`; `before` and `writer` of that size).
struct SerialBlock {
  bool racecheck;
  unsigned char* shared;
  int64_t words;
  std::vector<unsigned char>* before;  // the shared memory before the current thread ran
  std::vector<int>* writer;            // per word: the thread of the phase that changed it, or -1

  template <typename Phase>
  void operator()(const Phase& phase) const {
    if (!racecheck) {
      for (int t = 0; t < tiles::kThreads; ++t) phase(t);
      return;
    }
    std::memcpy(before->data(), shared, words * 4);
    std::fill(writer->begin(), writer->end(), -1);
    for (int t = tiles::kThreads - 1; t >= 0; --t) {
      phase(t);
      record_writes(t);
    }
  }

  // Marks the words thread t changed as its own; stops if another thread changed one already.
  void record_writes(int t) const {
    constexpr int64_t kRun = 64;  // words compared at once before looking at single ones
    unsigned char* const seen = before->data();
    for (int64_t w0 = 0; w0 < words; w0 += kRun) {
      const int64_t end = std::min(words, w0 + kRun);
      if (std::memcmp(shared + 4 * w0, seen + 4 * w0, 4 * (end - w0)) == 0) continue;
      for (int64_t w = w0; w < end; ++w) {
        if (std::memcmp(shared + 4 * w, seen + 4 * w, 4) == 0) continue;
        const int other = (*writer)[w];
        TORCH_CHECK(other < 0 || other == t, "window_attention (tiled kernels): threads ", other,
                    " and ", t, " of a block both wrote shared-memory word ", w,
                    " between two barriers (a race on the GPU)");
        (*writer)[w] = t;
        std::memcpy(seen + 4 * w, shared + 4 * w, 4);
      }
    }
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
// blocks in parallel, or for Kernels::tiled_racecheck one after another from the last, each
// phase's threads from the last, with their writes checked.
template <typename acc_t, typename Block>
void run_blocks(Kernels kernels, int64_t blocks, int64_t shared_bytes, const Block& block) {
  const bool racecheck = kernels == Kernels::tiled_racecheck;
  const int64_t size = (shared_bytes + sizeof(acc_t) - 1) / sizeof(acc_t);
  const int64_t words = size * static_cast<int64_t>(sizeof(acc_t)) / 4;
  const int64_t grain = racecheck ? std::max<int64_t>(blocks, 1) : 1;  // one chunk: serial
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> memory(kGuard + size + kGuard);
    std::vector<unsigned char> before(racecheck ? 4 * words : 0);
    std::vector<int> writer(racecheck ? words : 0);
    const SerialBlock run{racecheck, reinterpret_cast<unsigned char*>(memory.data() + kGuard),
                          words, &before, &writer};
    for (int64_t i = begin; i < end; ++i) {
      std::fill(memory.begin(), memory.end(), std::numeric_limits<acc_t>::quiet_NaN());
      block(run, racecheck ? blocks - 1 - i : i, static_cast<void*>(memory.data() + kGuard));
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
