// Runtime choice of the instruction set of the hot loops (kernels.hpp).
//
// How: with GCC or Clang on x86, each kernel below is defined three times by
// one macro, as functions with __attribute__((target("..."))) for AVX-512,
// AVX2 and the baseline; the row loops of select.hpp are forced inline into
// them and so compiled three times (AVX-512's argmax loop is written with
// mask-register intrinsics instead: argmax_row_avx512 says why). A table of
// function pointers is chosen once, when the module loads, with
// __builtin_cpu_supports (which also checks that the OS saves the AVX/AVX-512
// registers). TXRAY_SIMD=avx512|avx2|baseline forces one (tests, benchmarks).
//
// Why this and not separate translation units built with -mavx2 / -mavx512f:
// an inline function or template instantiated in such a unit (a std::vector
// member, say) is emitted there as a weak symbol compiled for that set, and
// the linker may keep that copy for every caller, baseline code included,
// which then faults on an older CPU. A target attribute applies to its
// function and what is inlined into it only; whatever is called out of line
// stays baseline code. And not target_clones: its ifunc resolver picks by the
// CPU alone, with no way to force a set for tests (TXRAY_SIMD), and it needs
// glibc's ifunc support.
//
// With -march=native (TXRAY_NATIVE_ARCH=ON) there is one set, "native": the
// whole module is already built for the building machine. Other compilers
// (MSVC) and other architectures get the one "baseline" set.
#include "kernels.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <type_traits>

