// ANYUP_NECK_HD marks the functions written once for CUDA kernels and their CPU versions
// (common/*.h): __host__ __device__ under nvcc, plain inline functions in C++.
#pragma once

#ifdef __CUDACC__
#define ANYUP_NECK_HD __host__ __device__ inline
#else
#define ANYUP_NECK_HD inline
#endif
