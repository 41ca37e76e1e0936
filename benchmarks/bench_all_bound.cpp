// What bounds mode all's Recorder.update on the CPU: its steps apart, and the
// bare costs under them, on bench_record.py's setting (T x 1500 float32,
// token ids Zipf(1.1) over 33,278, POS ids Zipf(1.0) over 45, batches of
// 100,000), 2 threads, each thread on its half of the neurons as the update
// splits them. Built and run by bench_all_bound.py (same flags as the
// package's native build), which prints the table: per probe, the CPU
// seconds of both threads over the T tokens (best of the repeats).
#include <omp.h>
#include <sys/mman.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "kernels.hpp"
#include "recorder.hpp"
#include "thread_clock.hpp"

using namespace txray;

namespace {

uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  return x ^ (x >> 33);
}

// n ids with rank-frequency 1/r^s over vocab (inverse CDF), ranks shuffled to ids.
std::vector<int64_t> zipf(int64_t n, int64_t vocab, double s, uint64_t seed) {
  std::vector<double> cdf(static_cast<size_t>(vocab));
  double c = 0;
  for (int64_t r = 0; r < vocab; ++r) cdf[size_t(r)] = c += std::pow(double(r + 1), -s);
  for (double& x : cdf) x /= c;
  std::vector<int64_t> id(static_cast<size_t>(vocab));
  std::iota(id.begin(), id.end(), 0);
  for (int64_t i = vocab - 1; i > 0; --i) std::swap(id[size_t(i)], id[mix(seed * 977 + uint64_t(i)) % uint64_t(i + 1)]);
  std::vector<int64_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double u = double(mix(seed * 1000003 + uint64_t(i)) >> 11) * 0x1p-53;
    const int64_t r = std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin();
    out[size_t(i)] = id[size_t(std::min(r, vocab - 1))];
  }
  return out;
}

// Sums of float32 x (widened) into one or two float64 rows: the update's adds.
__attribute__((noinline)) void add_two(const float* __restrict x, int64_t n, double* __restrict a,
                                       double* __restrict b) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = double(x[i]);
    a[i] += v;
    b[i] += v;
  }
}

