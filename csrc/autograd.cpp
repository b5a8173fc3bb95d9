// The autograd kernels of rnnkit's forward operators (rnnkit::lstm, gru, rnn_tanh, rnn_relu, and
// generated_recurrence, the loop of a generated step): what runs at the Autograd dispatch key, as
// torchvision's csrc/ops/autograd do for its kernels.
//
// Why C++ rather than torch.library.register_autograd: a one-step call (a decoder running its GRU once
// per output token) is mostly per-call overhead, and the Python formula cost about 30 us of it on the
// AVX-512 EPYC (16 us in torch's own argument handling, torch._library.utils.fill_defaults, at every
// forward with grad), against about 5 us here.
//
// An ordinary backward calls the family's backward operator (the C++ time loop run backwards). That
// operator is not differentiable, so a backward that must be (grad mode on inside it: create_graph,
// double backward, gradgradcheck; or vmap's batched output gradients, is_grads_batched=True) calls
// rnnkit::layer_gradients instead, whose Python implementation (rnnkit/kernels/ops/autograd.py,
// CompositeImplicitAutograd) recomputes the layer-direction on the reference loop and differentiates
// that: the reference backend's numbers, differentiable again.
#include <ATen/LegacyBatchedTensorImpl.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <optional>
#include <string>
#include <vector>

