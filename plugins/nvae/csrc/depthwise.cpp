// Weight gradient of a depthwise convolution on channels_last (NHWC) CPU tensors.
//
//   grad_w[c, 0, ky, kx] = sum over n, ho, wo of
//       input[n, ho * stride - pad + ky, wo * stride - pad + kx, c] * grad_out[n, ho, wo, c]
//
// (zero padding: taps outside the input add nothing). oneDNN runs this with its generic grouped
// convolution kernel in NHWC (weights in 16 x 16 blocks although each group holds one channel)
// and with im2col + GEMM in NCHW; here the channel dimension, contiguous in NHWC, is the vector
// dimension of the innermost loop. Each (n, ho) row sums into a small zeroed block that is then
// added to the thread's total, and the thread totals are added at the end: partial sums of at
// most K * Wo terms, so the float32 rounding stays at the level of a blocked reduction.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <omp.h>

#include <vector>

template <typename scalar_t>
static void weight_grad(const scalar_t* in, const scalar_t* gout, scalar_t* out, int64_t N, int64_t C,
                        int64_t H, int64_t W, int64_t Ho, int64_t Wo, int64_t K, int64_t stride,
                        int64_t pad) {
  const int64_t taps = K * K * C;
  const int threads = at::get_num_threads();
  std::vector<scalar_t> totals(static_cast<size_t>(threads) * taps, scalar_t(0));
#pragma omp parallel num_threads(threads)
  {
    scalar_t* total = totals.data() + static_cast<size_t>(omp_get_thread_num()) * taps;
    std::vector<scalar_t> row(taps);
#pragma omp for schedule(static) collapse(2)
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t ho = 0; ho < Ho; ++ho) {
        std::fill(row.begin(), row.end(), scalar_t(0));
        for (int64_t ky = 0; ky < K; ++ky) {
          const int64_t hi = ho * stride - pad + ky;
          if (hi < 0 || hi >= H) continue;
          for (int64_t kx = 0; kx < K; ++kx) {
            scalar_t* acc = row.data() + (ky * K + kx) * C;
            for (int64_t wo = 0; wo < Wo; ++wo) {
              const int64_t wi = wo * stride - pad + kx;
              if (wi < 0 || wi >= W) continue;
              const scalar_t* a = in + ((n * H + hi) * W + wi) * C;
              const scalar_t* g = gout + ((n * Ho + ho) * Wo + wo) * C;
#pragma omp simd
              for (int64_t c = 0; c < C; ++c) acc[c] += a[c] * g[c];
            }
          }
        }
#pragma omp simd
        for (int64_t i = 0; i < taps; ++i) total[i] += row[i];
      }
    }
  }
  for (int t = 0; t < threads; ++t) {
    const scalar_t* total = totals.data() + static_cast<size_t>(t) * taps;
    for (int64_t i = 0; i < taps; ++i) out[i] += total[i];
  }
}

// input (N, C, H, W) and grad_out (N, C, Ho, Wo), any memory format (NHWC needs no copy);
// returns the weight gradient (C, 1, K, K).
torch::Tensor depthwise_weight_grad(torch::Tensor input, torch::Tensor grad_out, int64_t kernel_size,
                                    int64_t stride, int64_t padding) {
  TORCH_CHECK(input.device().is_cpu() && grad_out.device().is_cpu(), "CPU tensors expected");
  TORCH_CHECK(input.dim() == 4 && grad_out.dim() == 4, "4-d tensors expected");
  TORCH_CHECK(input.scalar_type() == grad_out.scalar_type(), "input and grad_out differ in dtype");
  const int64_t N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t Ho = grad_out.size(2), Wo = grad_out.size(3);
  TORCH_CHECK(grad_out.size(0) == N && grad_out.size(1) == C, "grad_out does not match input");
  auto in = input.permute({0, 2, 3, 1}).contiguous();
  auto gout = grad_out.permute({0, 2, 3, 1}).contiguous();
  auto out = torch::zeros({kernel_size, kernel_size, C}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "depthwise_weight_grad", [&] {
    weight_grad<scalar_t>(in.data_ptr<scalar_t>(), gout.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), N,
                          C, H, W, Ho, Wo, kernel_size, stride, padding);
  });
  return out.permute({2, 0, 1}).unsqueeze(1).contiguous();
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("depthwise_weight_grad", &depthwise_weight_grad, "depthwise conv weight gradient (NHWC, CPU)");
}
