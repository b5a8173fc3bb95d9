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
#include <torch/library.h>

#include <algorithm>
#include <cstring>
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
using ForwardStep = void (*)(int32_t, int64_t, void* const*, const void* const*);
using BackwardStep = void (*)(int32_t, int64_t, const void* const*, void* const*, const void* const*);

struct Product {
  int64_t left, out, stage;
  Tensor weight;  // (left width, out width)
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

  // rows [to, to + n) of `result` (= or +=) rows [from, from + n) of `left` times the weight (transposed)
  void multiply(size_t p, const Product& product, const Tensor& left, int64_t from, Tensor& result, int64_t to,
                int64_t n, bool accumulate, bool transposed) const {
    if (packed[p]) {
      packed[p]->multiply(left.const_data_ptr<scalar_t>() + from * left.size(1), left.size(1), n,
                          result.mutable_data_ptr<scalar_t>() + to * result.size(1), result.size(1), nullptr,
                          accumulate);
      return;
    }
    Tensor rows = result.narrow(0, to, n);
    const Tensor weight = transposed ? product.weight.t() : product.weight;
    if (accumulate) {
      rows.addmm_(left.narrow(0, from, n), weight);
    } else {
      at::mm_out(rows, left.narrow(0, from, n), weight);
    }
  }
};

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

// Pointers to each tensor's row where the step's rows [lo + begin, ...) are (width w: `row * w` elements in).
std::vector<void*> row_pointers(at::TensorList tensors, int64_t rows, int64_t o0, int64_t lo) {
  std::vector<void*> pointers(tensors.size());
  for (size_t s = 0; s < tensors.size(); ++s) {
    pointers[s] = static_cast<char*>(tensors[s].data_ptr()) +
                  first_row(tensors[s], rows, o0, lo) * tensors[s].size(1) * tensors[s].element_size();
  }
  return pointers;
}

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

// Rows [lo, lo + n) of step t's previous-state slots: the previous step's history rows, or state0's.
void fill_previous_states(const PackedLayout& layout, int64_t t, int64_t lo, int64_t n, at::TensorList slots,
                          c10::IntArrayRef previous, c10::IntArrayRef history, at::TensorList state0) {
  const int64_t continued = std::clamp<int64_t>(layout.rows_with_previous_step(t) - lo, 0, n);
  for (size_t s = 0; s < previous.size(); ++s) {
    const Tensor& into = slots[previous[s]];
    const int64_t bytes = into.size(1) * into.element_size();
    char* to = static_cast<char*>(into.data_ptr()) +
               first_row(into, slots[history[s]].size(0), layout.offset(t), lo) * bytes;
    if (continued > 0) {
      const char* from = static_cast<const char*>(slots[history[s]].const_data_ptr()) +
                         (layout.offset(layout.previous_time(t)) + lo) * bytes;
      std::memcpy(to, from, continued * bytes);
    }
    if (n > continued) {
      std::memcpy(to + continued * bytes,
                  static_cast<const char*>(state0[s].const_data_ptr()) + (lo + continued) * bytes,
                  (n - continued) * bytes);
    }
  }
}

std::vector<Tensor> generated_forward(int64_t forward_step, at::TensorList slots, c10::IntArrayRef slot_widths,
                                      c10::IntArrayRef previous, c10::IntArrayRef history, at::TensorList state0,
                                      at::TensorList constants, c10::IntArrayRef product_left,
                                      c10::IntArrayRef product_out, c10::IntArrayRef product_stage,
                                      at::TensorList product_weights, int64_t stages, const Tensor& batch_sizes,
                                      bool reverse) {
  const char* op = "rnnkit::generated_forward";
  BelowAutogradAndAutocast below;
  TORCH_CHECK(forward_step != 0, op, ": no generated step function");
  TORCH_CHECK(!slots.empty() && !history.empty() && history[0] >= 0 &&
                  history[0] < static_cast<int64_t>(slots.size()),
              op, ": no slots, or no history slot");
  const int64_t N = slots[history[0]].size(0);
  PackedLayout layout(batch_sizes, N, reverse, op);
  check_slots(op, slots, slot_widths, N, layout.batch(), slots[0].scalar_type());
  for (const int64_t h : history) TORCH_CHECK(slots[h].size(0) == N, op, ": history slots hold all ", N, " rows");
  TORCH_CHECK(previous.size() == history.size() && previous.size() == state0.size(), op,
              ": one previous-state slot, one history slot and one initial state per state");
  for (size_t s = 0; s < state0.size(); ++s) {
    TORCH_CHECK(state0[s].is_contiguous() && state0[s].dim() == 2 && state0[s].size(0) == layout.batch() &&
                    state0[s].size(1) == slot_widths[history[s]],
                op, ": initial state ", s, " should be contiguous (", layout.batch(), ", ", slot_widths[history[s]],
                "), got ", state0[s].sizes());
  }
  const std::vector<Product> products =
      products_of(product_left, product_out, product_stage, product_weights, slots.size(), stages);
  const auto step = reinterpret_cast<ForwardStep>(forward_step);
  const std::vector<const void*> constant_data = constant_pointers(constants);
  const int64_t width = total_width(slots);

  AT_DISPATCH_FLOATING_TYPES(slots[0].scalar_type(), "rnnkit::generated_forward", [&] {
    const PackedProducts<scalar_t> packed(products, layout.steps(), false);
    // each chunk of the batch's rows runs the whole loop on its thread (row_split.h)
    for_each_chunk(loop_chunks(layout, worth_packing(layout.steps())), [&](int64_t lo, int64_t hi) {
      for (int64_t s = 0; s < layout.steps(); ++s) {
        const int64_t t = layout.forward_time(s), n = rows_in_chunk(layout, t, lo, hi), o0 = layout.offset(t);
        if (n == 0) continue;
        fill_previous_states(layout, t, lo, n, slots, previous, history, state0);
        for (int64_t k = 0; k < stages; ++k) {
          for (size_t p = 0; p < products.size(); ++p) {
            if (products[p].stage != k) continue;
            const Tensor& left = slots[products[p].left];
            Tensor out = slots[products[p].out];
            packed.multiply(p, products[p], left, first_row(left, N, o0, lo), out, first_row(out, N, o0, lo), n,
                            false, false);
          }
          for_rows(n, width, [&](int64_t begin, int64_t end) {
            const std::vector<void*> pointers = row_pointers(slots, N, o0, lo + begin);
            step(static_cast<int32_t>(k), end - begin, pointers.data(), constant_data.data());
          });
        }
      }
    });
  });
  // Each sequence's final states: its row at its last step (forward: the last step with more than b
  // rows; in reverse every sequence ends at t = 0).
  std::vector<Tensor> finals;
  for (size_t s = 0; s < history.size(); ++s) finals.push_back(at::empty_like(state0[s]));
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
  return finals;
}