#if !defined(TXRAY_NATIVE_ARCH) && (defined(__GNUC__) || defined(__clang__)) && \
    (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#endif

// GCC checks the 32-byte vector helpers of select.hpp at the end of the unit,
// past select.hpp's own pragma; they are always inlined (see there).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace txray {
namespace kernels {

namespace {

template <class E>
const typename E::storage* row_ptr(const ActivationView& a, int64_t t) {
  return static_cast<const typename E::storage*>(a.data) + t * a.row_stride;
}

// How select_rows finds a row's argmax: select.hpp's argmax_row, inlined.
struct Argmax {
  template <class E>
  static TXRAY_INLINE bool row(const typename E::storage* row, int64_t n, Winner* out) {
    return argmax_row<E>(row, n, out);
  }
};

// Up to this k, contiguous rows take topk_row_direct (its bound is the k-th
// of 16 lane maxima: at k = 16 about 50 of 1,500 values pass it).
constexpr int kDirectTopK = 16;

template <class E, class A = Argmax>
TXRAY_INLINE int64_t select_rows(const ActivationView& a, const int64_t* kept, int64_t begin, int64_t end, int k,
                                 Winner* out, float* buffer, std::vector<int32_t>& scratch) {
  for (int64_t i = begin; i < end; ++i) {
    const auto* src = row_ptr<E>(a, kept ? kept[i] : i);
    Winner* w = out + (i - begin) * k;
    bool ok;
    if (k == 1 && a.col_stride == 1) {
      ok = A::template row<E>(src, a.cols, w);
    } else if (k <= kDirectTopK && a.col_stride == 1) {
      const int64_t after = i + 1 < end ? (kept ? kept[i + 1] : i + 1) : -1;
      ok = topk_row_direct<E>(src, a.cols, k, w, after >= 0 ? row_ptr<E>(a, after) : nullptr);
    } else {
      ok = load_row<E>(src, a.cols, a.col_stride, buffer);
      if (ok) topk_row(buffer, a.cols, k, w, scratch);
    }
    if (!ok) return i;
  }
  return -1;
}

// Mode all's check of a contiguous row before any add, read as sum_row
// reads it (the floor's loop): whether every value is finite (a sum of
// x - x, which is 0 for every finite x and NaN from the first NaN or inf on)
// and, with kThreshold, whether any value reaches its neuron's threshold
// (`reaches`). Vector compares only: no branch per value.
template <class E, bool kThreshold>
TXRAY_INLINE bool check_row(const typename E::storage* row, int64_t n, const float* threshold, bool* reaches) {
  using namespace simd;
  f32x8 z0 = {}, z1 = {}, z2 = {}, z3 = {};
  i32x8 hit = {};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    prefetch_ahead<E>(row + i);
    const f32x8 x0 = load8(E{}, row + i), x1 = load8(E{}, row + i + 8);
    const f32x8 x2 = load8(E{}, row + i + 16), x3 = load8(E{}, row + i + 24);
    z0 += x0 - x0;
    z1 += x1 - x1;
    z2 += x2 - x2;
    z3 += x3 - x3;
    if (kThreshold) {
      hit |= (x0 >= load8(F32{}, threshold + i)) | (x1 >= load8(F32{}, threshold + i + 8)) |
             (x2 >= load8(F32{}, threshold + i + 16)) | (x3 >= load8(F32{}, threshold + i + 24));
    }
  }
  const f32x8 z = (z0 + z1) + (z2 + z3);
  float zero = 0.0f;
  for (int j = 0; j < 8; ++j) zero += z[j];
  int any = 0;
  for (; i < n; ++i) {
    const float x = E::load(row[i]);
    zero += x - x;
    if (kThreshold) any |= x >= threshold[i];
  }
  if (kThreshold) {
    for (int j = 0; j < 8; ++j) any |= hit[j];
    *reaches = any != 0;
  }
  return zero == 0.0f;
}

// Mode all's check of rows [begin, end) (row i is kept[i], or i): the first
// holding a non-finite value, or -1. With `threshold` (one per neuron),
// candidate[i - begin] also says whether any of row i's values reaches its
// neuron's threshold: a row that reaches none is no candidate context
// during this update either, as an offer only ever raises a threshold.
template <class E>
TXRAY_INLINE int64_t check_rows_of(const ActivationView& a, const int64_t* kept, int64_t begin, int64_t end,
                                   const float* threshold, uint8_t* candidate) {
  for (int64_t i = begin; i < end; ++i) {
    const auto* row = row_ptr<E>(a, kept ? kept[i] : i);
    bool reaches = false, ok;
    if (a.col_stride != 1) {
      ok = all_finite<E>(row, a.cols, a.col_stride);
      for (int64_t n = 0; threshold && n < a.cols; ++n) reaches |= E::load(row[n * a.col_stride]) >= threshold[n];
    } else if (threshold) {
      ok = check_row<E, true>(row, a.cols, threshold, &reaches);
    } else {
      ok = check_row<E, false>(row, a.cols, nullptr, nullptr);
    }
    if (!ok) return i;
    if (threshold) candidate[i - begin] = reaches;
  }
  return -1;
}

template <class E>
TXRAY_INLINE int64_t first_bad_row(const ActivationView& a, const int64_t* kept, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i)
    if (!all_finite<E>(row_ptr<E>(a, kept ? kept[i] : i), a.cols, a.col_stride)) return i;
  return -1;
}

// Offers a row's values of neurons [lo, hi) to the contexts: a vector
// compare against their thresholds finds whether any value is a candidate
// (past a neuron's first k rows almost none is); if one is, the same again
// 16 neurons at a time, and only a group holding one is offered value by
// value. An offer moves its own neuron's threshold only, so a group's
// compare stays valid while it is offered: the offers that reach the
// contexts are those of offering every value.
TXRAY_INLINE void offer_row(const float* x, int64_t lo, int64_t hi, int64_t unit, Contexts& contexts) {
  constexpr int64_t kGroup = 16;
  const float* threshold = contexts.threshold();
  int candidate = 0;  // first over the whole slice: one long loop vectorises best, and most rows stop here
  for (int64_t n = lo; n < hi; ++n) candidate |= x[n - lo] >= threshold[n];
  if (!candidate) return;
  for (int64_t n0 = lo; n0 < hi; n0 += kGroup) {
    int any = 0;
    if (n0 + kGroup <= hi) {
      for (int64_t n = n0; n < n0 + kGroup; ++n) any |= x[n - lo] >= threshold[n];
    } else {
      for (int64_t n = n0; n < hi; ++n) any |= x[n - lo] >= threshold[n];
    }
    if (!any) continue;
    for (int64_t n = n0; n < std::min(hi, n0 + kGroup); ++n) contexts.offer(int32_t(n), x[n - lo], unit);
  }
}

// sum[n] += double(x[n]) for n in [0, count).
TXRAY_INLINE void add_to_row(const float* __restrict x, int64_t count, double* __restrict sum) {
  for (int64_t n = 0; n < count; ++n) sum[n] += double(x[n]);
}

// The same into two rows at once: x is read and widened once for both, and
// each row gets the same adds in the same order as from add_to_row.
TXRAY_INLINE void add_to_two_rows(const float* __restrict x, int64_t count, double* __restrict a,
                                  double* __restrict b) {
  for (int64_t n = 0; n < count; ++n) {
    const double v = double(x[n]);
    a[n] += v;
    b[n] += v;
  }
}

template <class E>
TXRAY_INLINE void add_all_rows(const ActivationView& a, const int64_t* order, int64_t n_tokens, int64_t lo, int64_t hi,
                               FeatureRows* rows, const std::vector<int32_t>* row_of, size_t n_kinds, float* x,
                               Contexts* contexts, const int64_t* units) {
  // Rows come in feature order, not memory order: the hardware prefetcher
  // cannot guess the next one, so its slice is requested kAheadRows rows early.
  constexpr int64_t kAheadRows = 2;
  constexpr int64_t kLine = 64 / sizeof(typename E::storage);
  const bool direct = std::is_same<E, F32>::value && a.col_stride == 1;  // no conversion: add from the row itself
  const int64_t width = hi - lo;
  for (int64_t i = 0; i < n_tokens; ++i) {
    if (i + kAheadRows < n_tokens && a.col_stride == 1) {
      const auto* next = row_ptr<E>(a, order[i + kAheadRows]) + lo;
      for (int64_t n = 0; n < width; n += kLine) __builtin_prefetch(next + n, 0, 3);
    }
    const auto* src = row_ptr<E>(a, order[i]) + lo * a.col_stride;
    const float* values = x;
    if (direct) {
      values = reinterpret_cast<const float*>(src);
    } else {
      load_row<E>(src, width, a.col_stride, x);
    }
    if (n_kinds == 2) {  // the usual token + POS
      add_to_two_rows(values, width, rows[0].row(row_of[0][size_t(i)]) + lo, rows[1].row(row_of[1][size_t(i)]) + lo);
    } else {
      for (size_t kind = 0; kind < n_kinds; ++kind)
        add_to_row(values, width, rows[kind].row(row_of[kind][size_t(i)]) + lo);
    }
    if (contexts && units[i] >= 0) offer_row(values, lo, hi, units[i], *contexts);
  }
}

template <class E>
TXRAY_INLINE double sum_rows_of(const ActivationView& a, int64_t begin, int64_t end) {
  double total = 0.0;
  for (int64_t i = begin; i < end; ++i) total += sum_row<E>(row_ptr<E>(a, i), a.cols);
  return total;
}

// One set of kernels: NAME_select, NAME_first_nonfinite_row, NAME_add_all,
// NAME_check_all, NAME_sum_rows,
// each compiled with ATTR, and the table NAME_kernels. The element type is
// switched on inside, so that the templates inline into ATTR's functions.
#define TXRAY_KERNELS(NAME, ATTR, ARGMAX)                                                                             \
  ATTR int64_t NAME##_select(const ActivationView& a, const int64_t* kept, int64_t begin, int64_t end, int k,         \
                             Winner* out, float* buffer, std::vector<int32_t>& scratch) {                             \
    switch (a.dtype) {                                                                                                \
      case DType::Float16:                                                                                            \
        return select_rows<F16, ARGMAX>(a, kept, begin, end, k, out, buffer, scratch);                                \
      case DType::BFloat16:                                                                                           \
        return select_rows<BF16, ARGMAX>(a, kept, begin, end, k, out, buffer, scratch);                               \
      default:                                                                                                        \
        return select_rows<F32, ARGMAX>(a, kept, begin, end, k, out, buffer, scratch);                                \
    }                                                                                                                 \
  }                                                                                                                   \
  ATTR int64_t NAME##_first_nonfinite_row(const ActivationView& a, const int64_t* kept, int64_t begin, int64_t end) { \
    switch (a.dtype) {                                                                                                \
      case DType::Float16:                                                                                            \
        return first_bad_row<F16>(a, kept, begin, end);                                                               \
      case DType::BFloat16:                                                                                           \
        return first_bad_row<BF16>(a, kept, begin, end);                                                              \
      default:                                                                                                        \
        return first_bad_row<F32>(a, kept, begin, end);                                                               \
    }                                                                                                                 \
  }                                                                                                                   \
  ATTR void NAME##_add_all(const ActivationView& a, const int64_t* order, int64_t n_tokens, int64_t lo, int64_t hi,   \
                           FeatureRows* rows, const std::vector<int32_t>* row_of, size_t n_kinds, float* x,           \
                           Contexts* contexts, const int64_t* units) {                                                \
    switch (a.dtype) {                                                                                                \
      case DType::Float16:                                                                                            \
        return add_all_rows<F16>(a, order, n_tokens, lo, hi, rows, row_of, n_kinds, x, contexts, units);              \
      case DType::BFloat16:                                                                                           \
        return add_all_rows<BF16>(a, order, n_tokens, lo, hi, rows, row_of, n_kinds, x, contexts, units);             \
      default:                                                                                                        \
        return add_all_rows<F32>(a, order, n_tokens, lo, hi, rows, row_of, n_kinds, x, contexts, units);              \
    }                                                                                                                 \
  }                                                                                                                   \
  ATTR int64_t NAME##_check_all(const ActivationView& a, const int64_t* kept, int64_t begin, int64_t end,             \
                                const float* threshold, uint8_t* candidate) {                                         \
    switch (a.dtype) {                                                                                                \
      case DType::Float16:                                                                                            \
        return check_rows_of<F16>(a, kept, begin, end, threshold, candidate);                                         \
      case DType::BFloat16:                                                                                           \
        return check_rows_of<BF16>(a, kept, begin, end, threshold, candidate);                                        \
      default:                                                                                                        \
        return check_rows_of<F32>(a, kept, begin, end, threshold, candidate);                                         \
    }                                                                                                                 \
  }                                                                                                                   \
  ATTR double NAME##_sum_rows(const ActivationView& a, int64_t begin, int64_t end) {                                  \
    switch (a.dtype) {                                                                                                \
      case DType::Float16:                                                                                            \
        return sum_rows_of<F16>(a, begin, end);                                                                       \
      case DType::BFloat16:                                                                                           \
        return sum_rows_of<BF16>(a, begin, end);                                                                      \
      default:                                                                                                        \
        return sum_rows_of<F32>(a, begin, end);                                                                       \
    }                                                                                                                 \
  }                                                                                                                   \
  const Kernels NAME##_kernels = {#NAME,          NAME##_select,    NAME##_first_nonfinite_row,                       \
                                  NAME##_add_all, NAME##_check_all, NAME##_sum_rows};

