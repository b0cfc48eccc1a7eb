// Host side of the channel-row ops (channel_rows.h; contracts in fused_ops.h), shared by their
// CPU and CUDA entry points: argument checks, the row view, the dtype dispatch. Each device
// passes its launcher: launch(rows, op) applies op to every run of every row, launch.each(n, op)
// calls op(i) for every i < n (a thread each).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

#include "channel_rows.h"
#include "fused_ops.h"
#include "window_attention.h"

namespace anyup_neck {
namespace channel_rows {

template <typename T>
bool aligned(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % alignof(Run<T>) == 0;
}

// Whether a map checked by check_map is channels-last (with one channel: NCHW, the same bytes).
inline bool channels_last(const at::Tensor& x) {
  return layout_of(x).channel == 1 && x.size(1) > 1;
}

// The row view of a map checked by check_map (its memory format decides the rows);
// `vectors`: every tensor of the op is Run-aligned.
inline Rows rows_of(const at::Tensor& x, bool vectors) {
  const int64_t B = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  const bool channels_last = channel_rows::channels_last(x);
  const int64_t length = channels_last ? C : P;
  return {channels_last ? B * P : B * C, length, C, P, channels_last,
          vectors && length % kRun == 0};
}

// Calls fn(scalar_t{}) for x's floating dtype.
template <typename Fn>
void dispatch(const at::Tensor& x, const char* op, Fn&& fn) {
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op,
              ": expected float64, float32, float16 or bfloat16, got ", x.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "channel_rows",
                                  [&] { fn(scalar_t{}); });
}

// Coefficients (B, C) in acc_t; `keep` holds the converted copies while the op runs.
template <typename acc_t>
const acc_t* coefficients(const at::Tensor& t, std::vector<at::Tensor>& keep) {
  keep.push_back(t.to(c10::CppTypeToScalarType<acc_t>::value));
  return keep.back().const_data_ptr<acc_t>();
}

// The rows of Rotary2d over x (B, D, H, W), NCHW- or channels-last-contiguous.
inline Rows rotary_rows(const at::Tensor& x, bool vectors) {
  const int64_t B = x.size(0), D = x.size(1), P = x.size(2) * x.size(3);
  const bool channels_last = channel_rows::channels_last(x);
  const int64_t length = channels_last ? D / 2 : P;
  return {channels_last ? B * P : B * (D / 2), length, D, P, channels_last,
          vectors && length % kRun == 0};
}

template <typename Launch>
void affine_silu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift,
                 const at::Tensor& out, Launch&& launch) {
  check_affine_silu_args(x, scale, shift, out);
  if (x.numel() == 0) return;
  dispatch(x, "affine_silu", [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = at::opmath_type<scalar_t>;
    std::vector<at::Tensor> keep;
    const AffineSilu<scalar_t, acc_t> op{x.const_data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                         coefficients<acc_t>(scale, keep),
                                         coefficients<acc_t>(shift, keep)};
    launch(rows_of(x, aligned(op.x) && aligned(op.out)), op);
  });
}

// The (B, 2, C) sums of the piece op make_op(partial) over x's pieces (see Pieces): each piece
// written to a partial buffer, then the pieces added by the device's own reduction.
template <typename acc_t, typename MakeOp, typename Launch>
at::Tensor piece_sums(const at::Tensor& x, const Pieces& pieces, const MakeOp& make_op,
                      Launch&& launch) {
  const int64_t B = x.size(0), C = x.size(1);
  const auto options = x.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
  const bool by_pixel = pieces.rows.channels_last;
  at::Tensor partial = by_pixel ? at::empty({B, pieces.per_row, 2, C}, options)
                                : at::empty({B, 2, C, pieces.per_row}, options);
  launch.each(pieces.count(), make_op(partial.data_ptr<acc_t>()));
  return partial.sum(by_pixel ? 1 : 3);
}

template <typename Launch>
at::Tensor affine_silu_grad_sums(const at::Tensor& x, const at::Tensor& grad,
                                 const at::Tensor& scale, const at::Tensor& shift,
                                 const at::Tensor& center, Launch&& launch) {
  const char* name = "affine_silu_grad_sums";
  check_silu_backward_args(name, x, grad, {&scale, &shift, &center});
  if (x.numel() == 0)
    return at::zeros({x.size(0), 2, x.size(1)},
                     x.options().dtype(at::toOpMathType(x.scalar_type())));
  at::Tensor sums;
  dispatch(x, name, [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = at::opmath_type<scalar_t>;
    std::vector<at::Tensor> keep;
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *gp = grad.const_data_ptr<scalar_t>();
    const acc_t* scale_p = coefficients<acc_t>(scale, keep);
    const acc_t* shift_p = coefficients<acc_t>(shift, keep);
    const acc_t* center_p = coefficients<acc_t>(center, keep);
    const Pieces pieces = pieces_of(rows_of(x, aligned(xp) && aligned(gp)));
    sums = piece_sums<acc_t>(x, pieces, [&](acc_t* partial) {
      return AffineSiluGradSums<scalar_t, acc_t>{xp, gp, scale_p, shift_p, center_p, partial,
                                                 pieces};
    }, launch);
  });
  return sums;
}

// GroupNorm's per-(b, c) affine map and per-(b, g) statistics of x: scale, shift (B, C) and
// mean, rstd (B, groups), in the accumulation type.
using Coefficients = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

