// The instruction set a CPU kernel header is compiled for. Each kernel header is included once
// per instruction set by cpu/kernels_{base,avx2,avx512}.cpp, which define first:
//   WA_ISA               the namespace of this copy (base, avx2, avx512), so that the copies'
//                        inline functions get distinct symbols;
//   WA_TARGET            (x86-64 only) the GCC target of the copy, e.g. "avx2,fma";
//   WA_VECTOR_BYTES, WA_VECTOR_REGISTERS   width and number of its vector registers (GCC's
//                        target pragma does not define the ISA macros); the baseline has 16 of
//                        16 bytes (SSE2; NEON has more).
// A kernel header includes its library headers first, then wraps its own code in
// WA_BEGIN_TARGET ... WA_END_TARGET: only that code is built for WA_TARGET, so the linker never
// picks a wide-instruction copy of a library function.
#pragma once

#ifndef WA_ISA
#error "define WA_ISA (and WA_TARGET on x86-64) before including a CPU kernel header"
#endif

#ifndef WA_VECTOR_BYTES
#define WA_VECTOR_BYTES 16
#define WA_VECTOR_REGISTERS 16
#endif

#if defined(WA_TARGET) && defined(__x86_64__) && defined(__GNUC__)
#define WA_PRAGMA(text) _Pragma(#text)
#define WA_TARGET_PRAGMA(isa_target) WA_PRAGMA(GCC target(isa_target))
#define WA_BEGIN_TARGET _Pragma("GCC push_options") WA_TARGET_PRAGMA(WA_TARGET)
#define WA_END_TARGET _Pragma("GCC pop_options")
#else
#define WA_BEGIN_TARGET
#define WA_END_TARGET
#endif