namespace rnnkit {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptionalTensor = std::optional<Tensor>;

// One family's operators and the shape of its schemas (csrc/recurrence.cpp).
struct Family {
  const char* name;           // the forward operator, "lstm"
  const char* backward_name;  // "lstm_backward"
  int states;                 // 1 (h) or 2 (h, c)
  bool projectable;           // takes w_hr
  int for_backward;           // results after the final states that only the backward reads
};

constexpr std::array<Family, 4> kFamilies = {{
    {"lstm", "lstm_backward", 2, true, 2},
    {"gru", "gru_backward", 1, false, 1},
    {"rnn_tanh", "rnn_tanh_backward", 1, false, 0},
    {"rnn_relu", "rnn_relu_backward", 1, false, 0},
}};
enum FamilyIndex : int64_t { kLstm = 0, kGru = 1, kRnnTanh = 2, kRnnRelu = 3 };

c10::OperatorHandle operator_named(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow((std::string("rnnkit::") + name).c_str(), "");
}

// A family's forward or backward operator, looked up once (every call of a layer comes through here).
const c10::OperatorHandle& family_operator(int64_t family_index, bool backward) {
  static const std::vector<c10::OperatorHandle> handles = [] {
    std::vector<c10::OperatorHandle> found;
    for (const Family& family : kFamilies) {
      found.push_back(operator_named(family.name));
      found.push_back(operator_named(family.backward_name));
    }
    return found;
  }();
  return handles[2 * family_index + (backward ? 1 : 0)];
}

bool is_batched(const Tensor& t) {
  return t.defined() && (t.key_set().has(c10::DispatchKey::FuncTorchBatched) ||
                         t.key_set().has(c10::DispatchKey::Batched));
}

// The positions of RecurrenceFunction::forward's arguments (after ctx), which backward returns
// gradients for: family, input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse.
enum Argument { kFamily, kInput, kBatchSizes, kH0, kC0, kWIh, kWHh, kBIh, kBHh, kWHr, kReverse, kArguments };
// The differentiable ones, in the order of the backward operators' results and of layer_gradients'.
constexpr std::array<Argument, 8> kDifferentiable = {kInput, kH0, kC0, kWIh, kWHh, kBIh, kBHh, kWHr};

class RecurrenceFunction : public torch::autograd::Function<RecurrenceFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, int64_t family_index, const Tensor& input,
                               const Tensor& batch_sizes, const Tensor& h0, const OptionalTensor& c0,
                               const Tensor& w_ih, const Tensor& w_hh, const OptionalTensor& b_ih,
                               const OptionalTensor& b_hh, const OptionalTensor& w_hr, bool reverse) {
    const Family& family = kFamilies[family_index];
    torch::jit::Stack stack;
    stack.reserve(kArguments);
    stack.emplace_back(input);
    stack.emplace_back(batch_sizes);
    stack.emplace_back(h0);
    if (family.states == 2) stack.emplace_back(*c0);
    stack.emplace_back(w_ih);
    stack.emplace_back(w_hh);
    stack.emplace_back(b_ih);
    stack.emplace_back(b_hh);
    if (family.projectable) stack.emplace_back(w_hr);
    stack.emplace_back(reverse);
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      family_operator(family_index, /*backward=*/false).callBoxed(&stack);
    }
    variable_list results;
    results.reserve(stack.size());
    for (const c10::IValue& value : stack) results.push_back(value.toTensor());
    // results: output, the final states, then what the backward reads (not differentiable)
    const int differentiable = 1 + family.states;
    variable_list for_backward(results.begin() + differentiable, results.end());
    ctx->mark_non_differentiable(for_backward);
    ctx->set_materialize_grads(false);  // an unused result's gradient is made below, one zero expanded
    ctx->saved_data["family"] = family_index;
    ctx->saved_data["reverse"] = reverse;
    // every argument (the recompute reads them all; parameters cost no memory), then output and for_backward
    variable_list saved = {input, batch_sizes, h0, c0.value_or(Tensor()), w_ih, w_hh, b_ih.value_or(Tensor()),
                           b_hh.value_or(Tensor()), w_hr.value_or(Tensor()), results[0]};
    saved.insert(saved.end(), for_backward.begin(), for_backward.end());
    ctx->save_for_backward(saved);
    return results;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const int64_t family_index = ctx->saved_data["family"].toInt();
    const Family& family = kFamilies[family_index];
    const bool reverse = ctx->saved_data["reverse"].toBool();
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &input = saved[0], &batch_sizes = saved[1], &h0 = saved[2], &c0 = saved[3], &w_ih = saved[4],
                 &w_hh = saved[5], &b_ih = saved[6], &b_hh = saved[7], &w_hr = saved[8], &output = saved[9];
    // the gradients of output and the final states; an unused one: one zero expanded to its shape (the
    // operator reads it as such, with no (N, P) block of zeros made)
    const std::array<const Tensor*, 3> like = {&output, &h0, &c0};
    variable_list result_grads;
    bool batched = false;
    for (int k = 0; k < 1 + family.states; ++k) {
      const Tensor& g = grads[k];
      batched = batched || is_batched(g);
      result_grads.push_back(g.defined() ? g : at::zeros({}, like[k]->options()).expand(like[k]->sizes()));
    }
    // needs_input_grad counts the tensor arguments given (its edges), not the argument positions
    std::array<int, kArguments> edge{};
    int edges = 0;
    for (int a = kInput; a < kReverse; ++a) edge[a] = saved[a - 1].defined() ? edges++ : -1;
    // (false for an argument not given: c0 of a GRU, absent biases, w_hr without a projection)
    auto needs = [&](Argument a) { return edge[a] >= 0 && ctx->needs_input_grad(edge[a]); };
    variable_list gradients(kArguments);

    if (at::GradMode::is_enabled() || batched) {  // differentiable again: the Python recompute
      // wanted: bit k for the k-th of input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr
      int64_t wanted = 0;
      for (size_t k = 0; k < kDifferentiable.size(); ++k) {
        if (needs(kDifferentiable[k])) wanted |= int64_t{1} << k;
      }
      auto optional = [](const Tensor& t) { return t.defined() ? OptionalTensor(t) : std::nullopt; };
      static const auto layer_gradients =
          operator_named("layer_gradients")
              .typed<std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>(
                  c10::string_view, const Tensor&, const Tensor&, const OptionalTensor&, const Tensor&,
                  const Tensor&, const OptionalTensor&, const Tensor&, const Tensor&, const OptionalTensor&,
                  const OptionalTensor&, const OptionalTensor&, const Tensor&, bool, int64_t)>();
      const Tensor grad_c_n = family.states == 2 ? result_grads[2] : Tensor();
      auto [d_input, d_h0, d_c0, d_w_ih, d_w_hh, d_b_ih, d_b_hh, d_w_hr] = layer_gradients.call(
          family.name, result_grads[0], result_grads[1], optional(grad_c_n), input, h0, optional(c0), w_ih, w_hh,
          optional(b_ih), optional(b_hh), optional(w_hr), batch_sizes, reverse, wanted);
      const std::array<Tensor, 8> got = {d_input, d_h0, d_c0, d_w_ih, d_w_hh, d_b_ih, d_b_hh, d_w_hr};
      for (size_t k = 0; k < kDifferentiable.size(); ++k) {
        if (wanted & (int64_t{1} << k)) gradients[kDifferentiable[k]] = got[k];
      }
      return gradients;
    }

    torch::jit::Stack stack;
    for (const Tensor& g : result_grads) stack.emplace_back(g);
    stack.emplace_back(input);
    stack.emplace_back(batch_sizes);
    stack.emplace_back(h0);
    if (family.states == 2) stack.emplace_back(c0);
    stack.emplace_back(w_ih);
    stack.emplace_back(w_hh);
    if (family.projectable) stack.emplace_back(w_hr.defined() ? OptionalTensor(w_hr) : std::nullopt);
    for (size_t k = 9; k < saved.size(); ++k) stack.emplace_back(saved[k]);  // output, then for_backward
    stack.emplace_back(reverse);
    const bool need_states = needs(kH0) || (family.states == 2 && needs(kC0));
    const bool need_weights = needs(kWIh) || needs(kWHh) || needs(kBIh) || needs(kBHh) || needs(kWHr);
    stack.emplace_back(c10::List<bool>({needs(kInput), need_states, need_weights}));
    family_operator(family_index, /*backward=*/true).callBoxed(&stack);
    // results: grad_input, grad_h0, (grad_c0), grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, (grad_w_hr)
    // Kept where asked for: the operator returns what was not as (0,) placeholders, and bias gradients
    // also without biases (needs() is false for an argument not given).
    size_t k = 0;
    for (Argument argument : kDifferentiable) {
      if ((argument == kC0 && family.states == 1) || (argument == kWHr && !family.projectable)) continue;
      const Tensor gradient = stack[k++].toTensor();
      if (needs(argument)) gradients[argument] = gradient;
    }
    return gradients;
  }
};

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm(const Tensor& input, const Tensor& batch_sizes,
                                                        const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
                                                        const Tensor& w_hh, const OptionalTensor& b_ih,
                                                        const OptionalTensor& b_hh, const OptionalTensor& w_hr,
                                                        bool reverse) {
  auto r = RecurrenceFunction::apply(kLstm, input, batch_sizes, h0, OptionalTensor(c0), w_ih, w_hh, b_ih, b_hh,
                                     w_hr, reverse);
  return {r[0], r[1], r[2], r[3], r[4]};
}

