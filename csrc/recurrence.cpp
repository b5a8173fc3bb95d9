// The schemas of rnnkit's recurrence operators: torch.ops.rnnkit.*, one forward and one backward per
// family of torch.nn's recurrent layers.  Kernels: cpu/*_kernel.cpp (CPU), autograd.cpp (Autograd);
// the fake (shape) kernels, and layer_gradients' implementation, are registered from Python
// (rnnkit/kernels/ops/).
//
// Each operator runs ONE layer-direction over input in packed layout: `input` (N, I) holds the rows
// of all steps one after the other, step t owning batch_sizes[t] rows (batch_sizes: 1-D int64 on the
// CPU, non-increasing, summing to N; a padded (T, B, I) input is this layout with every size B).
// `reverse` runs the steps from the last to the first.  Initial states have one row per sequence
// (B = batch_sizes[0] rows); H is the hidden size, P the width of h (H, or LSTM's proj_size).
// Biases are both given or both None.
//
// Forward operators return the layer's output (N, P), its final states, and what their backward
// reads (`gates`, `cells`), which are not differentiable outputs.
// Backward operators take the gradients of the differentiable outputs (all of them, zeros where a
// result was not used), the forward's arguments and results, and
// output_mask = [dL/dinput wanted, the initial states' gradients wanted, the weights' gradients
// wanted]; a gradient not wanted comes back as an empty (0,) tensor, as does grad_w_hr without a
// projection.  grad_b_ih and grad_b_hh are
// returned also without biases (the gradient the biases would have).
#include <torch/library.h>

