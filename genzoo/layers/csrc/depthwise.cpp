// Weight gradient of a depthwise convolution on channels_last (NHWC) CPU tensors.
//
//   grad_w[c, 0, ky, kx] = sum over n, ho, wo of
//       input[n, ho * stride - pad + ky, wo * stride - pad + kx, c] * grad_out[n, ho, wo, c]
//
// (zero padding: taps outside the input add nothing). oneDNN runs this with its generic grouped
// convolution kernel in NHWC (weights in 16 x 16 blocks although each group holds one channel)
// and with im2col + GEMM in NCHW; here the channel dimension, contiguous in NHWC, is the vector
// dimension of the innermost loop. Each (n, ho) row sums into a small zeroed block that is then
// added to its part's total; the N * Ho rows are cut into one part per intra-op thread, and the
// part totals are added in order at the end: partial sums of at most K * Wo terms, so the float32
// rounding stays at the level of a blocked reduction, and the result depends on the thread count
// only, never on scheduling.
//
// The parts run on torch's own intra-op thread pool (at::parallel_for), so the process has one
// OpenMP runtime: ATen's header opens the parallel region, compiled with -fopenmp, and its calls
// bind to the runtime torch is linked with; this library links no OpenMP runtime of its own.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

template <typename scalar_t>
void weight_grad(const scalar_t* in, const scalar_t* gout, scalar_t* out, int64_t N, int64_t C, int64_t H,
                 int64_t W, int64_t Ho, int64_t Wo, int64_t K, int64_t stride, int64_t pad) {
  const int64_t taps = K * K * C;
  const int64_t rows = N * Ho;
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows));
  const int64_t per_part = (rows + parts - 1) / parts;
  std::vector<scalar_t> totals(static_cast<size_t>(parts * taps), scalar_t(0));
  at::parallel_for(0, parts, 1, [&](int64_t first, int64_t last) {
    std::vector<scalar_t> row(static_cast<size_t>(taps));
    for (int64_t part = first; part < last; ++part) {
      scalar_t* total = totals.data() + part * taps;
      for (int64_t r = part * per_part; r < std::min(rows, (part + 1) * per_part); ++r) {
        const int64_t n = r / Ho, ho = r % Ho;
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
  });
  for (int64_t part = 0; part < parts; ++part) {
    const scalar_t* total = totals.data() + part * taps;
    for (int64_t i = 0; i < taps; ++i) out[i] += total[i];
  }
}

}  // namespace

// input (N, C, H, W) and grad_out (N, C, Ho, Wo), any memory format (NHWC needs no copy);
// returns the weight gradient (C, 1, K, K).
at::Tensor depthwise_weight_grad(const at::Tensor& input, const at::Tensor& grad_out, int64_t kernel_size,
                                 int64_t stride, int64_t padding) {
  TORCH_CHECK(input.device().is_cpu() && grad_out.device().is_cpu(), "CPU tensors expected");
  TORCH_CHECK(input.dim() == 4 && grad_out.dim() == 4, "4-d tensors expected");
  TORCH_CHECK(input.scalar_type() == grad_out.scalar_type(), "input and grad_out differ in dtype");
  const int64_t N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t Ho = grad_out.size(2), Wo = grad_out.size(3);
  TORCH_CHECK(grad_out.size(0) == N && grad_out.size(1) == C, "grad_out does not match input");
  auto in = input.permute({0, 2, 3, 1}).contiguous();
  auto gout = grad_out.permute({0, 2, 3, 1}).contiguous();
  auto out = at::zeros({kernel_size, kernel_size, C}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "depthwise_weight_grad", [&] {
    weight_grad<scalar_t>(in.data_ptr<scalar_t>(), gout.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), N, C, H,
                          W, Ho, Wo, kernel_size, stride, padding);
  });
  return out.permute({2, 0, 1}).unsqueeze(1).contiguous();
}
