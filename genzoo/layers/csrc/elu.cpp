// ELU (alpha 1) and its gradient on CPU, vectorized.
//
//   forward:  y = x            for x > 0,   expm1(x)      otherwise
//   backward: dx = dy          for y > 0,   dy * (y + 1)  otherwise   (exp(x) = y + 1: the gradient
//             needs only the output, as torch's elu_backward with is_result)
//
// torch's ELU calls Sleef's vectorized expm1, which in this build is about 60x slower than its
// exp (12 ns per float32 value, scalar speed). Here, in float32, expm1(x) for x in [-0.5, 0] is
// its Taylor polynomial to x^9 (truncation below 1e-9 relative, well under float32's 6e-8
// rounding), and below -0.5 it is exp(x) - 1 with Sleef's fast exp (1 - exp(x) is exact by
// Sterbenz's lemma while exp(x) >= 0.5, and at least 0.39, so the error stays within two units in
// the last place). float64 calls std::expm1. Elements are visited in memory order, so any dense
// layout (NCHW or channels_last) works without a copy; the work is split over torch's intra-op
// threads (at::parallel_for).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cmath>

namespace {

using Vec = at::vec::Vectorized<float>;

inline Vec elu_vec(const Vec& x) {
  const Vec one(1.0f);
  // Horner form of x + x^2/2! + ... + x^9/9!
  Vec p(1.0f / 362880.0f);
  p = at::vec::fmadd(p, x, Vec(1.0f / 40320.0f));
  p = at::vec::fmadd(p, x, Vec(1.0f / 5040.0f));
  p = at::vec::fmadd(p, x, Vec(1.0f / 720.0f));
  p = at::vec::fmadd(p, x, Vec(1.0f / 120.0f));
  p = at::vec::fmadd(p, x, Vec(1.0f / 24.0f));
  p = at::vec::fmadd(p, x, Vec(1.0f / 6.0f));
  p = at::vec::fmadd(p, x, Vec(0.5f));
  p = at::vec::fmadd(p, x, one);
  const Vec small = p * x;
  const Vec large = x.exp() - one;
  const Vec negative = Vec::blendv(large, small, x >= Vec(-0.5f));
  return Vec::blendv(negative, x, x > Vec(0.0f));
}

void elu_float(const float* x, float* y, int64_t n) {
  at::parallel_for(0, n, at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
    int64_t i = begin;
    for (; i + Vec::size() <= end; i += Vec::size()) elu_vec(Vec::loadu(x + i)).store(y + i);
    if (i < end) elu_vec(Vec::loadu(x + i, end - i)).store(y + i, end - i);
  });
}

void elu_grad_float(const float* g, const float* y, float* out, int64_t n) {
  const Vec one(1.0f), zero(0.0f);
  at::parallel_for(0, n, at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
    auto grad = [&](const Vec& gv, const Vec& yv) { return Vec::blendv(gv * (yv + one), gv, yv > zero); };
    int64_t i = begin;
    for (; i + Vec::size() <= end; i += Vec::size()) grad(Vec::loadu(g + i), Vec::loadu(y + i)).store(out + i);
    if (i < end) grad(Vec::loadu(g + i, end - i), Vec::loadu(y + i, end - i)).store(out + i, end - i);
  });
}

template <typename scalar_t>
void elu_scalar(const scalar_t* x, scalar_t* y, int64_t n) {
  at::parallel_for(0, n, at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) y[i] = x[i] > 0 ? x[i] : std::expm1(x[i]);
  });
}

template <typename scalar_t>
void elu_grad_scalar(const scalar_t* g, const scalar_t* y, scalar_t* out, int64_t n) {
  at::parallel_for(0, n, at::internal::GRAIN_SIZE, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = y[i] > 0 ? g[i] : g[i] * (y[i] + 1);
  });
}

void check(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name, " must be float32 or float64");
  TORCH_CHECK(t.is_non_overlapping_and_dense(), name, " must be dense (e.g. contiguous or channels_last)");
}

}  // namespace

// ELU of a dense CPU tensor; the output has the input's layout.
at::Tensor elu_forward(const at::Tensor& x) {
  check(x, "x");
  auto y = at::empty_like(x);
  if (x.scalar_type() == at::kFloat) {
    elu_float(x.data_ptr<float>(), y.data_ptr<float>(), x.numel());
  } else {
    elu_scalar<double>(x.data_ptr<double>(), y.data_ptr<double>(), x.numel());
  }
  return y;
}

// The gradient of ELU with respect to its input, from the output y and the output's gradient
// (same dtype and strides).
at::Tensor elu_backward(const at::Tensor& grad, const at::Tensor& y) {
  check(grad, "grad");
  check(y, "y");
  TORCH_CHECK(grad.scalar_type() == y.scalar_type() && grad.sizes() == y.sizes() && grad.strides() == y.strides(),
              "grad and y must have the same dtype, shape and strides");
  auto out = at::empty_like(y);
  if (y.scalar_type() == at::kFloat) {
    elu_grad_float(grad.data_ptr<float>(), y.data_ptr<float>(), out.data_ptr<float>(), y.numel());
  } else {
    elu_grad_scalar<double>(grad.data_ptr<double>(), y.data_ptr<double>(), out.data_ptr<double>(), y.numel());
  }
  return out;
}
