// The CPU kernels (attention, fused, Winograd) for x86-64 processors with AVX2 and FMA
// (chosen at run time).
#define WA_ISA avx2
#define WA_TARGET "avx2,fma"
#define WA_VECTOR_BYTES 32
#define WA_VECTOR_REGISTERS 16
#include "window_attention_cpu_kernels.h"
#include "fused_cpu_kernels.h"
#include "winograd_cpu_kernels.h"
