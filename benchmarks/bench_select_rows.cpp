// The per-row selection loops of cpp/select.hpp alone, on one thread: the
// sum (the floor's read), argmax_row (max1) and topk_row_direct (topk, k = 5),
// on rows that stay in L1 (the loops' compute) and on rows streamed from
// memory (compute and read together). Interleaved, best of 9, thread CPU
// time, so other processes on the cores count less than in wall time.
//
//   g++ -O3 -march=native -std=c++17 -Icpp benchmarks/bench_select_rows.cpp -o /tmp/bench_select_rows
//   /tmp/bench_select_rows            # 4 rows in L1, then 100,000 rows (600 MB) from memory
//
// The 4 rows in L1 are the same rows again and again: the branch predictor
// learns where their candidates are, so that line is the loops' work
// without the mispredictions, which the rows from memory do pay.
//
// What it showed (docs/performance.md): in L1 the top-k costs a few times the
// sum, which the argmax hides under the read and the top-k could not: its
// second pass and its bound run after the row's stream, when only the
// prefetches requested ahead keep memory busy. Requesting the next row's
// lines from both passes, and testing each block through lane maxima the
// stream keeps, recover part of that; a threshold guessed from the previous
// row and tested in the stream (no second pass for most rows) was slower.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "select.hpp"
#include "thread_clock.hpp"

using namespace txray;

namespace {

void run(int64_t rows, int reps, int64_t n, int k) {
  std::vector<float> acts(size_t(rows * n));
  std::mt19937 gen(0);
  std::normal_distribution<float> normal;
  for (float& x : acts) x = normal(gen);
  Winner w[16];
  volatile float sink = 0.0f;
  const char* names[3] = {"sum_row", "argmax_row", "topk_row_direct"};
  double best[3] = {1e30, 1e30, 1e30};
  for (int round = 0; round < 9; ++round) {
    for (int probe = 0; probe < 3; ++probe) {
      const double t0 = thread_cpu_seconds();
      for (int rep = 0; rep < reps; ++rep) {
        for (int64_t i = 0; i < rows; ++i) {
          const float* row = acts.data() + i * n;
          if (probe == 0) {
            sink = sum_row<F32>(row, n);
          } else if (probe == 1) {
            argmax_row<F32>(row, n, w);
            sink = w[0].value;
          } else {
            topk_row_direct<F32>(row, n, k, w, i + 1 < rows ? row + n : nullptr);
            sink = w[0].value;
          }
        }
      }
      best[probe] = std::min(best[probe], (thread_cpu_seconds() - t0) / double(reps) / double(rows) * 1e9);
    }
  }
  std::printf("%ld rows of %ld float32 (%s):", long(rows), long(n), rows * n * 4 < (1 << 20) ? "in cache" : "memory");
  for (int probe = 0; probe < 3; ++probe) std::printf("  %s %.0f ns", names[probe], best[probe]);
  std::printf("  (per row; top-k k = %d: %.2f x the sum)\n", k, best[2] / best[0]);
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 1500;
  const int k = argc > 2 ? std::atoi(argv[2]) : 5;
  run(4, 50000, n, k);
  run(100000, 2, n, k);
}
