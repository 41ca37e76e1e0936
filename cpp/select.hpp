// Per-row selection on the CPU: argmax, top-k, and the finiteness check.
// Ties always go to the lowest neuron index, as docs/method.md says.
#pragma once

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "activations.hpp"

// The kernels of cpp/kernels.cpp are compiled once per instruction set, as
// functions with a target attribute; everything below must inline into them
// to be compiled for that set (a call that is not inlined runs the
// baseline's code). Forced: the 32-byte vector helpers must never be called
// across the boundary, whose ABI for them differs between AVX and SSE code.
#if defined(__GNUC__) || defined(__clang__)
#define TXRAY_INLINE inline __attribute__((always_inline))
#else
#define TXRAY_INLINE inline
#endif

namespace txray {

struct Winner {
  int32_t neuron;
  float value;
};

// Index of the first non-finite value of a row, or -1.
template <class E>
int64_t first_nonfinite(const typename E::storage* row, int64_t n, int64_t stride) {
  for (int64_t i = 0; i < n; ++i)
    if (!is_finite(E::load(row[i * stride]))) return i;
  return -1;
}

// Whether every value of a row is finite; no early exit, so it vectorises.
template <class E>
TXRAY_INLINE bool all_finite(const typename E::storage* row, int64_t n, int64_t stride) {
  int ok = 1;
  if (stride == 1) {
    for (int64_t i = 0; i < n; ++i) ok &= is_finite(E::load(row[i]));
  } else {
    for (int64_t i = 0; i < n; ++i) ok &= is_finite(E::load(row[i * stride]));
  }
  return ok != 0;
}

// Converts a row to float32 into `out`; returns false if any value is not
// finite. Branch-free in the loop so that it vectorises for stride 1.
template <class E>
TXRAY_INLINE bool load_row(const typename E::storage* row, int64_t n, int64_t stride, float* out) {
  int ok = 1;
  if (stride == 1) {
    for (int64_t i = 0; i < n; ++i) {
      const float x = E::load(row[i]);
      out[i] = x;
      ok &= is_finite(x);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const float x = E::load(row[i * stride]);
      out[i] = x;
      ok &= is_finite(x);
    }
  }
  return ok != 0;
}

// The helpers below take and return 32-byte vectors and are always inlined
// (as is argmax_row, which uses them), so the calling convention GCC warns
// about (-Wpsabi: it differs between AVX and SSE code) is never used.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
namespace simd {
// GCC/Clang vector extensions: portable SIMD (AVX2, SSE, NEON) without
// intrinsics. Comparisons give lane masks of -1/0 usable in `m ? a : b`.
typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef uint16_t u16x8 __attribute__((vector_size(16)));

TXRAY_INLINE u32x8 widen(const uint16_t* p) {
  u16x8 h;
  std::memcpy(&h, p, sizeof h);
  return __builtin_convertvector(h, u32x8);
}
TXRAY_INLINE f32x8 splat(float x) {
  return f32x8{x, x, x, x, x, x, x, x};
}
TXRAY_INLINE f32x8 load8(F32, const float* p) {
  f32x8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
TXRAY_INLINE f32x8 load8(BF16, const uint16_t* p) {
  return (f32x8)(widen(p) << 16);
}
TXRAY_INLINE f32x8 load8(F16, const uint16_t* p) {  // half_to_float, 8 lanes at a time
  const u32x8 h = widen(p);
  const u32x8 em = h & 0x7fffu;
  u32x8 bits = (u32x8)((f32x8)(em << 13) * 0x1p112f);
  bits |= (u32x8)(em >= 0x7c00u) & 0x7f800000u;
  return (f32x8)(bits | ((h & 0x8000u) << 16));
}

// The prefetch of a row streamed 32 values per step from `at`: 4 KiB ahead
// (into L2) keeps the stream at the speed of a plain sum; the hardware
// prefetcher alone leaves ~15% of the bandwidth unused, and 1 KiB ahead ~10%
// (measured on the 2-core Xeon of the README). Every streamed row loop
// (argmax_row and its AVX-512 twin, sum_row, check_row) calls this, so they
// stream alike.
template <class E>
TXRAY_INLINE void prefetch_ahead(const typename E::storage* at) {
  constexpr int64_t kAhead = 4096 / sizeof(typename E::storage);
  constexpr int64_t kLine = 64 / sizeof(typename E::storage);
  __builtin_prefetch(at + kAhead, 0, 2);
  if (kLine < 32) __builtin_prefetch(at + kAhead + kLine, 0, 2);  // 32 float32 values span two lines
}
}  // namespace simd

// argmax_row's end, shared with the AVX-512 loop of kernels.cpp: given the
// four accumulators' running maxima, the starts of the blocks where they
// occurred (accumulator j's lane l is at block start + 8 j + l) and the lanes'
// sum after elements [0, i), reduces across lanes and scans the tail [i, n).
template <class E>
TXRAY_INLINE bool argmax_finish(const typename E::storage* row, int64_t n, int64_t i, const simd::f32x8 (&max)[4],
                                const simd::i32x8 (&at)[4], const simd::f32x8& sum, Winner* out) {
  using namespace simd;
  // Across lanes without branches (their outcome is data, so they would be
  // mispredicted): the maximum, then the lowest index holding it.
  const f32x8 m01 = max[0] > max[1] ? max[0] : max[1], m23 = max[2] > max[3] ? max[2] : max[3];
  const f32x8 top = m01 > m23 ? m01 : m23;
  float best = top[0], total = 0.0f;
  for (int j = 1; j < 8; ++j) best = top[j] > best ? top[j] : best;
  for (int j = 0; j < 8; ++j) total += sum[j];
  i32x8 lane;
  for (int j = 0; j < 8; ++j) lane[j] = j;
  const i32x8 none = lane * 0 + INT32_MAX;
  i32x8 first = none;
  for (int j = 0; j < 4; ++j) {
    const i32x8 c = max[j] == best ? at[j] + lane + 8 * j : none;
    first = c < first ? c : first;
  }
  int32_t lowest = first[0];
  for (int j = 1; j < 8; ++j) lowest = first[j] < lowest ? first[j] : lowest;
  int64_t at_best = lowest;
  for (; i < n; ++i) {  // the tail has higher indices than every lane
    const float x = E::load(row[i]);
    if (x > best) {
      best = x;
      at_best = i;
    }
    total += x;
  }
  if (!is_finite(total) && first_nonfinite<E>(row, n, 1) >= 0) return false;
  out->neuron = static_cast<int32_t>(at_best);
  out->value = best;
  return true;
}

// Argmax of a contiguous row. Four independent 8-lane accumulators keep each
// lane's running maximum and the start of the block of 32 values where it
// first occurred (strict > keeps the earliest): four dependency chains, so
// that the compare-and-select latency does not hold back the stream (two
// did: the loop ran at ~2/3 of a sum's speed from L2), and one shared block
// counter instead of an index vector per accumulator. Across accumulators
// and lanes the lowest index holding the maximum wins.
// Non-finite values are caught by a running sum, which turns NaN or +-inf
// (and, rarely, an overflow) into a non-finite total: one add per vector
// instead of a test per value; the exact scan then confirms.
// Returns false if the row holds a non-finite value.
template <class E>
TXRAY_INLINE bool argmax_row(const typename E::storage* row, int64_t n, Winner* out) {
  using namespace simd;
  f32x8 max[4], sum0 = {}, sum1 = {};
  i32x8 at[4] = {}, block = {};
  for (int j = 0; j < 8; ++j) max[0][j] = -INFINITY;
  max[1] = max[2] = max[3] = max[0];
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    prefetch_ahead<E>(row + i);
    const f32x8 x0 = load8(E{}, row + i), x1 = load8(E{}, row + i + 8);
    const f32x8 x2 = load8(E{}, row + i + 16), x3 = load8(E{}, row + i + 24);
    const i32x8 g0 = x0 > max[0], g1 = x1 > max[1], g2 = x2 > max[2], g3 = x3 > max[3];
    max[0] = g0 ? x0 : max[0];
    max[1] = g1 ? x1 : max[1];
    max[2] = g2 ? x2 : max[2];
    max[3] = g3 ? x3 : max[3];
    at[0] = g0 ? block : at[0];
    at[1] = g1 ? block : at[1];
    at[2] = g2 ? block : at[2];
    at[3] = g3 ? block : at[3];
    sum0 += x0 + x1;
    sum1 += x2 + x3;
    block += 32;
  }
  for (; i + 8 <= n; i += 8) {  // into accumulator 0, whose lanes are at offset 0 of their block
    const f32x8 x = load8(E{}, row + i);
    const i32x8 g = x > max[0];
    max[0] = g ? x : max[0];
    at[0] = g ? block : at[0];
    sum0 += x;
    block += 8;
  }
  return argmax_finish<E>(row, n, i, max, at, sum0 + sum1, out);
}

// Sum of a contiguous row, read as argmax_row reads it (the same vectors,
// prefetching and independent accumulators): the benchmark's floor, the
// fastest this code can stream activations (bench_record.py).
template <class E>
TXRAY_INLINE float sum_row(const typename E::storage* row, int64_t n) {
  using namespace simd;
  f32x8 sum0 = {}, sum1 = {}, sum2 = {}, sum3 = {};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    prefetch_ahead<E>(row + i);
    sum0 += load8(E{}, row + i);
    sum1 += load8(E{}, row + i + 8);
    sum2 += load8(E{}, row + i + 16);
    sum3 += load8(E{}, row + i + 24);
  }
  const f32x8 sum = (sum0 + sum1) + (sum2 + sum3);
  float total = 0.0f;
  for (int j = 0; j < 8; ++j) total += sum[j];
  for (; i < n; ++i) total += E::load(row[i]);
  return total;
}

