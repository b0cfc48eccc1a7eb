// The CPU kernels (attention, fused, Winograd) for x86-64 processors with AVX-512
// F/DQ/BW/VL (chosen at run time).
#define WA_ISA avx512
#define WA_TARGET "avx2,fma,avx512f,avx512dq,avx512bw,avx512vl,prefer-vector-width=512"
#define WA_VECTOR_BYTES 64
#define WA_VECTOR_REGISTERS 32
#include "window_attention_cpu_kernels.h"
#include "fused_cpu_kernels.h"
#include "winograd_cpu_kernels.h"