#if !defined(TXRAY_NATIVE_ARCH) && (defined(__GNUC__) || defined(__clang__)) && \
    (defined(__x86_64__) || defined(__i386__))
#define TXRAY_X86_DISPATCH 1
// AVX2 as Haswell (2013) and Zen have it; AVX-512 as Skylake-SP (2017) and
// later, Zen 4 included. The 8-lane loops of select.hpp stay 8 lanes wide in
// both (GCC's own choice for these CPUs, -mprefer-vector-width=256); AVX-512
// adds mask registers and the 32 vector registers.
#define TXRAY_AVX2_TARGET "avx,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt,movbe"
#define TXRAY_AVX512_TARGET TXRAY_AVX2_TARGET ",avx512f,avx512cd,avx512bw,avx512dq,avx512vl"

// argmax_row's loop with AVX-512's mask registers: GCC compiles select.hpp's
// vector `m ? a : b` in a target("avx512...") function as AVX2 blends
// (vblendvps: 2 micro-ops each on Skylake-SP), where -march=native gets a
// compare into a mask register and masked moves; this loop writes those
// directly. Same accumulators, same order, same tail: the same winners.
// Not inlined (the default-target select_rows cannot inline an AVX-512
// function); one call per row of 1,000s of values costs nothing measurable.
template <class E>
__attribute__((target(TXRAY_AVX512_TARGET), noinline)) bool argmax_row_avx512(const typename E::storage* row, int64_t n,
                                                                              Winner* out) {
  using namespace simd;
  __m256 max[4], sum0 = _mm256_setzero_ps(), sum1 = sum0;
  __m256i at[4], block = _mm256_setzero_si256();
  for (int j = 0; j < 4; ++j) {
    max[j] = _mm256_set1_ps(-INFINITY);
    at[j] = block;
  }
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    prefetch_ahead<E>(row + i);
    const __m256 x0 = (__m256)load8(E{}, row + i), x1 = (__m256)load8(E{}, row + i + 8);
    const __m256 x2 = (__m256)load8(E{}, row + i + 16), x3 = (__m256)load8(E{}, row + i + 24);
    const __mmask8 g0 = _mm256_cmp_ps_mask(x0, max[0], _CMP_GT_OQ), g1 = _mm256_cmp_ps_mask(x1, max[1], _CMP_GT_OQ);
    const __mmask8 g2 = _mm256_cmp_ps_mask(x2, max[2], _CMP_GT_OQ), g3 = _mm256_cmp_ps_mask(x3, max[3], _CMP_GT_OQ);
    max[0] = _mm256_mask_mov_ps(max[0], g0, x0);
    max[1] = _mm256_mask_mov_ps(max[1], g1, x1);
    max[2] = _mm256_mask_mov_ps(max[2], g2, x2);
    max[3] = _mm256_mask_mov_ps(max[3], g3, x3);
    at[0] = _mm256_mask_mov_epi32(at[0], g0, block);
    at[1] = _mm256_mask_mov_epi32(at[1], g1, block);
    at[2] = _mm256_mask_mov_epi32(at[2], g2, block);
    at[3] = _mm256_mask_mov_epi32(at[3], g3, block);
    sum0 = _mm256_add_ps(sum0, _mm256_add_ps(x0, x1));
    sum1 = _mm256_add_ps(sum1, _mm256_add_ps(x2, x3));
    block = _mm256_add_epi32(block, _mm256_set1_epi32(32));
  }
  for (; i + 8 <= n; i += 8) {  // as argmax_row
    const __m256 x = (__m256)load8(E{}, row + i);
    const __mmask8 g = _mm256_cmp_ps_mask(x, max[0], _CMP_GT_OQ);
    max[0] = _mm256_mask_mov_ps(max[0], g, x);
    at[0] = _mm256_mask_mov_epi32(at[0], g, block);
    sum0 = _mm256_add_ps(sum0, x);
    block = _mm256_add_epi32(block, _mm256_set1_epi32(8));
  }
  const f32x8 maxes[4] = {(f32x8)max[0], (f32x8)max[1], (f32x8)max[2], (f32x8)max[3]};
  const i32x8 ats[4] = {(i32x8)at[0], (i32x8)at[1], (i32x8)at[2], (i32x8)at[3]};
  return argmax_finish<E>(row, n, i, maxes, ats, (f32x8)_mm256_add_ps(sum0, sum1), out);
}