// Inserts value x of neuron i into the k best so far (out[0, filled), largest
// first): entries equal to x stay ahead of it, as they have lower indices.
TXRAY_INLINE void insert_winner(Winner* out, int k, int& filled, int32_t i, float x) {
  int pos = filled < k ? filled : k - 1;
  while (pos > 0 && out[pos - 1].value < x) {
    out[pos] = out[pos - 1];
    --pos;
  }
  out[pos] = Winner{i, x};
  if (filled < k) ++filled;
}

// Whether any lane of a compare's mask is set.
TXRAY_INLINE bool any_lane(const simd::i32x8& m) {
  typedef uint64_t u64x4 __attribute__((vector_size(32)));
  const u64x4 q = (u64x4)m;
  return ((q[0] | q[1]) | (q[2] | q[3])) != 0;
}

// The lanes of four compares' masks as 32 bits: bit 8 a + j for lane j of
// mask a (a movemask without intrinsics, which the baseline set lacks).
TXRAY_INLINE uint32_t lane_bits(const simd::i32x8& m0, const simd::i32x8& m1, const simd::i32x8& m2,
                                const simd::i32x8& m3) {
  using simd::u32x8;
  const u32x8 bit = {1u, 2u, 4u, 8u, 16u, 32u, 64u, 128u};
  const u32x8 b = ((u32x8)m0 & bit) | (((u32x8)m1 & bit) << 8) | (((u32x8)m2 & bit) << 16) | (((u32x8)m3 & bit) << 24);
  return ((b[0] | b[1]) | (b[2] | b[3])) | ((b[4] | b[5]) | (b[6] | b[7]));
}

