// The CPU kernels of rnnkit::generated_forward and rnnkit::generated_backward (schemas:
// ../recurrence.cpp): the time loop of a cell whose pointwise step was generated from its own equations
// (rnnkit/kernels/generator/), loaded from a shared library as two C functions.
//
// The loop knows nothing of the cell.  It holds its values in "slots": tensors (N, width) with one row
// per packed row of the layer-direction (packed_layout.h).  Some slots are the cell's inputs per row
// (the hoisted part of the step, computed by torch for all steps at once), some its states (for each
// state, a slot of the state each row read and a slot of the state it wrote: its history), the rest
// what the step computes and later parts of it read (the recurrent products' results among them).
// The step is split into stages by its recurrent products (a product's left operand must be complete
// before the product, and the product before what reads it), so per step t, over its n rows:
//
//   previous-state slots rows = the history rows of the previous step (or the initial states' rows)
//   for each stage k: the products of stage k:  out rows = left rows @ weight    (ATen, all threads)
//                     forward_step(k, n, slot pointers at the step's first row)  (rows over threads)
//
// What does not read the state (the pointwise tail of the hoisted part: a minGRU's gates, a layer norm
// of W_ih x_t) is a prologue, stage number `stages`, run first at each step (its backward last): fused
// with the step, its values still in cache when the step reads them, where torch would make a pass over
// all rows per op.
//
// Backward, the steps in the opposite order, with grads: one (N, width) tensor per slot (the history
// slots' holding dL/d(that state) from the outputs; the others zero) and after them one per constant
// the step reads pointwise (its gradient row by row, summed by the caller):
//
//   grads of the history slots rows += the carried dL/d(state) (dL/d(final state) at each row's last step)
//   for each stage k, last first: backward_step(k, ...) adds each input's gradient to its slot's
//                                  then, for the products of stage k: grad left rows += grad out rows @ weight^T
//   the carried dL/d(state) = grads of the previous-state slots rows
//
// The products' weight gradients (left^T @ grad out over all rows) are one product each, taken by the
// caller from the slots.  As in time_loop.h, the products run on weights packed once per call
// (recurrent_product.h), and with 2+ threads each thread runs the whole loop on its own chunk of the
// batch's rows (row_split.h).  Generated functions (C ABI, no torch in them):
//   forward_step(int32 stage, int64 rows, void* const* slots, const void* const* constants)
//   backward_step(int32 stage, int64 rows, const void* const* slots, void* const* grads,
//                 const void* const* constants)
// each slot pointer at the first of `rows` consecutive rows.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/SmallVector.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "packed_layout.h"
#include "recurrence_ops.h"
#include "recurrent_product.h"
#include "row_split.h"
#include "time_loop.h"

namespace rnnkit::cpu {
namespace {

using Tensor = at::Tensor;
// A gradient buffer's start (generated_plan's `zeroed`, gradient_buffers): uninitialized rows, zeros, none,
// zeros of one row per sequence (a pointwise constant's gradient, added to at each of the sequence's steps),
// or uninitialized rows of one step (a value's gradient, stored and read within the step that computes it).
constexpr int64_t kUninitialized = 0, kZeros = 1, kNoBuffer = 2, kAccumulated = 3, kStepRows = 4;
using ForwardStep = void (*)(int32_t, int64_t, void* const*, const void* const*);
using BackwardStep = void (*)(int32_t, int64_t, const void* const*, void* const*, const void* const*);

struct Product {
  int64_t left, out, stage;
  Tensor weight;  // (left width, out width)
};

// A generated step as the loop runs it (rnnkit::generated_plan's arguments, ../recurrence.cpp).
struct GeneratedPlan {
  int64_t forward_step, backward_step;
  std::vector<int64_t> hoisted_slots, slot_widths, previous, history, pointwise_constants, zeroed, grad_alias,
      product_left, product_out, product_stage, product_weight;
  int64_t stages;  // a step's stages after its prologue, 0 .. stages - 1
  bool prologue;   // stage `stages` is the prologue: what does not read the state, first at each step
};

// The plans of this process by number: registered once per generated step, read at every call (the
// layout crosses into C++ once, not as a dozen lists per call).  Interned: a plan equal to one already
// registered gets that one's number, so plans are never released (an autograd graph may outlive the
// Python objects that registered its plan) and stay as few as the distinct steps the process generated.
class PlanRegistry {
 public:
  int64_t add(const std::vector<int64_t>& key, std::shared_ptr<const GeneratedPlan> plan) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto [found, added] = ids_.emplace(key, static_cast<int64_t>(plans_.size()) + 1);
    if (added) plans_.push_back(std::move(plan));
    return found->second;
  }
  std::shared_ptr<const GeneratedPlan> get(int64_t id, const char* op) {
    std::lock_guard<std::mutex> lock(mutex_);
    TORCH_CHECK(id >= 1 && id <= static_cast<int64_t>(plans_.size()), op, ": no generated plan ", id,
                " in this process");
    return plans_[id - 1];
  }