// How the AVX-512 set's select_rows finds a row's argmax.
struct ArgmaxAvx512 {
  template <class E>
  static TXRAY_INLINE bool row(const typename E::storage* row, int64_t n, Winner* out) {
    return argmax_row_avx512<E>(row, n, out);
  }
};

TXRAY_KERNELS(avx512, __attribute__((target(TXRAY_AVX512_TARGET))), ArgmaxAvx512)
TXRAY_KERNELS(avx2, __attribute__((target(TXRAY_AVX2_TARGET))), Argmax)
TXRAY_KERNELS(baseline, , Argmax)

bool cpu_has_avx2() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2");
}
bool cpu_has_avx512() {
  return cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}
#elif defined(TXRAY_NATIVE_ARCH)
TXRAY_KERNELS(native, , Argmax)
#else
TXRAY_KERNELS(baseline, , Argmax)
#endif

// Best first.
std::vector<const Kernels*> supported() {
#ifdef TXRAY_X86_DISPATCH
  __builtin_cpu_init();
  std::vector<const Kernels*> out;
  if (cpu_has_avx512()) out.push_back(&avx512_kernels);
  if (cpu_has_avx2()) out.push_back(&avx2_kernels);
  out.push_back(&baseline_kernels);
  return out;
#elif defined(TXRAY_NATIVE_ARCH)
  return {&native_kernels};
#else
  return {&baseline_kernels};
#endif
}

const Kernels* find(const std::string& name) {
  for (const Kernels* k : supported())
    if (name == k->name) return k;
  std::string names;
  for (const Kernels* k : supported()) names += std::string(names.empty() ? "" : ", ") + k->name;
  throw std::invalid_argument("instruction set '" + name +
                              "' is not available in this build on this CPU (available: " + names + ")");
}

// TXRAY_SIMD, if set and not empty, names the set to use; otherwise the best.
const Kernels* initial() {
  const char* env = std::getenv("TXRAY_SIMD");
  if (env && *env) return find(env);
  return supported().front();
}

std::atomic<const Kernels*>& current() {
  static std::atomic<const Kernels*> chosen{initial()};
  return chosen;
}

}  // namespace

const Kernels& active() {
  return *current().load(std::memory_order_relaxed);
}

std::string active_name() {
  return active().name;
}

std::vector<std::string> available() {
  std::vector<std::string> names;
  for (const Kernels* k : supported()) names.push_back(k->name);
  return names;
}

void use(const std::string& name) {
  current().store(find(name), std::memory_order_relaxed);
}

}  // namespace kernels
}  // namespace txray
