// SIMD building blocks of the CPU kernels, compiled once per instruction set like them: a
// vector of kLanes accumulators (Lanes), the target's register budget, and register-blocked
// sums of products (accumulate_rows, multiply_accumulate) whose every element is one serial
// chain in a fixed order (deterministic, independent of the thread count).
//
// Included by each *_cpu_kernels.h; the translation unit defines WA_ISA (and, on x86-64,
// WA_TARGET, WA_VECTOR_BYTES, WA_VECTOR_REGISTERS) first, see cpu/isa_target.h.
#pragma once

#include <algorithm>
#include <cstdint>

#include "isa_target.h"

WA_BEGIN_TARGET

namespace anyup_neck {
namespace cpu {
namespace WA_ISA {
namespace {

constexpr int64_t kLanes = 16;  // elements of one Lanes value

// kLanes lanes of acc_t as one GCC vector: the compiler maps it onto the target's registers
// (one zmm for float on AVX-512, two ymm on AVX2, four xmm on the baseline).
template <typename acc_t>
struct Lanes {
  typedef acc_t type __attribute__((vector_size(kLanes * sizeof(acc_t))));
  // (By reference: returning wide vectors by value would change the ABI between the copies.)
  static void load(type& x, const acc_t* from) { __builtin_memcpy(&x, from, sizeof(x)); }
  static void store(const type& x, acc_t* to) { __builtin_memcpy(to, &x, sizeof(x)); }
};

// The target's vector registers, for register blocking (see isa_target.h).
constexpr int64_t kVectorBytes = WA_VECTOR_BYTES, kVectorRegisters = WA_VECTOR_REGISTERS;

// How many Lanes accumulators fit in registers next to one Lanes operand and a broadcast
// scalar, at most `cap`: the number of independent rows a register-blocked loop carries.
template <typename acc_t>
constexpr int64_t register_block(int64_t cap) {
  const int64_t per_lanes = std::max<int64_t>(1, kLanes * sizeof(acc_t) / kVectorBytes);
  return std::max<int64_t>(1, std::min(cap, kVectorRegisters / per_lanes - 2));
}

// acc[u * acc_ld + c] += sum_t coef[u * coef_ld + t] * rows[t * ld + c] over t < count (in
// order) for keys [u0, u0 + kKeys) and channels [c0, c0 + kBlock * kLanes): kKeys x kBlock
// Lanes accumulators in registers, each row load serving kKeys keys. (A matrix product's
// register block: acc (keys x n) += coef (keys x count) rows (count x n).)
template <int64_t kKeys, int64_t kBlock, typename acc_t>
void accumulate_block(int64_t u0, int64_t c0, int64_t count, int64_t ld, const acc_t* coef,
                      int64_t coef_ld, const acc_t* rows, acc_t* acc, int64_t acc_ld) {
  using L = Lanes<acc_t>;
  typename L::type a[kKeys][kBlock];
  for (int64_t k = 0; k < kKeys; ++k)
    for (int64_t b = 0; b < kBlock; ++b)
      L::load(a[k][b], acc + (u0 + k) * acc_ld + c0 + b * kLanes);
  for (int64_t t = 0; t < count; ++t) {
    const acc_t* r = rows + t * ld + c0;
#pragma GCC unroll 32
    for (int64_t b = 0; b < kBlock; ++b) {
      typename L::type y;
      L::load(y, r + b * kLanes);
#pragma GCC unroll 32
      for (int64_t k = 0; k < kKeys; ++k) a[k][b] += coef[(u0 + k) * coef_ld + t] * y;
    }
  }
  for (int64_t k = 0; k < kKeys; ++k)
    for (int64_t b = 0; b < kBlock; ++b)
      L::store(a[k][b], acc + (u0 + k) * acc_ld + c0 + b * kLanes);
}

// acc[u * acc_ld + c] += sum_t coef[u * coef_ld + t] * rows[t * ld + c] for t < count (in
// order), c < n, keys u < keys: register blocks of kKeys keys x kBlock Lanes, then single keys,
// then single channels. Every sum is one serial chain in t order.
template <int64_t kKeys, int64_t kBlock, typename acc_t>
void accumulate_rows(int64_t keys, int64_t count, int64_t n, int64_t ld, const acc_t* coef,
                     int64_t coef_ld, const acc_t* rows, acc_t* acc, int64_t acc_ld) {
  int64_t c0 = 0;
  for (; c0 + kBlock * kLanes <= n; c0 += kBlock * kLanes) {
    int64_t u = 0;
    for (; u + kKeys <= keys; u += kKeys)
      accumulate_block<kKeys, kBlock>(u, c0, count, ld, coef, coef_ld, rows, acc, acc_ld);
    for (; u < keys; ++u)
      accumulate_block<1, kBlock>(u, c0, count, ld, coef, coef_ld, rows, acc, acc_ld);
  }
  for (int64_t u = 0; u < keys; ++u)
    for (int64_t c = c0; c < n; ++c) {
      acc_t a = acc[u * acc_ld + c];
      for (int64_t t = 0; t < count; ++t) a += coef[u * coef_ld + t] * rows[t * ld + c];
      acc[u * acc_ld + c] = a;
    }
}

// Vector registers per Lanes value, and how many Lanes accumulators a register block holds
// next to its operands.
template <typename acc_t>
constexpr int64_t lanes_registers() {
  return std::max<int64_t>(1, kLanes * sizeof(acc_t) / kVectorBytes);
}
template <typename acc_t>
constexpr int64_t accumulate_registers() {
  return std::max<int64_t>(2, kVectorRegisters / lanes_registers<acc_t>() - 4);
}

// Register blocks of accumulate_rows as a matrix product of many rows:
// product_block Lanes of columns x product_rows rows, as many as the registers hold.
template <typename acc_t>
constexpr int64_t product_block() {
  return accumulate_registers<acc_t>() >= 24 ? 4 : accumulate_registers<acc_t>() >= 4 ? 2 : 1;
}
template <typename acc_t>
constexpr int64_t product_rows() {
  return std::min<int64_t>(6, std::max<int64_t>(1, accumulate_registers<acc_t>() /
                                                       product_block<acc_t>()));
}
constexpr int64_t kProductDepth = 64;  // rows of b per pass: its slice stays in the L1 cache

// c (m x n, row stride ldc) += a (m x k, stride lda) b (k x n, stride ldb), register-blocked
// (accumulate_rows) in passes over kProductDepth rows of b at a time; every element's sum runs
// in k order, as in one pass.
template <typename acc_t>
void multiply_accumulate(int64_t m, int64_t k, int64_t n, const acc_t* a, int64_t lda,
                         const acc_t* b, int64_t ldb, acc_t* c, int64_t ldc) {
  for (int64_t k0 = 0; k0 < k; k0 += kProductDepth)
    accumulate_rows<product_rows<acc_t>(), product_block<acc_t>()>(
        m, std::min(kProductDepth, k - k0), n, ldb, a + k0, lda, b + k0 * ldb, c, ldc);
}

}  // namespace
}  // namespace WA_ISA
}  // namespace cpu
}  // namespace anyup_neck

WA_END_TARGET