 private:
  std::mutex mutex_;
  std::map<std::vector<int64_t>, int64_t> ids_;  // a plan's contents, flattened -> its number
  std::vector<std::shared_ptr<const GeneratedPlan>> plans_;
};

PlanRegistry& registry() {
  static PlanRegistry plans;
  return plans;
}

int64_t generated_plan(int64_t forward_step, int64_t backward_step, c10::IntArrayRef hoisted_slots,
                       c10::IntArrayRef slot_widths, c10::IntArrayRef previous, c10::IntArrayRef history,
                       c10::IntArrayRef pointwise_constants, c10::IntArrayRef zeroed, c10::IntArrayRef grad_alias,
                       c10::IntArrayRef product_left, c10::IntArrayRef product_out, c10::IntArrayRef product_stage,
                       c10::IntArrayRef product_weight, int64_t stages, bool prologue) {
  const char* op = "rnnkit::generated_plan";
  TORCH_CHECK(forward_step != 0 && backward_step != 0, op, ": no generated step function");
  const int64_t slots = static_cast<int64_t>(slot_widths.size());
  const auto in_range = [&](c10::IntArrayRef list, int64_t end) {
    return std::all_of(list.begin(), list.end(), [&](int64_t v) { return v >= 0 && v < end; });
  };
  TORCH_CHECK(!history.empty() && previous.size() == history.size() && in_range(history, slots) &&
                  in_range(previous, slots) && in_range(hoisted_slots, slots),
              op, ": one previous and one history slot per state, each a slot");
  const int64_t buffers = slots + static_cast<int64_t>(pointwise_constants.size());
  TORCH_CHECK(static_cast<int64_t>(zeroed.size()) == buffers && static_cast<int64_t>(grad_alias.size()) == buffers,
              op, ": one zeroed flag and one alias per gradient buffer");
  for (int64_t b = 0; b < buffers; ++b) {
    TORCH_CHECK(grad_alias[b] < buffers && (grad_alias[b] < 0 || grad_alias[grad_alias[b]] < 0), op,
                ": gradient buffer ", b, " shares a buffer it cannot");
    TORCH_CHECK(zeroed[b] >= kUninitialized && zeroed[b] <= kStepRows && (zeroed[b] != kAccumulated || b >= slots) &&
                    (zeroed[b] != kStepRows || b < slots),
                op, ": gradient buffer ", b, " starts as 0 (uninitialized), 1 (zeros), 2 (none), 3 (accumulated, ",
                "a constant's) or 4 (a step's rows, a slot's)");
  }
  // a slot without a gradient buffer is one the loop itself never reads or writes gradients of
  for (c10::IntArrayRef list : {hoisted_slots, previous, history, product_left, product_out}) {
    for (const int64_t s : list) {
      TORCH_CHECK(s < 0 || s >= buffers || zeroed[s] != kNoBuffer, op, ": slot ", s,
                  " needs a gradient buffer (a hoisted, state or product slot)");
    }
  }
  // the gradients the caller reads over all rows (the hoisted inputs', the products' for their weights) and
  // those given over all rows (the history's) have all N rows
  for (c10::IntArrayRef list : {hoisted_slots, history, product_out}) {
    for (const int64_t s : list) {
      const int64_t shared = grad_alias[s] >= 0 ? grad_alias[s] : s;
      TORCH_CHECK(zeroed[shared] != kStepRows, op, ": slot ", s, "'s gradient needs all rows");
    }
  }
  for (int64_t b = slots; b < buffers; ++b) {  // (a constant's row gradients are summed over all rows)
    TORCH_CHECK(grad_alias[b] < 0 || zeroed[grad_alias[b]] != kStepRows, op, ": gradient buffer ", b,
                " cannot share a step's rows");
  }
  TORCH_CHECK(product_out.size() == product_left.size() && product_stage.size() == product_left.size() &&
                  product_weight.size() == product_left.size() && in_range(product_left, slots) &&
                  in_range(product_out, slots) && in_range(product_stage, stages),
              op, ": the product lists should have one length, naming slots and stages");
  TORCH_CHECK(std::all_of(product_stage.begin(), product_stage.end(), [](int64_t k) { return k > 0; }), op,
              ": a product's stage follows its left operand's (stage 0 has none: the prologue runs with it)");
  auto plan = std::make_shared<GeneratedPlan>();
  plan->forward_step = forward_step;
  plan->backward_step = backward_step;
  plan->hoisted_slots = hoisted_slots.vec();
  plan->slot_widths = slot_widths.vec();
  plan->previous = previous.vec();
  plan->history = history.vec();
  plan->pointwise_constants = pointwise_constants.vec();
  plan->zeroed = zeroed.vec();
  plan->grad_alias = grad_alias.vec();
  plan->product_left = product_left.vec();
  plan->product_out = product_out.vec();
  plan->product_stage = product_stage.vec();
  plan->product_weight = product_weight.vec();
  plan->stages = stages;
  plan->prologue = prologue;
  std::vector<int64_t> key{forward_step, backward_step, stages, prologue};
  for (c10::IntArrayRef list : {hoisted_slots, slot_widths, previous, history, pointwise_constants, zeroed, grad_alias,
                                product_left, product_out, product_stage, product_weight}) {
    key.push_back(static_cast<int64_t>(list.size()));  // (lengths first: the lists' boundaries)
    key.insert(key.end(), list.begin(), list.end());
  }
  return registry().add(key, std::move(plan));
}

// The products, by stage, from the schema's parallel lists.
std::vector<Product> products_of(c10::IntArrayRef left, c10::IntArrayRef out, c10::IntArrayRef stage,
                                 at::TensorList weights, int64_t slots, int64_t stages) {
  TORCH_CHECK(left.size() == out.size() && left.size() == stage.size() && left.size() == weights.size(),
              "rnnkit::generated: the product lists should have one length");
  std::vector<Product> result;
  for (size_t p = 0; p < left.size(); ++p) {
    TORCH_CHECK(left[p] >= 0 && left[p] < slots && out[p] >= 0 && out[p] < slots && stage[p] >= 0 &&
                    stage[p] < stages,
                "rnnkit::generated: product ", p, " names a slot or stage out of range");
    result.push_back({left[p], out[p], stage[p], weights[p]});
  }
  return result;
}

// `step_rows`: the rows a slot may have besides all N, a step's worth (the batch B): a forward that
// keeps nothing for a backward holds the values it hands within a step in such a buffer, whose rows are
// the batch rows of the current step (0 otherwise: every slot has N rows).
void check_slots(const char* op, at::TensorList slots, c10::IntArrayRef widths, int64_t rows, int64_t step_rows,
                 at::ScalarType dtype) {
  TORCH_CHECK(slots.size() == widths.size(), op, ": one width per slot");
  for (size_t s = 0; s < slots.size(); ++s) {
    const Tensor& t = slots[s];
    TORCH_CHECK(t.is_cpu() && t.is_contiguous() && t.scalar_type() == dtype && t.dim() == 2 &&
                    (t.size(0) == rows || t.size(0) == step_rows) && t.size(1) == widths[s],
                op, ": slot ", s, " should be a contiguous (", rows, ", ", widths[s], ") ", dtype,
                " tensor on the CPU, got ", t.sizes(), " ", t.scalar_type());
  }
}

// Where a step's rows begin in a slot: at packed row o0 + lo, or, in a step buffer (fewer than N rows),
// at batch row lo.
inline int64_t first_row(const Tensor& slot, int64_t rows, int64_t o0, int64_t lo) {
  return slot.size(0) == rows ? o0 + lo : lo;
}

// Where each tensor's rows are: its data, the bytes of a row, whether it holds all N rows (else a step
// buffer, rows indexed from 0).  Read once per call: the loop asks for every tensor's row at every step
// and stage, and the tensor accessors (and a vector's malloc) cost more there than a small step's math.
class RowAddresses {
 public:
  RowAddresses(at::TensorList tensors, int64_t rows) {
    for (const Tensor& t : tensors) {
      base_.push_back(static_cast<char*>(t.data_ptr()));
      row_bytes_.push_back(t.size(1) * t.element_size());
      all_rows_.push_back(t.size(0) == rows);
    }
  }

