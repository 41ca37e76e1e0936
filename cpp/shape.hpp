// What the CPU engine (cpp/) and the CUDA engine (cpp/cuda/) must agree on:
// the modes, the activation dtypes, the checks of a recorder's shape, the
// bytes a cell takes (which choose dense or sparse storage) and the input
// errors, whose token is data that the Python layer turns into a position
// (txray._inputs.describe_position) instead of parsing it out of the text.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "activations.hpp"

namespace txray {

enum class Mode { Max1, TopK, All };

// The placeholder for the failing token in InputError::templ.
inline constexpr const char* kTokenPlaceholder = "{token}";

inline std::string with_token(const std::string& templ, int64_t token) {
  if (token < 0) return templ;
  std::string out = templ;
  const std::string what = "token " + std::to_string(token);
  const std::string mark = kTokenPlaceholder;
  for (size_t at = out.find(mark); at != std::string::npos; at = out.find(mark, at + what.size()))
    out.replace(at, mark.size(), what);
  return out;
}

// Raised for anything the caller must fix; the bindings turn it into
// txray._native.InputError (a ValueError) with .token and .template.
struct InputError : std::invalid_argument {
  int64_t token = -1;  // position in the update's flattened batch, -1: none
  std::string templ;   // the message with kTokenPlaceholder where the token goes
  explicit InputError(const std::string& message) : std::invalid_argument(message), templ(message) {}
  InputError(const std::string& message_template, int64_t at)
      : std::invalid_argument(with_token(message_template, at)), token(at), templ(message_template) {}
};

inline Mode parse_mode(const std::string& mode) {
  if (mode == "max1") return Mode::Max1;
  if (mode == "topk") return Mode::TopK;
  if (mode == "all") return Mode::All;
  throw InputError("mode must be 'max1', 'topk' or 'all', not '" + mode + "'");
}

inline DType parse_dtype(const std::string& dtype) {
  if (dtype == "float32") return DType::Float32;
  if (dtype == "float16") return DType::Float16;
  if (dtype == "bfloat16") return DType::BFloat16;
  throw InputError("unsupported activation dtype '" + dtype + "'");
}

inline int64_t dtype_bytes(DType d) {
  return d == DType::Float32 ? 4 : 2;
}

// Bytes of one (neuron, feature) cell: a count and a float64 sum in modes
// max1/topk; a float64 sum alone in mode all (its count is the feature's
// frequency). dense_limit_bytes compares against cells times these.
inline constexpr double kCellBytes = 16.0;
inline constexpr double kRowCellBytes = 8.0;

inline bool fits_dense(int64_t n_neurons, int64_t vocab, Mode mode, int64_t dense_limit_bytes) {
  const double per = mode == Mode::All ? kRowCellBytes : kCellBytes;
  return double(n_neurons) * double(vocab) * per <= double(dense_limit_bytes);
}

// The checks of a recorder's shape, the same on both engines.
inline void validate_shape(int64_t n_neurons, const std::vector<std::string>& kind_names,
                           const std::vector<int64_t>& vocab_sizes, Mode mode, int k) {
  if (n_neurons < 1 || n_neurons > INT32_MAX) throw InputError("n_neurons must be between 1 and 2^31-1");
  if (kind_names.size() != vocab_sizes.size() || kind_names.empty())
    throw InputError("need at least one feature kind, each with a vocabulary size");
  if (mode == Mode::TopK && (k < 1 || k > n_neurons))
    throw InputError("k must be between 1 and n_neurons (" + std::to_string(n_neurons) + ")");
  for (size_t i = 0; i < vocab_sizes.size(); ++i)
    if (vocab_sizes[i] < 1 || vocab_sizes[i] > INT32_MAX)
      throw InputError("vocabulary size of feature kind '" + kind_names[i] + "' must be between 1 and 2^31-1");
}

// The input errors of an update. Both engines report, of all bad ids, the
// one of the lowest token, and at that token the first kind; of all
// non-finite values, the lowest token, and there the lowest neuron.
inline InputError bad_id_error(const std::string& kind, int64_t token, int64_t id, int64_t vocab) {
  return InputError("feature '" + kind + "' of " + kTokenPlaceholder + " is " + std::to_string(id) +
                        ", outside its vocabulary [0, " + std::to_string(vocab) + ")",
                    token);
}

inline InputError nonfinite_error(int64_t token, int64_t neuron, bool nan) {
  return InputError(std::string("activation of ") + kTokenPlaceholder + " at neuron " + std::to_string(neuron) +
                        " is " + (nan ? "NaN" : "infinite") + "; activations must be finite",
                    token);
}

}  // namespace txray
