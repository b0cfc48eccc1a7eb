// The CPU kernels (attention, fused, Winograd) for any processor (the compiler's baseline
// instruction set).
#define WA_ISA base
#include "window_attention_cpu_kernels.h"
#include "fused_cpu_kernels.h"
#include "winograd_cpu_kernels.h"
