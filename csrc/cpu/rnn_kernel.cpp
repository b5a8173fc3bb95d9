// The CPU kernels of rnnkit::rnn_tanh, rnnkit::rnn_relu and their backward (schemas: ../recurrence.cpp).
#include <torch/library.h>

#include <tuple>

#include "elman_step.h"
#include "recurrence_ops.h"

namespace rnnkit::cpu {
namespace {

using Tensor = at::Tensor;
using OptionalTensor = std::optional<at::Tensor>;

template <typename Cell>
struct Elman {
  static std::tuple<Tensor, Tensor> forward(const Tensor& input, const Tensor& batch_sizes, const Tensor& h0,
                                            const Tensor& w_ih, const Tensor& w_hh, const OptionalTensor& b_ih,
                                            const OptionalTensor& b_hh, bool reverse) {
    const char* op = std::is_same_v<Cell, ElmanTanhStep> ? "rnnkit::rnn_tanh" : "rnnkit::rnn_relu";
    const LayerArgs args = check_layer_args(op, Cell::kGates, input, batch_sizes, h0, std::nullopt, w_ih, w_hh,
                                            b_ih, b_hh, std::nullopt, reverse);
    ForwardResult r = run_forward<Cell>(op, args);
    return {r.output, r.h_n};
  }

  static std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> backward(
      const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& input, const Tensor& batch_sizes,
      const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh, const Tensor& output, bool reverse,
      std::array<bool, 3> output_mask) {
    const char* op =
        std::is_same_v<Cell, ElmanTanhStep> ? "rnnkit::rnn_tanh_backward" : "rnnkit::rnn_relu_backward";
    const LayerArgs args = check_layer_args(op, Cell::kGates, input, batch_sizes, h0, std::nullopt, w_ih, w_hh,
                                            std::nullopt, std::nullopt, std::nullopt, reverse);
    // Nothing saved: the output holds the activations the backward reads.
    BackwardResult r = run_backward<Cell>(op, args, grad_output, grad_h_n, Tensor(), output,
                                          at::empty({0}, input.options()), Tensor(), output_mask);
    return {r.grad_input, r.grad_h0, r.grad_w_ih, r.grad_w_hh, r.grad_b_ih, r.grad_b_hh};
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("rnn_tanh", &Elman<ElmanTanhStep>::forward);
  m.impl("rnn_tanh_backward", &Elman<ElmanTanhStep>::backward);
  m.impl("rnn_relu", &Elman<ElmanReluStep>::forward);
  m.impl("rnn_relu_backward", &Elman<ElmanReluStep>::backward);
}

}  // namespace rnnkit::cpu
