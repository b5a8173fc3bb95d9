// The CPU kernels of rnnkit::gru and rnnkit::gru_backward (schemas: ../recurrence.cpp).
#include <torch/library.h>

#include <tuple>

#include "gru_step.h"
#include "recurrence_ops.h"

namespace rnnkit::cpu {
namespace {

using Tensor = at::Tensor;
using OptionalTensor = std::optional<at::Tensor>;

std::tuple<Tensor, Tensor, Tensor> gru(const Tensor& input, const Tensor& batch_sizes, const Tensor& h0,
                                       const Tensor& w_ih, const Tensor& w_hh, const OptionalTensor& b_ih,
                                       const OptionalTensor& b_hh, bool reverse) {
  const char* op = "rnnkit::gru";
  const LayerArgs args = check_layer_args(op, GruStep::kGates, input, batch_sizes, h0, std::nullopt, w_ih, w_hh,
                                          b_ih, b_hh, std::nullopt, reverse);
  ForwardResult r = run_forward<GruStep>(op, args);
  return {r.output, r.h_n, r.saved};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_backward(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& input, const Tensor& batch_sizes,
    const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh, const Tensor& output, const Tensor& gates,
    bool reverse, std::array<bool, 3> output_mask) {
  const char* op = "rnnkit::gru_backward";
  const LayerArgs args = check_layer_args(op, GruStep::kGates, input, batch_sizes, h0, std::nullopt, w_ih, w_hh,
                                          std::nullopt, std::nullopt, std::nullopt, reverse);
  BackwardResult r =
      run_backward<GruStep>(op, args, grad_output, grad_h_n, Tensor(), output, gates, Tensor(), output_mask);
  return {r.grad_input, r.grad_h0, r.grad_w_ih, r.grad_w_hh, r.grad_b_ih, r.grad_b_hh};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("gru", &gru);
  m.impl("gru_backward", &gru_backward);
}

}  // namespace rnnkit::cpu