std::vector<Tensor> generated_backward(int64_t backward_step, at::TensorList slots, at::TensorList grads,
                                       c10::IntArrayRef slot_widths, c10::IntArrayRef previous,
                                       c10::IntArrayRef history, at::TensorList grad_finals,
                                       at::TensorList constants, c10::IntArrayRef product_left,
                                       c10::IntArrayRef product_out, c10::IntArrayRef product_stage,
                                       at::TensorList product_weights, int64_t stages, const Tensor& batch_sizes,
                                       bool reverse) {
  const char* op = "rnnkit::generated_backward";
  BelowAutogradAndAutocast below;
  TORCH_CHECK(backward_step != 0, op, ": no generated step function");
  TORCH_CHECK(!slots.empty(), op, ": no slots");
  const int64_t N = slots[0].size(0);
  PackedLayout layout(batch_sizes, N, reverse, op);
  check_slots(op, slots, slot_widths, N, 0, slots[0].scalar_type());
  TORCH_CHECK(grads.size() >= slots.size(), op, ": one gradient per slot, then the constants' row gradients");
  for (size_t g = 0; g < grads.size(); ++g) {
    TORCH_CHECK(grads[g].is_contiguous() && grads[g].dim() == 2 && grads[g].size(0) == N &&
                    (g >= slots.size() || grads[g].size(1) == slot_widths[g]),
                op, ": gradient ", g, " should be contiguous with ", N, " rows, got ", grads[g].sizes());
  }
  const std::vector<Product> products =
      products_of(product_left, product_out, product_stage, product_weights, slots.size(), stages);
  const auto step = reinterpret_cast<BackwardStep>(backward_step);
  const std::vector<const void*> constant_data = constant_pointers(constants);
  const int64_t width = total_width(slots) + total_width(grads);

  std::vector<Tensor> carried;  // dL/d(state), one row per sequence, carried backwards in time
  for (const Tensor& g : grad_finals) carried.push_back(g.clone(at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES(slots[0].scalar_type(), "rnnkit::generated_backward", [&] {
    const PackedProducts<scalar_t> packed(products, layout.steps(), true);
    for_each_chunk(loop_chunks(layout, worth_packing(layout.steps())), [&](int64_t lo, int64_t hi) {
      for (int64_t s = 0; s < layout.steps(); ++s) {
        const int64_t t = layout.backward_time(s), n = rows_in_chunk(layout, t, lo, hi), o0 = layout.offset(t);
        if (n == 0) continue;
        const int64_t r0 = o0 + lo;  // the chunk's first row of this step (every slot has N rows here)
        for (size_t i = 0; i < history.size(); ++i) {  // the history rows' gradient: from the outputs, and carried
          const int64_t w = slot_widths[history[i]];
          scalar_t* to = grads[history[i]].mutable_data_ptr<scalar_t>() + r0 * w;
          const scalar_t* from = carried[i].const_data_ptr<scalar_t>() + lo * w;
          for (int64_t e = 0; e < n * w; ++e) to[e] += from[e];
        }
        for (int64_t k = stages - 1; k >= 0; --k) {
          for_rows(n, width, [&](int64_t begin, int64_t end) {
            const std::vector<void*> slot_pointers = row_pointers(slots, N, o0, lo + begin);
            const std::vector<void*> grad_pointers = row_pointers(grads, N, o0, lo + begin);
            step(static_cast<int32_t>(k), end - begin, slot_pointers.data(), grad_pointers.data(),
                 constant_data.data());
          });
          for (size_t p = 0; p < products.size(); ++p) {
            if (products[p].stage != k) continue;
            Tensor grad_left = grads[products[p].left];
            packed.multiply(p, products[p], grads[products[p].out], r0, grad_left, r0, n, true, true);
          }
        }
        for (size_t i = 0; i < previous.size(); ++i) {
          const int64_t w = slot_widths[previous[i]];
          std::memcpy(carried[i].mutable_data_ptr<scalar_t>() + lo * w,
                      grads[previous[i]].const_data_ptr<scalar_t>() + r0 * w, sizeof(scalar_t) * n * w);
        }
      }
    });
  });
  return carried;
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkit, CPU, m) {
  m.impl("generated_forward", &generated_forward);
  m.impl("generated_backward", &generated_backward);
}

}  // namespace rnnkit::cpu
