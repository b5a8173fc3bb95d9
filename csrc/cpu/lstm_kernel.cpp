// The CPU kernels of rnnkit::lstm and rnnkit::lstm_backward (schemas: ../recurrence.cpp).
#include <torch/library.h>

#include <tuple>

#include "lstm_step.h"
#include "recurrence_ops.h"

namespace rnnkit::cpu {
namespace {

using Tensor = at::Tensor;
using OptionalTensor = std::optional<at::Tensor>;

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm(const Tensor& input, const Tensor& batch_sizes,
                                                        const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
                                                        const Tensor& w_hh, const OptionalTensor& b_ih,
                                                        const OptionalTensor& b_hh, const OptionalTensor& w_hr,
                                                        bool reverse) {
  const char* op = "rnnkit::lstm";
  const LayerArgs args =
      check_layer_args(op, LstmStep::kGates, input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse);
  ForwardResult r = run_forward<LstmStep>(op, args);
  return {r.output, r.h_n, r.c_n, r.saved, r.cells};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_backward(
    const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& grad_c_n, const Tensor& input,
    const Tensor& batch_sizes, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptionalTensor& w_hr, const Tensor& output, const Tensor& gates, const Tensor& cells, bool reverse,
    std::array<bool, 3> output_mask) {
  const char* op = "rnnkit::lstm_backward";
  const LayerArgs args = check_layer_args(op, LstmStep::kGates, input, batch_sizes, h0, c0, w_ih, w_hh,
                                          std::nullopt, std::nullopt, w_hr, reverse);
  BackwardResult r =
      run_backward<LstmStep>(op, args, grad_output, grad_h_n, grad_c_n, output, gates, cells, output_mask);
  return {r.grad_input, r.grad_h0, r.grad_c0, r.grad_w_ih, r.grad_w_hh, r.grad_b_ih, r.grad_b_hh, r.grad_w_hr};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("lstm", &lstm);
  m.impl("lstm_backward", &lstm_backward);
}

}  // namespace rnnkit::cpu