  // Pointers to each tensor's row where the step's rows [lo, ...) are (its first row o0, packed).
  c10::SmallVector<void*, 32> at(int64_t o0, int64_t lo) const {
    c10::SmallVector<void*, 32> pointers(base_.size());
    for (size_t s = 0; s < base_.size(); ++s) pointers[s] = row(s, o0, lo);
    return pointers;
  }

  // Tensor s's row where the step's rows [lo, ...) are.
  char* row(size_t s, int64_t o0, int64_t lo) const { return base_[s] + (all_rows_[s] ? o0 + lo : lo) * row_bytes_[s]; }
  int64_t row_bytes(size_t s) const { return row_bytes_[s]; }

 private:
  std::vector<char*> base_;
  std::vector<int64_t> row_bytes_;
  std::vector<bool> all_rows_;
};

// A call's products on weights packed once for all its steps (recurrent_product.h: MKL packs its right
// operand at every at::mm, and forks its threads for each small product), or at::mm for one step.
template <typename scalar_t>
struct PackedProducts {
  std::vector<std::optional<PackedMatrix<scalar_t>>> packed;

  // transposed: for the backward's grad_left += grad_out weight^T
  PackedProducts(const std::vector<Product>& products, int64_t steps, bool transposed) {
    for (const Product& p : products) {
      packed.emplace_back();
      if (worth_packing(steps)) packed.back().emplace(PackedMatrix<scalar_t>::of(transposed ? p.weight.t() : p.weight));
    }
  }

