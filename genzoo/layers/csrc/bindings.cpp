// The Python module of genzoo's CPU kernels (genzoo/cpu_kernels.py builds and loads it).
#include <torch/extension.h>

at::Tensor depthwise_weight_grad(const at::Tensor& input, const at::Tensor& grad_out, int64_t kernel_size,
                                 int64_t stride, int64_t padding);
at::Tensor elu_forward(const at::Tensor& x);
at::Tensor elu_backward(const at::Tensor& grad, const at::Tensor& y);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("depthwise_weight_grad", &depthwise_weight_grad, "depthwise conv weight gradient (NHWC, CPU)");
  m.def("elu_forward", &elu_forward, "ELU (alpha 1) of a dense CPU tensor");
  m.def("elu_backward", &elu_backward, "ELU's input gradient from its output and the output's gradient");
}
