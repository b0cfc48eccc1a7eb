// Run-time choice of the CPU kernels' instruction set (see cpu_isa.h).
#include "cpu_isa.h"

#include <c10/util/Exception.h>
#include <c10/util/string_view.h>
#include <torch/library.h>

#include <atomic>
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

Isa widest() {
  return supported(Isa::avx512) ? Isa::avx512 : supported(Isa::avx2) ? Isa::avx2 : Isa::base;
}

// `name` ("auto" = the widest supported) as an Isa; `source` names the setting in errors.
Isa parse(const std::string& name, const char* source) {
  if (name == "auto") return widest();
  TORCH_CHECK(name == "base" || name == "avx2" || name == "avx512", source,
              ": expected base, avx2, avx512 or auto, got '", name, "'");
  const Isa isa = name == "avx512" ? Isa::avx512 : name == "avx2" ? Isa::avx2 : Isa::base;
  TORCH_CHECK(supported(isa), source, ": this processor does not support ", name);
  return isa;
}

// The selection; initialised from ANYUP_NECK_CPU_ISA at the first use (a bad value raises
// there, and again at the next use).
std::atomic<Isa>& selection() {
  static std::atomic<Isa> isa{[] {
    const char* value = std::getenv("ANYUP_NECK_CPU_ISA");
    return value == nullptr || *value == '\0' ? widest() : parse(value, "ANYUP_NECK_CPU_ISA");
  }()};
  return isa;
}

void set_cpu_isa(c10::string_view name) {
  selection().store(parse(std::string(name), "_set_cpu_isa: isa"));
}

std::string cpu_isa() {
  switch (selected_isa()) {
    case Isa::avx512:
      return "avx512";
    case Isa::avx2:
      return "avx2";
    case Isa::base:
      break;
  }
  return "base";
}

}  // namespace

Isa selected_isa() { return selection().load(); }

TORCH_LIBRARY_FRAGMENT(anyup_neck, m) {
  m.def("_set_cpu_isa(str isa) -> ()", &set_cpu_isa);
  m.def("_cpu_isa() -> str", &cpu_isa);
}

}  // namespace cpu
}  // namespace anyup_neck
