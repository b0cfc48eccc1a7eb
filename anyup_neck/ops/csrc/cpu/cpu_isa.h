// Which copy of the CPU kernels to run: each kernel header is compiled once per instruction set
// (cpu/kernels_{base,avx2,avx512}.cpp), and the entry points run the copy selected here.
//
// The selection is the widest instruction set this processor supports, or the one the
// environment variable ANYUP_NECK_CPU_ISA names (base, avx2, avx512), read once, when the CPU
// kernels first run. The private ops anyup_neck::_set_cpu_isa(isa) and anyup_neck::_cpu_isa()
// change and read it afterwards (the tests run every copy; "auto" returns to the widest).
#pragma once

namespace anyup_neck {
namespace cpu {

enum class Isa { base, avx2, avx512 };

// The instruction set the CPU kernels run with now.
Isa selected_isa();

// Calls ns::fn(args...) for the selected instruction set's namespace ns.
#define ANYUP_NECK_CPU_DISPATCH(fn, ...)                       \
  switch (::anyup_neck::cpu::selected_isa()) {               \
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