TORCH_LIBRARY(rnnkit, m) {
  // Where the fake kernels live: torch imports it when it meets an operator without one (torch.compile,
  // torch.export) and checks that they are registered there.
  m.set_python_module("rnnkit.kernels.ops.fake");
  // LSTM (gates i, f, g, o), with an optional projection w_hr (P, H).
  // gates (N, 4H): the activations i, f, g, o of every row; cells (N, H): c_t of every row.
  m.def(
      "lstm(Tensor input, Tensor batch_sizes, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
      "Tensor? b_hh, Tensor? w_hr, bool reverse) -> (Tensor output, Tensor h_n, Tensor c_n, Tensor gates, "
      "Tensor cells)");
  m.def(
      "lstm_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, Tensor input, Tensor batch_sizes, "
      "Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? w_hr, Tensor output, Tensor gates, "
      "Tensor cells, bool reverse, bool[3] output_mask) -> (Tensor grad_input, Tensor grad_h0, "
      "Tensor grad_c0, Tensor grad_w_ih, Tensor grad_w_hh, Tensor grad_b_ih, Tensor grad_b_hh, "
      "Tensor grad_w_hr)");
  // GRU (gates r, z, n; torch.nn's, the reset gate on the recurrent product).
  // gates (N, 4H): r, z, n and W_hn h_{t-1} + b_hn of every row.
  m.def(
      "gru(Tensor input, Tensor batch_sizes, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "bool reverse) -> (Tensor output, Tensor h_n, Tensor gates)");
  m.def(
      "gru_backward(Tensor grad_output, Tensor grad_h_n, Tensor input, Tensor batch_sizes, Tensor h0, "
      "Tensor w_ih, Tensor w_hh, Tensor output, Tensor gates, bool reverse, bool[3] output_mask) -> "
      "(Tensor grad_input, Tensor grad_h0, Tensor grad_w_ih, Tensor grad_w_hh, Tensor grad_b_ih, "
      "Tensor grad_b_hh)");
  // Elman RNN, h_t = tanh or relu(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh); the backward reads the
  // output (the activations) alone.
  m.def(
      "rnn_tanh(Tensor input, Tensor batch_sizes, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
      "Tensor? b_hh, bool reverse) -> (Tensor output, Tensor h_n)");
  m.def(
      "rnn_tanh_backward(Tensor grad_output, Tensor grad_h_n, Tensor input, Tensor batch_sizes, Tensor h0, "
      "Tensor w_ih, Tensor w_hh, Tensor output, bool reverse, bool[3] output_mask) -> (Tensor grad_input, "
      "Tensor grad_h0, Tensor grad_w_ih, Tensor grad_w_hh, Tensor grad_b_ih, Tensor grad_b_hh)");
  m.def(
      "rnn_relu(Tensor input, Tensor batch_sizes, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
      "Tensor? b_hh, bool reverse) -> (Tensor output, Tensor h_n)");
  m.def(
      "rnn_relu_backward(Tensor grad_output, Tensor grad_h_n, Tensor input, Tensor batch_sizes, Tensor h0, "
      "Tensor w_ih, Tensor w_hh, Tensor output, bool reverse, bool[3] output_mask) -> (Tensor grad_input, "
      "Tensor grad_h0, Tensor grad_w_ih, Tensor grad_w_hh, Tensor grad_b_ih, Tensor grad_b_hh)");
  // The time loop of a cell whose pointwise step rnnkit generated from its equations
  // (rnnkit/kernels/generator/; the loop: cpu/generated_loop.cpp).  generated_plan registers a generated
  // step once: the addresses of its generated C functions and its layout (generator/stages.py: slot
  // widths, the slots of the hoisted inputs, of each state's previous and new values, the pointwise
  // constants, the backward's zero-filled and shared gradient buffers, the recurrent products (left
  // slot, result slot, stage, weight: a constant's number), the number of a step's stages, whether the
  // step has a prologue (stage number `stages`)); it returns the plan's
  // number, which the other operators take, valid for the rest of the process (an equal plan registered
  // again gets the same number).
  m.def(
      "generated_plan(int forward_step, int backward_step, int[] hoisted_slots, int[] slot_widths, int[] previous, "
      "int[] history, int[] pointwise_constants, int[] zeroed, int[] grad_alias, "
      "int[] product_left, int[] product_out, int[] product_stage, int[] product_weight, int stages, "
      "bool prologue) -> int");
  // One layer-direction: (each state's history (N, w), then each final state), from the hoisted inputs
  // (N, w) of every row, the initial states (B, w) and the constants (autograd.cpp differentiates it).
  m.def(
      "generated_recurrence(int plan, Tensor[] hoisted, Tensor[] state0, Tensor[] constants, int rows, "
      "Tensor batch_sizes, bool reverse) -> Tensor[]");
  // Its forward loop: those results, and (keep_slots) every slot for the backward.
  m.def(
      "generated_forward(int plan, Tensor[] hoisted, Tensor[] state0, Tensor[] constants, int rows, "
      "Tensor batch_sizes, bool reverse, bool keep_slots) -> (Tensor[], Tensor[])");
  // Its backward loop: (dL/d(hoisted inputs), dL/d(initial states), dL/d(constants), undefined where a
  // constant has none), from the forward's slots and the results' gradients (None: zero).
  m.def(
      "generated_backward(int plan, Tensor[] slots, Tensor?[] grad_histories, Tensor?[] grad_finals, "
      "Tensor[] constants, Tensor batch_sizes, bool reverse) -> (Tensor[], Tensor[], Tensor[])");
  // The same gradients as a differentiable computation (double backward), in the order of the
  // recurrence's tensor arguments, zeros where none: the step run again in torch ops (Python:
  // rnnkit/kernels/generator/layer.py).
  m.def(
      "generated_gradients(int plan, Tensor?[] grad_results, Tensor[] hoisted, Tensor[] state0, "
      "Tensor[] constants, Tensor batch_sizes, bool reverse) -> Tensor[]");
  // The gradients of one layer-direction of `family` (a forward operator's name) as a differentiable
  // computation: the backward of a backward that builds a graph (autograd.cpp).  Takes the gradients
  // of output and the final states, and the forward's differentiable arguments (c0 and w_hr where the
  // family has them); bit k of `wanted` asks for the gradient of the k-th of (input, h0, c0, w_ih, w_hh,
  // b_ih, b_hh, w_hr), returned in that order, an empty (0,) tensor where not asked for.  Flat tensor
  // arguments and results (no lists): vmap's generic fallback can then batch it.
  m.def(
      "layer_gradients(str family, Tensor grad_output, Tensor grad_h_n, Tensor? grad_c_n, Tensor input, "
      "Tensor h0, Tensor? c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, "
      "Tensor batch_sizes, bool reverse, int wanted) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, "
      "Tensor, Tensor)");
}