  // n rows of tensor `result` (= or +=) n rows of tensor `left` times the weight (transposed), the rows
  // where the step's rows [lo, ...) are in each.  `left` and `result` index one table (the forward: the
  // slots, the product's left and out; the backward: the gradients, the product's out and left), whose
  // addresses are read once per call: a tensor's accessors at every step and product cost a one-row
  // step as much as its math.
  void multiply(size_t p, const Product& product, const RowAddresses& rows_of, const std::vector<Tensor>& tensors,
                int64_t left, int64_t result, int64_t rows, int64_t o0, int64_t lo, int64_t n, bool accumulate,
                bool transposed) const {
    if (packed[p]) {
      const auto elements = [&](int64_t t) { return rows_of.row_bytes(t) / static_cast<int64_t>(sizeof(scalar_t)); };
      packed[p]->multiply(reinterpret_cast<const scalar_t*>(rows_of.row(left, o0, lo)), elements(left), n,
                          reinterpret_cast<scalar_t*>(rows_of.row(result, o0, lo)), elements(result), nullptr,
                          accumulate);
      return;
    }
    // unpacked (one step): at::mm on views
    const Tensor& left_tensor = tensors[left];
    Tensor result_rows = tensors[result].narrow(0, first_row(tensors[result], rows, o0, lo), n);
    const Tensor left_rows = left_tensor.narrow(0, first_row(left_tensor, rows, o0, lo), n);
    const Tensor weight = transposed ? product.weight.t() : product.weight;
    if (accumulate) {
      result_rows.addmm_(left_rows, weight);
    } else {
      at::mm_out(result_rows, left_rows, weight);
    }
  }
};

std::vector<const void*> constant_pointers(at::TensorList constants) {
  std::vector<const void*> pointers;
  for (const Tensor& c : constants) {
    TORCH_CHECK(c.is_contiguous(), "rnnkit::generated: constants read pointwise should be contiguous");
    pointers.push_back(c.const_data_ptr());
  }
  return pointers;
}

int64_t total_width(at::TensorList tensors) {
  int64_t total = 0;
  for (const Tensor& t : tensors) total += t.size(1);
  return total;
}

// Rows [lo, lo + n) of step t's previous-state slots: the previous step's history rows, or state0's
// (`slot_rows`: the slots', `state_rows`: state0's).
void fill_previous_states(const PackedLayout& layout, int64_t t, int64_t lo, int64_t n, const RowAddresses& slot_rows,
                          const RowAddresses& state_rows, c10::IntArrayRef previous, c10::IntArrayRef history) {
  const int64_t continued = std::clamp<int64_t>(layout.rows_with_previous_step(t) - lo, 0, n);
  for (size_t s = 0; s < previous.size(); ++s) {
    const int64_t bytes = slot_rows.row_bytes(previous[s]);
    char* to = slot_rows.row(previous[s], layout.offset(t), lo);
    if (continued > 0) {
      std::memcpy(to, slot_rows.row(history[s], layout.offset(layout.previous_time(t)), lo), continued * bytes);
    }
    if (n > continued) std::memcpy(to + continued * bytes, state_rows.row(s, 0, lo + continued), (n - continued) * bytes);
  }
}

// The slots of a forward: the hoisted ones the caller's (made contiguous), the history slots (N rows) and
// the rest new, with N rows, or with `step_rows` rows (a step's buffers) where step_rows > 0.
std::vector<Tensor> new_slots(at::TensorList hoisted, c10::IntArrayRef hoisted_slots, c10::IntArrayRef slot_widths,
                              c10::IntArrayRef history, int64_t rows, int64_t step_rows,
                              const at::TensorOptions& options, const char* op) {
  std::vector<Tensor> slots(slot_widths.size());
  TORCH_CHECK(hoisted.size() == hoisted_slots.size(), op, ": one slot per hoisted input");
  for (size_t i = 0; i < hoisted.size(); ++i) {
    TORCH_CHECK(hoisted_slots[i] >= 0 && hoisted_slots[i] < static_cast<int64_t>(slots.size()), op,
                ": hoisted slot out of range");
    slots[hoisted_slots[i]] = hoisted[i].contiguous();
  }
  for (const int64_t h : history) {
    TORCH_CHECK(h >= 0 && h < static_cast<int64_t>(slots.size()) && !slots[h].defined(), op,
                ": history slot out of range, or hoisted");
    slots[h] = at::empty({rows, slot_widths[h]}, options);
  }
  for (size_t s = 0; s < slots.size(); ++s) {
    if (!slots[s].defined()) slots[s] = at::empty({step_rows > 0 ? step_rows : rows, slot_widths[s]}, options);
  }
  return slots;
}

// What the generated code reads as constants[k]: the pointwise ones, contiguous; the others an empty tensor.
std::vector<Tensor> loop_constants(at::TensorList constants, c10::IntArrayRef pointwise, const char* op) {
  std::vector<Tensor> result(constants.size());
  for (const int64_t k : pointwise) {
    TORCH_CHECK(k >= 0 && k < static_cast<int64_t>(constants.size()), op, ": pointwise constant out of range");
    result[k] = constants[k].contiguous();
  }
  for (Tensor& c : result) {
    if (!c.defined()) c = at::empty({0}, constants[0].options());
  }
  return result;
}

std::vector<Tensor> product_weights_of(at::TensorList constants, c10::IntArrayRef product_weight, const char* op) {
  std::vector<Tensor> weights;
  for (const int64_t k : product_weight) {
    TORCH_CHECK(k >= 0 && k < static_cast<int64_t>(constants.size()), op, ": product weight out of range");
    weights.push_back(constants[k]);
  }
  return weights;
}

std::tuple<std::vector<Tensor>, std::vector<Tensor>> generated_forward(
    int64_t plan_id, at::TensorList hoisted, at::TensorList state0, at::TensorList constants, int64_t rows,
    const Tensor& batch_sizes, bool reverse, bool keep_slots) {
  const char* op = "rnnkit::generated_forward";
  BelowAutogradAndAutocast below;
  const std::shared_ptr<const GeneratedPlan> plan = registry().get(plan_id, op);
  const c10::IntArrayRef hoisted_slots = plan->hoisted_slots, slot_widths = plan->slot_widths,
                         previous = plan->previous, history = plan->history;
  const int64_t stages = plan->stages;
  TORCH_CHECK(!history.empty() && !state0.empty(), op, ": no history slot, or no initial state");
  const int64_t N = rows;
  PackedLayout layout(batch_sizes, N, reverse, op);
  std::vector<Tensor> states;
  for (const Tensor& s : state0) states.push_back(s.contiguous());
  const std::vector<Tensor> slots = new_slots(hoisted, hoisted_slots, slot_widths, history, N,
                                              keep_slots ? 0 : layout.batch(), states[0].options(), op);
  const std::vector<Tensor> constant_tensors = loop_constants(constants, plan->pointwise_constants, op);
  const std::vector<Tensor> weights = product_weights_of(constants, plan->product_weight, op);
  check_slots(op, slots, slot_widths, N, layout.batch(), slots[0].scalar_type());
  for (const int64_t h : history) TORCH_CHECK(slots[h].size(0) == N, op, ": history slots hold all ", N, " rows");
  TORCH_CHECK(previous.size() == history.size() && previous.size() == state0.size(), op,
              ": one previous-state slot, one history slot and one initial state per state");
  for (size_t s = 0; s < states.size(); ++s) {
    TORCH_CHECK(states[s].dim() == 2 && states[s].size(0) == layout.batch() &&
                    states[s].size(1) == slot_widths[history[s]],
                op, ": initial state ", s, " should be (", layout.batch(), ", ", slot_widths[history[s]], "), got ",
                states[s].sizes());
  }
  const std::vector<Product> products =
      products_of(plan->product_left, plan->product_out, plan->product_stage, weights, slots.size(), stages);
  const auto step = reinterpret_cast<ForwardStep>(plan->forward_step);
  const auto prologue = static_cast<int32_t>(stages);  // its number; it runs with stage 0 (which has no products)
  const std::vector<const void*> constant_data = constant_pointers(constant_tensors);
  const int64_t width = total_width(slots);
  const RowAddresses slot_rows(slots, N), state_rows(states, N);

  AT_DISPATCH_FLOATING_TYPES(slots[0].scalar_type(), "rnnkit::generated_forward", [&] {
    const PackedProducts<scalar_t> packed(products, layout.steps(), false);
    // each chunk of the batch's rows runs the whole loop on its thread (row_split.h)
    for_each_chunk(loop_chunks(layout, worth_packing(layout.steps())), [&](int64_t lo, int64_t hi) {
      for (int64_t s = 0; s < layout.steps(); ++s) {
        const int64_t t = layout.forward_time(s), n = rows_in_chunk(layout, t, lo, hi), o0 = layout.offset(t);
        if (n == 0) continue;
        fill_previous_states(layout, t, lo, n, slot_rows, state_rows, previous, history);
        for (int64_t k = 0; k < stages; ++k) {
          for (size_t p = 0; p < products.size(); ++p) {
            if (products[p].stage != k) continue;
            packed.multiply(p, products[p], slot_rows, slots, products[p].left, products[p].out, N, o0, lo, n, false,
                            false);
          }
          for_rows(n, width, [&](int64_t begin, int64_t end) {
            const c10::SmallVector<void*, 32> pointers = slot_rows.at(o0, lo + begin);
            if (k == 0 && plan->prologue) step(prologue, end - begin, pointers.data(), constant_data.data());
            step(static_cast<int32_t>(k), end - begin, pointers.data(), constant_data.data());
          });
        }
      }
    });
  });
  // Each sequence's final states: its row at its last step (forward: the last step with more than b
  // rows; in reverse every sequence ends at t = 0).
  std::vector<Tensor> finals;
  for (size_t s = 0; s < history.size(); ++s) finals.push_back(at::empty_like(states[s]));
  int64_t t_last = reverse ? 0 : layout.steps() - 1;
  for (int64_t b = 0; b < layout.batch(); ++b) {  // (rows copied directly: a tensor op per row cost us)
    while (!reverse && layout.batch_size(t_last) <= b) --t_last;
    for (size_t s = 0; s < history.size(); ++s) {
      const int64_t bytes = finals[s].size(1) * finals[s].element_size();
      std::memcpy(static_cast<char*>(finals[s].data_ptr()) + b * bytes,
                  static_cast<const char*>(slots[history[s]].const_data_ptr()) + (layout.offset(t_last) + b) * bytes,
                  bytes);
    }
  }
  std::vector<Tensor> results;
  for (const int64_t h : history) results.push_back(slots[h]);
  results.insert(results.end(), finals.begin(), finals.end());
  return {results, keep_slots ? slots : std::vector<Tensor>()};
}

std::vector<Tensor> defined_or_not(const c10::List<std::optional<Tensor>>& tensors) {
  std::vector<Tensor> result;
  for (const std::optional<Tensor>& t : tensors) result.push_back(t.has_value() ? *t : Tensor());
  return result;
}

// The backward's gradient buffers: one per slot, then one per pointwise constant (its gradient row by row),
// each (N, width); by `zeroed[b]`: kZeros where a step adds to it before any stage stores into it,
// kNoBuffer (N, 0) for a slot nothing flows into (an activation saved for the backward), kAccumulated
// (B, width) zeros, kStepRows (B, width) uninitialized, else uninitialized (also a kZeros buffer the caller
// copies into: `initialized_by_caller`); where grad_alias[b] >= 0, buffer b is buffer grad_alias[b] (one
// stage writes both with one value).
std::vector<Tensor> gradient_buffers(c10::IntArrayRef widths, c10::IntArrayRef zeroed, c10::IntArrayRef grad_alias,
                                     int64_t rows, int64_t batch, const std::vector<bool>& initialized_by_caller,
                                     const at::TensorOptions& options, const char* op) {
  TORCH_CHECK(zeroed.size() == widths.size() && grad_alias.size() == widths.size(), op,
              ": one zeroed flag and one alias per gradient buffer");
  std::vector<Tensor> grads(widths.size());
  for (size_t b = 0; b < widths.size(); ++b) {
    if (grad_alias[b] >= 0) continue;
    if (zeroed[b] == kNoBuffer) {
      grads[b] = at::empty({rows, 0}, options);
    } else if (zeroed[b] == kAccumulated) {
      grads[b] = at::zeros({batch, widths[b]}, options);
    } else if (zeroed[b] == kStepRows) {
      grads[b] = at::empty({batch, widths[b]}, options);
    } else if (zeroed[b] == kZeros && !initialized_by_caller[b]) {
      grads[b] = at::zeros({rows, widths[b]}, options);
    } else {
      grads[b] = at::empty({rows, widths[b]}, options);
    }
  }
  for (size_t b = 0; b < widths.size(); ++b) {
    if (grad_alias[b] >= 0) {
      TORCH_CHECK(grad_alias[b] < static_cast<int64_t>(widths.size()) && grad_alias[grad_alias[b]] < 0 &&
                      widths[grad_alias[b]] == widths[b],
                  op, ": gradient buffer ", b, " shares a buffer it cannot");
      grads[b] = grads[grad_alias[b]];
    }
  }
  return grads;
}

std::tuple<std::vector<Tensor>, std::vector<Tensor>, std::vector<Tensor>> generated_backward(
    int64_t plan_id, at::TensorList slots, const c10::List<std::optional<Tensor>>& grad_histories_given,
    const c10::List<std::optional<Tensor>>& grad_finals_given, at::TensorList constants, const Tensor& batch_sizes,
    bool reverse) {
  const char* op = "rnnkit::generated_backward";
  BelowAutogradAndAutocast below;
  const std::shared_ptr<const GeneratedPlan> plan = registry().get(plan_id, op);
  const c10::IntArrayRef hoisted_slots = plan->hoisted_slots, slot_widths = plan->slot_widths,
                         previous = plan->previous, history = plan->history,
                         pointwise_constants = plan->pointwise_constants, product_weight = plan->product_weight;
  const int64_t stages = plan->stages;
  TORCH_CHECK(!slots.empty(), op, ": no slots");
  const int64_t N = slots[0].size(0);
  PackedLayout layout(batch_sizes, N, reverse, op);
  check_slots(op, slots, slot_widths, N, 0, slots[0].scalar_type());
  const std::vector<Tensor> grad_histories = defined_or_not(grad_histories_given);
  const std::vector<Tensor> grad_finals = defined_or_not(grad_finals_given);
  TORCH_CHECK(grad_histories.size() == history.size() && grad_finals.size() == history.size() &&
                  previous.size() == history.size(),
              op, ": one gradient of the history, one of the final state and one previous slot per state");
  const std::vector<Tensor> constant_tensors = loop_constants(constants, pointwise_constants, op);
  const std::vector<Tensor> product_weights = product_weights_of(constants, product_weight, op);
  const at::TensorOptions options = slots[0].options();
  std::vector<int64_t> widths(slot_widths.begin(), slot_widths.end());
  for (const int64_t k : pointwise_constants) widths.push_back(std::max<int64_t>(1, constants[k].numel()));
  std::vector<bool> copied_into(widths.size(), false);  // the history slots' buffers given their gradient
  for (size_t i = 0; i < history.size(); ++i) {
    copied_into[history[i]] = grad_histories[i].defined() && plan->grad_alias[history[i]] < 0;
  }
  const std::vector<Tensor> grads =
      gradient_buffers(widths, plan->zeroed, plan->grad_alias, N, layout.batch(), copied_into, options, op);
  for (size_t i = 0; i < history.size(); ++i) {  // dL/d(history) from the outputs (an undefined one: zero)
    if (grad_histories[i].defined()) grads[history[i]].copy_(grad_histories[i]);
  }
  std::vector<Tensor> carried;  // dL/d(state), one row per sequence, carried backwards in time
  for (size_t i = 0; i < history.size(); ++i) {
    carried.push_back(grad_finals[i].defined() ? grad_finals[i].clone(at::MemoryFormat::Contiguous)
                                               : at::zeros({layout.batch(), slot_widths[history[i]]}, options));
  }
  const std::vector<Product> products =
      products_of(plan->product_left, plan->product_out, plan->product_stage, product_weights, slots.size(), stages);
  const auto step = reinterpret_cast<BackwardStep>(plan->backward_step);
  const auto prologue = static_cast<int32_t>(stages);  // its backward runs after stage 0's
  const std::vector<const void*> constant_data = constant_pointers(constant_tensors);
  const int64_t width = total_width(slots) + total_width(grads);
  // (carried: one row per sequence, B rows; at T = 1, B = N and its rows are "all rows", at 0 + lo all the same)
  const RowAddresses slot_rows(slots, N), grad_rows(grads, N), carried_rows(carried, N);

  AT_DISPATCH_FLOATING_TYPES(slots[0].scalar_type(), "rnnkit::generated_backward", [&] {
    const PackedProducts<scalar_t> packed(products, layout.steps(), true);
    for_each_chunk(loop_chunks(layout, worth_packing(layout.steps())), [&](int64_t lo, int64_t hi) {
      for (int64_t s = 0; s < layout.steps(); ++s) {
        const int64_t t = layout.backward_time(s), n = rows_in_chunk(layout, t, lo, hi), o0 = layout.offset(t);
        if (n == 0) continue;
        for (size_t i = 0; i < history.size(); ++i) {  // the history rows' gradient: from the outputs, and carried
          const int64_t w = slot_widths[history[i]];
          scalar_t* to = reinterpret_cast<scalar_t*>(grad_rows.row(history[i], o0, lo));
          const scalar_t* from = reinterpret_cast<const scalar_t*>(carried_rows.row(i, 0, lo));
          for (int64_t e = 0; e < n * w; ++e) to[e] += from[e];
        }
        for (int64_t k = stages - 1; k >= 0; --k) {
          for_rows(n, width, [&](int64_t begin, int64_t end) {
            const c10::SmallVector<void*, 32> slot_pointers = slot_rows.at(o0, lo + begin);
            const c10::SmallVector<void*, 32> grad_pointers = grad_rows.at(o0, lo + begin);
            step(static_cast<int32_t>(k), end - begin, slot_pointers.data(), grad_pointers.data(), constant_data.data());
            if (k == 0 && plan->prologue) {
              step(prologue, end - begin, slot_pointers.data(), grad_pointers.data(), constant_data.data());
            }
          });
          for (size_t p = 0; p < products.size(); ++p) {
            if (products[p].stage != k) continue;
            packed.multiply(p, products[p], grad_rows, grads, products[p].out, products[p].left, N, o0, lo, n, true,
                            true);
          }
        }
        for (size_t i = 0; i < previous.size(); ++i) {
          std::memcpy(carried_rows.row(i, 0, lo), grad_rows.row(previous[i], o0, lo), n * carried_rows.row_bytes(i));
        }
      }
    });
  });
  // The constants' gradients: each product's weight, left^T @ grad out over all rows (one product each);
  // each pointwise constant's, the sum over the rows of its row gradients (or of its sequences' sums,
  // accumulated).  Undefined where none.
  std::vector<Tensor> grad_constants(constants.size());
  const auto add = [&](int64_t k, const Tensor& g) {
    grad_constants[k] = grad_constants[k].defined() ? grad_constants[k] + g : g;
  };
  for (size_t p = 0; p < products.size(); ++p) {
    add(product_weight[p], at::mm(slots[products[p].left].t(), grads[products[p].out]));
  }
  for (size_t k = 0; k < pointwise_constants.size(); ++k) {
    const Tensor& constant = constants[pointwise_constants[k]];
    add(pointwise_constants[k], grads[slots.size() + k].sum(0).reshape(constant.sizes()));
  }
  std::vector<Tensor> grad_hoisted;
  for (const int64_t h : hoisted_slots) grad_hoisted.push_back(grads[h]);
  return {grad_hoisted, carried, grad_constants};
}

// Below autograd (nothing to differentiate, or inference mode): the forward loop alone, its within-step
// values in buffers of one step's rows.
std::vector<Tensor> generated_recurrence(int64_t plan, at::TensorList hoisted, at::TensorList state0,
                                         at::TensorList constants, int64_t rows, const Tensor& batch_sizes,
                                         bool reverse) {
  return std::get<0>(generated_forward(plan, hoisted, state0, constants, rows, batch_sizes, reverse, false));
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkit, CompositeExplicitAutograd, m) {
  m.impl("generated_plan", &generated_plan);
}

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("generated_recurrence", &generated_recurrence);
  m.impl("generated_forward", &generated_forward);
  m.impl("generated_backward", &generated_backward);
}

}  // namespace rnnkit::cpu