template <typename Launch>
Coefficients group_norm_coefficients(const at::Tensor& x, const at::Tensor& weight,
                                     const at::Tensor& bias, int64_t groups, double eps,
                                     Launch&& launch) {
  const char* name = "group_norm_coefficients";
  check_map(name, "x", x, x);
  const int64_t B = x.size(0), C = x.size(1);
  TORCH_CHECK(groups > 0 && C % groups == 0, name, ": groups must divide x's ", C,
              " channels, got ", groups);
  TORCH_CHECK(x.size(2) * x.size(3) > 0, name, ": x must have pixels, got ", x.sizes());
  for (const at::Tensor* t : {&weight, &bias}) {
    TORCH_CHECK(t->dim() == 1 && t->size(0) == C && at::isFloatingType(t->scalar_type()) &&
                    t->device() == x.device(),
                name, ": weight and bias must be floating (", C, ") tensors on x's device, got ",
                t->sizes(), " ", t->scalar_type(), " on ", t->device());
  }
  const auto options = x.options().dtype(at::toOpMathType(x.scalar_type()));
  at::Tensor scale = at::empty({B, C}, options), shift = at::empty({B, C}, options);
  at::Tensor mean = at::empty({B, groups}, options), rstd = at::empty({B, groups}, options);
  if (B * C == 0) return {scale, shift, mean, rstd};
  dispatch(x, name, [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const Pieces pieces = pieces_of(rows_of(x, aligned(xp)));
    const at::Tensor moments = piece_sums<acc_t>(x, pieces, [&](acc_t* partial) {
      return ShiftedMoments<scalar_t, acc_t>{xp, partial, pieces};
    }, launch);
    const at::Tensor w = weight.to(options.dtype()).contiguous();
    const at::Tensor b = bias.to(options.dtype()).contiguous();
    launch.each(B * groups, GroupNormCoefficients<scalar_t, acc_t>{
        xp, moments.const_data_ptr<acc_t>(), w.const_data_ptr<acc_t>(),
        b.const_data_ptr<acc_t>(), scale.data_ptr<acc_t>(), shift.data_ptr<acc_t>(),
        mean.data_ptr<acc_t>(), rstd.data_ptr<acc_t>(), pieces.rows, groups,
        static_cast<acc_t>(eps)});
  });
  return {scale, shift, mean, rstd};
}

template <typename Launch>
at::Tensor group_norm_silu_input_grad(const at::Tensor& x, const at::Tensor& grad,
                                      const at::Tensor& scale, const at::Tensor& shift,
                                      const at::Tensor& coef_g, const at::Tensor& coef_x,
                                      const at::Tensor& coef, const at::Tensor& center,
                                      const std::optional<at::Tensor>& residual,
                                      Launch&& launch) {
  const char* name = "group_norm_silu_input_grad";
  const at::Tensor* added = residual.has_value() ? &*residual : nullptr;
  check_silu_backward_args(name, x, grad, {&scale, &shift, &coef_g, &coef_x, &coef, &center},
                           added);
  at::Tensor dx = at::empty_like(x);   // x's strides (its memory format)
  if (x.numel() == 0) return dx;
  dispatch(x, name, [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = at::opmath_type<scalar_t>;
    std::vector<at::Tensor> keep;
    const GroupNormSiluInputGrad<scalar_t, acc_t> op{
        x.const_data_ptr<scalar_t>(),      grad.const_data_ptr<scalar_t>(),
        added ? added->const_data_ptr<scalar_t>() : nullptr,
        dx.data_ptr<scalar_t>(),           coefficients<acc_t>(scale, keep),
        coefficients<acc_t>(shift, keep),  coefficients<acc_t>(coef_g, keep),
        coefficients<acc_t>(coef_x, keep), coefficients<acc_t>(coef, keep),
        coefficients<acc_t>(center, keep)};
    launch(rows_of(x, aligned(op.x) && aligned(op.grad) && aligned(op.dx) &&
                             (op.residual == nullptr || aligned(op.residual))),
           op);
  });
  return dx;
}

template <typename Launch>
void rotary_2d_(const at::Tensor& x, const at::Tensor& cos_rows, const at::Tensor& sin_rows,
                const at::Tensor& cos_cols, const at::Tensor& sin_cols, bool transpose,
                Launch&& launch) {
  const char* name = "rotary_2d_";
  check_map(name, "x", x, x);
  TORCH_CHECK(x.size(1) % 2 == 0, name, ": x must have an even channel count, got ", x.size(1));
  const at::ScalarType acc = at::toOpMathType(x.scalar_type());
  for (const at::Tensor* t : {&cos_rows, &sin_rows, &cos_cols, &sin_cols}) {
    const int64_t n = t == &cos_rows || t == &sin_rows ? x.size(2) : x.size(3);
    TORCH_CHECK(t->is_contiguous() && t->scalar_type() == acc && t->dim() == 2 &&
                    t->size(0) == n && t->size(1) == x.size(1) && t->device() == x.device(),
                name, ": tables must be contiguous (", n, ", ", x.size(1), ") ", acc,
                " tensors on x's device, got ", t->sizes(), " ", t->scalar_type());
  }
  if (x.numel() == 0) return;
  dispatch(x, name, [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = at::opmath_type<scalar_t>;
    const Rotary2d<scalar_t, acc_t> op{x.data_ptr<scalar_t>(),     cos_rows.const_data_ptr<acc_t>(),
                                       sin_rows.const_data_ptr<acc_t>(),
                                       cos_cols.const_data_ptr<acc_t>(),
                                       sin_cols.const_data_ptr<acc_t>(), x.size(1), x.size(3),
                                       transpose};
    launch(rotary_rows(x, aligned(op.x)), op);
  });
}

}  // namespace channel_rows
}  // namespace anyup_neck