// The k largest entries of a contiguous row (any dtype), as topk_row orders
// them, read straight from the row (no float copy), in two passes:
// 1. the stream: four 8-lane accumulators keep each lane's running maximum
//    (as argmax_row, without the index) and a running sum catches
//    non-finite values (NaN never compares greater; the exact scan confirms);
// 2. over the row again, now in L1: 16 lane maxima are 16 values of the
//    row, so their k-th largest, `bound`, is at most the row's k-th largest:
//    only values >= bound can be winners (about 6 of 1,500 at k = 5, normal
//    values), and a block of 32 costs one compare of its lane maxima, kept
//    by the stream, with bound. A block that holds one gives its lanes as 32 bits, whose
//    set bits are the candidates, in index order; they go through
//    topk_row's insertion, so ties go as there. (Branches per candidate
//    block, per vector and per lane, each mispredicted, cost about a third
//    more; a branch-free ranking of the candidates was slower than the
//    insertion's few branches.)
// `next` (may be null) is the row selected after this one: both passes
// request its lines, half each, one row ahead, so that memory keeps
// streaming while the second pass runs (a stream-only prefetch left it
// idle then, and the selection cost as much again as the read).
// A one-pass threshold (the running k-th best) was slower: its value enters
// ~k ln(n / k) times per row, each a mispredicted branch, in the stream.
// Rows shorter than one block of 32 take one scalar pass. Needs k <= 16 and
// k <= n. Returns false if the row holds a non-finite value.
template <class E>
TXRAY_INLINE bool topk_row_direct(const typename E::storage* row, int64_t n, int k, Winner* out,
                                  const typename E::storage* next = nullptr) {
  using namespace simd;
  constexpr int64_t kLine = 64 / sizeof(typename E::storage);
  int filled = 0;
  float total = 0.0f;
  if (n < 32) {
    for (int64_t i = 0; i < n; ++i) {
      const float x = E::load(row[i]);
      total += x;
      if (filled == k && !(x > out[k - 1].value)) continue;
      insert_winner(out, k, filled, int32_t(i), x);
    }
    return is_finite(total) || first_nonfinite<E>(row, n, 1) < 0;
  }
  if (!next) next = row;  // (a prefetch of lines in cache costs next to nothing)
  f32x8 max[4], sum0 = {}, sum1 = {};
  for (int j = 0; j < 8; ++j) max[0][j] = -INFINITY;
  max[1] = max[2] = max[3] = max[0];
  const int64_t blocks_end = n / 32 * 32;
  // Each block's lane maxima, for the second pass to test without reloading
  // the block (rows of up to 64 blocks; later blocks are reloaded).
  constexpr int64_t kKeptBlocks = 64;
  f32x8 block_max[kKeptBlocks];
  const int64_t kept_end = std::min(blocks_end, 32 * kKeptBlocks);
  for (int64_t i = 0; i < blocks_end; i += 32) {
    __builtin_prefetch(next + i, 0, 2);
    const f32x8 x0 = load8(E{}, row + i), x1 = load8(E{}, row + i + 8);
    const f32x8 x2 = load8(E{}, row + i + 16), x3 = load8(E{}, row + i + 24);
    if (i < kept_end) {
      const f32x8 m01 = x0 > x1 ? x0 : x1, m23 = x2 > x3 ? x2 : x3;
      block_max[i / 32] = m01 > m23 ? m01 : m23;
    }
    max[0] = x0 > max[0] ? x0 : max[0];
    max[1] = x1 > max[1] ? x1 : max[1];
    max[2] = x2 > max[2] ? x2 : max[2];
    max[3] = x3 > max[3] ? x3 : max[3];
    sum0 += x0 + x1;
    sum1 += x2 + x3;
  }
  for (int64_t i = blocks_end; i < n; i += kLine) __builtin_prefetch(next + i, 0, 2);
  const f32x8 sum = sum0 + sum1;
  for (int j = 0; j < 8; ++j) total += sum[j];
  for (int64_t i = blocks_end; i < n; ++i) total += E::load(row[i]);
  if (!is_finite(total) && first_nonfinite<E>(row, n, 1) >= 0) return false;
  // The bound, without branches (their outcome is data): the maxima of 16
  // lanes (positions 16 apart) are 16 values of the row; one of them is >=
  // their k-th largest iff at most k - 1 of them exceed it, and the bound is
  // the least such one.
  const f32x8 lo = max[0] > max[2] ? max[0] : max[2], hi = max[1] > max[3] ? max[1] : max[3];
  i32x8 above_lo = {}, above_hi = {};  // minus how many of the 16 exceed each lane's maximum
  for (int j = 0; j < 8; ++j) {
    const f32x8 a = splat(lo[j]), b = splat(hi[j]);
    above_lo += (lo < a) + (lo < b);
    above_hi += (hi < a) + (hi < b);
  }
  const f32x8 none = splat(INFINITY);
  const f32x8 in_lo = above_lo > -k ? lo : none, in_hi = above_hi > -k ? hi : none;
  const f32x8 least = in_lo < in_hi ? in_lo : in_hi;
  float bound = least[0];
  for (int j = 1; j < 8; ++j) bound = least[j] < bound ? least[j] : bound;
  const f32x8 bounds = splat(bound);
  // At least k values pass the bound (at k = 16 about 55 of 1,500 normal
  // values, at times over 64); up to this many are inserted from the
  // candidates, more (ties at the top) take the insertion over the row.
  constexpr int kCandidates = 128;
  float value[kCandidates + 32];
  int32_t at[kCandidates + 32];
  int c = 0;
  for (int64_t i = 0; i < blocks_end; i += 32) {
    if (kLine < 32) __builtin_prefetch(next + i + kLine, 0, 2);
    if (i < kept_end) {
      if (!any_lane(block_max[i / 32] >= bounds)) continue;
    } else {
      const f32x8 x0 = load8(E{}, row + i), x1 = load8(E{}, row + i + 8);
      const f32x8 x2 = load8(E{}, row + i + 16), x3 = load8(E{}, row + i + 24);
      const f32x8 m01 = x0 > x1 ? x0 : x1, m23 = x2 > x3 ? x2 : x3;
      if (!any_lane((m01 > m23 ? m01 : m23) >= bounds)) continue;
    }
    const f32x8 x0 = load8(E{}, row + i), x1 = load8(E{}, row + i + 8);
    const f32x8 x2 = load8(E{}, row + i + 16), x3 = load8(E{}, row + i + 24);
    for (uint32_t bits = lane_bits(x0 >= bounds, x1 >= bounds, x2 >= bounds, x3 >= bounds); bits; bits &= bits - 1) {
      const int64_t j = i + __builtin_ctz(bits);
      at[c] = int32_t(j);
      value[c] = E::load(row[j]);
      c += c < kCandidates + 31;  // full: the insertion below takes over
    }
  }
  for (int64_t i = blocks_end; i < n; ++i) {
    const float x = E::load(row[i]);
    at[c] = int32_t(i);
    value[c] = x;
    c += x >= bound && c < kCandidates + 31;
  }
  if (c <= kCandidates) {
    for (int a = 0; a < c; ++a)
      if (filled < k || value[a] > out[k - 1].value) insert_winner(out, k, filled, at[a], value[a]);
    return true;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float x = E::load(row[i]);
    if (x >= bound && (filled < k || x > out[k - 1].value)) insert_winner(out, k, filled, int32_t(i), x);
  }
  return true;
}

// The k largest entries of a finite float row, largest first, equal values
// in increasing neuron order. Small k keeps a sorted insertion list (one
// pass, no allocation); large k uses nth_element on an index buffer.
TXRAY_INLINE void topk_row(const float* row, int64_t n, int k, Winner* out, std::vector<int32_t>& scratch) {
  if (k <= 16) {
    int filled = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float x = row[i];
      if (filled == k && !(x > out[k - 1].value)) continue;
      insert_winner(out, k, filled, static_cast<int32_t>(i), x);
    }
    return;
  }
  scratch.resize(n);
  for (int64_t i = 0; i < n; ++i) scratch[i] = static_cast<int32_t>(i);
  auto before = [row](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); };
  if (k < n) std::nth_element(scratch.begin(), scratch.begin() + k, scratch.end(), before);
  std::sort(scratch.begin(), scratch.begin() + k, before);
  for (int j = 0; j < k; ++j) out[j] = Winner{scratch[j], row[scratch[j]]};
}

}  // namespace txray

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
