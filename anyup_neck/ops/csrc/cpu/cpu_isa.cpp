// Run-time choice of the CPU kernels' instruction set (see cpu_isa.h).
#include "cpu_isa.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>

namespace anyup_neck {
namespace cpu {
namespace {

bool supported(Isa isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  switch (isa) {
    case Isa::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             supported(Isa::avx2);
    case Isa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::base:
      return true;
  }
  return false;
#else
  return isa == Isa::base;
#endif
}

}  // namespace

Isa select_isa() {
  const char* forced = std::getenv("ANYUP_NECK_CPU_ISA");
  if (forced != nullptr && *forced != '\0') {
    const std::string name(forced);
    const Isa isa = name == "avx512" ? Isa::avx512 : name == "avx2" ? Isa::avx2 : Isa::base;
    TORCH_CHECK(name == "base" || name == "avx2" || name == "avx512",
                "ANYUP_NECK_CPU_ISA: expected base, avx2 or avx512, got '", name, "'");
    TORCH_CHECK(supported(isa), "ANYUP_NECK_CPU_ISA: this processor does not support ", name);
    return isa;
  }
  return supported(Isa::avx512) ? Isa::avx512 : supported(Isa::avx2) ? Isa::avx2 : Isa::base;
}

}  // namespace cpu
}  // namespace anyup_neck