// A plain read of a slice (8 float accumulators, vectorised).
__attribute__((noinline)) float read_slice(const float* __restrict x, int64_t n) {
  float s[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) s[j] += x[i + j];
  for (; i < n; ++i) s[0] += x[i];
  float total = 0;
  for (float v : s) total += v;
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t T = argc > 1 ? std::atoll(argv[1]) : 400000, N = 1500, B = 100000;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 3;
  omp_set_num_threads(2);
  // The activations on huge pages where the OS has them, as NumPy allocates
  // large arrays (madvise MADV_HUGEPAGE): rows read out of order would
  // otherwise miss the TLB on almost every row.
  const size_t bytes = (size_t(T * N) * sizeof(float) + (2u << 20) - 1) / (2u << 20) * (2u << 20);
  float* data = static_cast<float*>(std::aligned_alloc(2u << 20, bytes));
  if (!data) return 2;
#ifdef MADV_HUGEPAGE
  madvise(data, bytes, MADV_HUGEPAGE);
#endif
  std::unique_ptr<float, decltype(&std::free)> owner(data, &std::free);
  float* acts = data;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < T * N; ++i) {  // about normal: a sum of 4 uniforms
    const uint64_t r = mix(uint64_t(i) + 12345);
    float s = 0;
    for (int j = 0; j < 4; ++j) s += float((r >> (16 * j)) & 0xffff) * (1.0f / 65536);
    acts[size_t(i)] = (s - 2.0f) * 1.732f;
  }
  const std::vector<int64_t> token = zipf(T, 33278, 1.1, 1), pos = zipf(T, 45, 1.0, 2);
  const kernels::Kernels& kern = kernels::active();

  // Per batch: tokens grouped by token id (the update's order), rows assigned
  // once (tables grown: no first touch in the timed probes).
  const int64_t n_batches = (T + B - 1) / B;
  std::vector<std::vector<int64_t>> order(static_cast<size_t>(n_batches)), ident(static_cast<size_t>(n_batches));
  FeatureRows rows[2] = {FeatureRows(N, 33278), FeatureRows(N, 45)};
  // Per batch and kind: each token's row, and row 0 for every token (sums in L1).
  std::vector<std::array<std::vector<int32_t>, 2>> row_of(static_cast<size_t>(n_batches)),
      one_row(static_cast<size_t>(n_batches)), row_in_order(static_cast<size_t>(n_batches));
  for (int64_t b = 0; b < n_batches; ++b) {
    const int64_t lo = b * B, n = std::min(B, T - lo);
    std::vector<int64_t>& o = order[size_t(b)];
    o.resize(size_t(n));
    std::iota(o.begin(), o.end(), lo);
    std::stable_sort(o.begin(), o.end(), [&](int64_t x, int64_t y) { return token[size_t(x)] < token[size_t(y)]; });
    ident[size_t(b)].resize(size_t(n));
    std::iota(ident[size_t(b)].begin(), ident[size_t(b)].end(), lo);
    for (int k = 0; k < 2; ++k) {
      row_of[size_t(b)][size_t(k)].resize(size_t(n));
      one_row[size_t(b)][size_t(k)].assign(size_t(n), 0);
    }
    for (int64_t i = 0; i < n; ++i) {
      row_of[size_t(b)][0][size_t(i)] = rows[0].row_for(token[size_t(o[size_t(i)])]);
      row_of[size_t(b)][1][size_t(i)] = rows[1].row_for(pos[size_t(o[size_t(i)])]);
    }
    for (int64_t i = 0; i < n; ++i) {
      row_in_order[size_t(b)][0].push_back(rows[0].row_for(token[size_t(lo + i)]));
      row_in_order[size_t(b)][1].push_back(rows[1].row_for(pos[size_t(lo + i)]));
    }
  }
  ActivationView all;
  all.data = acts;
  all.rows = T;
  all.cols = N;
  all.row_stride = N;

  // A probe runs on both threads; each returns its thread's CPU seconds for all batches.
  struct Probe {
    const char* name;
    std::string what;
  };
  const std::vector<Probe> probes = {
      {"floor", "_native.stream_read's loop (sum_rows), rows in memory order"},
      {"check", "mode all's check before the adds (check_all: finiteness, context thresholds)"},
      {"read gathered", "each thread's half row read in the update's feature order, nothing added"},
      {"adds, in cache", "the adds of one row, again and again: float32 widened into 2 float64 rows, all in L1"},
      {"adds, streamed, sums in L1", "rows in memory order, added into one row per kind (the adds' best case)"},
      {"adds, gathered, sums in L1", "rows in feature order, added into one row per kind"},
      {"adds, gathered, real rows", "the update's adds (add_all): feature order, each token's own 2 rows"},
      {"adds, streamed, real rows", "the same adds in memory order: each token's own 2 rows, gathered instead"},
      {"update, tables grown", "Recorder.update, contexts=0, a recorder that has seen every batch"},
      {"first touch of new rows", "a fresh recorder's new rows, zeroed as row_for allocates them"},
  };
  std::vector<double> best(probes.size(), 1e30);
  Recorder grown(N, {"token", "pos"}, {33278, 45}, Mode::All, 1, 0, 0);
  for (int64_t b = 0; b < n_batches; ++b) {  // grown: every feature seen before the timed passes
    const int64_t lo = b * B, n = std::min(B, T - lo);
    ActivationView v = all;
    v.data = acts + lo * N;
    v.rows = n;
    grown.update(v, nullptr, {token.data() + lo, pos.data() + lo});
  }
  float sink = 0;
  for (int rep = 0; rep < repeats; ++rep) {
    for (size_t p = 0; p < probes.size(); ++p) {
      double cpu = 0;
      if (p == 8) {  // the update parallelises itself: process CPU time around it
        timespec t0, t1;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
        for (int64_t b = 0; b < n_batches; ++b) {
          const int64_t lo = b * B, n = std::min(B, T - lo);
          ActivationView v = all;
          v.data = acts + lo * N;
          v.rows = n;
          grown.update(v, nullptr, {token.data() + lo, pos.data() + lo});
        }
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
        cpu = double(t1.tv_sec - t0.tv_sec) + 1e-9 * double(t1.tv_nsec - t0.tv_nsec);
      } else if (p == 9) {
        const double t0 = thread_cpu_seconds();
        FeatureRows fresh[2] = {FeatureRows(N, 33278), FeatureRows(N, 45)};
        for (int64_t i = 0; i < T; ++i) {
          fresh[0].row_for(token[size_t(i)]);
          fresh[1].row_for(pos[size_t(i)]);
        }
        cpu = thread_cpu_seconds() - t0;
      } else {
#pragma omp parallel reduction(+ : cpu) reduction(+ : sink)
        {
          const int me = omp_get_thread_num();
          const int64_t lo = me == 0 ? 0 : 752, hi = me == 0 ? 752 : N;  // as record_all's split
          std::vector<float> x(static_cast<size_t>(hi - lo));
          std::vector<uint8_t> candidate(static_cast<size_t>(B));
          std::vector<float> threshold(static_cast<size_t>(N), 3.0f);
          std::vector<double> sums(2 * 1504, 0.0);
          const double t0 = thread_cpu_seconds();
          for (int64_t b = 0; b < n_batches; ++b) {
            const int64_t first = b * B, n = std::min(B, T - first);
            const int64_t rlo = first + n * me / 2, rhi = first + n * (me + 1) / 2;
            const std::vector<int64_t>& o = order[size_t(b)];
            if (p == 0) {
              sink += float(kern.sum_rows(all, rlo, rhi));
            } else if (p == 1) {
              sink += float(kern.check_all(all, nullptr, rlo, rhi, threshold.data(), candidate.data()));
            } else if (p == 2) {
              for (int64_t i = 0; i < n; ++i) {
                if (i + 2 < n)
                  for (int64_t c = lo; c < hi; c += 16)
                    __builtin_prefetch(&acts[size_t(o[size_t(i + 2)] * N + c)], 0, 3);
                sink += read_slice(&acts[size_t(o[size_t(i)] * N + lo)], hi - lo);
              }
            } else if (p == 3) {
              for (int64_t i = 0; i < n; ++i) add_two(&acts[size_t(lo)], hi - lo, &sums[0], &sums[1504]);
            } else {
              const bool streamed = p == 4 || p == 7;
              const auto& ro = p == 6 ? row_of : p == 7 ? row_in_order : one_row;
              kern.add_all(all, (streamed ? ident : order)[size_t(b)].data(), n, lo, hi, rows, ro[size_t(b)].data(), 2,
                           x.data(), nullptr, nullptr);
            }
          }
          cpu += thread_cpu_seconds() - t0;
        }
      }
      best[p] = std::min(best[p], cpu);
    }
  }
  // One header line, then a tab-separated line per probe: name, CPU seconds, what it measures.
  std::printf("%lld tokens x %lld float32 (%.2f GB), batches of %lld, 2 threads, kernels %s, best of %d\n",
              (long long)T, (long long)N, double(T * N * 4) / 1e9, (long long)B, kernels::active_name().c_str(),
              repeats);
  for (size_t p = 0; p < probes.size(); ++p)
    std::printf("%s\t%.6f\t%s\n", probes[p].name, best[p], probes[p].what.c_str());
  return sink == 1.5f ? 1 : 0;
}