std::tuple<Tensor, Tensor, Tensor> gru(const Tensor& input, const Tensor& batch_sizes, const Tensor& h0,
                                       const Tensor& w_ih, const Tensor& w_hh, const OptionalTensor& b_ih,
                                       const OptionalTensor& b_hh, bool reverse) {
  auto r = RecurrenceFunction::apply(kGru, input, batch_sizes, h0, std::nullopt, w_ih, w_hh, b_ih, b_hh,
                                     std::nullopt, reverse);
  return {r[0], r[1], r[2]};
}

template <int64_t kIndex>
std::tuple<Tensor, Tensor> elman(const Tensor& input, const Tensor& batch_sizes, const Tensor& h0,
                                 const Tensor& w_ih, const Tensor& w_hh, const OptionalTensor& b_ih,
                                 const OptionalTensor& b_hh, bool reverse) {
  auto r = RecurrenceFunction::apply(kIndex, input, batch_sizes, h0, std::nullopt, w_ih, w_hh, b_ih, b_hh,
                                     std::nullopt, reverse);
  return {r[0], r[1]};
}

// rnnkit::generated_recurrence: the loop of a step generated from a cell's equations (cpu/generated_loop.cpp).
// Arguments after ctx: plan, hoisted (list), state0 (list), constants (list), rows, batch_sizes, reverse;
// backward returns one gradient per argument, each list's tensors one each.
class GeneratedFunction : public torch::autograd::Function<GeneratedFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, int64_t plan, at::TensorList hoisted, at::TensorList state0,
                               at::TensorList constants, int64_t rows, const Tensor& batch_sizes, bool reverse) {
    static const auto loop = operator_named("generated_forward")
                                 .typed<std::tuple<std::vector<Tensor>, std::vector<Tensor>>(
                                     int64_t, at::TensorList, at::TensorList, at::TensorList, int64_t,
                                     const Tensor&, bool, bool)>();
    std::vector<Tensor> results, slots;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      std::tie(results, slots) = loop.call(plan, hoisted, state0, constants, rows, batch_sizes, reverse, true);
    }
    ctx->set_materialize_grads(false);  // an unused result's gradient stays None: the loop reads it as zero
    ctx->saved_data["plan"] = plan;
    ctx->saved_data["reverse"] = reverse;
    ctx->saved_data["counts"] = std::vector<int64_t>{static_cast<int64_t>(slots.size()),
                                                     static_cast<int64_t>(hoisted.size()),
                                                     static_cast<int64_t>(state0.size())};
    // the slots (the loop's backward reads them), then the arguments (a differentiable backward reruns the
    // step from them; the hoisted inputs are slots already, the same tensors, no memory of their own)
    variable_list saved(slots.begin(), slots.end());
    saved.insert(saved.end(), hoisted.begin(), hoisted.end());
    saved.insert(saved.end(), state0.begin(), state0.end());
    saved.insert(saved.end(), constants.begin(), constants.end());
    saved.push_back(batch_sizes);
    ctx->save_for_backward(saved);
    return results;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const int64_t plan = ctx->saved_data["plan"].toInt();
    const bool reverse = ctx->saved_data["reverse"].toBool();
    const std::vector<int64_t> counts = ctx->saved_data["counts"].toIntVector();
    const int64_t n_slots = counts[0], n_hoisted = counts[1], n_states = counts[2];
    const variable_list saved = ctx->get_saved_variables();
    const auto part = [&](int64_t from, int64_t n) { return variable_list(saved.begin() + from, saved.begin() + from + n); };
    const int64_t first_constant = n_slots + n_hoisted + n_states;
    const Saved loop{plan, reverse, part(0, n_slots), part(n_slots, n_hoisted), part(n_slots + n_hoisted, n_states),
                     part(first_constant, static_cast<int64_t>(saved.size()) - 1 - first_constant), saved.back()};
    // one gradient per argument: plan, each hoisted, each state, each constant, rows, batch_sizes, reverse
    variable_list gradients(1 + n_hoisted + n_states + loop.constants.size() + 3);
    const bool batched = std::any_of(grads.begin(), grads.end(), is_batched);
    const std::vector<Tensor> got = batched ? batched_gradients(loop, grads) : loop.gradients(grads);
    std::copy(got.begin(), got.end(), gradients.begin() + 1);
    return gradients;
  }

 private:
  // What the forward saved: the loop's slots and its arguments.
  struct Saved {
    int64_t plan;
    bool reverse;
    variable_list slots, hoisted, state0, constants;
    Tensor batch_sizes;

    // The gradients of hoisted, state0 and constants (in that order) for the results' gradients `grads`.
    std::vector<Tensor> gradients(const variable_list& grads) const {
      const auto optional_list = [](auto begin, auto end) {
        c10::List<std::optional<Tensor>> list;
        for (auto g = begin; g != end; ++g) list.push_back(g->defined() ? std::optional<Tensor>(*g) : std::nullopt);
        return list;
      };
      if (at::GradMode::is_enabled()) {  // differentiable again: the Python recompute
        static const auto recompute =
            operator_named("generated_gradients")
                .typed<std::vector<Tensor>(int64_t, const c10::List<std::optional<Tensor>>&, at::TensorList,
                                           at::TensorList, at::TensorList, const Tensor&, bool)>();
        return recompute.call(plan, optional_list(grads.begin(), grads.end()), hoisted, state0, constants,
                              batch_sizes, reverse);
      }
      static const auto loop =
          operator_named("generated_backward")
              .typed<std::tuple<std::vector<Tensor>, std::vector<Tensor>, std::vector<Tensor>>(
                  int64_t, at::TensorList, const c10::List<std::optional<Tensor>>&,
                  const c10::List<std::optional<Tensor>>&, at::TensorList, const Tensor&, bool)>();
      const auto n_states = static_cast<std::ptrdiff_t>(state0.size());
      const auto [grad_hoisted, grad_state0, grad_constants] =
          loop.call(plan, slots, optional_list(grads.begin(), grads.begin() + n_states),
                    optional_list(grads.begin() + n_states, grads.end()), constants, batch_sizes, reverse);
      std::vector<Tensor> result(grad_hoisted.begin(), grad_hoisted.end());
      result.insert(result.end(), grad_state0.begin(), grad_state0.end());
      result.insert(result.end(), grad_constants.begin(), grad_constants.end());
      return result;
    }
  };

  // autograd.grad(..., is_grads_batched=True) runs the backward under vmap's legacy batching, whose
  // fallback (one call per gradient) refuses an operator taking lists of tensors, as this loop's do: the
  // batched gradients are taken apart here, one backward each, and the results stacked back.
  static std::vector<Tensor> batched_gradients(const Saved& loop, const variable_list& grads) {
    int64_t level = -1, size = -1;
    variable_list physical(grads.size());  // each gradient with its batch dimension first
    for (size_t k = 0; k < grads.size(); ++k) {
      if (!grads[k].defined()) continue;
      const at::BatchedTensorImpl* impl = at::maybeGetBatchedImpl(grads[k]);
      TORCH_CHECK(impl != nullptr && impl->bdims().size() == 1 && (level < 0 || impl->bdims()[0].level() == level),
                  "rnnkit::generated_recurrence: batched gradients are taken from one level of "
                  "autograd.grad(..., is_grads_batched=True); under torch.func transforms, backend='auto' runs "
                  "the reference loop");
      level = impl->bdims()[0].level();
      physical[k] = impl->value().movedim(impl->bdims()[0].dim(), 0);
      size = physical[k].size(0);
    }
    std::vector<std::vector<Tensor>> per_gradient;  // [sample][argument]
    for (int64_t i = 0; i < size; ++i) {
      variable_list sample(grads.size());
      for (size_t k = 0; k < grads.size(); ++k) {
        if (physical[k].defined()) sample[k] = physical[k].select(0, i);
      }
      per_gradient.push_back(loop.gradients(sample));
    }
    std::vector<Tensor> result;
    for (size_t a = 0; size > 0 && a < per_gradient[0].size(); ++a) {
      std::vector<Tensor> column;
      for (const auto& sample : per_gradient) column.push_back(sample[a]);
      const bool defined = std::all_of(column.begin(), column.end(), [](const Tensor& t) { return t.defined(); });
      result.push_back(defined ? at::addBatchDim(at::stack(column), level, 0) : Tensor());
    }
    return result;
  }
};

