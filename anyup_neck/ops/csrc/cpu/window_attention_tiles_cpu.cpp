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
// phase, and every element of a launch's output buffers that a block changes by no other block
// of the launch, else the op stops with an error: two threads or blocks updating one sum give
// the same result in either order here, but on a GPU one of the updates can be lost. (Two
// writes of the same value are not seen; on a GPU that race is harmless. Two threads of one
// block changing one element in global memory are not checked: a scan of the outputs per
// thread would cost too much.)
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>
#include <utility>
#include <vector>

#include "../common/window_attention.h"
#include "../common/window_tiles.h"
#include "../common/window_tiles_host.h"
#include "window_attention_cpu.h"

namespace anyup_neck {
namespace cpu {
namespace {

namespace tiles = wa::tiles;

// Calls changed(i) for every element i < count (of `element` bytes) that differs between `now`
// and `seen`, after copying it into `seen`.
template <typename Changed>
void for_each_change(const unsigned char* now, unsigned char* seen, int64_t count,
                     int64_t element, const Changed& changed) {
  constexpr int64_t kRun = 64;  // elements compared at once before looking at single ones
  for (int64_t i0 = 0; i0 < count; i0 += kRun) {
    const int64_t end = std::min(count, i0 + kRun);
    if (std::memcmp(now + i0 * element, seen + i0 * element, (end - i0) * element) == 0) continue;
    for (int64_t i = i0; i < end; ++i) {
      if (std::memcmp(now + i * element, seen + i * element, element) == 0) continue;
      std::memcpy(seen + i * element, now + i * element, element);
      changed(i);
    }
  }
}

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
      for_each_change(shared, before->data(), words, 4, [&](int64_t w) {
        const int other = (*writer)[w];
        TORCH_CHECK(other < 0 || other == t, "window_attention (tiled kernels): threads ", other,
                    " and ", t, " of a block both wrote shared-memory word ", w,
                    " between two barriers (a race on the GPU)");
        (*writer)[w] = t;
      });
    }
  }
};

// A buffer in global memory that a launch writes: `count` elements of `element` bytes.
struct Written {
  const char* name;
  unsigned char* data;
  int64_t count, element;
};

Written written(const char* name, const at::Tensor& t) {  // none for an undefined tensor
  if (!t.defined()) return {name, nullptr, 0, 1};
  return {name, static_cast<unsigned char*>(t.data_ptr()), t.numel(), t.element_size()};
}

// For the race check: which block of a launch changed each element of the buffers it writes. A
// second block changing an element stops the op: on a GPU one of the two writes (or updates)
// is lost, whatever order the blocks run in.
class BlockWrites {
 public:
  explicit BlockWrites(std::vector<Written> buffers) : buffers_(std::move(buffers)) {
    for (const Written& b : buffers_) {
      seen_.emplace_back(b.data, b.data + b.count * b.element);
      writer_.emplace_back(b.count, -1);
    }
  }

  void record(int64_t block) {
    for (size_t i = 0; i < buffers_.size(); ++i) {
      const Written& b = buffers_[i];
      for_each_change(b.data, seen_[i].data(), b.count, b.element, [&](int64_t e) {
        TORCH_CHECK(writer_[i][e] < 0, "window_attention (tiled kernels): blocks ",
                    writer_[i][e], " and ", block, " of a launch both wrote element ", e, " of ",
                    b.name, " (a race on the GPU)");
        writer_[i][e] = block;
      });
    }
  }

 private:
  std::vector<Written> buffers_;
  std::vector<std::vector<unsigned char>> seen_;
  std::vector<std::vector<int64_t>> writer_;
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
// phase's threads from the last, with their writes to shared memory and the blocks' writes to
// the launch's buffers `writes` checked.
template <typename acc_t, typename Block>
void run_blocks(Kernels kernels, int64_t blocks, int64_t shared_bytes,
                std::vector<Written> writes, const Block& block) {
  const bool racecheck = kernels == Kernels::tiled_racecheck;
  const int64_t size = (shared_bytes + sizeof(acc_t) - 1) / sizeof(acc_t);
  const int64_t words = size * static_cast<int64_t>(sizeof(acc_t)) / 4;
  const int64_t grain = racecheck ? std::max<int64_t>(blocks, 1) : 1;  // one chunk: serial
  BlockWrites block_writes(racecheck ? std::move(writes) : std::vector<Written>());
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> memory(kGuard + size + kGuard);
    std::vector<unsigned char> before(racecheck ? 4 * words : 0);
    std::vector<int> writer(racecheck ? words : 0);
    const SerialBlock run{racecheck, reinterpret_cast<unsigned char*>(memory.data() + kGuard),
                          words, &before, &writer};
    for (int64_t i = begin; i < end; ++i) {
      const int64_t index = racecheck ? blocks - 1 - i : i;
      std::fill(memory.begin(), memory.end(), std::numeric_limits<acc_t>::quiet_NaN());
      block(run, index, static_cast<void*>(memory.data() + kGuard));
      for (int64_t g = 0; g < kGuard; ++g) {
        TORCH_CHECK(std::isnan(memory[g]) && std::isnan(memory[kGuard + size + g]),
                    "window_attention (tiled kernels): a block wrote outside its ", shared_bytes,
                    " bytes of shared memory");
      }
      block_writes.record(index);
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
                      {written("out", p.out), written("out_sums", out_sums),
                       written("lse", p.lse)},
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
    std::tie(p.dk, p.dv) = tiles::backward_in_bands(
        s, x, acc_options(p.q),
        [&](const tiles::Band& band) {
          const int64_t blocks = tiles::band_blocks(s, band), row = s.D + s.C;
          const Written part{"the partial rows", reinterpret_cast<unsigned char*>(x.part),
                             blocks * band.slots * row, sizeof(acc_t)};
          run_blocks<acc_t>(p.kernels, blocks, tiles::pixel_shared_bytes<acc_t>(s),
                            {written("dq", p.dq), written("dq_sums", dq_sums), part},
                            [&](const SerialBlock& run, int64_t index, void* shared) {
                              tiles::pixel_block(run, s, x, band, scale, index, shared);
                            });
        },
        [&](const tiles::Band& band) {
          const Written kv{"dk | dv", reinterpret_cast<unsigned char*>(x.kv),
                           s.B * s.h * s.w * (s.D + s.C), sizeof(acc_t)};
          run_blocks<acc_t>(p.kernels, tiles::reduce_blocks(s, band),
                            tiles::reduce_shared_bytes<acc_t>(s),
                            {kv}, [&](const SerialBlock& run, int64_t index, void* shared) {
                              tiles::reduce_block(run, s, x, band, index, shared);
                            });
        });
  });
}

}  // namespace cpu
}  // namespace anyup_neck
