// Which copy of the CPU kernels to run: each kernel header is compiled once per instruction set
// (the *_cpu_{base,avx2,avx512}.cpp files), and the entry points pick the widest copy this
// processor supports, or the one named by ANYUP_NECK_CPU_ISA (base, avx2, avx512; the tests use
// it to exercise every copy).
#pragma once

namespace anyup_neck {
namespace cpu {

enum class Isa { base, avx2, avx512 };

// The instruction set to run now (reads ANYUP_NECK_CPU_ISA on every call, so tests can switch).
Isa select_isa();

// Calls ns::fn(args...) for the selected instruction set's namespace ns.
#define ANYUP_NECK_CPU_DISPATCH(fn, ...)                       \
  switch (::anyup_neck::cpu::select_isa()) {                 \
    case ::anyup_neck::cpu::Isa::avx512:                       \
      ::anyup_neck::cpu::avx512::fn(__VA_ARGS__);              \
      break;                                                   \
    case ::anyup_neck::cpu::Isa::avx2:                         \
      ::anyup_neck::cpu::avx2::fn(__VA_ARGS__);                \
      break;                                                   \
    case ::anyup_neck::cpu::Isa::base:                         \
      ::anyup_neck::cpu::base::fn(__VA_ARGS__);                \
      break;                                                   \
  }

}  // namespace cpu
}  // namespace anyup_neck