std::vector<Tensor> generated_recurrence(int64_t plan, at::TensorList hoisted, at::TensorList state0,
                                         at::TensorList constants, int64_t rows, const Tensor& batch_sizes,
                                         bool reverse) {
  const auto requires_grad = [](at::TensorList list) {
    return std::any_of(list.begin(), list.end(), [](const Tensor& t) { return t.requires_grad(); });
  };
  if (!(at::GradMode::is_enabled() && (requires_grad(hoisted) || requires_grad(state0) || requires_grad(constants)))) {
    // nothing to differentiate: the loop alone (its CPU kernel keeps nothing for a backward)
    static const auto loop =
        operator_named("generated_recurrence")
            .typed<std::vector<Tensor>(int64_t, at::TensorList, at::TensorList, at::TensorList, int64_t,
                                       const Tensor&, bool)>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return loop.call(plan, hoisted, state0, constants, rows, batch_sizes, reverse);
  }
  return GeneratedFunction::apply(plan, hoisted, state0, constants, rows, batch_sizes, reverse);
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkit, Autograd, m) {
  m.impl("generated_recurrence", &generated_recurrence);
  m.impl("lstm", &lstm);
  m.impl("gru", &gru);
  m.impl("rnn_tanh", &elman<kRnnTanh>);
  m.impl("rnn_relu", &elman<kRnnRelu>);
}

}  // namespace rnnkit
